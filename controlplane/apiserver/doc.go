// Package apiserver is kforge's Kubernetes API server (`kforge apiserver
// --config FILE`, and in-process in `kforge local up`): the REST API of
// the k8s.io/api types that the real kubectl and client-go use unchanged,
// over etcd. It owns:
//
//   - The table of kinds (resources.go): one row per resource with its
//     group, version, names, scope, subresources, defaulting and
//     validation; a new kind is a row, not a handler. Discovery (/api,
//     /apis, /version) and OpenAPI v3 (openapi.go, by reflection over
//     the Go types, from their schemas for custom resources) are
//     generated from it, and rebuilt when it changes; /openapi/v2 is the
//     v3 documents merged into one Swagger 2.0 document, in JSON or in
//     gnostic's protobuf (what client-go's OpenAPISchema reads).
//   - The generic REST handlers, one file per verb as upstream's
//     endpoints/handlers: the dispatch (rest.go), get and list (get.go,
//     paged), create.go, update.go, patch.go (JSON, merge, strategic),
//     server-side apply with managed fields (apply.go), delete.go with
//     finalizers and grace periods, dryRun, status and scale
//     (subresources.go), pods/binding; errors are
//     metav1.Status with upstream's reasons. Tables for kubectl get
//     (table.go). Query parameters are decoded into metav1's options
//     types and checked as upstream's handlers do (options.go); a
//     subresource answers only its verbs (request.go).
//   - Validation upstream's registry strategies do (validation.go):
//     object metadata, immutable fields, Service, workload and RBAC rules;
//     defaults and Secret stringData (defaults.go). Mutating admission on
//     create (admission.go): TaintNodesByCondition's not-ready:NoSchedule
//     taint on new Nodes and DefaultTolerationSeconds' 300 s not-ready
//     and unreachable tolerations on new Pods; DefaultIngressClass's
//     default class on new Ingresses that name none
//     (ingressclass_admission.go). pods/eviction (policy/v1,
//     eviction.go) deletes the pod with the Eviction's options once the
//     PodDisruptionBudget that selects it allows a disruption (429
//     otherwise). Job, CronJob, StatefulSet and PodDisruptionBudget
//     defaults, validation (with upstream's immutable fields) and table
//     columns are in workloads.go.
//   - CustomResourceDefinitions (crd.go): apiextensions.k8s.io/v1, typed
//     from k8s.io/apiextensions-apiserver, checked by that module's own
//     CRD validation (names, versions with one storage version,
//     structural schemas, defaults against their schema) on the
//     definition's internal form. Names are accepted and a definition
//     Established when it is written, unless its plural, kind or a short
//     name is taken in its group (NamesAccepted False, nothing served).
//     Every apiserver follows the stored definitions from etcd and swaps
//     the rows of their served versions into the table (the Registry is
//     a snapshot replaced whole), so discovery, OpenAPI and the REST
//     handlers serve them; a deleted definition keeps upstream's
//     customresourcecleanup finalizer until its objects are removed.
//   - Custom resources (customresource.go): unstructured objects through
//     the same handlers, pruned, defaulted and validated with the
//     module's structural-schema packages (pruning, defaulting, and the
//     kube-openapi schema validator) — upstream's code rather than a
//     second implementation, for about a hundred more packages (CEL
//     among them) in the binary. fieldValidation Strict refuses unknown
//     fields, Warn warns. status and scale subresources at the
//     definition's paths, additionalPrinterColumns in Tables, merge and
//     JSON patch (strategic merge is 415, as upstream), server-side
//     apply over the version's schema. Conversion is None only: an
//     object is served in every version by its apiVersion alone;
//     conversion webhooks and CEL validation rules (x-kubernetes-
//     validations) are not run.
//   - Limits (limits.go, set in the config's limits section): requests in
//     flight (429), a deadline per request (504, watches exempt), JSON
//     patch operations and copy size, HTTP/2 streams, watches per user.
//   - Watches (watch.go): the line-per-event stream with bookmarks,
//     sendInitialEvents and its end bookmark, 410 for compacted
//     revisions, label and field selectors with ADDED/DELETED on entry
//     and exit. They are served from the object cache (storage.Cache:
//     one etcd watch on /registry/ for all of them, a history of recent
//     events, decoded once per event), or from etcd when the cache's
//     history does not reach back far enough.
//   - Reads that writes prove: an update reads its object, and a create
//     its namespace, from the object cache; the write's compare on the
//     mod revision proves the copy current, and anything else is decided
//     again from a linearizable read.
//   - Authentication (authn.go) by x509 client certificate (CN user, O
//     groups), verified in the handler so a bad one is a 401 Status, or
//     by service-account bearer token; no anonymous access beyond the
//     health checks and /version. Service-account tokens
//     (serviceaccount_token.go): TokenRequest, ES256 JWTs bound to a
//     pod, secret or node, TokenReview and OIDC discovery.
//     ServiceAccount admission (serviceaccount_admission.go): the default
//     account and the projected kube-api-access volume.
//   - Authorization as --authorization-mode=Node,RBAC: the Node
//     authorizer over a graph of pods and what they use (nodeauthz.go),
//     NodeRestriction admission (nodeauthz_admission.go), then RBAC from
//     an index of the stored roles and bindings (rbac); impersonation,
//     escalation checks, the bootstrap policy, the access reviews
//     kubectl auth uses, and SubjectAccessReview and
//     LocalSubjectAccessReview for any user from the same chain (sar.go;
//     the node agents ask them about their API's clients).
//   - The node agent's subresources (nodeproxy.go): pods/log, exec,
//     attach, portforward and nodes/proxy proxied, upgrades included, to
//     the agent API of the pod's node with the kubelet client
//     certificate; long-running, so exempt from deadlines and the
//     in-flight cap.
//   - Namespace lifecycle (namespace.go): the "kubernetes" finalizer,
//     Terminating on delete, no creates in a terminating namespace, the
//     system namespaces kept; the controller manager empties and
//     finalizes. Events as one resource in two versions, expiring after
//     the event TTL (events.go). Encryption at rest of the resources the
//     encryption config names (atrest.go over the encryption package).
//   - The "kubernetes" Service and its Endpoints, kept to the apiservers
//     holding a live master lease (endpoints.go), and ClusterIPs
//     allocated from the service CIDR (clusterip.go), NodePorts from
//     30000-32767 (nodeport.go), each held by one etcd reservation.
//   - The role: its config file (config.go), TLS serving, /healthz,
//     /livez, /readyz and Prometheus metrics (metrics.go).
//
// Storage (etcd keys, revisions, transactions, the cache) is the storage
// package; the RBAC rules engine is rbac.
package apiserver

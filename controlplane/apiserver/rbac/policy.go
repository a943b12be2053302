package rbac

import (
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Identities of kforge's components, as the PKI issues them (CN, or O for
// groups). pki/inventory.go is the source; these must match it.
const (
	Masters           = "system:masters"
	Authenticated     = "system:authenticated"
	Unauthenticated   = "system:unauthenticated"
	Nodes             = "system:nodes"
	ServiceAccounts   = "system:serviceaccounts"
	SchedulerUser     = "system:kube-scheduler"
	ControllerManager = "system:kube-controller-manager"
	ProxyUser         = "system:kube-proxy"
	IngressUser       = "system:kforge:ingress"
	DNSUser           = "system:kforge:dns"
	// KubeletClientUser is the apiserver's identity toward the node
	// agents (pods/log, exec, attach, portforward, nodes/proxy).
	KubeletClientUser = "kforge:apiserver-kubelet-client"
)

// Policy is the bootstrap set of roles and bindings. The apiserver creates
// each object that is missing and leaves existing ones alone, so an
// operator's edits survive restarts.
type Policy struct {
	ClusterRoles        []*rbacv1.ClusterRole
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	Roles               []*rbacv1.Role
	RoleBindings        []*rbacv1.RoleBinding
}

// allow is a resource rule: space-separated verbs, one API group ("" is
// the core group) and the resources ("pods", "pods/status", "*").
func allow(verbs, group string, resources ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: strings.Fields(verbs), APIGroups: []string{group}, Resources: resources}
}

// allowURLs is a non-resource rule.
func allowURLs(verbs string, urls ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: strings.Fields(verbs), NonResourceURLs: urls}
}

const (
	read  = "get list watch"
	write = "create delete deletecollection patch update"
	rw    = read + " " + write
)

func bootstrapMeta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: namespace,
		Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"},
		// Upstream reconciles roles carrying this annotation on upgrade;
		// kforge only creates missing ones today, but keeps the marker so
		// a later reconciler knows which objects it may touch.
		Annotations: map[string]string{rbacv1.AutoUpdateAnnotationKey: "true"},
	}
}

func clusterRole(name string, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{ObjectMeta: bootstrapMeta(name, ""), Rules: rules}
}

func role(namespace, name string, rules ...rbacv1.PolicyRule) *rbacv1.Role {
	return &rbacv1.Role{ObjectMeta: bootstrapMeta(name, namespace), Rules: rules}
}

func users(names ...string) []rbacv1.Subject {
	var s []rbacv1.Subject
	for _, n := range names {
		s = append(s, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: n})
	}
	return s
}

func groups(names ...string) []rbacv1.Subject {
	var s []rbacv1.Subject
	for _, n := range names {
		s = append(s, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: n})
	}
	return s
}

func clusterBinding(name, roleName string, subjects []rbacv1.Subject) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{ObjectMeta: bootstrapMeta(name, ""), Subjects: subjects,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName}}
}

func binding(namespace, name, roleName string, subjects []rbacv1.Subject) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{ObjectMeta: bootstrapMeta(name, namespace), Subjects: subjects,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: roleName}}
}

// viewRules are read-only rules over the namespaced kinds, without secrets
// (upstream's view role, written out flat rather than aggregated).
func viewRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		allow(read, "", "pods", "pods/log", "pods/status", "services", "services/status", "endpoints",
			"configmaps", "serviceaccounts", "events", "namespaces", "namespaces/status",
			"persistentvolumeclaims", "persistentvolumeclaims/status", "replicationcontrollers",
			"replicationcontrollers/scale", "replicationcontrollers/status", "limitranges",
			"resourcequotas", "resourcequotas/status", "bindings"),
		allow(read, "apps", "deployments", "deployments/scale", "deployments/status", "replicasets",
			"replicasets/scale", "replicasets/status", "daemonsets", "daemonsets/status",
			"statefulsets", "statefulsets/scale", "statefulsets/status", "controllerrevisions"),
		allow(read, "autoscaling", "horizontalpodautoscalers", "horizontalpodautoscalers/status"),
		allow(read, "batch", "jobs", "jobs/status", "cronjobs", "cronjobs/status"),
		allow(read, "networking.k8s.io", "ingresses", "ingresses/status", "networkpolicies"),
		allow(read, "discovery.k8s.io", "endpointslices"),
		allow(read, "policy", "poddisruptionbudgets", "poddisruptionbudgets/status"),
		allow(read, "events.k8s.io", "events"),
	}
}

// editRules add writes on the workload kinds, and secrets, to viewRules.
func editRules() []rbacv1.PolicyRule { return append(viewRules(), editOnlyRules()...) }

// editOnlyRules are what edit adds to view.
func editOnlyRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		allow(read, "", "secrets"),
		allow(write, "", "pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy",
			"configmaps", "endpoints", "persistentvolumeclaims", "replicationcontrollers",
			"replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"),
		allow("create", "", "pods/eviction", "serviceaccounts/token"),
		allow(write, "apps", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
			"replicasets/scale", "daemonsets", "statefulsets", "statefulsets/scale"),
		allow(write, "autoscaling", "horizontalpodautoscalers"),
		allow(write, "batch", "jobs", "cronjobs"),
		allow(write, "networking.k8s.io", "ingresses", "networkpolicies"),
		allow(write, "policy", "poddisruptionbudgets"),
	}
}

// adminRules add the namespace's roles and bindings to editRules.
func adminRules() []rbacv1.PolicyRule { return append(editRules(), adminOnlyRules()...) }

// adminOnlyRules are what admin adds to edit.
func adminOnlyRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		allow(rw, rbacv1.GroupName, "roles", "rolebindings"),
		allow("create", "authorization.k8s.io", "localsubjectaccessreviews"),
	}
}

// AggregateToLabel is the label that adds a ClusterRole's rules to the
// aggregated role NAME (admin, edit, view), as upstream.
func AggregateToLabel(name string) string { return "rbac.authorization.k8s.io/aggregate-to-" + name }

// aggregatedRole is a user-facing role whose rules are the union of every
// ClusterRole labelled AggregateToLabel(name), kept by the controller
// manager's aggregation controller. Its rules start as the bootstrap
// ones, so it works before that controller first runs. joins, when set,
// labels it to be aggregated into another role too (view into edit, edit
// into admin).
func aggregatedRole(name, joins string, rules []rbacv1.PolicyRule) *rbacv1.ClusterRole {
	r := clusterRole(name, rules...)
	r.AggregationRule = &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{
		{MatchLabels: map[string]string{AggregateToLabel(name): "true"}}}}
	if joins != "" {
		r.Labels[AggregateToLabel(joins)] = "true"
	}
	return r
}

// aggregatePart is one of the bootstrap parts an aggregated role gathers.
func aggregatePart(into string, rules []rbacv1.PolicyRule) *rbacv1.ClusterRole {
	r := clusterRole("system:aggregate-to-"+into, rules...)
	r.Labels[AggregateToLabel(into)] = "true"
	return r
}

// NodeRules are what a node agent may do, as upstream's system:node
// rules; the Node authorizer grants them to each node (after checking the
// graph for secrets, configmaps, claims and tokens) and NodeRestriction
// admission narrows the writes to the node's own objects.
func NodeRules() []rbacv1.PolicyRule {
	const core = ""
	return []rbacv1.PolicyRule{
		allow("create", "authentication.k8s.io", "tokenreviews"),
		allow("create", "authorization.k8s.io", "subjectaccessreviews", "localsubjectaccessreviews"),
		allow(read, core, "services", "endpoints"),
		allow(read, "discovery.k8s.io", "endpointslices"),
		allow("create delete "+read+" update patch", core, "nodes"),
		allow("update patch", core, "nodes/status"),
		allow("create update patch", core, "events"),
		allow("create update patch", "events.k8s.io", "events"),
		allow(read+" create delete", core, "pods"),
		allow("update patch", core, "pods/status"),
		allow("create", core, "pods/eviction"),
		allow(read, core, "secrets", "configmaps", "persistentvolumeclaims", "persistentvolumes"),
		allow("update patch", core, "persistentvolumeclaims/status"),
		allow("create", core, "serviceaccounts/token"),
		allow("get create update patch delete", coordinationv1.GroupName, "leases"),
		allow("get", core, "namespaces"),
	}
}

// Bootstrap returns the bootstrap policy.
func Bootstrap() *Policy {
	const (
		core      = ""
		apps      = "apps"
		discovery = "discovery.k8s.io"
		events    = "events.k8s.io"
		coord     = coordinationv1.GroupName
		netw      = "networking.k8s.io"
	)
	p := &Policy{}
	add := func(r *rbacv1.ClusterRole, subjects []rbacv1.Subject) {
		p.ClusterRoles = append(p.ClusterRoles, r)
		if subjects != nil {
			p.ClusterRoleBindings = append(p.ClusterRoleBindings, clusterBinding(r.Name, r.Name, subjects))
		}
	}
	addRole := func(r *rbacv1.Role, subjects []rbacv1.Subject) {
		p.Roles = append(p.Roles, r)
		p.RoleBindings = append(p.RoleBindings, binding(r.Namespace, r.Name, r.Name, subjects))
	}
	eventWrites := []rbacv1.PolicyRule{allow("create patch update", core, "events"), allow("create patch update", events, "events")}

	// Users and every authenticated caller.
	add(clusterRole("cluster-admin",
		rbacv1.PolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}},
		allowURLs("*", "*"),
	), groups(Masters))
	add(clusterRole("system:discovery",
		allowURLs("get", "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
			"/openapi/*", "/readyz", "/version", "/version/"),
	), groups(Authenticated))
	add(clusterRole("system:basic-user",
		allow("create", "authorization.k8s.io", "selfsubjectaccessreviews", "selfsubjectrulesreviews"),
		allow("create", "authentication.k8s.io", "selfsubjectreviews"),
	), groups(Authenticated))
	add(clusterRole("system:public-info-viewer",
		allowURLs("get", "/healthz", "/livez", "/readyz", "/version", "/version/"),
	), groups(Authenticated, Unauthenticated))
	add(aggregatedRole("admin", "", adminRules()), nil)
	add(aggregatedRole("edit", "admin", editRules()), nil)
	add(aggregatedRole("view", "edit", viewRules()), nil)
	add(aggregatePart("admin", adminOnlyRules()), nil)
	add(aggregatePart("edit", editOnlyRules()), nil)
	add(aggregatePart("view", viewRules()), nil)

	// The scheduler: read pods and nodes, bind, write pod status and
	// events, evict for preemption; its leader-election lease lives in
	// kube-system.
	add(clusterRole("system:kube-scheduler", append([]rbacv1.PolicyRule{
		allow(read+" delete", core, "pods"),
		allow("create", core, "pods/binding", "bindings"),
		allow("patch update", core, "pods/status"),
		allow(read, core, "nodes", "namespaces", "services", "replicationcontrollers",
			"persistentvolumeclaims", "persistentvolumes"),
		allow(read, apps, "replicasets", "statefulsets"),
		allow(read, "policy", "poddisruptionbudgets"),
	}, eventWrites...)...), users(SchedulerUser))
	addRole(role(metav1.NamespaceSystem, "system::leader-locking-kube-scheduler",
		allow("get create update", coord, "leases")), users(SchedulerUser))

	// The controller manager runs every controller under one identity:
	// broad over the kinds it manages, and read/delete over everything for
	// the garbage collector and the namespace controller (which, as
	// upstream's role for it, needs get/list/delete/deletecollection on
	// every resource and update on namespaces/status and
	// namespaces/finalize; the rules below cover exactly that).
	add(clusterRole("system:kube-controller-manager",
		allow("*", apps, "*"),
		allow("*", core, "pods", "pods/status", "pods/eviction", "pods/binding", "services", "services/status",
			"endpoints", "namespaces", "namespaces/status", "namespaces/finalize", "nodes", "nodes/status",
			"serviceaccounts", "serviceaccounts/token", "secrets", "configmaps", "events"),
		allow("*", discovery, "endpointslices"),
		allow("*", events, "events"),
		allow("*", coord, "leases"),
		allow("*", "autoscaling", "horizontalpodautoscalers", "horizontalpodautoscalers/status"),
		allow("*", "batch", "jobs", "jobs/status", "cronjobs", "cronjobs/status"),
		allow("*", "policy", "poddisruptionbudgets", "poddisruptionbudgets/status"),
		allow(read, netw, "ingresses", "ingressclasses"),
		// The aggregation controller writes aggregated roles' rules,
		// which it need not hold itself.
		allow("update patch escalate", rbacv1.GroupName, "clusterroles"),
		rbacv1.PolicyRule{Verbs: strings.Fields(read + " delete deletecollection"), APIGroups: []string{"*"}, Resources: []string{"*"}},
	), users(ControllerManager))
	addRole(role(metav1.NamespaceSystem, "system::leader-locking-kube-controller-manager",
		allow("get create update", coord, "leases")), users(ControllerManager))

	// Node agents get nothing from RBAC: the Node authorizer grants each
	// node NodeRules, narrowed to its own pods' secrets, configmaps,
	// claims and service-account tokens, and NodeRestriction admission
	// narrows its writes to its own Node, Lease and pods. The role is
	// kept, bound to no one, as upstream, for an operator who wants it.
	add(clusterRole("system:node", NodeRules()...), nil)
	p.ClusterRoleBindings = append(p.ClusterRoleBindings, clusterBinding("system:node", "system:node", nil))

	// Delegated authentication and authorization (a webhook or an
	// extension server checking its callers' tokens), bound to no one,
	// as upstream.
	add(clusterRole("system:auth-delegator",
		allow("create", "authentication.k8s.io", "tokenreviews"),
		allow("create", "authorization.k8s.io", "subjectaccessreviews"),
	), nil)

	// Service accounts may read the issuer's OIDC discovery documents.
	add(clusterRole("system:service-account-issuer-discovery",
		allowURLs("get", "/.well-known/openid-configuration", "/.well-known/openid-configuration/",
			"/openid/v1/jwks", "/openid/v1/jwks/"),
	), groups(ServiceAccounts))

	// Full use of the node agents' API, as upstream's role of that name;
	// the apiserver's kubelet client holds it.
	add(clusterRole("system:kubelet-api-admin",
		allow(read+" proxy", core, "nodes"),
		allow("*", core, "nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log", "nodes/spec",
			"nodes/healthz", "nodes/pods", "nodes/configz"),
	), users(KubeletClientUser))

	// The service proxy.
	add(clusterRole("system:node-proxier", append([]rbacv1.PolicyRule{
		allow(read, core, "services", "endpoints", "nodes"),
		allow(read, discovery, "endpointslices"),
	}, eventWrites...)...), users(ProxyUser))

	// The ingress controller: routes from Ingresses to Service endpoints,
	// TLS from Secrets, status back on the Ingress; each instance creates
	// its IngressClass when it is missing.
	add(clusterRole("system:kforge:ingress", append([]rbacv1.PolicyRule{
		allow(read, core, "services", "endpoints", "secrets", "namespaces"),
		allow(read, discovery, "endpointslices"),
		allow(read, netw, "ingresses", "ingressclasses"),
		allow("create", netw, "ingressclasses"),
		allow("get update patch", netw, "ingresses/status"),
	}, eventWrites...)...), users(IngressUser))

	// Cluster DNS: names from Services, their endpoints and pods; Nodes
	// to tell an instance on a dead worker.
	add(clusterRole("system:kforge:dns", append([]rbacv1.PolicyRule{
		allow(read, core, "services", "endpoints", "pods", "namespaces", "nodes"),
		allow(read, discovery, "endpointslices"),
	}, eventWrites...)...), users(DNSUser))
	// Each DNS instance creates the kube-dns Service when missing and
	// keeps its own EndpointSlice of it.
	addRole(role(metav1.NamespaceSystem, "system:kforge:dns",
		allow("get create", core, "services"),
		allow("get create update patch delete", discovery, "endpointslices")), users(DNSUser))

	return p
}

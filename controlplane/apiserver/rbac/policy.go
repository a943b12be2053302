package rbac

import (
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
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
func editRules() []rbacv1.PolicyRule {
	return append(viewRules(),
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
	)
}

// adminRules add the namespace's roles and bindings to editRules.
func adminRules() []rbacv1.PolicyRule {
	return append(editRules(),
		allow(rw, rbacv1.GroupName, "roles", "rolebindings"),
		allow("create", "authorization.k8s.io", "localsubjectaccessreviews"),
	)
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
	add(clusterRole("admin", adminRules()...), nil)
	add(clusterRole("edit", editRules()...), nil)
	add(clusterRole("view", viewRules()...), nil)

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
		allow(read, netw, "ingresses", "ingressclasses"),
		rbacv1.PolicyRule{Verbs: strings.Fields(read + " delete deletecollection"), APIGroups: []string{"*"}, Resources: []string{"*"}},
	), users(ControllerManager))
	addRole(role(metav1.NamespaceSystem, "system::leader-locking-kube-controller-manager",
		allow("get create update", coord, "leases")), users(ControllerManager))

	// Node agents (group system:nodes). This is broad: any node may read
	// every pod, secret and configmap and write any node. Restricting each
	// node to its own objects is the node authorizer's job (future work).
	add(clusterRole("system:node", append([]rbacv1.PolicyRule{
		allow("create get list watch update patch delete", core, "nodes"),
		allow("get update patch", core, "nodes/status"),
		allow(read+" delete", core, "pods"),
		allow("get update patch", core, "pods/status"),
		allow(read, core, "configmaps", "secrets", "services", "endpoints", "namespaces"),
		allow("create", core, "serviceaccounts/token"),
		allow("get", core, "persistentvolumeclaims", "persistentvolumes"),
		// The agent API authorizes its clients by asking.
		allow("create", "authorization.k8s.io", "subjectaccessreviews"),
	}, eventWrites...)...), groups(Nodes))

	// Full use of the node agents' API, as upstream's role of that name;
	// the apiserver's kubelet client holds it.
	add(clusterRole("system:kubelet-api-admin",
		allow(read+" proxy", core, "nodes"),
		allow("*", core, "nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log", "nodes/spec",
			"nodes/healthz", "nodes/pods", "nodes/configz"),
	), users(KubeletClientUser))
	addRole(role(corev1.NamespaceNodeLease, "system:kforge:node-lease",
		allow("get list watch create update patch delete", coord, "leases")), groups(Nodes))
	// The agent's node-local apiserver load balancer follows the
	// kubernetes Service's EndpointSlices, which live in default.
	addRole(role(metav1.NamespaceDefault, "system:kforge:node-apiserver-endpoints",
		allow(read, discovery, "endpointslices")), groups(Nodes))

	// The service proxy.
	add(clusterRole("system:node-proxier", append([]rbacv1.PolicyRule{
		allow(read, core, "services", "endpoints", "nodes"),
		allow(read, discovery, "endpointslices"),
	}, eventWrites...)...), users(ProxyUser))

	// The ingress controller: routes from Ingresses to Service endpoints,
	// TLS from Secrets, status back on the Ingress.
	add(clusterRole("system:kforge:ingress", append([]rbacv1.PolicyRule{
		allow(read, core, "services", "endpoints", "secrets", "namespaces"),
		allow(read, discovery, "endpointslices"),
		allow(read, netw, "ingresses", "ingressclasses"),
		allow("get update patch", netw, "ingresses/status"),
	}, eventWrites...)...), users(IngressUser))

	// Cluster DNS: names from Services, their endpoints and pods.
	add(clusterRole("system:kforge:dns", append([]rbacv1.PolicyRule{
		allow(read, core, "services", "endpoints", "pods", "namespaces"),
		allow(read, discovery, "endpointslices"),
	}, eventWrites...)...), users(DNSUser))

	return p
}

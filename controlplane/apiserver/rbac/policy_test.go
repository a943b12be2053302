package rbac

import (
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// bootstrapped returns an Authorizer whose index holds the bootstrap policy.
func bootstrapped(t *testing.T) *Authorizer {
	t.Helper()
	a := New(nil, nil)
	p := Bootstrap()
	objs := map[string]any{}
	for _, o := range p.ClusterRoles {
		objs["clusterroles/"+o.Name] = o
	}
	for _, o := range p.ClusterRoleBindings {
		objs["clusterrolebindings/"+o.Name] = o
	}
	for _, o := range p.Roles {
		objs["roles/"+o.Namespace+"/"+o.Name] = o
	}
	for _, o := range p.RoleBindings {
		objs["rolebindings/"+o.Namespace+"/"+o.Name] = o
	}
	load(t, a, objs)
	return a
}

func TestBootstrapPolicyGrants(t *testing.T) {
	a := bootstrapped(t)
	u := func(name string, groups ...string) User {
		return User{Name: name, Groups: append(groups, Authenticated)}
	}
	var (
		scheduler = u(SchedulerUser)
		cm        = u(ControllerManager)
		node      = u("system:node:w1", Nodes)
		proxy     = u(ProxyUser)
		ingress   = u(IngressUser)
		dns       = u(DNSUser)
		nobody    = u("nobody")
		sa        = u("system:serviceaccount:default:app", ServiceAccounts, ServiceAccounts+":default")
	)
	tests := []struct {
		who  User
		at   Attributes
		want bool
	}{
		{nobody, path("get", "/api"), true},
		{nobody, path("get", "/apis/apps/v1"), true},
		{nobody, path("get", "/version"), true},
		{nobody, path("get", "/openapi/v3"), true},
		{nobody, path("post", "/api"), false},
		{nobody, path("get", "/metrics"), false},
		{nobody, res("list", "", "pods", "", "default", ""), false},
		{nobody, res("create", "authorization.k8s.io", "selfsubjectaccessreviews", "", "", ""), true},

		{scheduler, res("list", "", "pods", "", "", ""), true},
		{scheduler, res("watch", "", "pods", "", "", ""), true},
		{scheduler, res("create", "", "pods", "binding", "default", "p"), true},
		{scheduler, res("patch", "", "pods", "status", "default", "p"), true},
		{scheduler, res("update", "", "pods", "", "default", "p"), false},
		{scheduler, res("list", "", "nodes", "", "", ""), true},
		{scheduler, res("update", "", "nodes", "", "", "n"), false},
		{scheduler, res("create", "coordination.k8s.io", "leases", "", "kube-system", ""), true},
		{scheduler, res("update", "coordination.k8s.io", "leases", "", "kube-system", "kube-scheduler"), true},
		{scheduler, res("update", "coordination.k8s.io", "leases", "", "default", "kube-scheduler"), false},
		{scheduler, res("create", "", "events", "", "default", ""), true},
		{scheduler, res("patch", "events.k8s.io", "events", "", "default", "e"), true},
		{scheduler, res("delete", "", "namespaces", "", "default", "default"), false},
		{scheduler, res("get", "", "secrets", "", "default", "s"), false},

		{cm, res("create", "apps", "replicasets", "", "default", ""), true},
		{cm, res("update", "apps", "deployments", "status", "default", "d"), true},
		{cm, res("create", "", "pods", "", "default", ""), true},
		{cm, res("update", "discovery.k8s.io", "endpointslices", "", "default", "e"), true},
		{cm, res("update", "", "namespaces", "finalize", "x", "x"), true},
		{cm, res("delete", "networking.k8s.io", "ingresses", "", "x", "i"), true},
		// The namespace controller: every namespaced resource listed and
		// deleted (one by one or as a collection), the namespace's status
		// and finalize written.
		{cm, res("deletecollection", "networking.k8s.io", "ingresses", "", "x", ""), true},
		{cm, res("deletecollection", "rbac.authorization.k8s.io", "rolebindings", "", "x", ""), true},
		{cm, res("list", "rbac.authorization.k8s.io", "roles", "", "x", ""), true},
		{cm, res("update", "", "namespaces", "status", "", "x"), true},
		{cm, res("create", "rbac.authorization.k8s.io", "rolebindings", "", "x", ""), false},
		{cm, res("update", "coordination.k8s.io", "leases", "", "kube-system", "kube-controller-manager"), true},
		{cm, res("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""), false},

		// RBAC grants a node nothing of its own: the Node authorizer does
		// (NodeRules, narrowed by the graph).
		{node, res("create", "", "nodes", "", "", ""), false},
		{node, res("patch", "", "nodes", "status", "", "w1"), false},
		{node, res("watch", "", "pods", "", "", ""), false},
		{node, res("update", "", "pods", "status", "default", "p"), false},
		{node, res("update", "coordination.k8s.io", "leases", "", "kube-node-lease", "w1"), false},
		{node, res("get", "", "secrets", "", "default", "s"), false},
		{node, res("create", "", "events", "", "default", ""), false},
		{node, path("get", "/api"), true},

		{sa, path("get", "/.well-known/openid-configuration"), true},
		{sa, path("get", "/openid/v1/jwks"), true},
		{nobody, path("get", "/openid/v1/jwks"), false},
		{sa, res("list", "", "pods", "", "default", ""), false},

		{proxy, res("watch", "discovery.k8s.io", "endpointslices", "", "", ""), true},
		{proxy, res("list", "", "services", "", "", ""), true},
		{proxy, res("get", "", "secrets", "", "default", "s"), false},

		{ingress, res("watch", "networking.k8s.io", "ingresses", "", "", ""), true},
		{ingress, res("list", "networking.k8s.io", "ingressclasses", "", "", ""), true},
		{ingress, res("update", "networking.k8s.io", "ingresses", "status", "default", "i"), true},
		{ingress, res("update", "networking.k8s.io", "ingresses", "", "default", "i"), false},
		{ingress, res("create", "networking.k8s.io", "ingressclasses", "", "", "kforge"), true},
		{ingress, res("delete", "networking.k8s.io", "ingressclasses", "", "", "kforge"), false},
		{ingress, res("get", "", "secrets", "", "default", "tls"), true},
		{ingress, res("watch", "", "endpoints", "", "", ""), true},

		{dns, res("watch", "", "services", "", "", ""), true},
		{dns, res("list", "discovery.k8s.io", "endpointslices", "", "", ""), true},
		{dns, res("get", "", "secrets", "", "default", "s"), false},
	}
	for _, tt := range tests {
		at := tt.at
		at.User = tt.who
		if got, _ := a.Authorize(at); got != tt.want {
			t.Errorf("%s: %s %s/%s/%s ns=%q path=%q: allowed=%v, want %v",
				tt.who.Name, at.Verb, at.APIGroup, at.Resource, at.Subresource, at.Namespace, at.Path, got, tt.want)
		}
	}
}

func TestNodeRulesCoverTheAgent(t *testing.T) {
	node := User{Name: "system:node:w1", Groups: []string{Nodes, Authenticated}}
	rules := NodeRules()
	allowed := func(at Attributes) bool {
		at.User = node
		for i := range rules {
			if RuleAllows(at, &rules[i]) {
				return true
			}
		}
		return false
	}
	for _, tt := range []struct {
		at   Attributes
		want bool
	}{
		{res("create", "", "nodes", "", "", ""), true},
		{res("patch", "", "nodes", "status", "", "w1"), true},
		{res("watch", "", "pods", "", "", ""), true},
		{res("update", "", "pods", "status", "default", "p"), true},
		{res("delete", "", "pods", "", "default", "p"), true},
		{res("create", "", "pods", "binding", "default", "p"), false},
		{res("update", "coordination.k8s.io", "leases", "", "kube-node-lease", "w1"), true},
		{res("get", "", "secrets", "", "default", "s"), true},
		{res("create", "", "secrets", "", "default", ""), false},
		{res("create", "", "serviceaccounts", "token", "default", "default"), true},
		{res("create", "", "events", "", "default", ""), true},
		{res("create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""), true},
		{res("create", "authentication.k8s.io", "tokenreviews", "", "", ""), true},
		{res("list", "", "services", "", "", ""), true},
		{res("update", "", "services", "", "default", "s"), false},
		{res("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""), false},
	} {
		if got := allowed(tt.at); got != tt.want {
			t.Errorf("node rules: %s %s/%s/%s: allowed=%v, want %v", tt.at.Verb, tt.at.APIGroup, tt.at.Resource, tt.at.Subresource, got, tt.want)
		}
	}
}

func TestAggregatedRolesSelectTheirParts(t *testing.T) {
	p := Bootstrap()
	byName := map[string]*rbacv1.ClusterRole{}
	for _, r := range p.ClusterRoles {
		byName[r.Name] = r
	}
	for _, tt := range []struct{ role, part, joins string }{
		{"view", "system:aggregate-to-view", "edit"},
		{"edit", "system:aggregate-to-edit", "admin"},
		{"admin", "system:aggregate-to-admin", ""},
	} {
		r, part := byName[tt.role], byName[tt.part]
		if r == nil || part == nil || r.AggregationRule == nil || len(r.AggregationRule.ClusterRoleSelectors) != 1 {
			t.Fatalf("%s: no aggregation rule or part", tt.role)
		}
		if got := r.AggregationRule.ClusterRoleSelectors[0].MatchLabels[AggregateToLabel(tt.role)]; got != "true" {
			t.Errorf("%s selects %v", tt.role, r.AggregationRule.ClusterRoleSelectors[0].MatchLabels)
		}
		if part.Labels[AggregateToLabel(tt.role)] != "true" {
			t.Errorf("%s is not labelled into %s", tt.part, tt.role)
		}
		if tt.joins != "" && r.Labels[AggregateToLabel(tt.joins)] != "true" {
			t.Errorf("%s does not join %s", tt.role, tt.joins)
		}
	}
	for _, b := range p.ClusterRoleBindings {
		if b.Name == "system:node" && len(b.Subjects) != 0 {
			t.Errorf("system:node is bound to %v: nodes get their rights from the Node authorizer only", b.Subjects)
		}
	}
}

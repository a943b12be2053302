package rbac

import (
	"encoding/json"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func res(verb, group, resource, sub, ns, name string) Attributes {
	return Attributes{Verb: verb, ResourceRequest: true, APIGroup: group, Resource: resource, Subresource: sub, Namespace: ns, Name: name}
}

func path(verb, p string) Attributes { return Attributes{Verb: verb, Path: p} }

func TestRuleAllows(t *testing.T) {
	podsRead := allow("get list watch", "", "pods")
	tests := []struct {
		name string
		rule rbacv1.PolicyRule
		at   Attributes
		want bool
	}{
		{"exact", podsRead, res("list", "", "pods", "", "default", ""), true},
		{"other verb", podsRead, res("delete", "", "pods", "", "default", "x"), false},
		{"other group", podsRead, res("list", "apps", "pods", "", "default", ""), false},
		{"other resource", podsRead, res("list", "", "secrets", "", "default", ""), false},
		{"resource rule does not grant subresource", podsRead, res("get", "", "pods", "status", "default", "x"), false},
		{"subresource rule", allow("update", "", "pods/status"), res("update", "", "pods", "status", "ns", "x"), true},
		{"subresource rule does not grant resource", allow("update", "", "pods/status"), res("update", "", "pods", "", "ns", "x"), false},
		{"subresource rule other sub", allow("update", "", "pods/status"), res("update", "", "pods", "binding", "ns", "x"), false},
		{"scale", allow("update", "apps", "deployments/scale"), res("update", "apps", "deployments", "scale", "ns", "d"), true},
		{"star subresource", allow("get", "apps", "*/scale"), res("get", "apps", "replicasets", "scale", "ns", "r"), true},
		{"star subresource needs a subresource", allow("get", "apps", "*/scale"), res("get", "apps", "replicasets", "", "ns", "r"), false},
		{"star resource covers subresources", allow("get", "apps", "*"), res("get", "apps", "deployments", "status", "ns", "d"), true},
		{"star verb", allow("*", "", "pods"), res("deletecollection", "", "pods", "", "ns", ""), true},
		{"star group", allow("get", "*", "leases"), res("get", "coordination.k8s.io", "leases", "", "ns", "l"), true},
		{"resourceNames match", rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"a"}},
			res("get", "", "configmaps", "", "ns", "a"), true},
		{"resourceNames other", rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"a"}},
			res("get", "", "configmaps", "", "ns", "b"), false},
		{"resourceNames never grant list", rbacv1.PolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"a"}},
			res("list", "", "configmaps", "", "ns", ""), false},
		{"resource rule never grants a path", podsRead, path("get", "/api"), false},
		{"url rule never grants a resource", allowURLs("*", "*"), res("get", "", "pods", "", "ns", "p"), false},
		{"url exact", allowURLs("get", "/version"), path("get", "/version"), true},
		{"url exact is not a prefix", allowURLs("get", "/version"), path("get", "/version/x"), false},
		{"url star prefix", allowURLs("get", "/apis/*"), path("get", "/apis/apps/v1"), true},
		{"url star prefix excludes parent", allowURLs("get", "/apis/*"), path("get", "/apis"), false},
		{"url all", allowURLs("get", "*"), path("get", "/anything"), true},
		{"url verb", allowURLs("get", "/api"), path("post", "/api"), false},
		{"empty rule", rbacv1.PolicyRule{}, res("get", "", "pods", "", "ns", "p"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RuleAllows(tt.at, &tt.rule); got != tt.want {
				t.Fatalf("RuleAllows(%+v, %+v) = %v, want %v", tt.at, tt.rule, got, tt.want)
			}
		})
	}
}

func TestSubjectMatches(t *testing.T) {
	bob := User{Name: "bob", Groups: []string{"devs", Authenticated}}
	sa := User{Name: "system:serviceaccount:ns1:builder", Groups: []string{"system:serviceaccounts", Authenticated}}
	tests := []struct {
		name string
		s    rbacv1.Subject
		u    User
		ns   string
		want bool
	}{
		{"user", rbacv1.Subject{Kind: "User", Name: "bob"}, bob, "", true},
		{"other user", rbacv1.Subject{Kind: "User", Name: "alice"}, bob, "", false},
		{"user kind is not a group", rbacv1.Subject{Kind: "User", Name: "devs"}, bob, "", false},
		{"group", rbacv1.Subject{Kind: "Group", Name: "devs"}, bob, "", true},
		{"other group", rbacv1.Subject{Kind: "Group", Name: "ops"}, bob, "", false},
		{"group kind is not a user", rbacv1.Subject{Kind: "Group", Name: "bob"}, bob, "", false},
		{"service account", rbacv1.Subject{Kind: "ServiceAccount", Namespace: "ns1", Name: "builder"}, sa, "", true},
		{"service account other ns", rbacv1.Subject{Kind: "ServiceAccount", Namespace: "ns2", Name: "builder"}, sa, "", false},
		{"service account defaults to binding ns", rbacv1.Subject{Kind: "ServiceAccount", Name: "builder"}, sa, "ns1", true},
		{"service account without any ns", rbacv1.Subject{Kind: "ServiceAccount", Name: "builder"}, sa, "", false},
		{"unknown kind", rbacv1.Subject{Kind: "Robot", Name: "bob"}, bob, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := subjectMatches(&tt.s, tt.u, tt.ns); got != tt.want {
				t.Fatalf("subjectMatches(%+v, %+v, %q) = %v, want %v", tt.s, tt.u, tt.ns, got, tt.want)
			}
		})
	}
}

// load puts objects into an Authorizer's index as the watch would.
func load(t *testing.T, a *Authorizer, objs map[string]any) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, o := range objs {
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		a.applyLocked(Prefix+key, data)
	}
}

func TestAuthorizeIndex(t *testing.T) {
	a := New(nil, nil)
	reader := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "reader"}, Rules: []rbacv1.PolicyRule{allow("get list", "", "pods")}}
	local := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "a"}, Rules: []rbacv1.PolicyRule{allow("get", "", "configmaps")}}
	load(t, a, map[string]any{
		"clusterroles/reader": reader,
		"roles/a/cm":          local,
		"rolebindings/a/bob-reader": &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob-reader", Namespace: "a"},
			Subjects: users("bob"), RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "reader"}},
		"rolebindings/a/bob-cm": &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob-cm", Namespace: "a"},
			Subjects: users("bob"), RoleRef: rbacv1.RoleRef{Kind: "Role", Name: "cm"}},
		// A Role of the same name in another namespace must not be used.
		"rolebindings/b/bob-cm": &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob-cm", Namespace: "b"},
			Subjects: users("bob"), RoleRef: rbacv1.RoleRef{Kind: "Role", Name: "cm"}},
		"clusterrolebindings/ops": &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ops"},
			Subjects: groups("ops"), RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "reader"}},
		"clusterrolebindings/dangling": &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "dangling"},
			Subjects: users("carol"), RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "gone"}},
	})
	bob := User{Name: "bob", Groups: []string{Authenticated}}
	opsUser := User{Name: "olga", Groups: []string{"ops", Authenticated}}
	carol := User{Name: "carol", Groups: []string{Authenticated}}
	with := func(u User, at Attributes) Attributes { at.User = u; return at }
	tests := []struct {
		name   string
		at     Attributes
		want   bool
		reason string
	}{
		{"rolebinding to clusterrole in its ns", with(bob, res("list", "", "pods", "", "a", "")), true, ""},
		{"rolebinding not in other ns", with(bob, res("list", "", "pods", "", "c", "")), false, ""},
		{"rolebinding never cluster-wide", with(bob, res("list", "", "pods", "", "", "")), false, ""},
		{"rolebinding to role", with(bob, res("get", "", "configmaps", "", "a", "x")), true, ""},
		{"role from another ns not used", with(bob, res("get", "", "configmaps", "", "b", "x")), false, `RBAC: role.rbac.authorization.k8s.io "cm" not found`},
		{"clusterrolebinding to group, any ns", with(opsUser, res("get", "", "pods", "", "z", "p")), true, ""},
		{"clusterrolebinding to group, cluster-wide", with(opsUser, res("list", "", "pods", "", "", "")), true, ""},
		{"dangling roleRef reported", with(carol, res("get", "", "pods", "", "a", "p")), false, `RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := a.Authorize(tt.at)
			if got != tt.want || reason != tt.reason {
				t.Fatalf("Authorize = %v, %q; want %v, %q", got, reason, tt.want, tt.reason)
			}
		})
	}
	// Deleting the binding revokes.
	a.mu.Lock()
	a.applyLocked(Prefix+"rolebindings/a/bob-reader", nil)
	a.mu.Unlock()
	if ok, _ := a.Authorize(with(bob, res("list", "", "pods", "", "a", ""))); ok {
		t.Fatal("still allowed after the binding was deleted")
	}
}

// The bootstrap policy must be internally consistent: every binding names
// a role that the policy defines.
func TestBootstrapPolicyReferences(t *testing.T) {
	p := Bootstrap()
	crs := map[string]bool{}
	for _, r := range p.ClusterRoles {
		crs[r.Name] = true
	}
	rs := map[string]bool{}
	for _, r := range p.Roles {
		rs[r.Namespace+"/"+r.Name] = true
	}
	for _, b := range p.ClusterRoleBindings {
		if b.RoleRef.Kind != "ClusterRole" || !crs[b.RoleRef.Name] {
			t.Errorf("clusterrolebinding %s: dangling roleRef %+v", b.Name, b.RoleRef)
		}
	}
	for _, b := range p.RoleBindings {
		if (b.RoleRef.Kind == "Role" && !rs[b.Namespace+"/"+b.RoleRef.Name]) || (b.RoleRef.Kind == "ClusterRole" && !crs[b.RoleRef.Name]) {
			t.Errorf("rolebinding %s/%s: dangling roleRef %+v", b.Namespace, b.Name, b.RoleRef)
		}
	}
}

package rbac

import (
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

func rule(verbs, groups, resources []string, names ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: verbs, APIGroups: groups, Resources: resources, ResourceNames: names}
}

func TestCovers(t *testing.T) {
	all := []string{"*"}
	cases := []struct {
		name            string
		owner, servant  []rbacv1.PolicyRule
		want            bool
		missingExpected int
	}{
		{"everything covers anything", []rbacv1.PolicyRule{rule(all, all, all)},
			[]rbacv1.PolicyRule{rule([]string{"get", "delete"}, []string{"", "apps"}, []string{"secrets", "deployments"})}, true, 0},
		{"same rule", []rbacv1.PolicyRule{rule([]string{"get", "list"}, []string{""}, []string{"pods"})},
			[]rbacv1.PolicyRule{rule([]string{"list"}, []string{""}, []string{"pods"})}, true, 0},
		{"more verbs than held", []rbacv1.PolicyRule{rule([]string{"get"}, []string{""}, []string{"pods"})},
			[]rbacv1.PolicyRule{rule([]string{"get", "delete"}, []string{""}, []string{"pods"})}, false, 1},
		{"a wildcard is not covered by a list", []rbacv1.PolicyRule{rule([]string{"get", "list", "watch"}, []string{""}, []string{"pods"})},
			[]rbacv1.PolicyRule{rule(all, []string{""}, []string{"pods"})}, false, 1},
		{"names narrow the owner", []rbacv1.PolicyRule{rule([]string{"get"}, []string{""}, []string{"secrets"}, "a")},
			[]rbacv1.PolicyRule{rule([]string{"get"}, []string{""}, []string{"secrets"})}, false, 1},
		{"a named grant inside an unnamed one", []rbacv1.PolicyRule{rule([]string{"get"}, []string{""}, []string{"secrets"})},
			[]rbacv1.PolicyRule{rule([]string{"get"}, []string{""}, []string{"secrets"}, "a", "b")}, true, 0},
		{"*/status covers pods/status", []rbacv1.PolicyRule{rule([]string{"update"}, []string{""}, []string{"*/status"})},
			[]rbacv1.PolicyRule{rule([]string{"update"}, []string{""}, []string{"pods/status"})}, true, 0},
		{"other group", []rbacv1.PolicyRule{rule(all, []string{""}, all)},
			[]rbacv1.PolicyRule{rule([]string{"get"}, []string{"apps"}, []string{"deployments"})}, false, 1},
		{"URL prefix", []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/apis/*"}}},
			[]rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/apis/apps", "/healthz"}}}, false, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, missing := Covers(tc.owner, tc.servant)
			if ok != tc.want || len(missing) != tc.missingExpected {
				t.Fatalf("Covers = %v, missing %v", ok, FormatRules(missing))
			}
		})
	}
}

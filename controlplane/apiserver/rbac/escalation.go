package rbac

import (
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
)

// Covers reports whether the owner's rules grant everything the servant
// rules do, as upstream's escalation check does: each servant rule is
// broken into single grants (one verb on one group/resource/name, or one
// verb on one URL), and each must be allowed by some owner rule. A
// wildcard in a servant rule is taken literally: only a wildcard covers it.
func Covers(owner, servant []rbacv1.PolicyRule) (ok bool, missing []rbacv1.PolicyRule) {
	for _, s := range servant {
		for _, atom := range breakdown(s) {
			if !coveredByAny(owner, atom) {
				missing = append(missing, atom)
			}
		}
	}
	return len(missing) == 0, missing
}

func breakdown(r rbacv1.PolicyRule) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, v := range r.Verbs {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				if len(r.ResourceNames) == 0 {
					out = append(out, rbacv1.PolicyRule{Verbs: []string{v}, APIGroups: []string{g}, Resources: []string{res}})
				}
				for _, n := range r.ResourceNames {
					out = append(out, rbacv1.PolicyRule{Verbs: []string{v}, APIGroups: []string{g}, Resources: []string{res}, ResourceNames: []string{n}})
				}
			}
		}
		for _, u := range r.NonResourceURLs {
			out = append(out, rbacv1.PolicyRule{Verbs: []string{v}, NonResourceURLs: []string{u}})
		}
	}
	return out
}

func has(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func coveredByAny(owner []rbacv1.PolicyRule, atom rbacv1.PolicyRule) bool {
	for i := range owner {
		if covers(&owner[i], atom) {
			return true
		}
	}
	return false
}

// covers checks one single grant against one owner rule.
func covers(o *rbacv1.PolicyRule, a rbacv1.PolicyRule) bool {
	verb := a.Verbs[0]
	if !has(o.Verbs, rbacv1.VerbAll) && !has(o.Verbs, verb) {
		return false
	}
	if len(a.NonResourceURLs) > 0 {
		u := a.NonResourceURLs[0]
		for _, ou := range o.NonResourceURLs {
			if ou == rbacv1.NonResourceAll || ou == u ||
				strings.HasSuffix(ou, "*") && strings.HasPrefix(u, strings.TrimSuffix(ou, "*")) {
				return true
			}
		}
		return false
	}
	g, res := a.APIGroups[0], a.Resources[0]
	if !has(o.APIGroups, rbacv1.APIGroupAll) && !has(o.APIGroups, g) {
		return false
	}
	resOK := has(o.Resources, rbacv1.ResourceAll) || has(o.Resources, res)
	if !resOK {
		if i := strings.Index(res, "/"); i >= 0 && has(o.Resources, "*"+res[i:]) {
			resOK = true
		}
	}
	if !resOK {
		return false
	}
	if len(o.ResourceNames) == 0 {
		return true
	}
	return len(a.ResourceNames) == 1 && has(o.ResourceNames, a.ResourceNames[0])
}

// FormatRules prints rules the way upstream's escalation error does.
func FormatRules(rules []rbacv1.PolicyRule) string {
	parts := make([]string, len(rules))
	for i, r := range rules {
		var fields []string
		q := func(xs []string) string {
			s := make([]string, len(xs))
			for j, x := range xs {
				s[j] = fmt.Sprintf("%q", x)
			}
			return "[" + strings.Join(s, " ") + "]"
		}
		if len(r.APIGroups) > 0 {
			fields = append(fields, "APIGroups:"+q(r.APIGroups))
		}
		if len(r.Resources) > 0 {
			fields = append(fields, "Resources:"+q(r.Resources))
		}
		if len(r.ResourceNames) > 0 {
			fields = append(fields, "ResourceNames:"+q(r.ResourceNames))
		}
		if len(r.NonResourceURLs) > 0 {
			fields = append(fields, "NonResourceURLs:"+q(r.NonResourceURLs))
		}
		fields = append(fields, "Verbs:"+q(r.Verbs))
		parts[i] = "{" + strings.Join(fields, ", ") + "}"
	}
	return strings.Join(parts, "\n")
}

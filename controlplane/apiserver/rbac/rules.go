package rbac

import (
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
)

// User is the authenticated caller.
type User struct {
	Name   string
	Groups []string
}

// Attributes describe one request to authorize. A resource request names
// an API group, a resource (and maybe a subresource), a namespace ("" for
// cluster-scoped requests) and maybe an object name; any other request is
// a non-resource request for Path.
type Attributes struct {
	User User
	// Verb is get, list, watch, create, update, patch, delete,
	// deletecollection for resources; the lower-cased HTTP method for
	// non-resource paths.
	Verb string

	ResourceRequest bool
	APIGroup        string
	Resource        string
	Subresource     string
	Namespace       string
	Name            string

	// Path is the URL path of a non-resource request ("/apis", "/version").
	Path string
}

// RuleAllows reports whether rule grants the request described by a.
func RuleAllows(a Attributes, rule *rbacv1.PolicyRule) bool {
	if !verbMatches(rule, a.Verb) {
		return false
	}
	if !a.ResourceRequest {
		return nonResourceURLMatches(rule, a.Path)
	}
	combined := a.Resource
	if a.Subresource != "" {
		combined += "/" + a.Subresource
	}
	return apiGroupMatches(rule, a.APIGroup) &&
		resourceMatches(rule, combined, a.Subresource) &&
		resourceNameMatches(rule, a.Name)
}

func verbMatches(rule *rbacv1.PolicyRule, verb string) bool {
	for _, v := range rule.Verbs {
		if v == rbacv1.VerbAll || v == verb {
			return true
		}
	}
	return false
}

func apiGroupMatches(rule *rbacv1.PolicyRule, group string) bool {
	for _, g := range rule.APIGroups {
		if g == rbacv1.APIGroupAll || g == group {
			return true
		}
	}
	return false
}

// resourceMatches matches "resource" or "resource/subresource" against the
// rule's resources; "*" matches everything (subresources included) and
// "*/sub" matches that subresource of any resource.
func resourceMatches(rule *rbacv1.PolicyRule, combined, sub string) bool {
	for _, r := range rule.Resources {
		switch {
		case r == rbacv1.ResourceAll, r == combined:
			return true
		case sub != "" && strings.HasPrefix(r, "*/") && r[2:] == sub:
			return true
		}
	}
	return false
}

// resourceNameMatches: no names in the rule means any name; otherwise the
// request must name one of them, so a rule with names never grants list,
// watch, deletecollection or create without a name.
func resourceNameMatches(rule *rbacv1.PolicyRule, name string) bool {
	if len(rule.ResourceNames) == 0 {
		return true
	}
	for _, n := range rule.ResourceNames {
		if n == name {
			return true
		}
	}
	return false
}

// nonResourceURLMatches: "*" matches every path, an entry ending in "*" is
// a prefix, anything else must be equal.
func nonResourceURLMatches(rule *rbacv1.PolicyRule, path string) bool {
	for _, u := range rule.NonResourceURLs {
		switch {
		case u == rbacv1.NonResourceAll, u == path:
			return true
		case strings.HasSuffix(u, "*") && strings.HasPrefix(path, strings.TrimSuffix(u, "*")):
			return true
		}
	}
	return false
}

// subjectsInclude reports whether any subject names the user. namespace is
// the binding's namespace ("" for a ClusterRoleBinding): a ServiceAccount
// subject without a namespace is taken to be in it.
func subjectsInclude(subjects []rbacv1.Subject, u User, namespace string) bool {
	for i := range subjects {
		if subjectMatches(&subjects[i], u, namespace) {
			return true
		}
	}
	return false
}

func subjectMatches(s *rbacv1.Subject, u User, namespace string) bool {
	switch s.Kind {
	case rbacv1.UserKind:
		return u.Name == s.Name
	case rbacv1.GroupKind:
		for _, g := range u.Groups {
			if g == s.Name {
				return true
			}
		}
		return false
	case rbacv1.ServiceAccountKind:
		ns := s.Namespace
		if ns == "" {
			ns = namespace
		}
		if ns == "" || s.Name == "" {
			return false
		}
		return u.Name == "system:serviceaccount:"+ns+":"+s.Name
	default:
		return false
	}
}

package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

// impersonate applies the Impersonate-User, -Group and -Uid headers
// (kubectl --as, --as-group): the caller must be allowed the "impersonate"
// verb on users, groups and uids, and the request then runs as the
// impersonated user. Without the headers the caller is returned as is.
func (s *Server) impersonate(ctx context.Context, r *http.Request, caller user) (user, error) {
	name := r.Header.Get(authenticationv1.ImpersonateUserHeader)
	groups := r.Header.Values(authenticationv1.ImpersonateGroupHeader)
	uid := r.Header.Get(authenticationv1.ImpersonateUIDHeader)
	var extras bool
	for k := range r.Header {
		extras = extras || strings.HasPrefix(k, authenticationv1.ImpersonateUserExtraHeaderPrefix)
	}
	if name == "" {
		if len(groups) > 0 || uid != "" || extras {
			return user{}, apierrors.NewBadRequest("requested impersonation of groups, uid or extra without impersonating a user")
		}
		return caller, nil
	}
	check := func(resource, ns, obj string) error {
		if caller.in(rbac.Masters) {
			return nil
		}
		at := rbac.Attributes{User: rbac.User{Name: caller.Name, Groups: caller.Groups}, Verb: "impersonate",
			ResourceRequest: true, APIGroup: "", Resource: resource, Namespace: ns, Name: obj}
		allowed, reason, err := s.allows(ctx, at)
		if err != nil || allowed {
			return err
		}
		scope := "at the cluster scope"
		if ns != "" {
			scope = fmt.Sprintf("in the namespace %q", ns)
		}
		what := fmt.Sprintf("User %q cannot impersonate resource %q in API group \"\" %s", caller.Name, resource, scope)
		if reason != "" {
			what += ": " + reason
		}
		return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, obj, errors.New(what))
	}
	// A service account is impersonated as upstream does it: the
	// "impersonate" verb on serviceaccounts in its namespace, and its
	// groups when none are asked for.
	saNS, saName, isSA := serviceAccountUser(name)
	if isSA {
		if err := check("serviceaccounts", saNS, saName); err != nil {
			return user{}, err
		}
	} else if err := check("users", "", name); err != nil {
		return user{}, err
	}
	for _, g := range groups {
		if err := check("groups", "", g); err != nil {
			return user{}, err
		}
	}
	if uid != "" {
		if err := check("uids", "", uid); err != nil {
			return user{}, err
		}
	}
	if extras {
		return user{}, apierrors.NewBadRequest("impersonating user extras is not supported")
	}
	out := user{Name: name, Groups: append([]string{}, groups...)}
	if isSA && len(groups) == 0 {
		out.Groups = []string{serviceAccountsGroup, serviceAccountsPrefix + saNS}
	}
	if name != anonymousUser && !out.in(authenticatedGrp) {
		out.Groups = append(out.Groups, "system:authenticated")
	}
	return out, nil
}

// selfSubjectReviewResources answer `kubectl auth whoami`.
func selfSubjectReviewResources() []*Resource {
	return []*Resource{{Group: "authentication.k8s.io", Version: "v1", Kind: "SelfSubjectReview", Plural: "selfsubjectreviews",
		New: newOf[authenticationv1.SelfSubjectReview](), NewList: newOf[authenticationv1.SelfSubjectReview](),
		Review: func(_ *Server, _ context.Context, u user, obj runtime.Object) (runtime.Object, error) {
			rev := obj.(*authenticationv1.SelfSubjectReview)
			rev.Status.UserInfo = authenticationv1.UserInfo{Username: u.Name, Groups: u.Groups}
			return rev, nil
		}}}
}

// serviceAccountUser splits system:serviceaccount:NS:NAME.
func serviceAccountUser(name string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(name, serviceAccountPrefix)
	if !ok {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, ":")
	return ns, sa, ok && ns != "" && sa != "" && !strings.Contains(sa, ":")
}

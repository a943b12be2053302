package apiserver

import (
	"context"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

// reviewResources are the create-only, never-stored kinds that answer
// "may I?" — what `kubectl auth can-i` asks.
func reviewResources() []*Resource {
	return []*Resource{
		{Group: "authorization.k8s.io", Version: "v1", Kind: "SelfSubjectAccessReview", Plural: "selfsubjectaccessreviews",
			New: newOf[authorizationv1.SelfSubjectAccessReview](), NewList: newOf[authorizationv1.SelfSubjectAccessReview](),
			Review: (*Server).reviewAccess},
		{Group: "authorization.k8s.io", Version: "v1", Kind: "SelfSubjectRulesReview", Plural: "selfsubjectrulesreviews",
			New: newOf[authorizationv1.SelfSubjectRulesReview](), NewList: newOf[authorizationv1.SelfSubjectRulesReview](),
			Review: (*Server).reviewRules},
	}
}

func (s *Server) reviewAccess(ctx context.Context, u user, obj runtime.Object) (runtime.Object, error) {
	rev := obj.(*authorizationv1.SelfSubjectAccessReview)
	at := rbac.Attributes{User: rbac.User{Name: u.Name, Groups: u.Groups}}
	switch ra, nra := rev.Spec.ResourceAttributes, rev.Spec.NonResourceAttributes; {
	case ra != nil && nra != nil:
		return nil, apierrors.NewBadRequest("spec: exactly one of resourceAttributes and nonResourceAttributes may be set")
	case ra != nil:
		at.ResourceRequest = true
		at.Verb, at.APIGroup, at.Resource, at.Subresource = ra.Verb, ra.Group, ra.Resource, ra.Subresource
		at.Namespace, at.Name = ra.Namespace, ra.Name
	case nra != nil:
		at.Verb, at.Path = nra.Verb, nra.Path
	default:
		return nil, apierrors.NewBadRequest("spec: one of resourceAttributes and nonResourceAttributes is required")
	}
	if u.in(rbac.Masters) {
		rev.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: "member of " + rbac.Masters}
		return rev, nil
	}
	allowed, reason, err := s.allows(ctx, at)
	if err != nil {
		return nil, err
	}
	rev.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: allowed, Reason: reason}
	return rev, nil
}

func (s *Server) reviewRules(ctx context.Context, u user, obj runtime.Object) (runtime.Object, error) {
	rev := obj.(*authorizationv1.SelfSubjectRulesReview)
	if u.in(rbac.Masters) {
		rev.Status = authorizationv1.SubjectRulesReviewStatus{
			ResourceRules:    []authorizationv1.ResourceRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}},
			NonResourceRules: []authorizationv1.NonResourceRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
		}
		return rev, nil
	}
	if err := s.authz.WaitForSync(ctx, s.cfg.AuthzSyncTimeout); err != nil {
		return nil, apierrors.NewServiceUnavailable("authorization is not ready yet: " + err.Error())
	}
	rules, incomplete := s.authz.RulesFor(rbac.User{Name: u.Name, Groups: u.Groups}, rev.Spec.Namespace)
	st := authorizationv1.SubjectRulesReviewStatus{ResourceRules: []authorizationv1.ResourceRule{}, NonResourceRules: []authorizationv1.NonResourceRule{}}
	for _, r := range rules {
		if len(r.NonResourceURLs) > 0 {
			st.NonResourceRules = append(st.NonResourceRules, authorizationv1.NonResourceRule{Verbs: r.Verbs, NonResourceURLs: r.NonResourceURLs})
			continue
		}
		st.ResourceRules = append(st.ResourceRules, authorizationv1.ResourceRule{Verbs: r.Verbs, APIGroups: r.APIGroups, Resources: r.Resources, ResourceNames: r.ResourceNames})
	}
	if len(incomplete) > 0 {
		st.Incomplete = true
		st.EvaluationError = strings.Join(incomplete, "; ")
	}
	rev.Status = st
	return rev, nil
}

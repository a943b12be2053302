package apiserver

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

// subjectAccessReviewResources are SubjectAccessReview and
// LocalSubjectAccessReview: "may this user do this?", asked about anyone
// by a caller allowed to create them (the node agents check their API's
// clients so). Create-only, never stored; answered by the authorizer
// that guards requests.
func subjectAccessReviewResources() []*Resource {
	return []*Resource{
		{Group: "authorization.k8s.io", Version: "v1", Kind: "SubjectAccessReview", Plural: "subjectaccessreviews",
			New: newOf[authorizationv1.SubjectAccessReview](), NewList: newOf[authorizationv1.SubjectAccessReview](),
			Review: (*Server).reviewSubjectAccess},
		{Group: "authorization.k8s.io", Version: "v1", Kind: "LocalSubjectAccessReview", Plural: "localsubjectaccessreviews",
			Namespaced: true,
			New:        newOf[authorizationv1.LocalSubjectAccessReview](), NewList: newOf[authorizationv1.LocalSubjectAccessReview](),
			Review: (*Server).reviewLocalSubjectAccess},
	}
}

// reviewNamespace gives a review posted to a namespace that namespace,
// refusing a body that names another, as upstream.
func reviewNamespace(req *request, obj runtime.Object) error {
	if req.ns == "" {
		return nil
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil
	}
	if ns := m.GetNamespace(); ns != "" && ns != req.ns {
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	m.SetNamespace(req.ns)
	return nil
}

func (s *Server) reviewSubjectAccess(ctx context.Context, _ user, obj runtime.Object) (runtime.Object, error) {
	rev := obj.(*authorizationv1.SubjectAccessReview)
	st, err := s.decideAccess(ctx, &rev.Spec)
	if err != nil {
		return nil, err
	}
	rev.Status = st
	return rev, nil
}

func (s *Server) reviewLocalSubjectAccess(ctx context.Context, _ user, obj runtime.Object) (runtime.Object, error) {
	rev := obj.(*authorizationv1.LocalSubjectAccessReview)
	if ra := rev.Spec.ResourceAttributes; ra == nil || ra.Namespace != rev.Namespace {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("spec.resourceAttributes.namespace must match metadata.namespace %q", rev.Namespace))
	}
	st, err := s.decideAccess(ctx, &rev.Spec)
	if err != nil {
		return nil, err
	}
	rev.Status = st
	return rev, nil
}

// decideAccess answers a review's spec as a request of that user would
// be: system:masters may do anything, everyone else what the authorizer
// chain (the Node authorizer, then RBAC) allows.
func (s *Server) decideAccess(ctx context.Context, spec *authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
	var none authorizationv1.SubjectAccessReviewStatus
	if spec.User == "" && len(spec.Groups) == 0 {
		return none, apierrors.NewBadRequest("spec: at least one of user or group must be specified")
	}
	u := user{Name: spec.User, Groups: spec.Groups}
	at := rbac.Attributes{User: rbac.User{Name: u.Name, Groups: u.Groups}}
	switch ra, nra := spec.ResourceAttributes, spec.NonResourceAttributes; {
	case ra != nil && nra != nil:
		return none, apierrors.NewBadRequest("spec: resourceAttributes and nonResourceAttributes are mutually exclusive")
	case ra != nil:
		at.ResourceRequest = true
		at.Verb, at.APIGroup, at.Resource, at.Subresource = ra.Verb, ra.Group, ra.Resource, ra.Subresource
		at.Namespace, at.Name = ra.Namespace, ra.Name
	case nra != nil:
		at.Verb, at.Path = nra.Verb, nra.Path
	default:
		return none, apierrors.NewBadRequest("spec: exactly one of nonResourceAttributes or resourceAttributes must be specified")
	}
	if u.in(rbac.Masters) {
		return authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: "member of " + rbac.Masters}, nil
	}
	allowed, reason, err := s.allows(ctx, at)
	if err != nil {
		return none, err
	}
	return authorizationv1.SubjectAccessReviewStatus{Allowed: allowed, Reason: reason}, nil
}

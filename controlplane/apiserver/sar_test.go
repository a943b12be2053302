package apiserver

import (
	"context"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

func TestSubjectAccessReviews(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	sar := func(user string, groups []string, verb, resource, sub, ns string) *authorizationv1.SubjectAccessReview {
		return &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource, Subresource: sub, Namespace: ns}}}
	}
	ask := func(c authorizationv1Client, r *authorizationv1.SubjectAccessReview) bool {
		t.Helper()
		out, err := c.Create(ctx, r, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create SubjectAccessReview: %v", err)
		}
		return out.Status.Allowed
	}
	admin := e.admin.AuthorizationV1().SubjectAccessReviews()
	if ask(admin, sar("alice", nil, "get", "pods", "", "default")) {
		t.Error("alice may get pods before any binding")
	}
	if !ask(admin, sar("root", []string{rbac.Masters}, "delete", "nodes", "", "")) {
		t.Error("system:masters is denied")
	}
	// The node agents may ask, and the apiserver's kubelet client may use
	// the agents' API.
	node := e.clientFor(t, "system:node:n1", rbac.Nodes).AuthorizationV1().SubjectAccessReviews()
	for _, sub := range []string{"proxy", "log", "stats", "metrics"} {
		if !ask(node, sar(rbac.KubeletClientUser, nil, "create", "nodes", sub, "")) {
			t.Errorf("the kubelet client may not create nodes/%s", sub)
		}
	}
	if ask(node, sar("bob", []string{rbac.Authenticated}, "get", "nodes", "proxy", "")) {
		t.Error("an authenticated user may use nodes/proxy")
	}
	// Asking is itself guarded.
	_, err := e.clientFor(t, "bob").AuthorizationV1().SubjectAccessReviews().Create(ctx, sar("alice", nil, "get", "pods", "", "default"), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("bob's SubjectAccessReview: %v, want 403", err)
	}
	if _, err := admin.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "x"}}, metav1.CreateOptions{}); !apierrors.IsBadRequest(err) {
		t.Errorf("a review without attributes: %v, want 400", err)
	}

	// A binding is seen once the RBAC index has it.
	if _, err := e.admin.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: "alice"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for !ask(admin, sar("alice", nil, "get", "pods", "log", "default")) {
		time.Sleep(20 * time.Millisecond)
	}
	if ask(admin, sar("alice", nil, "get", "pods", "log", "kube-system")) {
		t.Error("a RoleBinding in default allows kube-system")
	}

	// LocalSubjectAccessReview: the namespace of the URL.
	local := e.admin.AuthorizationV1().LocalSubjectAccessReviews("default")
	out, err := local.Create(ctx, &authorizationv1.LocalSubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "alice",
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods", Namespace: "default"}}}, metav1.CreateOptions{})
	if err != nil || !out.Status.Allowed || out.Namespace != "default" {
		t.Fatalf("LocalSubjectAccessReview: %+v, %v", out, err)
	}
	_, err = local.Create(ctx, &authorizationv1.LocalSubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "alice",
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods", Namespace: "kube-system"}}}, metav1.CreateOptions{})
	if !apierrors.IsBadRequest(err) {
		t.Errorf("LocalSubjectAccessReview for another namespace: %v, want 400", err)
	}
	if err := e.admin.AuthorizationV1().RESTClient().Get().Resource("subjectaccessreviews").Name("x").Do(ctx).Error(); !apierrors.IsMethodNotSupported(err) {
		t.Errorf("GET subjectaccessreviews/x: %v, want 405", err)
	}
}

type authorizationv1Client interface {
	Create(ctx context.Context, r *authorizationv1.SubjectAccessReview, o metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
}

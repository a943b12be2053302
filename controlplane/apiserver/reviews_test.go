package apiserver

import (
	"context"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSelfSubjectReviews(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	ask := func(cs interface {
		Create(context.Context, *authorizationv1.SelfSubjectAccessReview, metav1.CreateOptions) (*authorizationv1.SelfSubjectAccessReview, error)
	}, verb, resource, ns string) bool {
		t.Helper()
		r, err := cs.Create(ctx, &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource, Namespace: ns}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectAccessReview: %v", err)
		}
		return r.Status.Allowed
	}
	if !ask(e.admin.AuthorizationV1().SelfSubjectAccessReviews(), "delete", "nodes", "") {
		t.Error("admin may not delete nodes?")
	}
	bob := e.clientFor(t, "bob", "devs")
	if ask(bob.AuthorizationV1().SelfSubjectAccessReviews(), "list", "pods", "default") {
		t.Error("bob, with no bindings, may list pods?")
	}
	rules, err := bob.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: "default"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	canReview := false
	for _, r := range rules.Status.ResourceRules {
		for _, res := range r.Resources {
			canReview = canReview || res == "selfsubjectaccessreviews"
		}
	}
	if !canReview || len(rules.Status.NonResourceRules) == 0 {
		t.Errorf("bob's rules: %+v", rules.Status)
	}
	// Reviews are never stored: there is nothing to get.
	if _, err := e.admin.AuthorizationV1().RESTClient().Get().Resource("selfsubjectaccessreviews").DoRaw(ctx); !apierrors.IsMethodNotSupported(err) {
		t.Errorf("GET selfsubjectaccessreviews: %v", err)
	}
}

func TestNodeAgentSubresourcesAre503AndDryRunWritesNothing(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	pods := e.admin.CoreV1().Pods("default")
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
	dry, err := pods.Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil || dry.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		t.Fatalf("dry-run create: %v", err)
	}
	if _, err := pods.Get(ctx, "p", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry-run create was stored: %v", err)
	}
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Unscheduled: 400 as upstream, before any agent is looked for.
	if _, err = pods.GetLogs("p", &corev1.PodLogOptions{}).DoRaw(ctx); !apierrors.IsBadRequest(err) {
		t.Fatalf("pods/log of an unscheduled pod: %v", err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	if _, err := e.admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.99"}}
	if _, err := e.admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	if err := pods.Bind(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Scheduled, but this apiserver has no kubelet client: 503.
	if _, err = pods.GetLogs("p", &corev1.PodLogOptions{}).DoRaw(ctx); !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("pods/log: %v", err)
	}
	// pods/log is GET only.
	if err := pods.GetLogs("p", &corev1.PodLogOptions{}).Verb("DELETE").Do(ctx).Error(); !apierrors.IsMethodNotSupported(err) {
		t.Fatalf("DELETE pods/log: %v", err)
	}
	if err := pods.Delete(ctx, "p", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "p", metav1.GetOptions{}); err != nil {
		t.Fatalf("dry-run delete removed the pod: %v", err)
	}
	got, _ := pods.Get(ctx, "p", metav1.GetOptions{})
	got.Labels = map[string]string{"x": "y"}
	if _, err := pods.Update(ctx, got, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	if again, _ := pods.Get(ctx, "p", metav1.GetOptions{}); again.Labels["x"] == "y" || again.ResourceVersion != got.ResourceVersion {
		t.Fatalf("dry-run update was stored: %+v", again.ObjectMeta)
	}
}

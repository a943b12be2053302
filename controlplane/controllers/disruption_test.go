package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestPodDisruptionBudget: the disruption controller's status over a
// ReplicaSet of 3 ready pods, and evictions that take from it until the
// budget refuses with upstream's 429.
func TestPodDisruptionBudget(t *testing.T) {
	cs := startLocal(t)
	ctx := context.Background()
	ns := "pdb"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubelet := &fakeKubelet{}
	kctx, kcancel := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	kwg.Go(func() { kubelet.run(kctx, t, cs, ns) })
	defer kwg.Wait()
	defer kcancel()

	three := int32(3)
	lbl := map[string]string{"app": "db"}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.ReplicaSetSpec{Replicas: &three,
		Selector: &metav1.LabelSelector{MatchLabels: lbl},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbl},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}}}}}
	if _, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	maxUn := intstr.FromInt32(1)
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &maxUn, Selector: &metav1.LabelSelector{MatchLabels: lbl}}}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	both := intstr.FromString("50%")
	bad := pdb.DeepCopy()
	bad.Name, bad.Spec.MinAvailable = "both", &both
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("minAvailable and maxUnavailable: %v, want 422", err)
	}
	status := func(want policyv1.PodDisruptionBudgetStatus) func() error {
		return func() error {
			b, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "db", metav1.GetOptions{})
			if err != nil {
				return err
			}
			s := b.Status
			if s.ExpectedPods != want.ExpectedPods || s.DesiredHealthy != want.DesiredHealthy || s.CurrentHealthy != want.CurrentHealthy ||
				s.DisruptionsAllowed != want.DisruptionsAllowed || s.ObservedGeneration != b.Generation {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		}
	}
	eventually(t, "3 healthy, 1 disruption allowed", 20*time.Second, status(policyv1.PodDisruptionBudgetStatus{
		ExpectedPods: 3, DesiredHealthy: 2, CurrentHealthy: 3, DisruptionsAllowed: 1}))

	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=db"})
	if err != nil || len(pods.Items) != 3 {
		t.Fatalf("pods: %v %v", err, pods)
	}
	evict := func(name string) error {
		return cs.PolicyV1().Evictions(ns).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})
	}
	// The kubelet stand-in finishes graceful deletions; hold it so the
	// evicted pod stays terminating while the second eviction is tried.
	kcancel()
	kwg.Wait()
	if err := evict(pods.Items[0].Name); err != nil {
		t.Fatalf("first eviction: %v", err)
	}
	evicted, err := cs.CoreV1().Pods(ns).Get(ctx, pods.Items[0].Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range evicted.Status.Conditions {
		found = found || (c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue && c.Reason == "EvictionByEvictionAPI")
	}
	if !found || evicted.DeletionTimestamp == nil {
		t.Errorf("evicted pod: deletion %v, conditions %+v", evicted.DeletionTimestamp, evicted.Status.Conditions)
	}
	err = evict(pods.Items[1].Name)
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("second eviction: %v, want 429", err)
	}
	st := err.(apierrors.APIStatus).Status()
	if st.Message != "Cannot evict pod as it would violate the pod's disruption budget." || st.Details == nil || len(st.Details.Causes) != 1 ||
		st.Details.Causes[0].Type != policyv1.DisruptionBudgetCause {
		t.Errorf("refusal: %+v %+v", st, st.Details)
	}

	// Once the replacement is ready the budget allows one again.
	kctx2, kcancel2 := context.WithCancel(ctx)
	defer kcancel2()
	kwg.Go(func() { kubelet.run(kctx2, t, cs, ns) })
	eventually(t, "eviction allowed again", 20*time.Second, func() error { return evict(pods.Items[1].Name) })
}

package apiserver

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAdmissionTaintsNewNodes(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	nodes := e.admin.CoreV1().Nodes()
	n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}
	if len(n.Spec.Taints) != 1 || !n.Spec.Taints[0].MatchTaint(&want) {
		t.Errorf("new node's taints %+v, want only %v", n.Spec.Taints, want)
	}
	// A node that already carries it (or others) keeps its own list.
	n2 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w2"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{
		{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule},
	}}}
	if n2, err = nodes.Create(ctx, n2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(n2.Spec.Taints) != 2 {
		t.Errorf("taints %+v, want the two given", n2.Spec.Taints)
	}
	// The taint is added on create only: an update may remove it.
	n.Spec.Taints = nil
	if n, err = nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil || len(n.Spec.Taints) != 0 {
		t.Errorf("after removing the taint: %v %+v", err, n.Spec.Taints)
	}
}

func TestAdmissionDefaultTolerationSeconds(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	pods := e.admin.CoreV1().Pods("default")
	secs := func(tols []corev1.Toleration, key string) (int64, int) {
		var s int64 = -1
		n := 0
		for _, tl := range tols {
			if tl.Key == key {
				n++
				if tl.TolerationSeconds != nil && tl.Effect == corev1.TaintEffectNoExecute && tl.Operator == corev1.TolerationOpExists {
					s = *tl.TolerationSeconds
				}
			}
		}
		return s, n
	}
	ten := int64(10)
	for _, tc := range []struct {
		name                   string
		tols                   []corev1.Toleration
		notReady, unreachable  int64 // tolerationSeconds found, -1 for none
		nNotReady, nUnreachabl int
	}{
		{name: "plain", notReady: 300, unreachable: 300, nNotReady: 1, nUnreachabl: 1},
		{name: "own-not-ready", tols: []corev1.Toleration{{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &ten}}, notReady: 10, unreachable: 300, nNotReady: 1, nUnreachabl: 1},
		{name: "tolerates-everything", tols: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, notReady: -1, unreachable: -1},
		{name: "noschedule-only", tols: []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoSchedule}}, notReady: 300, unreachable: 300, nNotReady: 1, nUnreachabl: 2},
	} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tc.name}, Spec: corev1.PodSpec{Tolerations: tc.tols,
			Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
		got, err := pods.Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nr, nrN := secs(got.Spec.Tolerations, corev1.TaintNodeNotReady)
		ur, urN := secs(got.Spec.Tolerations, corev1.TaintNodeUnreachable)
		if nr != tc.notReady || ur != tc.unreachable || nrN != tc.nNotReady || urN != tc.nUnreachabl {
			t.Errorf("%s: tolerations %+v: not-ready %ds (%d), unreachable %ds (%d)", tc.name, got.Spec.Tolerations, nr, nrN, ur, urN)
		}
	}
}

func TestEvictionDeletesThePod(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	// kubectl drain evicts only when discovery announces policy/v1 Eviction.
	rl, err := e.admin.Discovery().ServerResourcesForGroupVersion("v1")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rl.APIResources {
		if r.Name == "pods/eviction" && r.Group == "policy" && r.Version == "v1" && r.Kind == "Eviction" {
			found = true
		}
	}
	if !found {
		t.Error("discovery has no pods/eviction policy/v1 Eviction")
	}
	pods := e.admin.CoreV1().Pods("default")
	zero := int64(0)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "w1",
		Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Evicting a pod that is not there is a 404.
	err = pods.EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "nope", Namespace: "default"}})
	if !apierrors.IsNotFound(err) {
		t.Errorf("evicting a missing pod: %v, want 404", err)
	}
	// A bound pod's eviction is a graceful delete.
	if err := pods.EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	got, err := pods.Get(ctx, "p", metav1.GetOptions{})
	if err != nil || got.DeletionTimestamp == nil {
		t.Fatalf("after eviction: %v, deletionTimestamp %v", err, got.DeletionTimestamp)
	}
	// With grace 0 in its delete options it goes at once.
	if err := pods.EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: &zero}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "p", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after eviction with grace 0: %v", err)
	}
	// A name that does not match the URL is a 400.
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = e.admin.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name("p").SubResource("eviction").
		Body(&policyv1.Eviction{TypeMeta: metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
			ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "default"}}).Do(ctx).Error()
	if !apierrors.IsBadRequest(err) {
		t.Errorf("mismatched name: %v, want 400", err)
	}
}

package installer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"kforge.dev/kforge/controlplane/local/localtest"
)

func drainPod(ns, name, node string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// A budget's 429 is retried with backoff until the eviction goes through;
// DaemonSet and mirror pods stay; pods of other nodes are not touched.
func TestDrainRetriesTooManyRequests(t *testing.T) {
	isController := true
	client := fake.NewClientset(
		drainPod("default", "web-1", "w3"),
		drainPod("kube-system", "ds-1", "w3", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "dns", UID: "ds", Controller: &isController}}
		}),
		drainPod("kube-system", "static", "w3", func(p *corev1.Pod) {
			p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"}
		}),
		drainPod("default", "web-2", "w1"),
	)
	// The fake's field selector is not applied by the tracker: the drainer
	// filters by spec.nodeName itself, which this also checks.
	var mu sync.Mutex
	refused := 0
	client.PrependReactor("create", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ca := a.(clienttesting.CreateAction)
		name := ca.GetObject().(interface{ GetName() string }).GetName()
		mu.Lock()
		defer mu.Unlock()
		if name == "web-1" && refused < 2 {
			refused++
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		}
		if name != "web-1" {
			t.Errorf("evicted %s", name)
		}
		return true, nil, client.Tracker().Delete(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, a.GetNamespace(), name)
	})
	var lines []string
	d := &Drainer{Client: client, Timeout: 30 * time.Second, Backoff: 10 * time.Millisecond, Poll: 10 * time.Millisecond,
		Progress: func(m string) { mu.Lock(); lines = append(lines, m); mu.Unlock() }}
	res, err := d.Drain(context.Background(), "w3")
	if err != nil {
		t.Fatal(err)
	}
	if res.Refusals != 2 || len(res.Evicted) != 1 || res.Evicted[0] != "default/web-1" {
		t.Errorf("result %+v", res)
	}
	if res.Ignored["kube-system/ds-1"] != "DaemonSet dns" || res.Ignored["kube-system/static"] != "mirror pod" || len(res.Ignored) != 2 {
		t.Errorf("ignored %v", res.Ignored)
	}
	all := strings.Join(lines, "\n")
	if strings.Count(all, "eviction refused") != 2 || !strings.Contains(all, "disruption budget") || !strings.Contains(all, "default/web-1: gone after") {
		t.Errorf("progress:\n%s", all)
	}
	if _, err := client.CoreV1().Pods("default").Get(context.Background(), "web-2", metav1.GetOptions{}); err != nil {
		t.Errorf("the other node's pod: %v", err)
	}
}

// A budget that never gives in ends the drain at the timeout, naming the pod.
func TestDrainTimesOutOnRefusals(t *testing.T) {
	client := fake.NewClientset(drainPod("default", "web-1", "w3"))
	client.PrependReactor("create", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewTooManyRequests("budget", 0)
	})
	d := &Drainer{Client: client, Timeout: 300 * time.Millisecond, Backoff: 20 * time.Millisecond}
	res, err := d.Drain(context.Background(), "w3")
	if err == nil || !strings.Contains(err.Error(), "pod default/web-1: eviction still refused") || !strings.Contains(err.Error(), "stays cordoned") {
		t.Fatalf("err %v", err)
	}
	if res.Refusals < 2 {
		t.Errorf("%d refusals before the timeout", res.Refusals)
	}
}

// startLocalAPI runs `kforge local up` (etcd, apiserver, controller
// manager) in a temp dir on a free port and returns an admin client.
func startLocalAPI(t *testing.T) kubernetes.Interface {
	t.Helper()
	return localtest.Start(t).Client(t)
}

// Against the real apiserver: cordon, then a drain evicts the node's pods
// through pods/eviction and returns once a stand-in for the agent has
// confirmed their end; a forced drain needs no agent.
func TestDrainOnAPIServer(t *testing.T) {
	client := startLocalAPI(t)
	ctx := context.Background()
	for _, n := range []string{"w1", "w3"} {
		if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	changed, err := Cordon(ctx, client, "w3")
	if err != nil || !changed {
		t.Fatalf("cordon: %v, %v", changed, err)
	}
	if changed, err := Cordon(ctx, client, "w3"); err != nil || changed {
		t.Fatalf("second cordon: %v, %v", changed, err)
	}
	if n, _ := client.CoreV1().Nodes().Get(ctx, "w3", metav1.GetOptions{}); !n.Spec.Unschedulable {
		t.Error("w3 is not unschedulable")
	}
	if _, err := Cordon(ctx, client, "w9"); !apierrors.IsNotFound(err) {
		t.Errorf("cordon of a missing node: %v", err)
	}
	create := func(p *corev1.Pod) {
		p.UID = ""
		if _, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create(drainPod("default", "a", "w3"))
	create(drainPod("kube-system", "b", "w3"))
	create(drainPod("kube-system", "static", "w3", func(p *corev1.Pod) {
		p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"}
	}))
	create(drainPod("default", "other", "w1"))

	// The agent's part: a pod marked for deletion goes once its
	// containers have stopped.
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	confirmed := map[string]bool{}
	go func() {
		defer close(agentDone)
		for agentCtx.Err() == nil {
			list, err := client.CoreV1().Pods("").List(agentCtx, metav1.ListOptions{FieldSelector: "spec.nodeName=w3"})
			if err == nil {
				for _, p := range list.Items {
					if p.DeletionTimestamp != nil {
						zero := int64(0)
						if client.CoreV1().Pods(p.Namespace).Delete(agentCtx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}) == nil {
							confirmed[p.Namespace+"/"+p.Name] = true
						}
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	d := &Drainer{Client: client, Timeout: 60 * time.Second, Poll: 50 * time.Millisecond}
	res, err := d.Drain(ctx, "w3")
	stopAgent()
	<-agentDone
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Evicted, ",") != "default/a,kube-system/b" || res.Ignored["kube-system/static"] != "mirror pod" {
		t.Errorf("result %+v", res)
	}
	if !confirmed["default/a"] || !confirmed["kube-system/b"] {
		t.Errorf("the drain returned before the agent confirmed: %v", confirmed)
	}
	if _, err := client.CoreV1().Pods("default").Get(ctx, "other", metav1.GetOptions{}); err != nil {
		t.Errorf("w1's pod: %v", err)
	}

	// No agent at all: a forced drain deletes what it evicted.
	create(drainPod("default", "c", "w3"))
	d = &Drainer{Client: client, Timeout: 30 * time.Second, Poll: 50 * time.Millisecond, Force: true}
	if res, err = d.Drain(ctx, "w3"); err != nil || strings.Join(res.Evicted, ",") != "default/c" {
		t.Fatalf("forced drain: %+v, %v", res, err)
	}
	// A PodDisruptionBudget that no pod can spare refuses with 429; the
	// drain retries until the budget is gone.
	create(drainPod("default", "f", "w3", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "f"} }))
	f, err := client.CoreV1().Pods("default").Get(ctx, "f", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.Status.Phase = corev1.PodRunning
	if _, err := client.CoreV1().Pods("default").UpdateStatus(ctx, f, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	one := intstr.FromInt32(1)
	if _, err := client.PolicyV1().PodDisruptionBudgets("default").Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "f"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "f"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var refusals []string
	d = &Drainer{Client: client, Timeout: 60 * time.Second, Poll: 50 * time.Millisecond, Backoff: 100 * time.Millisecond, Force: true,
		Progress: func(m string) {
			if !strings.Contains(m, "eviction refused") {
				return
			}
			refusals = append(refusals, m)
			if len(refusals) == 2 {
				if err := client.PolicyV1().PodDisruptionBudgets("default").Delete(ctx, "f", metav1.DeleteOptions{}); err != nil {
					t.Errorf("deleting the budget: %v", err)
				}
			}
		}}
	if res, err = d.Drain(ctx, "w3"); err != nil || strings.Join(res.Evicted, ",") != "default/f" || res.Refusals < 2 {
		t.Fatalf("drain under a budget: %+v, %v", res, err)
	}
	if !strings.Contains(refusals[0], "default/f: eviction refused (Cannot evict pod as it would violate the pod's disruption budget.") {
		t.Errorf("refusal: %s", refusals[0])
	}

	// Without force and without an agent, the drain waits and says so.
	create(drainPod("default", "e", "w3"))
	d = &Drainer{Client: client, Timeout: 2 * time.Second, Poll: 50 * time.Millisecond}
	if _, err = d.Drain(ctx, "w3"); err == nil || !strings.Contains(err.Error(), "pod default/e: evicted but still there") {
		t.Fatalf("drain without an agent: %v", err)
	}
}

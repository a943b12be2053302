package scheduler

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// newTestScheduler builds a Scheduler on a fake clientset holding objs,
// with the same objects loaded into its informers' indexers (which never
// start: sync reads the listers, as in sample-controller's tests).
func newTestScheduler(t *testing.T, objs ...*corev1.Pod) (*Scheduler, *fake.Clientset) {
	t.Helper()
	cfg := NewConfig()
	cfg.Kubeconfig = "unused"
	cfg.HealthAddress = ""
	client := fake.NewClientset()
	s, err := newScheduler(cfg, client, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.broadcaster.Shutdown)
	for _, p := range objs {
		addPod(t, s, client, p)
	}
	return s, client
}

func addPod(t *testing.T, s *Scheduler, client *fake.Clientset, p *corev1.Pod) {
	t.Helper()
	if err := s.factory.Core().V1().Pods().Informer().GetIndexer().Add(p); err != nil {
		t.Fatal(err)
	}
	if err := client.Tracker().Add(p); err != nil {
		t.Fatal(err)
	}
}

func addNode(t *testing.T, s *Scheduler, n *corev1.Node) {
	t.Helper()
	if err := s.factory.Core().V1().Nodes().Informer().GetIndexer().Add(n); err != nil {
		t.Fatal(err)
	}
	s.cache.setNode(n)
}

// schedule runs one scheduling cycle for key (queued first) and waits for
// its binding goroutine.
func schedule(t *testing.T, s *Scheduler, key string) {
	t.Helper()
	obj, ok, err := s.factory.Core().V1().Pods().Informer().GetIndexer().GetByKey(key)
	if err == nil && ok {
		s.podChanged(nil, obj)
	} else {
		ns, name, _ := strings.Cut(key, "/")
		s.queue.add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	}
	if s.queue.active.Len() == 0 {
		return // not for this scheduler
	}
	if !s.scheduleOne(context.Background()) {
		t.Fatal("queue closed")
	}
	s.binds.Wait()
}

func bindings(client *fake.Clientset) map[string]string {
	out := map[string]string{}
	for _, a := range client.Actions() {
		if c, ok := a.(k8stesting.CreateAction); ok && a.GetSubresource() == "binding" {
			b := c.GetObject().(*corev1.Binding)
			out[b.Name] = b.Target.Name
		}
	}
	return out
}

// Two pods that each fill a node must land on different nodes even
// though the informer has not shown the first bind yet.
func TestSyncCountsAssumedPods(t *testing.T) {
	p1, p2 := podReq("p1", "800m", ""), podReq("p2", "800m", "")
	s, client := newTestScheduler(t, p1, p2)
	addNode(t, s, readyNode("a", "1", "1Gi", 10))
	addNode(t, s, readyNode("b", "1", "1Gi", 10))
	ctx := context.Background()
	for _, key := range []string{"default/p1", "default/p2"} {
		schedule(t, s, key)
	}
	b := bindings(client)
	if len(b) != 2 || b["p1"] == b["p2"] {
		t.Errorf("bindings %v, want p1 and p2 on different nodes", b)
	}
	// A third one fits nowhere.
	p3 := podReq("p3", "800m", "")
	addPod(t, s, client, p3)
	schedule(t, s, "default/p3")
	if !s.cache.isAssumed("default/p1") || s.cache.isAssumed("default/p3") {
		t.Error("p1 should be assumed and p3 not")
	}
	got, err := client.CoreV1().Pods("default").Get(ctx, "p3", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "0/2 nodes are available: 2 Insufficient cpu."
	var found bool
	for _, c := range got.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable && c.Message == want {
			found = true
		}
	}
	if !found {
		t.Errorf("conditions %+v, want PodScheduled=False Unschedulable %q", got.Status.Conditions, want)
	}
}

func TestSyncLeavesOtherPodsAlone(t *testing.T) {
	other := podReq("other", "", "")
	other.Spec.SchedulerName = "other-scheduler"
	bound := podReq("bound", "", "")
	bound.Spec.NodeName = "a"
	deleting := podReq("deleting", "", "")
	deleting.DeletionTimestamp = &metav1.Time{}
	done := podReq("done", "", "")
	done.Status.Phase = corev1.PodSucceeded
	s, client := newTestScheduler(t, other, bound, deleting, done)
	addNode(t, s, readyNode("a", "1", "1Gi", 10))
	for _, key := range []string{"default/other", "default/bound", "default/deleting", "default/done", "default/gone"} {
		schedule(t, s, key)
	}
	if b := bindings(client); len(b) != 0 {
		t.Errorf("bound %v", b)
	}
}

func TestNodeChangeMatters(t *testing.T) {
	base := readyNode("n", "1", "1Gi", 10)
	heartbeat := base.DeepCopy()
	heartbeat.Status.Conditions[0].LastHeartbeatTime = metav1.Now()
	heartbeat.ResourceVersion = "2"
	notReady := base.DeepCopy()
	notReady.Status.Conditions[0].Status = corev1.ConditionUnknown
	tainted := base.DeepCopy()
	tainted.Spec.Taints = []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoSchedule}}
	relabeled := base.DeepCopy()
	relabeled.Labels["zone"] = "a"
	bigger := readyNode("n", "2", "1Gi", 10)
	cordoned := base.DeepCopy()
	cordoned.Spec.Unschedulable = true
	for name, tc := range map[string]struct {
		cur  *corev1.Node
		want bool
	}{
		"heartbeat": {heartbeat, false}, "ready": {notReady, true}, "taint": {tainted, true},
		"labels": {relabeled, true}, "allocatable": {bigger, true}, "cordon": {cordoned, true},
	} {
		if got := nodeChangeMatters(base, tc.cur); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

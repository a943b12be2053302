package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// nodeKubelet stands in for the agents of every node in namespace ns:
// pods bound to a node become Running and Ready, graceful deletions
// finish. It records the fewest nodes with a ready, non-terminating pod
// it saw while tracking.
type nodeKubelet struct {
	minReadyNodes atomic.Int32
	track         atomic.Bool
}

func (k *nodeKubelet) run(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	k.minReadyNodes.Store(1 << 20)
	zero := int64(0)
	for ctx.Err() == nil {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		readyNodes := map[string]bool{}
		for i := range pods.Items {
			p := &pods.Items[i]
			switch {
			case p.DeletionTimestamp != nil:
				_ = cs.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			case p.Spec.NodeName == "":
			case isReady(p):
				readyNodes[p.Spec.NodeName] = true
			default:
				now := metav1.Now()
				p.Status.Phase = corev1.PodRunning
				p.Status.Conditions = append(p.Status.Conditions,
					corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now})
				if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil &&
					!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					t.Logf("status %s: %v", p.Name, err)
				}
			}
		}
		if k.track.Load() && int32(len(readyNodes)) < k.minReadyNodes.Load() {
			k.minReadyNodes.Store(int32(len(readyNodes)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// daemonPods maps node name to the live pods of the DaemonSet there.
func daemonPods(ctx context.Context, cs kubernetes.Interface, ds *appsv1.DaemonSet) (map[string][]corev1.Pod, error) {
	pods, err := cs.CoreV1().Pods(ds.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
	if err != nil {
		return nil, err
	}
	out := map[string][]corev1.Pod{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && metav1.IsControlledBy(&p, ds) {
			out[p.Spec.NodeName] = append(out[p.Spec.NodeName], p)
		}
	}
	return out, nil
}

// A DaemonSet runs one pod on each node its selector picks, follows node
// label changes, records its templates as ControllerRevisions and rolls
// a new template out one node at a time.
func TestDaemonSet(t *testing.T) {
	cs := startLocal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	for _, n := range []struct{ name, role string }{{"n1", "worker"}, {"n2", "worker"}, {"n3", "other"}} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name,
			Labels: map[string]string{"role": n.role}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		startFakeAgent(t, cs, n.name)
	}
	const ns = "default"
	kubelet := &nodeKubelet{}
	kctx, kcancel := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	kwg.Go(func() { kubelet.run(kctx, t, cs, ns) })
	defer func() { kcancel(); kwg.Wait() }()

	grace := int64(0)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}},
				Spec: corev1.PodSpec{NodeSelector: map[string]string{"role": "worker"}, TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}},
			},
		},
	}
	dss := cs.AppsV1().DaemonSets(ns)
	ds, err := dss.Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// status is "the DaemonSet's status shows n nodes all ready and updated".
	status := func(n int32) func() error {
		return func() error {
			got, err := dss.Get(ctx, "agent", metav1.GetOptions{})
			if err != nil {
				return err
			}
			st := got.Status
			if st.ObservedGeneration != got.Generation || st.DesiredNumberScheduled != n || st.CurrentNumberScheduled != n ||
				st.NumberReady != n || st.NumberAvailable != n || st.UpdatedNumberScheduled != n || st.NumberMisscheduled != 0 {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		}
	}
	onNodes := func(want ...string) func() error {
		return func() error {
			byNode, err := daemonPods(ctx, cs, ds)
			if err != nil {
				return err
			}
			if len(byNode) != len(want) {
				return fmt.Errorf("pods on %d nodes: %v", len(byNode), byNode)
			}
			for _, n := range want {
				if len(byNode[n]) != 1 {
					return fmt.Errorf("%d pods on %s", len(byNode[n]), n)
				}
			}
			return nil
		}
	}
	eventually(t, "a pod on n1 and n2, bound by the scheduler", 30*time.Second, onNodes("n1", "n2"))
	eventually(t, "status 2/2", 20*time.Second, status(2))

	byNode, err := daemonPods(ctx, cs, ds)
	if err != nil {
		t.Fatal(err)
	}
	p := byNode["n1"][0]
	terms := p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 || len(terms[0].MatchFields) != 1 || terms[0].MatchFields[0].Key != "metadata.name" || terms[0].MatchFields[0].Values[0] != "n1" {
		t.Errorf("daemon pod's node affinity %+v", terms)
	}
	tolerates := func(key string, effect corev1.TaintEffect) bool {
		for _, tl := range p.Spec.Tolerations {
			if tl.Key == key && tl.Effect == effect && tl.TolerationSeconds == nil {
				return true
			}
		}
		return false
	}
	for _, k := range []struct {
		key    string
		effect corev1.TaintEffect
	}{{corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute}, {corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute},
		{corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule}, {corev1.TaintNodeDiskPressure, corev1.TaintEffectNoSchedule}} {
		if !tolerates(k.key, k.effect) {
			t.Errorf("daemon pod lacks the toleration %s:%s: %+v", k.key, k.effect, p.Spec.Tolerations)
		}
	}
	// kubectl describe lists a pod's events by field selector.
	eventually(t, "the daemon pod's Scheduled event and the DaemonSet's SuccessfulCreate", 10*time.Second, func() error {
		for _, sel := range []fields.Set{
			{"involvedObject.kind": "Pod", "involvedObject.name": p.Name, "involvedObject.namespace": ns, "involvedObject.uid": string(p.UID), "reason": "Scheduled"},
			{"involvedObject.kind": "DaemonSet", "involvedObject.name": "agent", "reason": "SuccessfulCreate"},
		} {
			evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel.String()})
			if err != nil {
				return err
			}
			if len(evs.Items) == 0 {
				return fmt.Errorf("no event for %v", sel)
			}
		}
		return nil
	})

	// n3 becomes a worker: it gets a pod too.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, "n3", metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Labels["role"] = "worker"
		_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a pod on each of the three workers", 30*time.Second, onNodes("n1", "n2", "n3"))
	eventually(t, "status 3/3", 20*time.Second, status(3))

	// A new image rolls out a node at a time (maxUnavailable 1).
	kubelet.track.Store(true)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		got, err := dss.Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return err
		}
		got.Spec.Template.Spec.Containers[0].Image = "busybox:2"
		_, err = dss.Update(ctx, got, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every pod runs the new image", 60*time.Second, func() error {
		byNode, err := daemonPods(ctx, cs, ds)
		if err != nil {
			return err
		}
		for _, n := range []string{"n1", "n2", "n3"} {
			if len(byNode[n]) != 1 || byNode[n][0].Spec.Containers[0].Image != "busybox:2" {
				return fmt.Errorf("on %s: %d pods", n, len(byNode[n]))
			}
		}
		return status(3)()
	})
	kubelet.track.Store(false)
	if m := kubelet.minReadyNodes.Load(); m < 2 {
		t.Errorf("only %d nodes had a ready pod during the rollout, want >= 2 (maxUnavailable 1)", m)
	}
	revs, err := cs.AppsV1().ControllerRevisions(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
	if err != nil {
		t.Fatal(err)
	}
	numbers := map[int64]bool{}
	for _, r := range revs.Items {
		if metav1.IsControlledBy(&r, ds) {
			numbers[r.Revision] = true
		}
	}
	if len(numbers) != 2 || !numbers[1] || !numbers[2] {
		t.Errorf("controller revisions %v, want 1 and 2", numbers)
	}

	// Deleting the DaemonSet removes its pods (owner references, GC).
	if err := dss.Delete(ctx, "agent", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the GC removes the daemon pods", 30*time.Second, func() error {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
		if err != nil {
			return err
		}
		if len(pods.Items) != 0 {
			return fmt.Errorf("%d pods left", len(pods.Items))
		}
		return nil
	})
}

package controllers_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"kforge.dev/kforge/controlplane/controllers"
	"kforge.dev/kforge/controlplane/local"
)

// startManager runs a second controller manager against the local
// control plane in dir, as the controller-manager identity, with only the
// named controllers, its own Lease and cfg's other settings.
func startManager(t *testing.T, dir string, cfg *controllers.Config, names ...string) {
	t.Helper()
	cfg.Kubeconfig = filepath.Join(dir, local.ControllerManagerKubeconfig)
	cfg.MetricsAddress = ""
	cfg.Controllers = names
	cfg.LeaderElection.LeaseName = "test-" + names[0]
	cfg.LeaderElection.Identity = "test"
	cfg.LeaderElection.LeaseDuration = 4 * time.Second
	cfg.LeaderElection.RenewDeadline = 3 * time.Second
	cfg.LeaderElection.RetryPeriod = 500 * time.Millisecond
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := controllers.NewManager(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("manager Run did not return 15s after cancel")
		}
	})
}

// fakeAgent renews a node's Lease and heartbeats its Ready condition
// while running.
type fakeAgent struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startFakeAgent(t *testing.T, cs kubernetes.Interface, node string) *fakeAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &fakeAgent{cancel: cancel}
	a.wg.Go(func() {
		for ctx.Err() == nil {
			if err := heartbeat(ctx, cs, node); err != nil && ctx.Err() == nil {
				t.Logf("heartbeat: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	})
	t.Cleanup(a.stop)
	return a
}

func (a *fakeAgent) stop() { a.cancel(); a.wg.Wait() }

// heartbeat renews the node's Lease and posts Ready=True, as the agent.
func heartbeat(ctx context.Context, cs kubernetes.Interface, node string) error {
	now := metav1.NewMicroTime(time.Now())
	leases := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	l, err := leases.Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, RenewTime: &now}}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && time.Since(c.LastHeartbeatTime.Time) < 5*time.Second {
				return nil
			}
		}
		t := metav1.Now()
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			Reason: "KubeletReady", LastHeartbeatTime: t, LastTransitionTime: t}}
		n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"),
			corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")}
		n.Status.Allocatable = n.Status.Capacity
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

func nodeCondition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// A node whose heartbeats stop becomes Unknown and tainted unreachable;
// its pods go as their tolerations say; it comes back untainted; cordon
// taints it unschedulable; a NoExecute taint of the user's evicts the
// pods that do not tolerate it at once.
func TestNodeLifecycle(t *testing.T) {
	cs, dir := startLocalIn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := controllers.NewConfig()
	cfg.NodeMonitorGracePeriod = 2 * time.Second
	startManager(t, dir, cfg, controllers.NameNodeLifecycle)
	nodes := cs.CoreV1().Nodes()
	const node = "n1"
	n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasTaint(n, corev1.TaintNodeNotReady, corev1.TaintEffectNoSchedule) {
		t.Fatalf("a new node's taints %+v lack not-ready:NoSchedule", n.Spec.Taints)
	}
	agent := startFakeAgent(t, cs, node)
	getNode := func() (*corev1.Node, error) { return nodes.Get(ctx, node, metav1.GetOptions{}) }
	eventually(t, "the ready node loses not-ready:NoSchedule", 20*time.Second, func() error {
		n, err := getNode()
		if err != nil {
			return err
		}
		if len(n.Spec.Taints) != 0 {
			return fmt.Errorf("taints %+v", n.Spec.Taints)
		}
		return nil
	})

	// Cordon: the unschedulable taint comes and goes with the field.
	setUnschedulable := func(v bool) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := getNode()
			if err != nil {
				return err
			}
			n.Spec.Unschedulable = v
			_, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	setUnschedulable(true)
	eventually(t, "cordon taints unschedulable:NoSchedule", 10*time.Second, func() error {
		n, err := getNode()
		if err != nil || !hasTaint(n, corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule) {
			return fmt.Errorf("%v %+v", err, n.Spec.Taints)
		}
		return nil
	})
	setUnschedulable(false)
	eventually(t, "uncordon removes it", 10*time.Second, func() error {
		n, err := getNode()
		if err != nil || len(n.Spec.Taints) != 0 {
			return fmt.Errorf("%v %+v", err, n.Spec.Taints)
		}
		return nil
	})

	// Pods bound to the node: the default 300 s tolerations, a 1 s
	// toleration of unreachable, and one that tolerates it for ever (and
	// is Ready).
	pods := cs.CoreV1().Pods("default")
	one := int64(1)
	mkPod := func(name string, tols ...corev1.Toleration) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node, Tolerations: tols,
			Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}}}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkPod("default")
	mkPod("short", corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
		Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &one})
	mkPod("forever", corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
		Effect: corev1.TaintEffectNoExecute})
	fp, err := pods.Get(ctx, "forever", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fp.Status.Phase = corev1.PodRunning
	fp.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	if _, err := pods.UpdateStatus(ctx, fp, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The agent stops: Unknown, tainted unreachable, "short" evicted.
	agent.stop()
	eventually(t, "the silent node is Unknown and tainted unreachable", 20*time.Second, func() error {
		n, err := getNode()
		if err != nil {
			return err
		}
		c := nodeCondition(n, corev1.NodeReady)
		if c == nil || c.Status != corev1.ConditionUnknown || c.Reason != controllers.ReasonNodeStatusUnknown {
			return fmt.Errorf("Ready %+v", c)
		}
		if !hasTaint(n, corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute) || !hasTaint(n, corev1.TaintNodeUnreachable, corev1.TaintEffectNoSchedule) {
			return fmt.Errorf("taints %+v", n.Spec.Taints)
		}
		return nil
	})
	deleting := func(name string) (bool, error) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return p.DeletionTimestamp != nil, nil
	}
	eventually(t, `"short" is evicted after its 1 s`, 20*time.Second, func() error {
		if gone, err := deleting("short"); err != nil || !gone {
			return fmt.Errorf("not deleted (%v)", err)
		}
		return nil
	})
	for _, name := range []string{"default", "forever"} {
		if gone, err := deleting(name); err != nil || gone {
			t.Errorf("pod %s is being deleted (%v) while it tolerates the taint", name, err)
		}
	}
	eventually(t, `"forever" is marked not ready`, 10*time.Second, func() error {
		p, err := pods.Get(ctx, "forever", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if isReady(p) {
			return fmt.Errorf("still ready")
		}
		return nil
	})
	eventually(t, "NodeNotReady and TaintManagerEviction events", 10*time.Second, func() error {
		for _, want := range []struct{ name, reason string }{{node, "NodeNotReady"}, {"short", controllers.ReasonTaintManagerEviction}} {
			evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
				"involvedObject.name": want.name, "reason": want.reason}.String()})
			if err != nil {
				return err
			}
			if len(evs.Items) == 0 {
				return fmt.Errorf("no %s event for %s", want.reason, want.name)
			}
		}
		return nil
	})

	// The agent comes back: Ready, no taints.
	startFakeAgent(t, cs, node)
	eventually(t, "the node is back and untainted", 20*time.Second, func() error {
		n, err := getNode()
		if err != nil {
			return err
		}
		if c := nodeCondition(n, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
			return fmt.Errorf("Ready %+v, taints %+v", c, n.Spec.Taints)
		}
		return nil
	})

	// A NoExecute taint of the user's: pods that do not tolerate it go at
	// once, and the controller leaves the taint alone.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := getNode()
		if err != nil {
			return err
		}
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "example.com/maintenance", Effect: corev1.TaintEffectNoExecute})
		_, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pods without a toleration for the user's taint are evicted", 20*time.Second, func() error {
		for _, name := range []string{"default", "forever"} {
			if gone, err := deleting(name); err != nil || !gone {
				return fmt.Errorf("%s not deleted (%v)", name, err)
			}
		}
		return nil
	})
	n, err = getNode()
	if err != nil || !hasTaint(n, "example.com/maintenance", corev1.TaintEffectNoExecute) {
		t.Errorf("the user's taint: %v %+v", err, n.Spec.Taints)
	}
}

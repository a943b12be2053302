package scheduler_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"kforge.dev/kforge/controlplane/local"
	"kforge.dev/kforge/controlplane/local/localtest"
	"kforge.dev/kforge/controlplane/scheduler"
)

const (
	testScheduler = "test-scheduler"
	ns            = "default"
)

// upControlPlane runs local.Up in a temp dir on a free port and returns a
// client with the admin kubeconfig and the dir.
func upControlPlane(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	cp := localtest.Start(t)
	return cp.Client(t), cp.Dir
}

type instance struct {
	s      *scheduler.Scheduler
	cancel context.CancelFunc
	done   chan error
}

func (i *instance) stop(t *testing.T) {
	t.Helper()
	if i.cancel == nil {
		return
	}
	i.cancel()
	i.cancel = nil
	select {
	case err := <-i.done:
		if err != nil {
			t.Errorf("scheduler Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("scheduler Run did not return 15s after cancel")
	}
}

// startScheduler runs a test-scheduler instance as system:kube-scheduler
// with short leader-election periods.
func startScheduler(t *testing.T, dir, identity string) *instance {
	t.Helper()
	cfg := scheduler.NewConfig()
	cfg.SchedulerName = testScheduler
	return startSchedulerWith(t, dir, identity, cfg)
}

func startSchedulerWith(t *testing.T, dir, identity string, cfg *scheduler.Config) *instance {
	t.Helper()
	cfg.Kubeconfig = filepath.Join(dir, local.SchedulerKubeconfigFile)
	cfg.HealthAddress = "127.0.0.1:0"
	cfg.LeaderElection.LeaseName = testScheduler
	cfg.LeaderElection.Identity = identity
	cfg.LeaderElection.LeaseDuration = 4 * time.Second
	cfg.LeaderElection.RenewDeadline = 3 * time.Second
	cfg.LeaderElection.RetryPeriod = 500 * time.Millisecond
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("identity", identity)
	s, err := scheduler.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	i := &instance{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { i.done <- s.Run(ctx) }()
	t.Cleanup(func() { i.stop(t) })
	return i
}

// waitFor polls cond every 100ms until it is true or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func createNode(t *testing.T, cs kubernetes.Interface, name, cpu, mem string, taints ...corev1.Taint) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Spec:       corev1.NodeSpec{Taints: taints},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	status := corev1.NodeStatus{
		Capacity: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem), corev1.ResourcePods: resource.MustParse("110"),
		},
		Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem), corev1.ResourcePods: resource.MustParse("110"),
		},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	// Node IPAM may write the new Node's pod range in between: retry on
	// the conflict with the current object, as an agent would.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = status
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func newPod(name, schedulerName, cpu string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			SchedulerName: schedulerName,
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("128Mi")}}}},
		},
	}
}

func createPod(t *testing.T, cs kubernetes.Interface, p *corev1.Pod) {
	t.Helper()
	if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod %s: %v", p.Name, err)
	}
}

// boundNode waits until the pod is bound and returns its node.
func boundNode(t *testing.T, cs kubernetes.Interface, name string, timeout time.Duration) string {
	t.Helper()
	var node string
	waitFor(t, timeout, "pod "+name+" to be bound", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		node = p.Spec.NodeName
		return node != "", nil
	})
	return node
}

func leaseHolder(cs kubernetes.Interface) (string, error) {
	l, err := cs.CoordinationV1().Leases("kube-system").Get(context.Background(), testScheduler, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSchedulerOnRealAPIServer(t *testing.T) {
	cs, dir := upControlPlane(t)
	ctx := context.Background()

	createNode(t, cs, "node-a", "2", "4Gi")
	createNode(t, cs, "node-b", "2", "4Gi")
	createNode(t, cs, "node-c", "2", "4Gi", corev1.Taint{Key: "dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule})

	one := startScheduler(t, dir, "one")
	two := startScheduler(t, dir, "two")
	instances := map[string]*instance{"one": one, "two": two}
	var leader string
	waitFor(t, 15*time.Second, "a leader", func() (bool, error) {
		h, err := leaseHolder(cs)
		leader = h
		return instances[h] != nil, err
	})
	standby := "two"
	if leader == "two" {
		standby = "one"
	}
	t.Logf("leader %s, standby %s", leader, standby)
	for id, i := range instances {
		url := "http://" + i.s.HealthAddr().String()
		waitFor(t, 10*time.Second, id+" ready", func() (bool, error) {
			code, _ := get(t, url+"/readyz")
			return code == http.StatusOK, nil
		})
		if code, _ := get(t, url+"/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz: %d", id, code)
		}
	}

	// A controller's pods spread over the two untainted nodes. The owner
	// is a ConfigMap: it exists (so no garbage collector removes the pods)
	// and no controller acts on it (a ReplicaSet's controller would).
	owner, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	for i := range 4 {
		p := newPod(fmt.Sprintf("web-%d", i), testScheduler, "100m")
		p.Labels = map[string]string{"app": "web"}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID, Controller: &yes}}
		createPod(t, cs, p)
	}
	// One that tolerates the taint and asks for node-c.
	infra := newPod("infra", testScheduler, "100m")
	infra.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "infra", Effect: corev1.TaintEffectNoSchedule}}
	infra.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "node-c"}
	createPod(t, cs, infra)
	// One too big for every node, one for another scheduler, one for the
	// default scheduler (the one `kforge local up` runs).
	createPod(t, cs, newPod("big", testScheduler, "3"))
	createPod(t, cs, newPod("elsewhere", "other-scheduler", "100m"))
	createPod(t, cs, newPod("default", "", "100m"))

	perNode := map[string]int{}
	for i := range 4 {
		n := boundNode(t, cs, fmt.Sprintf("web-%d", i), 15*time.Second)
		perNode[n]++
	}
	if perNode["node-a"] != 2 || perNode["node-b"] != 2 {
		t.Errorf("web pods per node %v, want 2 on node-a and 2 on node-b", perNode)
	}
	if n := boundNode(t, cs, "infra", 10*time.Second); n != "node-c" {
		t.Errorf("infra on %s, want node-c", n)
	}
	if n := boundNode(t, cs, "default", 15*time.Second); n == "" || n == "node-c" {
		t.Errorf("default-scheduler pod on %q", n)
	}

	wantMsg := "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 Insufficient cpu."
	var gotMsg string
	waitFor(t, 10*time.Second, "big to be marked Unschedulable", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "big", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Spec.NodeName != "" {
			t.Fatalf("big was bound to %s", p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				gotMsg = c.Message
				return c.Message == wantMsg, nil
			}
		}
		return false, nil
	})
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, "big", metav1.GetOptions{}); err != nil || p.Status.Phase != corev1.PodPending && p.Status.Phase != "" {
		t.Errorf("big: %v phase %q", err, p.Status.Phase)
	}
	_ = gotMsg

	// Events: Scheduled for a placed pod, FailedScheduling for big.
	waitFor(t, 10*time.Second, "Scheduled and FailedScheduling events", func() (bool, error) {
		evs, err := cs.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		var scheduled, failed bool
		for _, e := range evs.Items {
			if e.Reason == "Scheduled" && e.Regarding.Name == "infra" && e.Note == "Successfully assigned default/infra to node-c" {
				scheduled = true
			}
			if e.Reason == "FailedScheduling" && e.Regarding.Name == "big" && e.Type == corev1.EventTypeWarning && e.Note == wantMsg {
				failed = true
			}
		}
		return scheduled && failed, nil
	})

	// A big enough node makes big fit.
	createNode(t, cs, "node-d", "4", "8Gi")
	if n := boundNode(t, cs, "big", 15*time.Second); n != "node-d" {
		t.Errorf("big on %s, want node-d", n)
	}

	// The other scheduler's pod is still left alone.
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, "elsewhere", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if p.Spec.NodeName != "" || len(p.Status.Conditions) != 0 {
		t.Errorf("a pod for other-scheduler was touched: node %q conditions %v", p.Spec.NodeName, p.Status.Conditions)
	}

	// Metrics of the leader: six placements, no errors; the standby placed nothing.
	_, body := get(t, "http://"+instances[leader].s.HealthAddr().String()+"/metrics")
	for _, line := range []string{
		`kforge_scheduler_schedule_attempts_total{result="scheduled"} 6`,
		`kforge_scheduler_schedule_attempts_total{result="error"} 0`,
		`kforge_scheduler_leader 1`,
		`kforge_scheduler_pending_pods 0`,
		`kforge_scheduler_e2e_scheduling_duration_seconds_count 6`,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("leader /metrics lacks %s", line)
		}
	}
	_, body = get(t, "http://"+instances[standby].s.HealthAddr().String()+"/metrics")
	for _, line := range []string{`kforge_scheduler_schedule_attempts_total{result="scheduled"} 0`, `kforge_scheduler_leader 0`} {
		if !strings.Contains(body, line) {
			t.Errorf("standby /metrics lacks %s", line)
		}
	}

	// The leader stops (releasing the lease); the standby takes over.
	instances[leader].stop(t)
	createPod(t, cs, newPod("after-failover", testScheduler, "100m"))
	boundNode(t, cs, "after-failover", 15*time.Second)
	if h, err := leaseHolder(cs); err != nil || h != standby {
		t.Errorf("lease holder %q (%v), want %s", h, err, standby)
	}
	// The scheduler counts a placement after the bind returns, so a
	// client can see the pod bound a moment before the counter moves.
	waitFor(t, 10*time.Second, "the new leader's metrics", func() (bool, error) {
		_, body = get(t, "http://"+instances[standby].s.HealthAddr().String()+"/metrics")
		for _, line := range []string{
			`kforge_scheduler_schedule_attempts_total{result="scheduled"} 1`,
			`kforge_scheduler_schedule_attempts_total{result="error"} 0`,
		} {
			if !strings.Contains(body, line) {
				return false, fmt.Errorf("new leader /metrics lacks %s", line)
			}
		}
		return true, nil
	})

	// Without leader election a single instance schedules at once and
	// still shuts down cleanly.
	solo := scheduler.NewConfig()
	solo.SchedulerName = "solo-scheduler"
	solo.LeaderElection.Enabled = false
	soloInst := startSchedulerWith(t, dir, "solo", solo)
	createPod(t, cs, newPod("solo", "solo-scheduler", "100m"))
	boundNode(t, cs, "solo", 15*time.Second)
	soloInst.stop(t)
}

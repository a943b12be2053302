package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// suite is what TestMain set up; nil when the suite is not enabled.
var suite *cluster

var skipReason = "Helm suite; set KFORGE_HELM=1 (make test-helm does)"

// cluster is one `kforge local up` and a helm to drive it.
type cluster struct {
	helm       string
	kubeconfig string
	home       string // HOME and Helm's cache, config and data folders
	cs         *kubernetes.Clientset
	dyn        *dynamic.DynamicClient
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv("KFORGE_HELM") != "1" {
		return m.Run() // every test skips
	}
	work, err := os.MkdirTemp("", "kforge-helm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(work)
	start := time.Now()
	helm := filepath.Join(work, "helm")
	if out, err := exec.Command("go", "build", "-o", helm, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building helm: %v\n%s", err, out)
		return 1
	}
	kforge, err := kforgeBinary(work)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "helm suite: built helm and found kforge in %s\n", time.Since(start).Round(time.Second))
	dir := filepath.Join(work, "local")
	stop, err := startLocal(kforge, dir, filepath.Join(work, "local.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	c := &cluster{helm: helm, kubeconfig: filepath.Join(dir, "admin.kubeconfig"), home: filepath.Join(work, "home")}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c.cs = kubernetes.NewForConfigOrDie(cfg)
	c.dyn = dynamic.NewForConfigOrDie(cfg)
	suite, skipReason = c, ""
	return m.Run()
}

// kforgeBinary is $KFORGE_BINARY, or kforge built from the repository
// this module sits in (../..).
func kforgeBinary(work string) (string, error) {
	if b := os.Getenv("KFORGE_BINARY"); b != "" {
		return b, nil
	}
	bin := filepath.Join(work, "kforge")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/kforge")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building kforge: %w\n%s", err, out)
	}
	return bin, nil
}

// startLocal runs `kforge local up` in its own process group until stop,
// which sends SIGTERM to its PID and waits (SIGKILL to the group after
// 30s). Pdeathsig ends it if this test binary dies first.
func startLocal(kforge, dir, logFile string) (stop func() error, err error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(kforge, "local", "up", "--dir", dir, "--port", "0")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting kforge local up: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop = func() error {
		defer log.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("kforge local up ended with %w", err)
			}
			return nil
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return errors.New("kforge local up did not stop within 30s of SIGTERM; killed")
		}
	}
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	deadline := time.After(2 * time.Minute)
	for {
		if _, err := os.Stat(kubeconfig); err == nil {
			return stop, nil
		}
		select {
		case err := <-done:
			done <- err
			out, _ := os.ReadFile(logFile)
			_ = stop()
			return nil, fmt.Errorf("kforge local up ended before it was ready: %v\n%s", err, out)
		case <-deadline:
			out, _ := os.ReadFile(logFile)
			_ = stop()
			return nil, fmt.Errorf("kforge local up: no %s after 2m\n%s", kubeconfig, out)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// helm runs helm with args, bounded to three minutes, and fails the test
// unless it exits 0.
func (c *cluster) helmOK(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.helm, args...)
	cmd.Env = []string{"KUBECONFIG=" + c.kubeconfig, "HOME=" + c.home, "PATH=" + os.Getenv("PATH"),
		"HELM_CACHE_HOME=" + filepath.Join(c.home, "cache"), "HELM_CONFIG_HOME=" + filepath.Join(c.home, "config"),
		"HELM_DATA_HOME=" + filepath.Join(c.home, "data")}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	t.Logf("helm %s: %v", strings.Join(args, " "), err)
	if err != nil {
		t.Fatalf("helm %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// nodeAgent stands in for a node's agent, which `kforge local up` does not
// run: it registers a Ready Node and keeps its Lease, and reports each pod
// bound to it Running, and a Job's pod (restartPolicy Never) Succeeded,
// through the pods' status subresource, as an agent would after running
// it. The Job controller, the scheduler and Helm's hook wait are real.
func (c *cluster) nodeAgent(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = c.cs.CoreV1().Nodes().Delete(context.Background(), "helm-node", metav1.DeleteOptions{})
	})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "helm-node", Labels: map[string]string{"kubernetes.io/hostname": "helm-node"}}}
	node, err := c.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	heartbeat := func() error {
		// The controller manager writes the new Node too (pod CIDR,
		// taints): a conflict is retried on a fresh copy, as an agent does.
		err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
			n, err := c.cs.CoreV1().Nodes().Get(ctx, "helm-node", metav1.GetOptions{})
			if err != nil {
				return err
			}
			now := metav1.Now()
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				LastHeartbeatTime: now, LastTransitionTime: now}}
			n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: mustQuantity("4"), corev1.ResourceMemory: mustQuantity("8Gi"), corev1.ResourcePods: mustQuantity("110")}
			n.Status.Allocatable = n.Status.Capacity
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.99"}}
			_, err = c.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return err
		}
		leases := c.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
		l, err := leases.Get(ctx, "helm-node", metav1.GetOptions{})
		holder, dur := "helm-node", int32(40)
		renew := metav1.NewMicroTime(time.Now())
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "helm-node",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "helm-node", UID: node.UID}}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &renew}}, metav1.CreateOptions{})
			return err
		} else if err != nil {
			return err
		}
		l.Spec.RenewTime = &renew
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	}
	if err := heartbeat(); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := heartbeat(); err != nil && ctx.Err() == nil {
					t.Logf("node heartbeat: %v", err)
				}
			}
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			pods, err := c.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=helm-node"})
			if err == nil {
				for i := range pods.Items {
					c.runPod(ctx, &pods.Items[i])
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
}

// runPod reports a pod's containers as an agent would once they ran: a
// pod that never restarts has exited 0, any other runs and is ready.
func (c *cluster) runPod(ctx context.Context, p *corev1.Pod) {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodRunning {
		return
	}
	now := metav1.Now()
	st := p.Status.DeepCopy()
	st.HostIP, st.PodIP, st.StartTime = "198.18.0.99", "198.19.0.10", &now
	st.ContainerStatuses = nil
	ready := corev1.ConditionTrue
	if p.Spec.RestartPolicy == corev1.RestartPolicyNever {
		st.Phase, ready = corev1.PodSucceeded, corev1.ConditionFalse
	} else {
		st.Phase = corev1.PodRunning
	}
	for _, ctr := range p.Spec.Containers {
		cs := corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, ImageID: ctr.Image, Ready: ready == corev1.ConditionTrue}
		if st.Phase == corev1.PodSucceeded {
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}
		} else {
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	st.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: now}, {Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now}}
	p.Status = *st
	_, _ = c.cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
}

var gadgets = schema.GroupVersionResource{Group: "helm.kforge.dev", Version: "v1", Resource: "gadgets"}

// TestChartLifecycle: the real Helm 4 installs a chart with the kinds a
// first chart has (a CRD and an object of it, a pre-install Job hook
// among them), upgrades it, rolls it back and uninstalls it, with Helm's
// defaults: server-side apply and strict field validation.
func TestChartLifecycle(t *testing.T) {
	if suite == nil {
		t.Skip(skipReason)
	}
	c := suite
	c.nodeAgent(t)
	ctx := context.Background()
	const ns = "helm-demo"

	c.helmOK(t, "install", "demo", "testdata/demo", "--namespace", ns, "--create-namespace", "--timeout", "2m")
	if _, err := c.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
		Get(ctx, "gadgets.helm.kforge.dev", metav1.GetOptions{}); err != nil {
		t.Fatal("the chart's CRD:", err)
	}
	g, err := c.dyn.Resource(gadgets).Namespace(ns).Get(ctx, "demo-gadget", metav1.GetOptions{})
	if err != nil {
		t.Fatal("the chart's Gadget:", err)
	}
	if spec, _ := g.Object["spec"].(map[string]any); spec["size"] != int64(2) || spec["label"] != "plain" {
		t.Errorf("gadget spec (a default expected): %v", g.Object["spec"])
	}
	for what, get := range map[string]func() error{
		"deployment": func() error {
			_, err := c.cs.AppsV1().Deployments(ns).Get(ctx, "demo-web", metav1.GetOptions{})
			return err
		},
		"service": func() error {
			_, err := c.cs.CoreV1().Services(ns).Get(ctx, "demo-web", metav1.GetOptions{})
			return err
		},
		"secret": func() error {
			_, err := c.cs.CoreV1().Secrets(ns).Get(ctx, "demo-secret", metav1.GetOptions{})
			return err
		},
		"serviceaccount": func() error {
			_, err := c.cs.CoreV1().ServiceAccounts(ns).Get(ctx, "demo", metav1.GetOptions{})
			return err
		},
		"role": func() error {
			_, err := c.cs.RbacV1().Roles(ns).Get(ctx, "demo-reader", metav1.GetOptions{})
			return err
		},
		"rolebinding": func() error {
			_, err := c.cs.RbacV1().RoleBindings(ns).Get(ctx, "demo-reader", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	// The hook ran to completion and was deleted on success.
	if _, err := c.cs.BatchV1().Jobs(ns).Get(ctx, "demo-setup", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pre-install hook Job is still there (or: %v)", err)
	}
	message := func() string {
		cm, err := c.cs.CoreV1().ConfigMaps(ns).Get(ctx, "demo-config", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data["message"]
	}
	if m := message(); m != "hello" {
		t.Errorf("message %q after install", m)
	}

	c.helmOK(t, "upgrade", "demo", "testdata/demo", "--namespace", ns, "--set", "message=second", "--set", "size=5")
	if m := message(); m != "second" {
		t.Errorf("message %q after upgrade", m)
	}
	g, err = c.dyn.Resource(gadgets).Namespace(ns).Get(ctx, "demo-gadget", metav1.GetOptions{})
	if err != nil || g.Object["spec"].(map[string]any)["size"] != int64(5) {
		t.Errorf("gadget after upgrade: %v %v", g, err)
	}

	c.helmOK(t, "rollback", "demo", "1", "--namespace", ns)
	if m := message(); m != "hello" {
		t.Errorf("message %q after rollback", m)
	}
	if out := c.helmOK(t, "history", "demo", "--namespace", ns); strings.Count(out, "\n") != 4 {
		t.Errorf("helm history after install, upgrade, rollback:\n%s", out)
	}

	c.helmOK(t, "uninstall", "demo", "--namespace", ns, "--wait", "--timeout", "1m")
	if _, err := c.cs.CoreV1().ConfigMaps(ns).Get(ctx, "demo-config", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap after uninstall: %v", err)
	}
	if _, err := c.dyn.Resource(gadgets).Namespace(ns).Get(ctx, "demo-gadget", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Gadget after uninstall: %v", err)
	}
	if out := c.helmOK(t, "list", "--namespace", ns, "--short"); strings.TrimSpace(out) != "" {
		t.Errorf("helm list after uninstall: %q", out)
	}
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

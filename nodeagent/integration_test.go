package nodeagent

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"kforge.dev/kforge/controlplane/local/localtest"
	"kforge.dev/kforge/internal/busyboximage"
)

// The integration test's addresses: pods in 198.19.7.0/24 on a bridge
// inside a network namespace the test makes, so nothing touches the
// machine's own network.
const (
	itNode     = "agent-it"
	itNodeIP   = "198.18.0.21"
	itPodCIDR  = "198.19.7.0/24"
	itDNS      = "198.18.16.10"
	itImage    = busyboximage.Ref
	itWaitLong = 60 * time.Second
)

// nsExec runs CNI plugins inside the namespace at path: the test's
// stand-in for the node's own network.
type nsExec struct {
	*invoke.RawExec
	version.PluginDecoder
	path string
}

func (e *nsExec) ExecPlugin(ctx context.Context, plugin string, stdin []byte, environ []string) ([]byte, error) {
	var out []byte
	err := inNetNS(e.path, func() error {
		var err error
		out, err = e.RawExec.ExecPlugin(ctx, plugin, stdin, environ)
		return err
	})
	return out, err
}

// startContainerd runs a containerd of the test's own (root, state and
// socket in dir) and returns its socket. Cleanup removes every container
// it holds, then stops it by PID.
func startContainerd(t *testing.T, dir string) string {
	t.Helper()
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (hack/install-deps.sh installs containerd, runc and the CNI plugins): %v", bin, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		removeAllContainers(t, sock)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("containerd log (last 3000 bytes):\n%s", tail(b, 3000))
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := client.New(sock, client.WithTimeout(2*time.Second))
		if err == nil {
			_, verr := c.Version(context.Background())
			c.Close()
			if verr == nil {
				return sock
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// removeAllContainers kills and deletes every container (so their shims
// exit) before containerd stops.
func removeAllContainers(t *testing.T, sock string) {
	c, err := client.New(sock, client.WithDefaultNamespace(DefaultContainerdNS))
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctrs, err := c.Containers(ctx)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			_, _ = task.Delete(ctx, client.WithProcessKill)
		}
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
			t.Logf("cleanup: container %s: %v", ctr.ID(), err)
		}
	}
}

// startControlPlane runs kforge local up in-process and returns a client
// config for its admin.
func startControlPlane(t *testing.T) *rest.Config {
	t.Helper()
	rc, _ := startControlPlaneDir(t)
	return rc
}

// startControlPlaneDir is startControlPlane that also returns the folder
// holding its PKI.
func startControlPlaneDir(t *testing.T) (*rest.Config, string) {
	t.Helper()
	cp := localtest.Start(t)
	return cp.Config, cp.Dir
}

// runAgent runs an agent until the returned stop is called.
func runAgent(t *testing.T, cfg *Config, rc *rest.Config, exec invoke.Exec) (stop func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := newAgent(cfg, rc, log, options{cniExec: exec})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the agent did not stop 30s after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

// testWriter sends log lines to t.Log while the test runs.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a late line after the test ended
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgentRunsPods is the agent end to end on this machine: a real
// containerd of the test's own, the real CNI plugins in a network
// namespace standing in for the node's, the control plane in-process. A
// pod with env from a ConfigMap, an emptyDir and HTTP and TCP probes gets
// Running and Ready with an address from the node's range; its container
// survives an agent restart; a crashing container backs off; deleting
// the pods removes their containers and namespaces.
func TestAgentRunsPods(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs containerd, mounts network namespaces and runs CNI plugins")
	}
	if testing.Short() {
		t.Skip("starts containerd and a control plane")
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is not installed (hack/install-deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	t.Cleanup(func() {
		// Anything still mounted under the test's folder (namespaces,
		// tmpfs volumes) goes before the folder is removed.
		if err := unmountVolumes(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	sock := startContainerd(t, filepath.Join(dir, "containerd"))

	// The node's network: a namespace of the test's own, so the bridge and
	// the pods' veth ends live and die with it.
	hostNS, err := newNetNS(filepath.Join(dir, "netns"), "node")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeNetNS(hostNS); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := busyboximage.Write(&archive, busybox, itImage); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(images, "busybox.tar"), archive.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	rc := startControlPlane(t)
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}

	cfg := NewConfig()
	cfg.NodeName, cfg.NodeAddress, cfg.Kubeconfig = itNode, itNodeIP, "unused"
	cfg.Containerd.Socket = sock
	cfg.CNI.ConfDir = filepath.Join(dir, "net.d")
	cfg.CNI.Bridge = "kft0"
	cfg.CNI.Masquerade = false // no NAT rules: nothing leaves the test's namespace
	cfg.PodCIDRSource, cfg.PodCIDR = PodCIDRStatic, itPodCIDR
	cfg.ClusterDNS = itDNS
	cfg.RootDir = filepath.Join(dir, "agent")
	cfg.RunDir = filepath.Join(dir, "run")
	cfg.PodLogDir = filepath.Join(dir, "logs")
	cfg.ImageDir = images
	cfg.RegistryConfigDir = filepath.Join(dir, "certs.d")
	cfg.HealthAddress = "127.0.0.1:0"
	cfg.Reserved = map[string]string{"cpu": "100m", "memory": "64Mi"}
	cfg.Version = "v1.37.0-kforge-test"
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	cniExec := &nsExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, path: hostNS}
	stopAgent := runAgent(t, cfg, rc, cniExec)
	ctx := t.Context()

	// The Node registers and turns Ready; the Lease is renewed.
	eventually(t, "node Ready", itWaitLong, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, itNode, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", n.Status.Conditions)
	})
	node, err := cs.CoreV1().Nodes().Get(ctx, itNode, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Labels[labelHostname] != itNode || node.Labels[labelRoleWorker] != "" || node.Labels[labelOS] != "linux" {
		t.Errorf("labels %v", node.Labels)
	}
	if !strings.HasPrefix(node.Status.NodeInfo.ContainerRuntimeVersion, "containerd://") || node.Status.NodeInfo.KubeletVersion != cfg.Version {
		t.Errorf("nodeInfo %+v", node.Status.NodeInfo)
	}
	capCPU, alloCPU := node.Status.Capacity[corev1.ResourceCPU], node.Status.Allocatable[corev1.ResourceCPU]
	if capCPU.MilliValue()-alloCPU.MilliValue() != 100 || node.Spec.PodCIDR != itPodCIDR {
		t.Errorf("capacity %v allocatable %v podCIDR %q", node.Status.Capacity, node.Status.Allocatable, node.Spec.PodCIDR)
	}
	if len(node.Status.Addresses) == 0 || node.Status.Addresses[0].Address != itNodeIP {
		t.Errorf("addresses %v", node.Status.Addresses)
	}
	eventually(t, "node Lease", 10*time.Second, func() error {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, itNode, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.RenewTime == nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != itNode ||
			len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != node.UID {
			return fmt.Errorf("lease %+v", l)
		}
		return nil
	})

	// A pod that serves HTTP, with env from a ConfigMap and the downward API.
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "greeting"}, Data: map[string]string{"text": "hello"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	grace := int64(2)
	web := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:                      itNode,
			TerminationGracePeriodSeconds: &grace,
			Volumes:                       []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Containers: []corev1.Container{{
				Name:  "web",
				Image: itImage,
				Command: []string{"sh", "-c", `echo "$GREETING $POD_NAME $KUBERNETES_SERVICE_HOST" > /data/out; ` +
					`cp /etc/resolv.conf /data/resolv; ip -4 addr show eth0 > /data/ip; exec httpd -f -p 8080 -h /var/www`},
				Env: []corev1.EnvVar{
					{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "greeting"}, Key: "text"}}},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				},
				Ports:        []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/index.html", Port: intstr.FromString("http")}},
					PeriodSeconds: 1,
				},
				LivenessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
	created, err := cs.CoreV1().Pods("default").Create(ctx, web, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var pod *corev1.Pod
	eventually(t, "pod web Ready", itWaitLong, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		if p.Status.Phase != corev1.PodRunning || !isReady(&p.Status) {
			return fmt.Errorf("phase %s, conditions %+v, containers %+v", p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
		}
		return nil
	})
	t.Logf("pod web: created → Ready in %s (first run: includes importing the image archive)", time.Since(start).Round(time.Millisecond))
	checkRunningStatus(t, pod)

	// The container ran the command, with the env and resolv.conf asked for.
	kubeSvc, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(cfg.RootDir, "pods", string(created.UID), "volumes", volEmptyDir, "data")
	if out := readFile(t, filepath.Join(vol, "out")); out != "hello web "+kubeSvc.Spec.ClusterIP+"\n" {
		t.Errorf("the container wrote %q", out)
	}
	resolv := readFile(t, filepath.Join(vol, "resolv"))
	for _, want := range []string{"nameserver " + itDNS + "\n", "search default.svc.cluster.local svc.cluster.local cluster.local", "options ndots:5"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, resolv)
		}
	}
	if ip := readFile(t, filepath.Join(vol, "ip")); !strings.Contains(ip, "inet "+pod.Status.PodIP+"/24") {
		t.Errorf("eth0 in the pod:\n%s\nwant %s", ip, pod.Status.PodIP)
	}
	sb, err := loadSandboxAt(cfg, created.UID)
	if err != nil || !fileExists(sb.NetNS) {
		t.Fatalf("sandbox %+v: %v", sb, err)
	}

	// A second pod, its image already unpacked, with an exec probe: the
	// warm start latency.
	warm := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "warm", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: itNode, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: itImage, Command: []string{"sleep", "3600"},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-d", "/proc/1"}}},
					PeriodSeconds: 1}}}},
	}
	warmCreated, err := cs.CoreV1().Pods("default").Create(ctx, warm, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	eventually(t, "pod warm Ready", itWaitLong, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "warm", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !isReady(&p.Status) {
			return fmt.Errorf("conditions %+v, containers %+v", p.Status.Conditions, p.Status.ContainerStatuses)
		}
		return nil
	})
	t.Logf("pod warm (image present, exec probe): created → Ready in %s", time.Since(start).Round(time.Millisecond))

	// Restarting the agent leaves the container alone.
	stopAgent()
	runningID := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	if state := taskState(t, sock, runningID); state != client.Running {
		t.Fatalf("with the agent stopped the container is %s", state)
	}
	// Leftovers of a pod the API no longer has (deleted while the agent was
	// down): a sandbox with its namespace, and a container.
	const orphanUID = "0rphan00-0000-0000-0000-000000000000"
	orphanNS := makeOrphan(t, cfg, sock, orphanUID)
	// What an agent killed while making a sandbox leaves: the pod's
	// namespace pinned, no sandbox record. The pod still starts.
	half, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "half", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: itNode, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: itImage, Command: []string{"sleep", "3600"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newNetNS(filepath.Join(cfg.RunDir, "netns"), "pod-"+string(half.UID)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.RootDir, "pods", string(half.UID)), 0o750); err != nil {
		t.Fatal(err)
	}

	runAgent(t, cfg, rc, cniExec)
	eventually(t, "pod half (a half-made sandbox) Ready", itWaitLong, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "half", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !isReady(&p.Status) {
			return fmt.Errorf("conditions %+v, containers %+v", p.Status.Conditions, p.Status.ContainerStatuses)
		}
		return nil
	})
	time.Sleep(3 * time.Second) // a resync, probes and status writes
	eventually(t, "the orphan removed", 10*time.Second, func() error {
		if n := containersOf(t, sock, orphanUID); n != 0 {
			return fmt.Errorf("%d containers left", n)
		}
		if fileExists(orphanNS) {
			return fmt.Errorf("namespace %s left", orphanNS)
		}
		if _, err := os.Stat(filepath.Join(cfg.RootDir, "pods", orphanUID)); !os.IsNotExist(err) {
			return fmt.Errorf("folder left: %v", err)
		}
		return nil
	})
	p, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := p.Status.ContainerStatuses[0]; cs.ContainerID != pod.Status.ContainerStatuses[0].ContainerID || cs.RestartCount != 0 || !isReady(&p.Status) {
		t.Fatalf("after an agent restart: %+v, ready %v", cs, isReady(&p.Status))
	}

	// Admission: a pod bound by name that asks for more CPU than the node
	// has, and one wanting a host port another pod holds, are failed as
	// the kubelet fails them, and never run.
	hostPort := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: itNode, TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{Name: "c", Image: itImage, Command: []string{"sleep", "3600"},
					Ports: []corev1.ContainerPort{{ContainerPort: 9000, HostPort: 18081}}}}}}
	}
	greedy := hostPort("greedy")
	greedy.Spec.Containers[0].Ports = nil
	greedy.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000")}
	admission := map[string]string{"greedy": "OutOfcpu", "port-b": "NodePorts"}
	var rejectedUIDs []types.UID
	for _, p := range []*corev1.Pod{greedy, hostPort("port-a"), hostPort("port-b")} {
		c, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if admission[p.Name] != "" {
			rejectedUIDs = append(rejectedUIDs, c.UID)
		}
		if p.Name == "port-a" { // admitted before port-b is created
			eventually(t, "pod port-a running", itWaitLong, func() error {
				p, err := cs.CoreV1().Pods("default").Get(ctx, "port-a", metav1.GetOptions{})
				if err != nil || p.Status.Phase != corev1.PodRunning {
					return fmt.Errorf("port-a: %v %v", err, p.Status.Phase)
				}
				return nil
			})
		}
	}
	for name, reason := range admission {
		eventually(t, "pod "+name+" rejected", 30*time.Second, func() error {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodFailed || p.Status.Reason != reason || !strings.HasPrefix(p.Status.Message, "Pod was rejected: ") {
				return fmt.Errorf("phase %s reason %q message %q", p.Status.Phase, p.Status.Reason, p.Status.Message)
			}
			return nil
		})
	}
	for _, uid := range rejectedUIDs {
		if n := containersOf(t, sock, string(uid)); n != 0 {
			t.Errorf("rejected pod %s: %d containers made", uid, n)
		}
	}
	for _, name := range []string{"greedy", "port-a", "port-b"} {
		if err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Images from a registry (plain HTTP on localhost, basic auth): a pod
	// whose pull secret has the credentials pulls and runs; without them
	// the pull fails (ErrImagePull, then ImagePullBackOff); an absent
	// image with policy Never is ErrImageNeverPull, and nothing is pulled.
	regHost := startRegistry(t, archive.Bytes(), "test/busybox:pulled", "puller", "s3cret")
	dockerCfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, regHost, base64.StdEncoding.EncodeToString([]byte("puller:s3cret")))
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "regcred"},
		Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(dockerCfg)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	imagePod := func(name, image string, policy corev1.PullPolicy, secret string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: itNode, TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: policy, Command: []string{"sleep", "3600"}}}}}
		if secret != "" {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: secret}}
		}
		return p
	}
	for _, p := range []*corev1.Pod{
		imagePod("pulled", regHost+"/test/busybox:pulled", corev1.PullAlways, "regcred"),
		imagePod("unauthorized", regHost+"/test/busybox:pulled", corev1.PullAlways, ""),
		imagePod("never", regHost+"/test/absent:1", corev1.PullNever, ""),
	} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "pod pulled running from the registry", itWaitLong, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "pulled", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pulled: %v %v %+v", err, p.Status.Phase, p.Status.ContainerStatuses)
		}
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=pulled,reason=Pulled"})
		if err != nil || len(evs.Items) == 0 || !strings.Contains(evs.Items[0].Message, "Successfully pulled image") {
			return fmt.Errorf("no Pulled event saying it was pulled (%v): %+v", err, evs)
		}
		return nil
	})
	for name, reasons := range map[string][]string{"unauthorized": {"ErrImagePull", "ImagePullBackOff"}, "never": {"ErrImageNeverPull"}} {
		eventually(t, "pod "+name+" waiting on its image", 40*time.Second, func() error {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil ||
				!slices.Contains(reasons, p.Status.ContainerStatuses[0].State.Waiting.Reason) {
				return fmt.Errorf("%s: %+v", name, p.Status.ContainerStatuses)
			}
			return nil
		})
	}
	for _, name := range []string{"pulled", "unauthorized", "never"} {
		if err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Lifecycle hooks: postStart runs before the container counts as
	// started, preStop before it is stopped; a failing postStart kills
	// the container, which its restart policy brings back.
	hookDir := filepath.Join(dir, "hooks")
	if err := os.MkdirAll(hookDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hooked := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hooked", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: itNode, TerminationGracePeriodSeconds: &grace,
			Volumes: []corev1.Volume{{Name: "hooks", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hookDir}}}},
			Containers: []corev1.Container{{Name: "c", Image: itImage, Command: []string{"sleep", "3600"},
				VolumeMounts: []corev1.VolumeMount{{Name: "hooks", MountPath: "/hooks"}},
				Lifecycle: &corev1.Lifecycle{
					PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo post > /hooks/post"}}},
					PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo pre > /hooks/pre"}}},
				}}}}}
	badHook := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bad-hook", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: itNode, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: itImage, Command: []string{"sleep", "3600"},
				Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"false"}}}}}}}}
	for _, p := range []*corev1.Pod{hooked, badHook} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "pod hooked running, its postStart hook run", itWaitLong, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "hooked", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("hooked: %v %v", err, p.Status.Phase)
		}
		if b, err := os.ReadFile(filepath.Join(hookDir, "post")); err != nil || string(b) != "post\n" {
			return fmt.Errorf("postStart wrote %q (%v)", b, err)
		}
		return nil
	})
	eventually(t, "pod bad-hook's container killed and restarted", 40*time.Second, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "bad-hook", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].RestartCount < 1 {
			return fmt.Errorf("bad-hook: %v %+v", err, p.Status.ContainerStatuses)
		}
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=bad-hook,reason=FailedPostStartHook"})
		if err != nil || len(evs.Items) == 0 {
			return fmt.Errorf("no FailedPostStartHook event (%v)", err)
		}
		return nil
	})
	for _, name := range []string{"hooked", "bad-hook"} {
		if err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "pod hooked's preStop hook run", 30*time.Second, func() error {
		if b, err := os.ReadFile(filepath.Join(hookDir, "pre")); err != nil || string(b) != "pre\n" {
			return fmt.Errorf("preStop wrote %q (%v)", b, err)
		}
		return nil
	})

	// A container that exits is restarted after the backoff, its last run
	// in lastState.
	crash := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crash", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: itNode, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: itImage, Command: []string{"sh", "-c", "exit 3"}}}},
	}
	crashed, err := cs.CoreV1().Pods("default").Create(ctx, crash, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod crash restarted and backing off", 40*time.Second, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "crash", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) != 1 {
			return fmt.Errorf("statuses %+v", p.Status.ContainerStatuses)
		}
		c := p.Status.ContainerStatuses[0]
		if c.RestartCount < 1 || c.State.Waiting == nil || c.State.Waiting.Reason != "CrashLoopBackOff" ||
			c.LastTerminationState.Terminated == nil || c.LastTerminationState.Terminated.ExitCode != 3 || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s, status %+v", p.Status.Phase, c)
		}
		return nil
	})

	// Deleting the pods stops their containers, detaches them and lets the
	// apiserver remove them.
	start = time.Now()
	for _, name := range []string{"web", "crash", "warm", "half"} {
		if err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "pods gone", 30*time.Second, func() error {
		for _, name := range []string{"web", "crash", "warm", "half", "greedy", "port-a", "port-b", "hooked", "bad-hook", "pulled", "unauthorized", "never"} {
			if _, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: %v", name, err)
			}
		}
		return nil
	})
	t.Logf("the pods deleted → gone in %s (grace period 2s; httpd and sleep ignore SIGTERM as PID 1)", time.Since(start).Round(time.Millisecond))
	for _, uid := range []string{string(created.UID), string(crashed.UID), string(warmCreated.UID)} {
		if n := containersOf(t, sock, uid); n != 0 {
			t.Errorf("pod %s: %d containers left in containerd", uid, n)
		}
		if _, err := os.Stat(filepath.Join(cfg.RootDir, "pods", uid)); !os.IsNotExist(err) {
			t.Errorf("pod %s: its folder is still there (%v)", uid, err)
		}
	}
	if fileExists(sb.NetNS) {
		t.Errorf("the network namespace %s is still there", sb.NetNS)
	}
	if m, _ := mountPointsUnder(cfg.RunDir); len(m) != 0 {
		t.Errorf("mounts left under the run folder: %v", m)
	}
}

// makeOrphan leaves what an agent would have made for a pod: a sandbox
// record with a network namespace, and a labelled container.
func makeOrphan(t *testing.T, cfg *Config, sock, uid string) string {
	t.Helper()
	ns, err := newNetNS(filepath.Join(cfg.RunDir, "netns"), "pod-"+uid)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cfg.RootDir, "pods", uid)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	rec := fmt.Sprintf(`{"uid":%q,"namespace":"default","name":"gone","netns":%q,"ip":"198.19.7.250"}`, uid, ns)
	if err := os.WriteFile(filepath.Join(dir, sandboxFile), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(sock, client.WithDefaultNamespace(DefaultContainerdNS))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	img, err := c.GetImage(t.Context(), itImage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewContainer(t.Context(), "orphan", client.WithImage(img), client.WithSnapshotter(cfg.Containerd.Snapshotter),
		client.WithNewSnapshot("orphan", img), client.WithNewSpec(oci.WithImageConfig(img)),
		client.WithContainerLabels(map[string]string{labelPodUID: uid, labelPodNamespace: "default", labelPodName: "gone", labelContainer: "c", labelAttempt: "0"}),
	); err != nil {
		t.Fatal(err)
	}
	return ns
}

func checkRunningStatus(t *testing.T, p *corev1.Pod) {
	t.Helper()
	st := p.Status
	if st.PodIP == "" || !strings.HasPrefix(st.PodIP, "198.19.7.") || len(st.PodIPs) != 1 || st.HostIP != itNodeIP || st.StartTime == nil {
		t.Errorf("addresses: podIP %q podIPs %v hostIP %q startTime %v", st.PodIP, st.PodIPs, st.HostIP, st.StartTime)
	}
	if st.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("qosClass %q", st.QOSClass)
	}
	want := map[corev1.PodConditionType]bool{corev1.PodScheduled: true, corev1.PodInitialized: true,
		corev1.ContainersReady: true, corev1.PodReady: true, corev1.PodReadyToStartContainers: true}
	for _, c := range st.Conditions {
		if want[c.Type] && c.Status == corev1.ConditionTrue {
			delete(want, c.Type)
		}
	}
	if len(want) != 0 {
		t.Errorf("conditions not True: %v (%+v)", want, st.Conditions)
	}
	if len(st.ContainerStatuses) != 1 {
		t.Fatalf("container statuses %+v", st.ContainerStatuses)
	}
	cs := st.ContainerStatuses[0]
	if !strings.HasPrefix(cs.ContainerID, "containerd://") || cs.State.Running == nil || !cs.Ready ||
		cs.Started == nil || !*cs.Started || cs.RestartCount != 0 || cs.Image != itImage || !strings.Contains(cs.ImageID, "@sha256:") {
		t.Errorf("container status %+v", cs)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func loadSandboxAt(cfg *Config, uid types.UID) (*sandbox, error) {
	a := &Agent{cfg: cfg}
	return a.loadSandbox(uid)
}

func taskState(t *testing.T, sock, id string) client.ProcessStatus {
	t.Helper()
	c, err := client.New(sock, client.WithDefaultNamespace(DefaultContainerdNS))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctr, err := c.LoadContainer(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := task.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st.Status
}

func containersOf(t *testing.T, sock, uid string) int {
	t.Helper()
	c, err := client.New(sock, client.WithDefaultNamespace(DefaultContainerdNS))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctrs, err := c.Containers(t.Context(), `labels."`+labelPodUID+`"==`+fmt.Sprintf("%q", uid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ctrs)
}

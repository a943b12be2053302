package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// nodeOpsEnv is what the node add/remove tests need from TestUp's lab.
type nodeOpsEnv struct {
	workloadEnv
	bin, spec string
	// kforge runs the binary and returns stdout, stderr.
	kforge func(args ...string) (string, string, error)
}

// apiLoad reads and writes a ConfigMap through the load balancer every
// 100 ms until stopped, counting the requests that failed.
type apiLoad struct {
	client   kubernetes.Interface
	mu       sync.Mutex
	requests int
	failures []string
	stop     chan struct{}
	done     chan struct{}
}

func startAPILoad(t *testing.T, kubeconfig string) *apiLoad {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.Timeout = 5 * time.Second
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	l := &apiLoad{client: client, stop: make(chan struct{}), done: make(chan struct{})}
	ctx := context.Background()
	_ = client.CoreV1().ConfigMaps("default").Delete(ctx, "e2e-nodeops-load", metav1.DeleteOptions{})
	if _, err := client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-nodeops-load"}, Data: map[string]string{"n": "0"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			err := l.once(ctx, i)
			l.mu.Lock()
			l.requests += 2
			if err != nil {
				l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *apiLoad) once(ctx context.Context, i int) error {
	cm, err := l.client.CoreV1().ConfigMaps("default").Get(ctx, "e2e-nodeops-load", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	cm.Data["n"] = fmt.Sprint(i)
	if _, err := l.client.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// take returns the counts since the last take.
func (l *apiLoad) take() (requests int, failures []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	requests, failures = l.requests, l.failures
	l.requests, l.failures = 0, nil
	return requests, failures
}

func (l *apiLoad) close() {
	close(l.stop)
	<-l.done
}

// testNodeOps removes worker w3 and adds it back with kforge node, while a
// client reads and writes through the load balancer every 100 ms: the web
// Deployment's pods leave w3 and are Ready elsewhere, its Node goes, the
// host is as clean as after kforge reset, kforge up has nothing to do
// afterwards; added back, its Node is Ready and kforge up again has
// nothing to do.
func testNodeOps(t *testing.T, e nodeOpsEnv) {
	load := startAPILoad(t, e.kubeconfig)
	defer load.close()
	step := func(name string, args ...string) (string, string, error) {
		load.take()
		start := time.Now()
		out, errOut, err := e.kforge(args...)
		n, failed := load.take()
		t.Logf("TIMING %s: %s; API load through the lb: %d requests, %d failed %v", name, time.Since(start).Round(100*time.Millisecond), n, len(failed), failed)
		if len(failed) > 0 {
			t.Errorf("%s: %d of %d requests through the lb failed: %v", name, len(failed), n, failed)
		}
		return out, errOut, err
	}
	noop := func(when string) {
		t.Helper()
		out, errOut, err := step("kforge up "+when, "up", "-f", e.spec, "--binary", e.bin)
		if err != nil {
			t.Fatalf("up %s: %v", when, err)
		}
		if !strings.Contains(out, "(0 change(s))") || strings.Contains(errOut, "started") {
			t.Errorf("up %s changed something:\n%s\n%s", when, errOut, out)
		}
	}
	specBefore, err := os.ReadFile(e.spec)
	if err != nil {
		t.Fatal(err)
	}
	pkiW3 := filepath.Join(filepath.Dir(e.spec), "pki", "hosts", "w3")

	t.Run("remove worker w3", func(t *testing.T) {
		out, _, err := step("kforge node remove w3 --dry-run", "node", "remove", "-f", e.spec, "w3", "--dry-run")
		if err != nil || !strings.Contains(out, "nothing was changed") {
			t.Fatalf("dry run: %v\n%s", err, out)
		}
		if data, _ := os.ReadFile(e.spec); string(data) != string(specBefore) {
			t.Fatal("the dry run changed cluster.yaml")
		}
		if _, _, err := step("kforge node remove w3", "node", "remove", "-f", e.spec, "w3"); err != nil {
			t.Fatal(err)
		}
		if out, err := e.kubectl(10*time.Second, "get", "node", "w3"); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("Node w3 after remove: %v %s", err, out)
		}
		if msg := eventually(90*time.Second, 2*time.Second, func() string {
			pods := e.webPods(t)
			ready := 0
			for n, p := range pods {
				if p[0] == "w3" {
					return n + " still on w3"
				}
				if p[3] == "true" {
					ready++
				}
			}
			if ready != 3 {
				return fmt.Sprintf("%d of 3 web pods ready after w3 left: %v", ready, pods)
			}
			return ""
		}); msg != "" {
			t.Error(msg)
		}
		out, _ = e.ssh("w3", "ls -d /etc/kforge /var/lib/kforge /usr/local/bin/kforge /etc/systemd/system/kforge-* 2>/dev/null; systemctl list-units --all --no-legend 'kforge-*'; "+
			"ctr -n k8s.io containers ls -q; ip route show proto 66; ip -o link show cni0 2>/dev/null; find /var/log/pods /run/kforge /etc/cni/net.d -mindepth 1 2>/dev/null; true")
		if strings.TrimSpace(out) != "" {
			t.Errorf("w3 after node remove is not clean:\n%s", out)
		}
		data, _ := os.ReadFile(e.spec)
		if strings.Contains(string(data), "name: w3") {
			t.Errorf("cluster.yaml still has w3:\n%s", data)
		}
		if _, err := os.Stat(pkiW3); !os.IsNotExist(err) {
			t.Errorf("w3's PKI folder: %v", err)
		}
		noop("after node remove")
	})
	if t.Failed() {
		return
	}

	t.Run("add worker w3 back", func(t *testing.T) {
		if _, _, err := e.kforge("node", "add", "-f", e.spec, "w3", "--address", "198.18.0.21"); err == nil {
			t.Error("node add with w1's address went ahead")
		}
		_, errOut, err := step("kforge node add w3", "node", "add", "-f", e.spec, "w3", "--address", "198.18.0.23", "--binary", e.bin)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(errOut, "✓ Node w3 registered and Ready") {
			t.Errorf("no Ready line:\n%s", errOut)
		}
		for _, l := range strings.Split(errOut, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && (f[0] == "✓" || f[0] == "-") && strings.HasPrefix(l, " ") && f[1] != "w3" {
				t.Errorf("node add worked on another host: %s", l)
			}
		}
		out, err := e.kubectl(10*time.Second, "get", "node", "w3", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil || out != "True" {
			t.Errorf("Node w3: %v %s", err, out)
		}
		if data, _ := os.ReadFile(e.spec); string(data) != string(specBefore) {
			t.Errorf("cluster.yaml after remove and add differs from before:\n%s", data)
		}
		noop("after node add")
	})
}

// TestNodeOpsOnRunningLab runs testNodeOps against a lab someone already
// brought up and installed (KFORGE_LAB_DIR), with the web Deployment of
// the workload tests applied.
func TestNodeOpsOnRunningLab(t *testing.T) {
	dir := os.Getenv("KFORGE_LAB_DIR")
	if dir == "" {
		t.Skip("set KFORGE_LAB_DIR to a lab installed with kforge up")
	}
	bin := binary(t)
	testNodeOps(t, nodeOpsEnv{
		workloadEnv: workloadEnv{kubectlBin: kubectlBinary(t), kubeconfig: filepath.Join(dir, "admin.kubeconfig"),
			ssh: func(host, cmd string) (string, error) {
				out, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, host, "--", cmd)
				return out, err
			}},
		bin: bin, spec: filepath.Join(dir, "cluster.yaml"),
		kforge: func(args ...string) (string, string, error) { return kforge(t, bin, nil, args...) },
	})
}

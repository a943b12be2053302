package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// rotateEnv is what the rotation test needs from a lab installed with
// kforge up.
type rotateEnv struct {
	workloadEnv
	bin, spec, dir string
	hosts          []string
}

// hostCerts reads every certificate under /etc/kforge/pki on a host: the
// .crt files and the client certificates kubeconfigs embed, as
// "file" → serial (decimal), and which of them are CAs.
func (e rotateEnv) hostCerts(t *testing.T, host string) (serials map[string]string, cas map[string]bool) {
	t.Helper()
	out, err := e.ssh(host, `for f in /etc/kforge/pki/*.crt /etc/kforge/pki/*.kubeconfig; do [ -f "$f" ] && echo "== $f" && cat "$f"; done; true`)
	if err != nil {
		t.Fatalf("%s: reading /etc/kforge/pki: %v\n%s", host, err, out)
	}
	serials, cas = map[string]string{}, map[string]bool{}
	for _, part := range strings.Split(out, "== ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		name = filepath.Base(strings.TrimSpace(name))
		data := []byte(body)
		if strings.HasSuffix(name, ".kubeconfig") {
			cfg, err := clientcmd.Load(data)
			if err != nil {
				t.Fatalf("%s: %s: %v", host, name, err)
			}
			for _, ai := range cfg.AuthInfos {
				data = ai.ClientCertificateData
			}
		}
		b, _ := pem.Decode(data)
		if b == nil {
			t.Fatalf("%s: %s holds no certificate", host, name)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %s: %v", host, name, err)
		}
		serials[name], cas[name] = c.SerialNumber.String(), c.IsCA
	}
	return serials, cas
}

// rotateLoad reads and writes through the load balancer every 100 ms until
// stopped, counting failures.
type rotateLoad struct {
	ok, failed int
	errs       []string
	stop       chan struct{}
	done       chan struct{}
	mu         sync.Mutex
}

func startRotateLoad(t *testing.T, kubeconfig string) *rotateLoad {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &rotateLoad{stop: make(chan struct{}), done: make(chan struct{})}
	cms := cs.CoreV1().ConfigMaps("default")
	name := "e2e-rotate-load"
	_ = cms.Delete(context.Background(), name, metav1.DeleteOptions{})
	go func() {
		defer close(l.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, rerr := cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": fmt.Sprint(i)}}
			_, werr := cms.Update(ctx, cm, metav1.UpdateOptions{})
			if apierrors.IsNotFound(werr) {
				_, werr = cms.Create(ctx, cm, metav1.CreateOptions{})
			}
			cancel()
			l.mu.Lock()
			for _, err := range []error{rerr, werr} {
				if err == nil {
					l.ok++
				} else {
					l.failed++
					if len(l.errs) < 10 {
						l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
				}
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *rotateLoad) finish() (ok, failed int, errs []string) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.failed, l.errs
}

// testCertRotate rotates every leaf certificate of a running lab while a
// client reads and writes through the load balancer, and checks that no
// request failed, that every leaf on every host changed and no CA did,
// that the web workload kept running, and that a fresh kubeconfig works.
func testCertRotate(t *testing.T, e rotateEnv) {
	_, file, _, _ := runtime.Caller(0)
	manifest := filepath.Join(filepath.Dir(file), "..", "..", "examples", "web.yaml")
	if out, err := e.kubectl(20*time.Second, "apply", "-f", manifest); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if out, err := e.kubectl(100*time.Second, "rollout", "status", "deployment/web", "--timeout=90s"); err != nil {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	podsBefore := e.webPods(t)

	before := map[string]map[string]string{}
	cas := map[string]map[string]bool{}
	for _, h := range e.hosts {
		before[h], cas[h] = e.hostCerts(t, h)
	}

	// The plan changes nothing.
	if out, _, err := kforge(t, e.bin, nil, "cert", "rotate", "-f", e.spec, "--dry-run"); err != nil || !strings.Contains(out, "(dry run)") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	for _, h := range e.hosts {
		if now, _ := e.hostCerts(t, h); fmt.Sprint(now) != fmt.Sprint(before[h]) {
			t.Errorf("%s: the dry run changed certificates", h)
		}
	}

	load := startRotateLoad(t, e.kubeconfig)
	start := time.Now()
	out, stderr, err := kforge(t, e.bin, nil, "cert", "rotate", "-f", e.spec)
	took := time.Since(start)
	time.Sleep(time.Second) // a few more requests after the rollout
	ok, failed, errs := load.finish()
	t.Logf("TIMING kforge cert rotate (every leaf, %d hosts): %s", len(e.hosts), took)
	t.Logf("FIGURE requests through the lb during the rotation: %d ok, %d failed", ok, failed)
	if err != nil {
		t.Fatalf("cert rotate: %v", err)
	}
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the rotation:\n%s", failed, ok+failed, strings.Join(errs, "\n"))
	}
	if ok == 0 {
		t.Error("no request succeeded during the rotation")
	}
	for _, w := range []string{"✓ Reissue leaf certificates", "✓ Reloaded certificates served"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q", w)
		}
	}
	if !strings.Contains(out, "NEW SERIAL") {
		t.Errorf("no before/after table:\n%s", out)
	}

	// Every leaf on every host changed; no CA did.
	var unchanged []string
	for _, h := range e.hosts {
		now, _ := e.hostCerts(t, h)
		for f, s := range before[h] {
			switch {
			case now[f] == "":
				t.Errorf("%s: %s is gone", h, f)
			case cas[h][f] && now[f] != s:
				t.Errorf("%s: the CA %s changed", h, f)
			case !cas[h][f] && now[f] == s:
				unchanged = append(unchanged, h+":"+f)
			}
		}
	}
	sort.Strings(unchanged)
	if len(unchanged) > 0 {
		t.Errorf("leaf certificates whose serial did not change: %v", unchanged)
	}

	// The workload kept running: the same pods, all Ready.
	if msg := eventually(60*time.Second, time.Second, func() string {
		now := e.webPods(t)
		for name, p := range podsBefore {
			q, ok := now[name]
			if !ok {
				return fmt.Sprintf("pod %s is gone: %v", name, now)
			}
			if q[2] != p[2] {
				return fmt.Sprintf("pod %s's container changed: %s -> %s", name, p[2], q[2])
			}
			if q[3] != "true" {
				return fmt.Sprintf("pod %s is not ready: %v", name, q)
			}
		}
		return ""
	}); msg != "" {
		t.Error(msg)
	}

	// A freshly printed kubeconfig works.
	kcOut, _, err := kforge(t, e.bin, nil, "kubeconfig", "-f", e.spec)
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "fresh.kubeconfig")
	if err := os.WriteFile(fresh, []byte(kcOut), 0o600); err != nil {
		t.Fatal(err)
	}
	fe := e.workloadEnv
	fe.kubeconfig = fresh
	if out, err := fe.kubectl(20*time.Second, "get", "nodes"); err != nil || !strings.Contains(out, "Ready") {
		t.Errorf("kubectl with a fresh kubeconfig: %v\n%s", err, out)
	}
	if out, err := e.kubectl(20*time.Second, "auth", "whoami"); err != nil {
		t.Errorf("kubectl with the rewritten admin.kubeconfig: %v\n%s", err, out)
	}
}

// TestCertRotateOnRunningLab runs the rotation test against a lab someone
// already brought up and installed (KFORGE_LAB_DIR); TestUp runs it too.
func TestCertRotateOnRunningLab(t *testing.T) {
	dir := os.Getenv("KFORGE_LAB_DIR")
	if dir == "" {
		t.Skip("set KFORGE_LAB_DIR to a lab installed with kforge up")
	}
	bin := binary(t)
	testCertRotate(t, newRotateEnv(t, bin, dir))
}

func newRotateEnv(t *testing.T, bin, dir string) rotateEnv {
	var hosts []string
	for _, h := range readState(t, dir).Hosts {
		hosts = append(hosts, h.Name)
	}
	return rotateEnv{
		workloadEnv: workloadEnv{kubectlBin: kubectlBinary(t), kubeconfig: filepath.Join(dir, "admin.kubeconfig"),
			ssh: func(host, cmd string) (string, error) {
				out, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, host, "--", cmd)
				return out, err
			}},
		bin: bin, spec: filepath.Join(dir, "cluster.yaml"), dir: dir, hosts: hosts,
	}
}

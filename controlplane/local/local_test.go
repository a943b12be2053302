package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kforge.dev/kforge/pki"
)

// syncBuffer is a bytes.Buffer safe to write from Up and read from the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type running struct {
	cancel context.CancelFunc
	done   chan error
	out    *syncBuffer
	config *rest.Config
}

// up starts Up on dir and a free port and waits for its kubeconfig.
func up(t *testing.T, dir string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), out: &syncBuffer{}}
	go func() {
		r.done <- Up(ctx, Options{Dir: dir, Port: 0, Out: r.out, ErrOut: io.Discard,
			Logger: slog.New(slog.DiscardHandler), ReadyTimeout: 25 * time.Second})
	}()
	t.Cleanup(func() { r.stop(t) })
	path := KubeconfigPath(dir)
	deadline := time.After(25 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Up returned before it was ready: %v", err)
		case <-deadline:
			t.Fatal("no kubeconfig after 25s")
		case <-time.After(50 * time.Millisecond):
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v, want 0600", fi.Mode().Perm())
	}
	r.config, err = clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	// Up prints how to use the cluster right after the kubeconfig is in
	// place, not before: give it a moment.
	for i := 0; !strings.Contains(r.out.String(), "kubectl --kubeconfig "+path+" get ns"); i++ {
		if i == 100 {
			t.Errorf("Up did not print how to use it:\n%s", r.out.String())
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// stop cancels Up and waits for it; safe to call twice.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Up: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("Up did not return 20s after cancel")
	}
}

func TestUpServesAndKeepsDataAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()

	first := up(t, dir)
	cs, err := kubernetes.NewForConfig(first.config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
		t.Fatalf("kube-system: %v", err)
	}
	want := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor"}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, want, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// /metrics through an HTTP client with the admin certificate.
	hc, err := rest.HTTPClientFor(first.config)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(first.config.Host + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	// The test's create, and the root-ca-cert-publisher's of
	// kube-root-ca.crt in each namespace.
	if line := `apiserver_request_total{code="201",resource="configmaps",verb="POST"} `; !strings.Contains(string(body), line) {
		t.Errorf("/metrics lacks %s", line)
	}
	hc.CloseIdleConnections()

	first.stop(t)
	if _, err := os.Stat(KubeconfigPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the kubeconfig outlived the control plane: %v", err)
	}
	for _, f := range []string{EtcdConfig, APIServerConf, "pki/ca/cluster-ca.key", "etcd/member"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, "pki/ca/cluster-ca.crt"))

	second := up(t, dir)
	if second.config.Host == first.config.Host {
		t.Logf("the same port twice (%s): allowed, just unlikely", second.config.Host)
	}
	cs2, err := kubernetes.NewForConfig(second.config)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs2.CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the ConfigMap did not survive a restart: %v", err)
	}
	if got.Data["k"] != "v" {
		t.Errorf("data %v", got.Data)
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, "pki/ca/cluster-ca.crt"))
	if !bytes.Equal(caBefore, caAfter) {
		t.Error("the cluster CA was reissued on restart")
	}
	second.stop(t)
}

func TestUpRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{}, {Dir: t.TempDir(), Port: 70000}, {Dir: t.TempDir(), Port: -1}} {
		if err := Up(context.Background(), o); err == nil {
			t.Errorf("Up(%+v) accepted", o)
		}
	}
}

func TestPKISpecMakesAnInventory(t *testing.T) {
	dir := t.TempDir()
	s := PKISpec(dir, 6443)
	if s.APIServerURL != "https://127.0.0.1:6443" {
		t.Errorf("APIServerURL %s", s.APIServerURL)
	}
	inv, err := pki.NewInventory(s, "")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Dir != filepath.Join(dir, PKIDir) {
		t.Errorf("PKI dir %s", inv.Dir)
	}
	if len(inv.FilesFor(HostName)) == 0 {
		t.Errorf("no files for host %s", HostName)
	}
}

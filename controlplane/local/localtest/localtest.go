// Package localtest runs the local control plane (etcd, apiserver,
// controller manager and scheduler of package local) for the integration
// tests of other packages: in a temporary folder, on a free port, stopped
// when the test ends.
package localtest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kforge.dev/kforge/controlplane/local"
)

// readyTimeout bounds the start; the race detector on a loaded 2-core
// machine needs most of it.
const readyTimeout = 90 * time.Second

// ControlPlane is a running local control plane.
type ControlPlane struct {
	// Dir holds its PKI (Dir/pki), etcd data and admin kubeconfig.
	Dir string
	// Config is the admin client configuration, with QPS 200, burst 400.
	Config *rest.Config

	cancel context.CancelFunc
	done   chan error
}

// Start runs a local control plane until the test ends (or Stop) and
// returns once it is ready: the admin kubeconfig is written only then.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	cp := &ControlPlane{Dir: t.TempDir(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	cp.cancel = cancel
	go func() {
		cp.done <- local.Up(ctx, local.Options{Dir: cp.Dir, Port: 0, ErrOut: io.Discard,
			Logger: slog.New(slog.DiscardHandler), ReadyTimeout: readyTimeout})
	}()
	t.Cleanup(func() { cp.Stop(t) })
	path := local.KubeconfigPath(cp.Dir)
	deadline := time.After(readyTimeout + 5*time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		select {
		case err := <-cp.done:
			cp.done = nil
			t.Fatalf("local.Up returned before it was ready: %v", err)
		case <-deadline:
			t.Fatalf("no admin kubeconfig %s after %s", path, readyTimeout+5*time.Second)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cp.Config = cfg
	return cp
}

// Client is an admin clientset.
func (cp *ControlPlane) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Stop ends the control plane and waits for it; later calls do nothing.
func (cp *ControlPlane) Stop(t testing.TB) {
	t.Helper()
	if cp.done == nil {
		return
	}
	cp.cancel()
	select {
	case err := <-cp.done:
		if err != nil {
			t.Errorf("local.Up: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("local.Up did not return 30s after it was cancelled")
	}
	cp.done = nil
}

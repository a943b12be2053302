package installer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/internal/atomicfile"
	"kforge.dev/kforge/pki"
)

// WaitAPIPhase waits until the API answers through the load balancer
// address clients use.
type WaitAPIPhase struct{ cp *ControlPlane }

func (p *WaitAPIPhase) ID() string    { return "wait-api" }
func (p *WaitAPIPhase) Title() string { return "The API through the load balancer" }

func (p *WaitAPIPhase) DryRun(context.Context) error { return nil }

func (p *WaitAPIPhase) Run(ctx context.Context) error {
	url := p.cp.Cluster.APIServerURL()
	if err := waitFor(ctx, APIServerWait, pollInterval, func(ctx context.Context) error {
		return p.cp.prober.APIServer(ctx, url)
	}); err != nil {
		return err
	}
	// Our lb must also have every master back in: an apiserver started a
	// moment ago is healthy before the lb's next check says so, and
	// `kforge status` right after up would call it down.
	lbh := p.cp.lbHost()
	if lbh == nil || p.cp.Env.Gate.DryRun() {
		return nil
	}
	return waitFor(ctx, LBWait, pollInterval, func(ctx context.Context) error {
		up, err := lbBackends(ctx, lbh)
		if err != nil {
			return err
		}
		var down []string
		for _, m := range p.cp.Cluster.Masters() {
			if b := v1alpha1.HostPort(m.Address, 6443); !up[b] {
				down = append(down, b)
			}
		}
		if len(down) > 0 {
			return fmt.Errorf("the lb has not taken back %s yet", strings.Join(down, ", "))
		}
		return nil
	})
}

// AdminKubeconfigPath is where `kforge up` writes the admin kubeconfig:
// beside cluster.yaml.
func AdminKubeconfigPath(clusterFile string) string {
	return filepath.Join(filepath.Dir(clusterFile), "admin.kubeconfig")
}

// KubeconfigPhase writes the admin kubeconfig beside cluster.yaml (0600).
type KubeconfigPhase struct{ cp *ControlPlane }

func (p *KubeconfigPhase) ID() string    { return "kubeconfig" }
func (p *KubeconfigPhase) Title() string { return "Admin kubeconfig" }

func (p *KubeconfigPhase) ShouldRun() (bool, string) {
	if p.cp.Cluster.Path == "" {
		return false, "no cluster file to write it beside"
	}
	return true, ""
}

func (p *KubeconfigPhase) DryRun(context.Context) error { return nil }

func (p *KubeconfigPhase) Run(context.Context) error {
	data, err := pki.KubeconfigFor(p.cp.inv, "admin")
	if err != nil {
		return err
	}
	dst := AdminKubeconfigPath(p.cp.Cluster.Path)
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, data) {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().Perm() == 0o600 {
			return nil
		}
	}
	return atomicfile.Write(dst, data, 0o600)
}

package local

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"kforge.dev/kforge/controlplane/scheduler"
	"kforge.dev/kforge/internal/atomicfile"
	"kforge.dev/kforge/pki"
)

// SchedulerKubeconfigFile is the scheduler's kubeconfig under Options.Dir
// (user system:kube-scheduler, so local up exercises its RBAC).
const SchedulerKubeconfigFile = "scheduler.kubeconfig"

// runningRole is a role Up runs in-process beside the apiserver.
type runningRole struct {
	err    chan error // gets the role's result once
	cancel context.CancelFunc
	done   chan struct{}
}

// stop cancels the role and waits for it to return.
func (r *runningRole) stop() {
	r.cancel()
	<-r.done
}

// startScheduler runs the scheduler in-process with leader election on
// (so a second `kforge scheduler` pointed at this control plane stands
// by) and no health listener.
func startScheduler(ctx context.Context, dir string, inv *pki.Inventory, log *slog.Logger) (*runningRole, error) {
	data, err := pki.KubeconfigFor(inv, "scheduler")
	if err != nil {
		return nil, fmt.Errorf("local: scheduler kubeconfig: %w", err)
	}
	path := filepath.Join(dir, SchedulerKubeconfigFile)
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	cfg := scheduler.NewConfig()
	cfg.Kubeconfig = path
	cfg.HealthAddress = ""
	s, err := scheduler.New(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &runningRole{err: make(chan error, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := s.Run(ctx); err != nil {
			r.err <- err
		}
	}()
	return r, nil
}

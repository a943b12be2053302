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

// startScheduler runs the scheduler in-process with leader election on
// (so a second `kforge scheduler` pointed at this control plane stands
// by) and no health listener; a lost lease restarts it (superviseRole).
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
	newRun := func() (func(context.Context) error, error) {
		s, err := scheduler.New(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
		return s.Run, nil
	}
	run, err := newRun()
	if err != nil {
		return nil, err
	}
	return superviseRole(ctx, "scheduler", log, restartDelay, run, newRun), nil
}

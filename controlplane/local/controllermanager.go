package local

import (
	"context"
	"log/slog"
	"path/filepath"

	"kforge.dev/kforge/controlplane/controllers"
	"kforge.dev/kforge/internal/atomicfile"
	"kforge.dev/kforge/pki"
)

// ControllerManagerKubeconfig is the controller manager's kubeconfig
// under Options.Dir (its own client certificate, not the admin's).
const ControllerManagerKubeconfig = "controller-manager.kubeconfig"

// startControllerManager runs the controller manager in-process, leader
// elected like on a master, with its own client certificate and no
// metrics listener (10257 may belong to a real one). The returned stop
// cancels it and waits for it to return.
func startControllerManager(ctx context.Context, dir string, inv *pki.Inventory, log *slog.Logger) (stop func(), err error) {
	data, err := pki.KubeconfigFor(inv, "controller-manager")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ControllerManagerKubeconfig)
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, err
	}
	cfg := controllers.NewConfig()
	cfg.Kubeconfig = path
	cfg.MetricsAddress = ""
	cfg.LeaderElection.Identity = HostName
	m, err := controllers.NewManager(cfg, log.With("role", "controller-manager"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Run(ctx); err != nil {
			log.Error("controller manager stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

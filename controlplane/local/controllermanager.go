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
// elected like on a master, with its own client certificate, node IPAM
// over PodCIDR and no metrics listener (10257 may belong to a real one); a lost lease
// restarts it (superviseRole).
func startControllerManager(ctx context.Context, dir string, inv *pki.Inventory, log *slog.Logger) (*runningRole, error) {
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
	cfg.ClusterCIDR = PodCIDR // node IPAM, so agents joining a local control plane get a pod range
	cfg.LeaderElection.Identity = HostName
	log = log.With("role", "controller-manager")
	newRun := func() (func(context.Context) error, error) {
		m, err := controllers.NewManager(cfg, log)
		if err != nil {
			return nil, err
		}
		return m.Run, nil
	}
	run, err := newRun()
	if err != nil {
		return nil, err
	}
	return superviseRole(ctx, "controller manager", log, restartDelay, run, newRun), nil
}

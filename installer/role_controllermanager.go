package installer

import (
	"context"

	"kforge.dev/kforge/controlplane/controllers"
)

// ControllerManagerMetricsAddress is where each master's controller
// manager serves /healthz, /readyz and /metrics (loopback only).
const ControllerManagerMetricsAddress = "127.0.0.1:10257"

// controllerManagerRole runs the controllers on every master, one active
// at a time through the kforge-controller-manager Lease; a client of the
// API through the load balancer.
var controllerManagerRole = &Role{
	Name:        "controller-manager",
	Description: "kforge controller manager (leader-elected)",
	Title:       "controller managers (leader-elected)",
	RunsOn:      onMasters,
	Config: func(cp *ControlPlane, h Host) (any, error) {
		c := controllers.NewConfig()
		c.Kubeconfig = pkiPath("controller-manager.kubeconfig")
		c.LeaderElection.Enabled = true
		c.LeaderElection.Identity = h.Name()
		c.MetricsAddress = ControllerManagerMetricsAddress
		// Node IPAM: a /24 per Node from the cluster's pod range.
		c.ClusterCIDR = cp.Cluster.Spec.Network.PodCIDR
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := controllers.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"controller-manager.kubeconfig"},
	Ports:    []int{10257},
	Health: func(ctx context.Context, _ *ControlPlane, h Host) error {
		return loopbackHealthz(ctx, h, ControllerManagerMetricsAddress)
	},
	Wait:        APIServerWait,
	NeedsAPI:    true,
	LeaderLease: controllers.DefaultLeaseName,
}

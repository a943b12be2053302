package installer

import (
	"context"

	"kforge.dev/kforge/controlplane/scheduler"
)

// SchedulerHealthAddress is where each master's scheduler serves /healthz,
// /readyz and /metrics (loopback only).
const SchedulerHealthAddress = "127.0.0.1:10259"

// schedulerRole binds pods to nodes on every master, one active at a time
// through the kforge-scheduler Lease; a client of the API through the
// load balancer.
var schedulerRole = &Role{
	Name:        "scheduler",
	Description: "kforge scheduler (leader-elected)",
	Title:       "schedulers (leader-elected)",
	RunsOn:      onMasters,
	Config: func(cp *ControlPlane, h Host) (any, error) {
		c := scheduler.NewConfig()
		c.Kubeconfig = pkiPath("scheduler.kubeconfig")
		c.LeaderElection.Enabled = true
		c.LeaderElection.Identity = h.Name()
		c.HealthAddress = SchedulerHealthAddress
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := scheduler.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"scheduler.kubeconfig"},
	Ports:    []int{10259},
	Health: func(ctx context.Context, _ *ControlPlane, h Host) error {
		return loopbackHealthz(ctx, h, SchedulerHealthAddress)
	},
	Wait:        APIServerWait,
	NeedsAPI:    true,
	LeaderLease: scheduler.DefaultLeaseName,
}

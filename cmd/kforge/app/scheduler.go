package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/controlplane/scheduler"
)

type schedulerFlags struct {
	config string
}

func newSchedulerCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f schedulerFlags
	cmd := &cobra.Command{
		Use:   "scheduler",
		Short: "Run the scheduler in the foreground",
		Long: `scheduler places pods on nodes: it watches the pods whose schedulerName is
its own (default-scheduler) and the nodes, keeps a cache of what each node runs,
takes pods from a priority queue, filters nodes (Ready, not cordoned,
nodeSelector and required node affinity, taints and tolerations, host ports,
cpu/memory/pods requests against allocatable, pod affinity and anti-affinity,
topology spread constraints), scores the rest (least allocated, balanced,
preferred node and pod affinity, soft spread, PreferNoSchedule taints) and
binds each pod through pods/binding. A pod that fits nowhere gets
PodScheduled=False, reason Unschedulable, and is retried with backoff and when
the cluster changes in a way that may let it fit; a pod with schedulingGates
waits with reason SchedulingGated. Several instances elect one leader through
the Lease kube-system/kforge-scheduler; on the first SIGTERM or SIGINT the
leader stops and releases the lease. A lost lease ends the command with an
error (systemd restarts it). It serves /healthz, /readyz and /metrics on
healthAddress (127.0.0.1:10259). The config
file is validated whole before anything starts.`,
		Example: `  kforge scheduler --config /etc/kforge/scheduler.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := scheduler.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return scheduler.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", scheduler.DefaultConfigPath, "the scheduler role config file")
	return cmd
}

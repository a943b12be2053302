package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/nodeagent"
)

type agentFlags struct {
	config string
}

func newAgentCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent (the kubelet) in the foreground",
		Long: `agent is the node agent of a worker. It registers the Node (addresses, labels,
capacity and allocatable minus the configured reservation, conditions) and
keeps its Lease in kube-node-lease renewed every 10 s and its status fresh.
It runs the pods bound to the node through containerd (namespace k8s.io): a
network namespace per pod attached with CNI (bridge, host-local IPAM on the
node's pod CIDR, portmap, loopback), /etc/hosts and resolv.conf for cluster
DNS, volumes (emptyDir, configMap, secret, downwardAPI, projected, hostPath),
init containers, restart policy with crash-loop backoff, probes (exec,
httpGet, tcpSocket), postStart/preStop hooks and graceful termination, and
reports pod status; a pod that does not fit the node is rejected (OutOfcpu,
OutOfmemory, OutOfpods, NodePorts). Images come from containerd, from OCI
archives in imageDir, or from their registry by imagePullPolicy (pull
secrets; containerd's hosts.toml in registryConfigDir). Stopping the agent
leaves containers running; a restarted agent adopts them and removes those
whose pod is gone. It serves /healthz, /readyz and /metrics on healthAddress
(127.0.0.1:10248). The config file is validated whole before anything starts.`,
		Example: `  kforge agent --config /etc/kforge/agent.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := nodeagent.LoadConfig(f.config)
			if err != nil {
				return err
			}
			cfg.Version = Version
			return nodeagent.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", nodeagent.DefaultConfigPath, "the agent role config file")
	cmd.AddCommand(newAgentCleanupCommand(streams, g))
	return cmd
}

func newAgentCleanupCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove every pod and the pod network the agent made on this host",
		Long: `cleanup undoes what the node agent made outside its unit: it stops (5 s grace)
and removes every pod's containers in containerd, tears down each sandbox
(CNI DEL, network namespace, volumes), deletes the routes to other nodes'
pods and the masquerade table, the CNI network list and bridge, and the
agent's state, run and pod log folders. Images stay in containerd. Stop the
agent first: kforge reset runs this on each worker after stopping the units.
It goes on past failures, reports them all, and can be run again.`,
		Example: `  systemctl stop kforge-agent && kforge agent cleanup --config /etc/kforge/agent.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := nodeagent.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return nodeagent.Cleanup(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", nodeagent.DefaultConfigPath, "the agent role config file")
	return cmd
}

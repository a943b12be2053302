package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/serviceproxy"
)

type proxyFlags struct {
	config string
}

func newProxyCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f proxyFlags
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the service proxy in the foreground",
		Long: `proxy makes Services reachable on this node through nftables: it watches
Services and EndpointSlices and keeps the table "kforge" (family ip) in line
with them — ClusterIPs, NodePorts on the node's addresses, externalIPs, a
random choice over the ready endpoints (terminating ones when none is ready),
ClientIP session affinity, the Local traffic policies, masquerade for
off-cluster and hairpin traffic, and an ICMP reject for a Service with no
endpoint. The table is rebuilt in one transaction at start and every
syncPeriod, and changed in place in between; when an endpoint of a UDP
Service goes, its conntrack entries go too. A transaction the kernel refuses
leaves the previous rules in place and is retried with backoff. It serves
/healthz (the last sync's time), /readyz and /metrics on healthAddress
(127.0.0.1:10256). The table stays when the proxy stops; "kforge proxy
cleanup" removes it.`,
		Example: `  kforge proxy --config /etc/kforge/proxy.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := serviceproxy.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return serviceproxy.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", serviceproxy.DefaultConfigPath, "the proxy role config file")
	cmd.AddCommand(newProxyCleanupCommand(streams, g))
	return cmd
}

func newProxyCleanupCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f proxyFlags
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove the proxy's nftables table from this host",
		Long: `cleanup deletes the nftables table "kforge" the service proxy keeps, and
nothing else. Stop the proxy first: kforge reset runs this on each worker
after stopping the units. A host without the table is already clean.`,
		Example: `  systemctl stop kforge-proxy && kforge proxy cleanup --config /etc/kforge/proxy.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := serviceproxy.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return serviceproxy.Cleanup(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", serviceproxy.DefaultConfigPath, "the proxy role config file")
	return cmd
}

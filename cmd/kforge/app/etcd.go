package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/controlplane/etcd"
)

type etcdFlags struct {
	config string
}

func newEtcdCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f etcdFlags
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run this master's etcd member in the foreground",
		Long: `etcd runs one member of the cluster's etcd, embedded, with mutual TLS for
peers and clients. It serves /healthz, /readyz and /metrics on the config's
metricsAddress, compacts (as leader) and defragments by policy, and stops
cleanly on the first SIGTERM or SIGINT. The config file is validated whole
before anything starts.`,
		Example: `  kforge etcd --config /etc/kforge/etcd.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := etcd.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return etcd.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", etcd.DefaultConfigPath, "the etcd role config file")
	return cmd
}

package app

import (
	"fmt"

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
	cmd.AddCommand(newEtcdRestoreCommand(streams, g))
	return cmd
}

func newEtcdRestoreCommand(streams Streams, g *globalFlags) *cobra.Command {
	var config string
	var o etcd.RestoreOptions
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Rebuild this master's stopped etcd member from a snapshot (run by kforge restore)",
		Long: `restore rebuilds the data dir of this master's etcd member from a snapshot
file, as a member of a new cluster: the members and peer URLs of the config's
initialCluster, the cluster token given (the same on every master), the
revision moved far ahead and marked compacted so every client relists. The
member must be stopped. The snapshot's sha256 trailer is checked; the new
data dir is built beside the old one, which is then renamed to --move-aside
(kept, never deleted). kforge restore runs this on every master; run by
hand, start all members together afterwards.`,
		Example: `  kforge etcd restore --config /etc/kforge/etcd.yaml --snapshot /var/lib/kforge/restore/snapshot.db \
    --cluster-token kforge-lab-restore-20260101T120000Z --move-aside /var/lib/kforge/etcd.before-restore-20260101T120000Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := etcd.LoadConfig(config)
			if err != nil {
				return err
			}
			o.Log = g.logger(streams.ErrOut)
			moved, err := etcd.RestoreSnapshot(cfg, o)
			if err != nil {
				return err
			}
			if moved != "" {
				fmt.Fprintf(streams.Out, "restored member %s into %s; the old data dir is at %s\n", cfg.Name, cfg.DataDir, moved)
			} else {
				fmt.Fprintf(streams.Out, "restored member %s into %s (it had no data)\n", cfg.Name, cfg.DataDir)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&config, "config", etcd.DefaultConfigPath, "the etcd role config file")
	cmd.Flags().StringVar(&o.Snapshot, "snapshot", "", "the snapshot file (required)")
	cmd.Flags().StringVar(&o.ClusterToken, "cluster-token", "", "the restored cluster's token, the same on every member (required)")
	cmd.Flags().StringVar(&o.MoveAside, "move-aside", "", "where the current data dir is moved (required when it holds data)")
	_ = cmd.MarkFlagRequired("snapshot")
	_ = cmd.MarkFlagRequired("cluster-token")
	return cmd
}

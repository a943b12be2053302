package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/controlplane/apiserver"
)

type apiserverFlags struct {
	config string
}

func newAPIServerCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f apiserverFlags
	cmd := &cobra.Command{
		Use:   "apiserver",
		Short: "Run this master's Kubernetes-compatible API server in the foreground",
		Long: `apiserver serves the Kubernetes REST API over HTTPS on the config's
bindAddress, storing objects in etcd (reached with mutual TLS). Users are
client certificates signed by the cluster CA. It serves /healthz, /livez,
/readyz and /metrics on the same port, and stops cleanly on the first
SIGTERM or SIGINT: the listener closes, requests and watches drain, then the
etcd client closes. The config file is validated whole before anything starts.`,
		Example: `  kforge apiserver --config /etc/kforge/apiserver.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := apiserver.LoadConfig(f.config)
			if err != nil {
				return err
			}
			cfg.Version, cfg.Commit = Version, Commit
			return apiserver.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", apiserver.DefaultConfigPath, "the apiserver role config file")
	return cmd
}

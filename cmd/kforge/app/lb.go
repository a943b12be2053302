package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/controlplane/lb"
)

type lbFlags struct {
	config string
}

func newLBCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f lbFlags
	cmd := &cobra.Command{
		Use:   "lb",
		Short: "Run the apiserver load balancer in the foreground",
		Long: `lb is a TCP load balancer for the apiservers: it accepts on the config's
listenAddress (0.0.0.0:6443) and passes each connection, TLS untouched, to a
healthy master. Every backend's /readyz is checked over HTTPS each second; a
failed master is out within 3 s and back after one good check. It serves
/healthz, /readyz and /metrics on metricsAddress and, on the first SIGTERM or
SIGINT, stops accepting, gives open connections shutdownGracePeriod to end,
then closes them. The config file is validated whole before anything starts.`,
		Example: `  kforge lb --config /etc/kforge/lb.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := lb.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return lb.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", lb.DefaultConfigPath, "the lb role config file")
	return cmd
}

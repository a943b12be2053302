package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/controlplane/controllers"
)

type controllerManagerFlags struct {
	config string
}

func newControllerManagerCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f controllerManagerFlags
	cmd := &cobra.Command{
		Use:   "controller-manager",
		Short: "Run the controller manager in the foreground",
		Long: `controller-manager runs the control loops — ReplicaSets, Deployments,
Endpoints and EndpointSlices, default ServiceAccounts and the garbage
collector — as a client of the apiserver named in the config's kubeconfig.
With leader election on (the default) only the holder of the
"kforge-controller-manager" Lease in kube-system runs them; the others wait.
A lost Lease ends the command with an error (systemd restarts it).
It serves /healthz, /readyz and /metrics on metricsAddress (127.0.0.1:10257).
The config file is validated whole before anything starts.`,
		Example: `  kforge controller-manager --config /etc/kforge/controller-manager.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := controllers.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return controllers.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", controllers.DefaultConfigPath, "the controller-manager role config file")
	return cmd
}

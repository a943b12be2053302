package app

import (
	"errors"

	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer"
)

func newStatusCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var warn string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "etcd members, apiservers, LB backends, nodes and certificates at a glance",
		Long: `status prints, from this machine: each etcd member's health, whether it leads
and its database size (asked with the apiserver's etcd client certificate
from the local PKI), /readyz of every apiserver and through the load
balancer, the load balancer's view of its backends (its metrics, read over
SSH), the registered nodes, and the expiry of every certificate deployed on
each host (read over SSH). It changes nothing. It exits 1 when anything is
unhealthy or a certificate expires within --warn.`,
		Example: `  kforge status -f cluster.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := file.loadForSSH()
			if err != nil {
				return err
			}
			d, err := parseDays(warn)
			if err != nil {
				return err
			}
			res, err := installer.Status(cmd.Context(), installer.StatusOptions{
				Cluster: c, Out: streams.Out, Warn: d, PromptPassword: passwordPrompt(streams), Log: g.logger(streams.ErrOut),
			})
			if err != nil {
				return err
			}
			if !res.Healthy() {
				return &ExitError{Code: 1, Err: errors.New("the cluster is not healthy (see above)")}
			}
			return nil
		},
	}
	file.bind(cmd)
	cmd.Flags().StringVar(&warn, "warn", "30d", "flag certificates that expire within this long (e.g. 30d, 720h)")
	return cmd
}

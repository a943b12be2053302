package app

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer"
)

func newLogsCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var roles, hosts []string
	var since time.Duration
	var follow bool
	var output string
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "The journal of kforge's daemons across the hosts, merged in time order",
		Long: `logs reads the systemd journal of kforge's units (kforge-<role>.service) on
every host over SSH (journalctl -o json, as root) and prints the entries
merged in time order — by each entry's own timestamp, the host's clock —
each line prefixed with its host and role. --role and --host narrow it
(each may repeat or take a comma-separated list), --since reads only the
last stretch (5m, 1h), --follow streams from every host at once (an entry
waits half a second for earlier ones from slower hosts) until ^C.
--output json prints every journal field of each entry, plus "host" and
"role", one JSON object per line.`,
		Example: `  kforge logs -f cluster.yaml --role apiserver --since 5m
  kforge logs -f cluster.yaml --host w1,w2 --role agent --follow
  kforge logs -f cluster.yaml --role etcd --since 1h --output json | jq -r .MESSAGE`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			if since < 0 {
				return fmt.Errorf("--since must not be negative")
			}
			c, err := file.loadForSSH()
			if err != nil {
				return err
			}
			return installer.Logs(cmd.Context(), installer.LogsOptions{
				Cluster: c, Roles: roles, Hosts: hosts, Since: since, Follow: follow, JSON: output == "json",
				Out: streams.Out, ErrOut: streams.ErrOut, PromptPassword: passwordPrompt(streams), Log: g.logger(streams.ErrOut),
			})
		},
	}
	file.bind(cmd)
	cmd.Flags().StringSliceVar(&roles, "role", nil, "only these roles (etcd, apiserver, lb, controller-manager, scheduler, agent, proxy, dns, ingress)")
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "only these hosts")
	cmd.Flags().DurationVar(&since, "since", 0, "only entries newer than this (0: the whole journal)")
	cmd.Flags().BoolVarP(&follow, "follow", "F", false, "keep streaming new entries until interrupted")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json (every journal field, plus host and role)")
	return cmd
}

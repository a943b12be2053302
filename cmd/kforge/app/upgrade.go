package app

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer"
)

func newUpgradeCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var dryRun, allowDowngrade bool
	var output, binary, encoding string
	var maxUnavailable int
	var drainTimeout, readyWait time.Duration
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Replace the kforge binary on every host, rolling, while the cluster serves",
		Long: `upgrade pushes a kforge binary (--binary, default this one) to every host and
restarts every role on it, in the order the version skew rules want: first
the masters, one at a time — on each the binary, then etcd (its member
healthy and caught up with the leader), then the apiserver (ready on its
own and through the load balancer), then the controller manager and the
scheduler — then the load balancer host, then the workers, --max-unavailable
at a time: cordon, drain through the Eviction API (PodDisruptionBudgets
are honoured), the binary, agent, proxy, dns and ingress restarted and
healthy, the Node Ready, uncordon.

Before anything changes it reads every host's version: a host whose binary
is newer than the one given is refused (--allow-downgrade to go back); a
host without kforge is refused (kforge up installs it). A host already
running this binary in every unit is skipped, so a run that stopped is
completed by running it again; a Node it had cordoned is uncordoned then.
Every step is in the run journal beside cluster.yaml.`,
		Example: `  kforge upgrade -f cluster.yaml --binary ./kforge-v0.4.0 --dry-run
  kforge upgrade -f cluster.yaml --binary ./kforge-v0.4.0
  kforge upgrade -f cluster.yaml --binary ./kforge-v0.4.0 --max-unavailable 2 --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			if !slices.Contains(installer.UploadEncodings, encoding) {
				return fmt.Errorf("--upload-encoding must be one of %s, not %q", strings.Join(installer.UploadEncodings, ", "), encoding)
			}
			if maxUnavailable < 1 {
				return fmt.Errorf("--max-unavailable must be at least 1, not %d", maxUnavailable)
			}
			c, err := file.loadForSSH()
			if err != nil {
				return err
			}
			_, err = installer.Upgrade(cmd.Context(), installer.UpgradeOptions{
				MaxUnavailable: maxUnavailable, DrainTimeout: drainTimeout, ReadyWait: readyWait, AllowDowngrade: allowDowngrade,
				Up: installer.UpOptions{
					Cluster: c, DryRun: dryRun, Binary: binary, UploadEncoding: encoding, JSON: output == "json",
					TTY: isTerminal(streams.ErrOut), Out: streams.Out, ErrOut: streams.ErrOut,
					Version: Version, Log: g.logger(streams.ErrOut), PromptPassword: passwordPrompt(streams),
				},
			})
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().StringVar(&binary, "binary", "", "the kforge binary to roll out (default: this one)")
	cmd.Flags().IntVar(&maxUnavailable, "max-unavailable", 1, "workers drained and upgraded at once")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "connect and read only; print what would be done")
	cmd.Flags().BoolVar(&allowDowngrade, "allow-downgrade", false, "let a binary older than a host's replace it")
	cmd.Flags().DurationVar(&drainTimeout, "drain-timeout", installer.DefaultDrainTimeout, "how long each worker's drain may take")
	cmd.Flags().DurationVar(&readyWait, "ready-timeout", installer.NodeReadyWait, "how long to wait for an upgraded worker's Node to be Ready")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text (status lines on stderr) or json (one event per line on stdout)")
	cmd.Flags().StringVar(&encoding, "upload-encoding", installer.EncodingAuto, "how the binary crosses the wire: auto, zstd, gzip, none or sftp")
	return cmd
}

package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/controlplane/local"
)

func newLocalCommand(streams Streams, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "local",
		Short: "A single-node control plane on this machine, for trying kforge and for tests",
	}
	cmd.AddCommand(newLocalUpCommand(streams, g))
	return cmd
}

type localUpFlags struct {
	dir  string
	port int
}

func newLocalUpCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f localUpFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run etcd and the apiserver for 127.0.0.1 in the foreground",
		Long: `up issues a PKI for one master at 127.0.0.1 into DIR/pki (reused on later
runs), starts one etcd member (data in DIR/etcd; its ports are picked once and
kept in DIR/etcd.yaml) and the apiserver on 127.0.0.1:PORT, in this process.
Once /readyz is ok it writes DIR/admin.kubeconfig (mode 0600) and prints how
to use it. The first SIGTERM or SIGINT stops the apiserver, then etcd. The
data stays in DIR: running up again on the same DIR finds every object.`,
		Example: `  kforge local up --dir ./kforge-local
  kubectl --kubeconfig ./kforge-local/admin.kubeconfig get ns`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return local.Up(cmd.Context(), local.Options{
				Dir: f.dir, Port: f.port,
				Out: streams.Out, ErrOut: streams.ErrOut, Logger: g.logger(streams.ErrOut),
				Version: Version, Commit: Commit,
			})
		},
	}
	cmd.Flags().StringVar(&f.dir, "dir", local.DefaultDir, "folder for the PKI, etcd data, role configs and admin.kubeconfig")
	cmd.Flags().IntVar(&f.port, "port", local.DefaultPort, "apiserver port on 127.0.0.1 (0 picks a free one)")
	return cmd
}

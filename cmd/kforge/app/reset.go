package app

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"kforge.dev/kforge/installer"
)

func newResetCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var yes bool
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Uninstall everything kforge put on the cluster's hosts",
		Long: `reset stops and disables every kforge-*.service on each host of cluster.yaml,
removes the units, /etc/kforge, /var/lib/kforge (etcd's data: the cluster's
state is gone) and /usr/local/bin/kforge. Hosts that cannot be reached are
skipped and named; run it again when they are back. The local PKI, run
journal and admin.kubeconfig are kept.

It asks for confirmation on a terminal; without one it refuses unless --yes.`,
		Example: `  kforge reset -f cluster.yaml
  kforge reset -f cluster.yaml --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := file.loadForSSH()
			if err != nil {
				return err
			}
			if !yes {
				f, ok := streams.In.(*os.File)
				if !ok || !term.IsTerminal(int(f.Fd())) {
					return errors.New("reset deletes the cluster and its data: pass --yes (stdin is not a terminal to ask on)")
				}
				fmt.Fprintf(streams.ErrOut, "This removes kforge and all its data (etcd included) from %d host(s) of %s.\nType yes to go on: ", len(c.Spec.Hosts), c.Metadata.Name)
				line, _ := bufio.NewReader(f).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return errors.New("not confirmed; nothing was changed")
				}
			}
			_, err = installer.Reset(cmd.Context(), installer.ResetOptions{
				Cluster: c, Out: streams.Out, ErrOut: streams.ErrOut, TTY: isTerminal(streams.ErrOut),
				PromptPassword: passwordPrompt(streams), Log: g.logger(streams.ErrOut),
			})
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

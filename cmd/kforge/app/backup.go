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

func newBackupCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var out, output string
	var noPKI bool
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write an etcd snapshot, the PKI and cluster.yaml to one tar.gz, while the cluster serves",
		Long: `backup asks every master's etcd member for its status (from this machine,
with the local PKI's etcd client certificate, as kforge status does), streams
a snapshot from the leader through etcd's maintenance API, verifies it (its
sha256 trailer and a check of the database) and writes one tar.gz, mode 0600:

  manifest.json  kforge version, cluster name, time, etcd revision, members
  snapshot.db    the etcd snapshot
  cluster.yaml   the cluster file
  pki/           the PKI directory, CA PRIVATE KEYS and the Secrets
                 encryption key included (left out with --no-pki)

It only reads: the cluster keeps serving. Anyone who can read a backup with
the PKI can act as any user or node of the cluster: keep it as private as
the CAs.`,
		Example: `  kforge backup -f cluster.yaml -o backup-$(date +%F).tar.gz
  kforge backup -f cluster.yaml -o data-only.tar.gz --no-pki --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			if out == "" {
				return errors.New("-o FILE is required: the archive to write")
			}
			c, err := file.load()
			if err != nil {
				return err
			}
			_, err = installer.Backup(cmd.Context(), installer.BackupOptions{
				Cluster: c, Output: out, NoPKI: noPKI, JSON: output == "json", TTY: isTerminal(streams.ErrOut),
				Out: streams.Out, ErrOut: streams.ErrOut, PromptPassword: passwordPrompt(streams),
				Version: Version, Log: g.logger(streams.ErrOut),
			})
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().StringVarP(&out, "out", "o", "", "the archive to write (a .tar.gz; replaced only once complete)")
	cmd.Flags().BoolVar(&noPKI, "no-pki", false, "leave the PKI directory out (a data-only backup)")
	cmd.Flags().StringVar(&output, "output", "text", "text (status lines on stderr) or json (one event per line on stdout)")
	return cmd
}

func newRestoreCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var force, dryRun, yes, acceptNew bool
	var output, binary string
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Put a backup's etcd state back on every master and bring the cluster up on it",
		Long: `restore reads the backup FILE (kforge backup), verifies its snapshot and
refuses a backup of another cluster name unless --force. Then, with kforge
up's converge (every host connected and preflighted before anything changes;
the hosts get this binary as up pushes it): it stops the API's clients
(the workers' agent, proxy, DNS and ingress; the scheduler and controller
manager), then the apiservers, then etcd on every master; uploads the
snapshot and rebuilds each member's data dir from it as a new etcd cluster
(new cluster ID, the members of cluster.yaml, revisions moved ahead and
marked compacted so every client relists). The old data dir is renamed to
/var/lib/kforge/etcd.before-restore-<time>, never deleted. Then etcd starts
on all masters, then the apiservers, the controller manager and scheduler,
and the workers' daemons: the agents keep the containers of pods the
restored state has and remove the others.

It does not restore the PKI: the local one (spec.pki.dir) is kept and
distributed as kforge up does; a backup whose CAs or keys differ is named
in a note. Objects written after the backup are gone, and so are the pods
the restored state does not have.

It asks for confirmation on a terminal; without one it refuses unless --yes.`,
		Example: `  kforge restore -f cluster.yaml backup-2026-01-01.tar.gz --dry-run
  kforge restore -f cluster.yaml backup-2026-01-01.tar.gz --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			c, err := file.loadForSSH()
			if err != nil {
				return err
			}
			if _, err := os.Stat(args[0]); err != nil {
				return err
			}
			if !yes && !dryRun {
				f, ok := streams.In.(*os.File)
				if !ok || !term.IsTerminal(int(f.Fd())) {
					return errors.New("restore replaces the cluster's state: pass --yes (stdin is not a terminal to ask on)")
				}
				fmt.Fprintf(streams.ErrOut, "This replaces the etcd state of cluster %s with the backup's: objects written since are lost.\nType yes to go on: ", c.Metadata.Name)
				line, _ := bufio.NewReader(f).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return errors.New("not confirmed; nothing was changed")
				}
			}
			_, err = installer.Restore(cmd.Context(), installer.RestoreOptions{
				File: args[0], Force: force,
				Up: installer.UpOptions{
					Cluster: c, DryRun: dryRun, AcceptNewHostKeys: acceptNew, Binary: binary, JSON: output == "json",
					TTY: isTerminal(streams.ErrOut), Out: streams.Out, ErrOut: streams.ErrOut,
					Version: Version, Log: g.logger(streams.ErrOut), PromptPassword: passwordPrompt(streams),
				},
			})
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "restore a backup whose cluster name differs from cluster.yaml's")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "connect and read only; print what would change")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text (status lines on stderr) or json (one event per line on stdout)")
	cmd.Flags().BoolVar(&acceptNew, "accept-new-host-keys", false, "pin host keys that spec.ssh.knownHosts does not know yet")
	cmd.Flags().StringVar(&binary, "binary", "", "the kforge binary to push (default: this one)")
	return cmd
}

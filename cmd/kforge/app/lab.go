package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer/lab"
)

// labFlags are the flags every lab subcommand shares.
type labFlags struct {
	dir string
}

func (f *labFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.dir, "dir", lab.DefaultDir, "folder that holds the lab's files (keys, cluster.yaml, host layers)")
}

func (f *labFlags) options(streams Streams, g *globalFlags) lab.Options {
	return lab.Options{Dir: f.dir, Out: streams.Out, ErrOut: streams.ErrOut, TTY: isTerminal(streams.ErrOut), Log: g.logger(streams.ErrOut)}
}

func newLabCommand(streams Streams, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A local multi-host lab on systemd-nspawn to install kforge onto",
		Long: `lab boots a load balancer, masters and workers as systemd-nspawn containers
on this machine — each with systemd, sshd and containerd, a static address on
the bridge kforge0 (198.18.0.0/24) and its own writable layer over a cached
Debian bookworm base — and writes DIR/cluster.yaml for them. Needs root.`,
	}
	cmd.AddCommand(newLabUpCommand(streams, g), newLabDownCommand(streams, g), newLabStatusCommand(streams, g), newLabSSHCommand(streams, g))
	return cmd
}

func newLabUpCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f labFlags
	var masters, workers int
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create and boot the lab; returns when every host runs sshd and systemd is up",
		Example: `  sudo kforge lab up
  sudo kforge lab up --dir /tmp/lab --masters 1 --workers 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Up(cmd.Context(), lab.UpOptions{Options: f.options(streams, g), Masters: masters, Workers: workers})
		},
	}
	f.bind(cmd)
	cmd.Flags().IntVar(&masters, "masters", 3, "number of master hosts (m1..mN)")
	cmd.Flags().IntVar(&workers, "workers", 3, "number of worker hosts (w1..wN)")
	return cmd
}

func newLabDownCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:     "down",
		Short:   "Stop every host and remove everything the lab made; safe to run again",
		Example: `  sudo kforge lab down`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(cmd.Context(), lab.DownOptions{Options: f.options(streams, g)})
		},
	}
	f.bind(cmd)
	return cmd
}

func newLabStatusCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "List the lab's hosts, addresses and states",
		Example: `  sudo kforge lab status`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := lab.Status(cmd.Context(), f.options(streams, g))
			return err
		},
	}
	f.bind(cmd)
	return cmd
}

func newLabSSHCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f labFlags
	var user string
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- COMMAND...]",
		Short: "Open a shell or run a command on a lab host (strict host key checking)",
		Example: `  sudo kforge lab ssh m1
  sudo kforge lab ssh w1 -- ctr -n k8s.io images ls
  sudo kforge lab ssh --user kforge w2 -- id`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			command := args[1:]
			if len(command) > 0 && command[0] == "--" {
				command = command[1:] // flag parsing stopped at NAME, so "--" is still here
			}
			code, err := lab.SSH(cmd.Context(), lab.SSHOptions{Options: f.options(streams, g), Host: args[0], User: user, Command: command, In: streams.In})
			if err != nil {
				return err
			}
			if code != 0 {
				return &ExitError{Code: code}
			}
			return nil
		},
	}
	f.bind(cmd)
	// Words after NAME belong to the remote command, even without "--".
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVarP(&user, "user", "u", "root", "user to log in as (root, or "+lab.SudoUser+" whose sudo asks for DIR/ssh/sudo-password)")
	return cmd
}

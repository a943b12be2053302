package app

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer"
)

func newNodeCommand(streams Streams, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Add or remove a worker of a running cluster",
		Long: `node add and node remove change the cluster's hosts while it serves:
cluster.yaml stays the one source of truth (the entry is added or removed in
place, comments and order kept), and kforge up afterwards has nothing to do.
Masters cannot be added or removed this way yet.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newNodeAddCommand(streams, g), newNodeRemoveCommand(streams, g))
	return cmd
}

func newNodeAddCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var role, address, sshUser, output, binary string
	var dryRun, acceptNew bool
	var readyWait time.Duration
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a worker: cluster.yaml entry, preflight, binary, PKI, units, Node Ready",
		Long: `add puts host NAME into cluster.yaml (from --address, --role and --ssh-user;
or it takes the entry you already wrote there) and installs it with kforge
up's converge on that host alone: facts and preflight first (cluster.yaml is
written only once they pass), then the binary, its certificates (pki init
issues only what is missing: this host's), its configs and units, its
daemons, and it waits until its Node is Ready. No other host changes. A name
or address already in use is refused before anything is done. A failed run
is completed by running it again (or kforge up).`,
		Example: `  kforge node add -f cluster.yaml w4 --address 198.18.0.24
  kforge node add -f cluster.yaml w4 --address 198.18.0.24 --ssh-user kforge --dry-run
  kforge node add -f cluster.yaml w4            # an entry already in cluster.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			h := v1alpha1.Host{Name: args[0], Address: address, Role: role}
			if sshUser != "" {
				h.SSH = &v1alpha1.SSH{User: sshUser}
			}
			_, err := installer.NodeAdd(cmd.Context(), installer.NodeAddOptions{
				File: file.path, Host: h, ReadyWait: readyWait,
				Up: installer.UpOptions{
					DryRun: dryRun, AcceptNewHostKeys: acceptNew, Binary: binary, JSON: output == "json",
					TTY: isTerminal(streams.ErrOut), Out: streams.Out, ErrOut: streams.ErrOut,
					Version: Version, Log: g.logger(streams.ErrOut), PromptPassword: passwordPrompt(streams),
				},
			})
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().StringVar(&role, "role", "", "worker (master is refused: not supported yet); default worker for a new entry")
	cmd.Flags().StringVar(&address, "address", "", "the host's IP address (required unless cluster.yaml has the entry)")
	cmd.Flags().StringVar(&sshUser, "ssh-user", "", "the SSH user for this host, when it is not spec.ssh.user")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "connect and read only; print what would change")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text (status lines on stderr) or json (one event per line on stdout)")
	cmd.Flags().BoolVar(&acceptNew, "accept-new-host-keys", false, "pin the new host's key if spec.ssh.knownHosts does not know it yet")
	cmd.Flags().StringVar(&binary, "binary", "", "the kforge binary to push (default: this one)")
	cmd.Flags().DurationVar(&readyWait, "ready-timeout", installer.NodeReadyWait, "how long to wait for the Node to be Ready")
	return cmd
}

func newNodeRemoveCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var force, dryRun bool
	var output string
	var drainTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a worker: cordon, drain, reset the host, delete the Node, drop its entry",
		Long: `remove takes worker NAME out of the cluster: it checks that the host and the
API answer (an unreachable host stops it before anything changes, unless
--force), cordons the Node, drains it through the Eviction API as kubectl
drain --ignore-daemonsets --delete-emptydir-data does (a PodDisruptionBudget's
refusal, 429, is retried with backoff until --drain-timeout), resets the
host as kforge reset does, deletes the Node, then removes its entry from
cluster.yaml and its folder from the PKI. With --force an unreachable host's
pods are deleted without waiting for it and its reset is skipped with a
warning. A failed run is completed by running it again.`,
		Example: `  kforge node remove -f cluster.yaml w3
  kforge node remove -f cluster.yaml w3 --dry-run
  kforge node remove -f cluster.yaml w3 --force   # w3 is gone for good`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			_, err := installer.NodeRemove(cmd.Context(), installer.NodeRemoveOptions{
				File: file.path, Name: args[0], Force: force, DryRun: dryRun, DrainTimeout: drainTimeout,
				JSON: output == "json", TTY: isTerminal(streams.ErrOut), Out: streams.Out, ErrOut: streams.ErrOut,
				PromptPassword: passwordPrompt(streams), Version: Version, Log: g.logger(streams.ErrOut),
			})
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "remove the host even when it cannot be reached (not reset)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "read only; print what would be done")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text (status lines on stderr) or json (one event per line on stdout)")
	cmd.Flags().DurationVar(&drainTimeout, "drain-timeout", installer.DefaultDrainTimeout, "how long the drain may take")
	return cmd
}

package app

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"kforge.dev/kforge/installer"
)

func newUpCommand(streams Streams, g *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var dryRun, acceptNew bool
	var output, binary, encoding string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Install or converge the cluster over SSH: PKI, HA etcd, apiservers, load balancer",
		Long: `up connects to every host of cluster.yaml over SSH (host keys checked strictly
against spec.ssh.knownHosts), gathers facts, runs the preflight checks, pushes
this kforge binary to /usr/local/bin/kforge, makes the PKI (locally, spec.pki.dir)
and copies each host only its own files to /etc/kforge/pki, renders the role
configs (/etc/kforge/<role>.yaml) and systemd units (kforge-<role>.service),
starts the etcd members together and waits for quorum, starts the apiservers
and waits for /readyz on each master, starts the load balancer (unless it is
external), waits for the API through it, and writes admin.kubeconfig beside
cluster.yaml.

It is idempotent: a re-run with nothing to do changes and restarts nothing; a
changed file restarts only the daemons that read it, one master at a time,
each healthy before the next.

Progress goes to stderr, one ✓/✗ line per phase and host; --output json
prints one JSON event per line on stdout instead. --dry-run connects and
reads, changes nothing, and lists what it would change.`,
		Example: `  kforge up -f cluster.yaml --dry-run
  kforge up -f cluster.yaml
  kforge up -f cluster.yaml --accept-new-host-keys --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			if !slices.Contains(installer.UploadEncodings, encoding) {
				return fmt.Errorf("--upload-encoding must be one of %s, not %q", strings.Join(installer.UploadEncodings, ", "), encoding)
			}
			c, err := file.loadForSSH()
			if err != nil {
				return err
			}
			opts := installer.UpOptions{
				Cluster: c, DryRun: dryRun, AcceptNewHostKeys: acceptNew, Binary: binary, UploadEncoding: encoding, JSON: output == "json",
				TTY: isTerminal(streams.ErrOut), Out: streams.Out, ErrOut: streams.ErrOut,
				Version: Version, Log: g.logger(streams.ErrOut),
			}
			opts.PromptPassword = passwordPrompt(streams)
			_, err = installer.Up(cmd.Context(), opts)
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "connect and read only; print what would change")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text (status lines on stderr) or json (one event per line on stdout)")
	cmd.Flags().BoolVar(&acceptNew, "accept-new-host-keys", false, "pin host keys that spec.ssh.knownHosts does not know yet (a changed key is always refused)")
	cmd.Flags().StringVar(&binary, "binary", "", "the kforge binary to push (default: this one)")
	cmd.Flags().StringVar(&encoding, "upload-encoding", installer.EncodingAuto, "how the binary crosses the wire: auto (zstd if the host has it, else gzip), zstd, gzip, none (plain, one SSH session) or sftp")
	return cmd
}

// passwordPrompt asks on the terminal, or is nil when stdin is not one.
func passwordPrompt(streams Streams) func(string) (string, error) {
	f, ok := streams.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(prompt string) (string, error) {
		fmt.Fprint(streams.ErrOut, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(streams.ErrOut)
		return string(b), err
	}
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

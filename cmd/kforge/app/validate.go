package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"kforge.dev/kforge/api/v1alpha1"
)

// clusterFileFlag is the -f flag every cluster command takes.
type clusterFileFlag struct {
	path string
}

func (f *clusterFileFlag) bind(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.path, "file", "f", "cluster.yaml", "the cluster file")
}

// load reads and validates the cluster file for a command that never
// connects to the hosts, so SSH material need not exist yet.
func (f *clusterFileFlag) load() (*v1alpha1.Cluster, error) {
	return v1alpha1.Load(f.path)
}

// loadForSSH is load plus what connecting needs on this machine (the
// identity files), checked before any side effect.
func (f *clusterFileFlag) loadForSSH() (*v1alpha1.Cluster, error) {
	c, err := v1alpha1.Load(f.path)
	if err != nil {
		return nil, err
	}
	if err := c.CheckSSHFiles(); err != nil {
		return nil, fmt.Errorf("%s: %w", f.path, err)
	}
	return c, nil
}

func newValidateCommand(streams Streams, _ *globalFlags) *cobra.Command {
	var file clusterFileFlag
	var offline bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a cluster file and report every problem in it",
		Long: `validate decodes cluster.yaml strictly (unknown fields are errors), applies
defaults and checks the whole spec, listing every problem with its field and
line. It also checks what connecting needs on this machine (the SSH identity
files); --offline leaves that out, as the commands that never connect do
(pki init, kubeconfig, cert status --local). Every command does the same
checks before it changes anything.`,
		Example: `  kforge validate -f cluster.yaml
  kforge validate -f cluster.yaml --offline`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			load := file.loadForSSH
			if offline {
				load = file.load
			}
			c, err := load()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(streams.Out, "%s: cluster %q is valid: %d masters, %d workers, API at %s\n",
				file.path, c.Metadata.Name, len(c.Masters()), len(c.Workers()), c.APIServerURL())
			return err
		},
	}
	file.bind(cmd)
	cmd.Flags().BoolVar(&offline, "offline", false, "skip the checks that only connecting needs (SSH identity files)")
	return cmd
}

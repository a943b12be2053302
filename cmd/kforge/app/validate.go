package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer/cluster"
)

// clusterFileFlag is the -f flag every cluster command takes.
type clusterFileFlag struct {
	path string
}

func (f *clusterFileFlag) bind(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.path, "file", "f", "cluster.yaml", "the cluster file")
}

func (f *clusterFileFlag) load() (*cluster.Cluster, error) {
	return cluster.Load(f.path)
}

func newValidateCommand(streams Streams, _ *globalFlags) *cobra.Command {
	var file clusterFileFlag
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a cluster file and report every problem in it",
		Long: `validate decodes cluster.yaml strictly (unknown fields are errors), applies
defaults and checks the whole spec, listing every problem with its field and
line. Every other command does the same before it changes anything.`,
		Example: `  kforge validate -f cluster.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := file.load()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(streams.Out, "%s: cluster %q is valid: %d masters, %d workers, API at %s\n",
				file.path, c.Metadata.Name, len(c.Masters()), len(c.Workers()), c.APIServerURL())
			return err
		},
	}
	file.bind(cmd)
	return cmd
}

package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/pki"
)

type kubeconfigFlags struct {
	file clusterFileFlag
	dir  string
	user string
}

func newKubeconfigCommand(streams Streams, _ *globalFlags) *cobra.Command {
	var f kubeconfigFlags
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig for the cluster, certificates embedded",
		Long: `kubeconfig prints a kubeconfig to stdout, built from the certificates that
"kforge pki init" wrote, with the CA, client certificate and key embedded.

--user picks whose: admin (the default; O=system:masters), scheduler,
controller-manager, proxy, ingress, dns — these point at the load balancer —
or a worker's agent as agent:NODE or just NODE, which points at that node's
local load balancer, https://127.0.0.1:6444, and so works on that node only.

It fails, rather than print a stale kubeconfig, when the PKI does not exist
yet or the certificate no longer matches the cluster file: run
"kforge pki init" then.`,
		Example: `  kforge kubeconfig -f cluster.yaml > ~/.kube/lab.kubeconfig
  KUBECONFIG=~/.kube/lab.kubeconfig kubectl get nodes
  kforge kubeconfig -f cluster.yaml --user agent:w1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.file.load()
			if err != nil {
				return err
			}
			inv, err := pki.NewInventory(installer.PKISpec(c), f.dir)
			if err != nil {
				return err
			}
			data, err := pki.KubeconfigFor(inv, f.user)
			if err != nil {
				return err
			}
			_, err = streams.Out.Write(data)
			return err
		},
	}
	f.file.bind(cmd)
	cmd.Flags().StringVar(&f.dir, "dir", "", "the PKI directory (default spec.pki.dir)")
	cmd.Flags().StringVar(&f.user, "user", "admin", "whose kubeconfig: admin, scheduler, controller-manager, proxy, ingress, dns, or agent:NODE")
	return cmd
}

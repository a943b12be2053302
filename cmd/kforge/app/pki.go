package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/pki"
)

func newPKICommand(streams Streams, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Issue the cluster's CAs, certificates, keys and kubeconfigs",
		Long: `pki manages the cluster's PKI on the operator's machine: the cluster and etcd
CAs, the service-account key pair, a certificate for every role and host, and
the kubeconfigs. See "kforge pki init --help".`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newPKIInitCommand(streams, g))
	return cmd
}

type pkiInitFlags struct {
	file clusterFileFlag
	dir  string
}

func newPKIInitCommand(streams Streams, _ *globalFlags) *cobra.Command {
	var f pkiInitFlags
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create or complete the PKI for a cluster file (idempotent)",
		Long: `init writes every CA, certificate, key and kubeconfig the cluster file calls
for under spec.pki.dir (or --dir), ECDSA P-256, issued with cfssl:

  ca/cluster-ca.{crt,key} ca/etcd-ca.{crt,key}   the CAs (never copied to a host)
  ca/sa.{key,pub}                                the service-account signing key pair
  clients/NAME.{crt,key}                         admin, scheduler, controller-manager,
                                                 proxy, ingress, dns client certificates
  kubeconfigs/NAME.kubeconfig                    their kubeconfigs, certificates embedded
  hosts/HOST/                                    exactly what goes to HOST: CA certs,
                                                 its own certs and keys, its kubeconfigs

Keys and kubeconfigs are mode 0600, folders 0700.

init is idempotent: it never replaces a CA, keeps every certificate that still
matches the spec, and issues only what is missing or changed (a new master
address means a new apiserver certificate), saying why. A broken directory (a
CA certificate without its key, a key that does not match its certificate, an
expired CA, unparsable PEM) is an error naming the file, and nothing is
changed. Progress goes to stderr, the summary to stdout.`,
		Example: `  kforge pki init -f cluster.yaml
  kforge pki init -f cluster.yaml --dir /secure/lab-pki`,
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
			rep, err := pki.Init(cmd.Context(), inv, pki.InitOptions{Progress: streams.ErrOut})
			if err != nil {
				return err
			}
			return rep.WriteSummary(streams.Out)
		},
	}
	f.file.bind(cmd)
	cmd.Flags().StringVar(&f.dir, "dir", "", "the PKI directory (default spec.pki.dir)")
	return cmd
}

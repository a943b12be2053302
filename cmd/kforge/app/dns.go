package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/clusterdns"
)

type dnsFlags struct {
	config string
}

func newDNSCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f dnsFlags
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Run the cluster DNS server in the foreground",
		Long: `dns is the cluster DNS server each worker runs. It answers names under the
cluster domain (cluster.local) from Services and EndpointSlices, as the
Kubernetes DNS specification says: SVC.NS.svc.DOMAIN (ClusterIPs, or the ready
endpoints of a headless Service), HOST.SVC.NS.svc.DOMAIN, SRV for named ports,
ExternalName as a CNAME, A-B-C-D.NS.pod.DOMAIN and PTR for ClusterIPs and
endpoint addresses. Every other name goes to the nameservers of
/etc/resolv.conf (loopback stubs skipped) through a cache; an upstream that
does not answer costs one timeout (2s), then fails fast from the cache.

Each instance creates the kube-dns Service in kube-system when its ClusterIP
is configured and the Service is missing, and keeps an EndpointSlice of its
own (kube-dns-NODE) pointing at its address, ready while it is. On the first
SIGTERM or SIGINT it removes that slice, answers for a lame-duck period, then
stops. While the API is unreachable it answers from what it last saw. It
serves /healthz, /readyz and /metrics on healthAddress (127.0.0.1:9153). The
config file is validated whole before anything starts.`,
		Example: `  kforge dns --config /etc/kforge/dns.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := clusterdns.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return clusterdns.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", clusterdns.DefaultConfigPath, "the dns role config file")
	return cmd
}

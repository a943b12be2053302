package app

import (
	"github.com/spf13/cobra"

	"kforge.dev/kforge/ingress"
)

type ingressFlags struct {
	config string
}

func newIngressCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f ingressFlags
	cmd := &cobra.Command{
		Use:   "ingress",
		Short: "Run the ingress controller in the foreground",
		Long: `ingress is the HTTP and HTTPS ingress controller each worker runs on :80 and
:443. It serves the networking.k8s.io/v1 Ingresses of the IngressClass
"kforge" (controller kforge.dev/ingress; each instance creates the class,
marked default, when it is missing): exact and single-label wildcard hosts,
Exact and Prefix paths (element-wise, longest first, Exact first), a
defaultBackend, and a 404 page otherwise. Requests go straight to the ready
endpoints of the backend Service (EndpointSlices) over keep-alive pools per
endpoint, round-robin (or least-request by annotation), retried on another
endpoint when a connection fails; an endpoint that fails is skipped for a
while. TLS certificates come from kubernetes.io/tls Secrets by SNI (a
self-signed default when one is missing or bad), HTTP is redirected to HTTPS
for TLS hosts, HTTP/2 is offered over TLS, WebSocket upgrades pass through.
Every change is applied in memory, without a restart.

Annotations under ingress.kforge.dev/: ssl-redirect, proxy-connect-timeout,
proxy-read-timeout, proxy-body-size, load-balance. Each instance adds its
statusAddresses to status.loadBalancer.ingress, logs one JSON line per
request to stdout and serves /healthz, /readyz and /metrics on healthAddress
(127.0.0.1:10254). The first SIGTERM or SIGINT stops accepting and lets
requests in flight finish. The config file is validated whole before
anything starts.`,
		Example: `  kforge ingress --config /etc/kforge/ingress.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := ingress.LoadConfig(f.config)
			if err != nil {
				return err
			}
			return ingress.Run(cmd.Context(), cfg, g.logger(streams.ErrOut))
		},
	}
	cmd.Flags().StringVar(&f.config, "config", ingress.DefaultConfigPath, "the ingress role config file")
	return cmd
}

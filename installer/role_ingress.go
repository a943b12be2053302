package installer

import (
	"context"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/ingress"
)

// IngressHealthAddress is where each worker's ingress controller serves
// /healthz, /readyz and /metrics (loopback only).
const IngressHealthAddress = ingress.DefaultHealthAddress

// Ports of the ingress data path on every worker address.
const (
	IngressHTTPPort  = 80
	IngressHTTPSPort = 443
)

// ingressRole is the ingress controller on every worker: :80 and :443 on
// every address of the host, routing the Ingresses of the kforge
// IngressClass (which each instance creates, marked default, when it is
// missing) to Service endpoints. Each instance writes its worker's
// address into the Ingresses' status.
var ingressRole = &Role{
	Name:        "ingress",
	Description: "kforge ingress controller",
	Title:       "ingress controllers (:80 and :443 on every worker)",
	RunsOn:      func(_ *v1alpha1.Cluster, h v1alpha1.Host) bool { return h.Role == v1alpha1.RoleWorker },
	Config: func(_ *ControlPlane, h Host) (any, error) {
		c := ingress.NewConfig()
		c.Kubeconfig = pkiPath("ingress.kubeconfig")
		c.NodeName = h.Name()
		c.StatusAddresses = []string{h.Address()}
		c.HealthAddress = IngressHealthAddress
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := ingress.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"ingress.kubeconfig"},
	Ports:    []int{IngressHTTPPort, IngressHTTPSPort, 10254},
	After:    []string{"agent"},
	Health: func(ctx context.Context, _ *ControlPlane, h Host) error {
		_, err := loopbackGet(ctx, h, IngressHealthAddress, "/readyz")
		return err
	},
	Wait:     APIServerWait,
	NeedsAPI: true,
	// One worker at a time, so the other workers keep serving through an
	// upgrade.
	Serial: true,
}

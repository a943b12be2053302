package installer

import (
	"context"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/controlplane/lb"
)

// LBMetricsAddress is where the lb host's metrics listener is rendered:
// loopback only; `kforge status` reads it over SSH.
const LBMetricsAddress = "127.0.0.1:9443"

// lbRole is `kforge lb` on the host spec.loadBalancer.host names: TCP to
// every master's apiserver, with active /readyz checks. An external load
// balancer (no host named) skips it.
var lbRole = &Role{
	Name:        "lb",
	Description: "kforge load balancer for the apiservers",
	Title:       "load balancer (kforge lb)",
	RunsOn: func(c *v1alpha1.Cluster, h v1alpha1.Host) bool {
		return h.Role == v1alpha1.RoleLoadBalancer && h.Name == c.Spec.LoadBalancer.Host
	},
	Skip: func(c *v1alpha1.Cluster) string {
		if c.Spec.LoadBalancer.Host == "" {
			return "the load balancer is external (spec.loadBalancer.host is empty)"
		}
		return ""
	},
	Config: func(cp *ControlPlane, h Host) (any, error) {
		c := lb.NewConfig()
		c.ListenAddress = v1alpha1.HostPort("0.0.0.0", cp.Cluster.Spec.LoadBalancer.Port)
		c.Backends = nil
		for _, m := range cp.Cluster.Masters() {
			c.Backends = append(c.Backends, v1alpha1.HostPort(m.Address, 6443))
		}
		c.HealthCheck.CAFile = pkiPath("cluster-ca.crt")
		c.MetricsAddress = LBMetricsAddress
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := lb.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"cluster-ca.crt"},
	Ports:    []int{6443},
	Health: func(ctx context.Context, cp *ControlPlane, h Host) error {
		return cp.prober.APIServer(ctx, "https://"+v1alpha1.HostPort(h.Address(), cp.Cluster.Spec.LoadBalancer.Port))
	},
	Wait:   LBWait,
	Serial: true,
}

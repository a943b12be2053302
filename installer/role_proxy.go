package installer

import (
	"context"
	"net/netip"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/serviceproxy"
)

// ProxyHealthAddress is where each worker's service proxy serves
// /healthz, /readyz and /metrics (kube-proxy's port, loopback only).
const ProxyHealthAddress = serviceproxy.DefaultHealthAddress

// proxyRole is the service proxy on every worker: Services' ClusterIPs
// and NodePorts through its nftables table. NodePorts answer on the
// worker's address from the spec (its Node's InternalIP when that is a
// name); masquerade decisions use the pod range.
var proxyRole = &Role{
	Name:        "proxy",
	Description: "kforge service proxy",
	Title:       "service proxies (rules synced)",
	RunsOn:      func(_ *v1alpha1.Cluster, h v1alpha1.Host) bool { return h.Role == v1alpha1.RoleWorker },
	Config: func(cp *ControlPlane, h Host) (any, error) {
		c := serviceproxy.NewConfig()
		c.Kubeconfig = pkiPath("proxy.kubeconfig")
		c.NodeName = h.Name()
		if a, err := netip.ParseAddr(h.Address()); err == nil && a.Is4() {
			c.NodePortAddresses = []string{a.String()}
		}
		c.ClusterCIDR = cp.Cluster.Spec.Network.PodCIDR
		c.HealthAddress = ProxyHealthAddress
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := serviceproxy.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"proxy.kubeconfig"},
	Ports:    []int{10256},
	After:    []string{"agent"},
	Health: func(ctx context.Context, _ *ControlPlane, h Host) error {
		return loopbackHealthz(ctx, h, ProxyHealthAddress)
	},
	Wait:     APIServerWait,
	NeedsAPI: true,
	// The kforge nftables table.
	Cleanup: "cleanup",
}

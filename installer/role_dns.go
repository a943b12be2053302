package installer

import (
	"context"
	"net"
	"strconv"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/clusterdns"
)

// DNSHealthAddress is where each worker's dns role serves /healthz,
// /readyz and /metrics (loopback only).
const DNSHealthAddress = clusterdns.DefaultHealthAddress

// DNSPort is the port the dns role answers on, UDP and TCP, on the
// worker's own address (so a stub resolver on 127.0.0.53 is no conflict).
const DNSPort = 53

// dnsRole is the cluster DNS server on every worker. Each instance
// creates the kube-dns Service at the 10th address of the service range
// when it is missing and registers its worker's address behind it, which
// the agents write into every pod's resolv.conf.
var dnsRole = &Role{
	Name:        "dns",
	Description: "kforge cluster DNS",
	Title:       "cluster DNS (kube-dns Service, one instance per worker)",
	RunsOn:      func(_ *v1alpha1.Cluster, h v1alpha1.Host) bool { return h.Role == v1alpha1.RoleWorker },
	Config: func(cp *ControlPlane, h Host) (any, error) {
		ip, err := clusterDNSIP(cp.Cluster)
		if err != nil {
			return nil, err
		}
		c := clusterdns.NewConfig()
		c.Kubeconfig = pkiPath("dns.kubeconfig")
		c.NodeName = h.Name()
		c.ListenAddress = net.JoinHostPort(h.Address(), strconv.Itoa(DNSPort))
		c.ClusterDomain = cp.Cluster.Spec.Network.ClusterDomain
		c.Service.ClusterIP = ip.String()
		c.HealthAddress = DNSHealthAddress
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := clusterdns.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"dns.kubeconfig"},
	Ports:    []int{DNSPort, 9153},
	After:    []string{"agent"},
	Health: func(ctx context.Context, _ *ControlPlane, h Host) error {
		_, err := loopbackGet(ctx, h, DNSHealthAddress, "/readyz")
		return err
	},
	Wait:     APIServerWait,
	NeedsAPI: true,
	// One worker at a time, so the kube-dns Service always has a ready
	// instance through an upgrade.
	Serial: true,
}

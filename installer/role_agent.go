package installer

import (
	"context"
	"fmt"
	"net/netip"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/nodeagent"
)

// agentRole is the node agent (the kubelet) on every worker: it registers
// the Node and runs its pods on containerd with CNI. Its kubeconfig names
// the node-local load balancer it embeds, so it reaches the API through
// any apiserver that answers.
var agentRole = &Role{
	Name:        "agent",
	Description: "kforge node agent",
	Title:       "node agents (registered, healthy)",
	RunsOn:      func(_ *v1alpha1.Cluster, h v1alpha1.Host) bool { return h.Role == v1alpha1.RoleWorker },
	Config: func(cp *ControlPlane, h Host) (any, error) {
		dns, err := clusterDNSIP(cp.Cluster)
		if err != nil {
			return nil, err
		}
		c := nodeagent.NewConfig()
		c.NodeName = h.Name()
		c.NodeAddress = h.Address()
		c.Kubeconfig = pkiPath("agent.kubeconfig")
		c.ClusterDNS = dns.String()
		c.ClusterDomain = cp.Cluster.Spec.Network.ClusterDomain
		c.PodCIDRSource = nodeagent.PodCIDRFromNode
		c.CNI.ClusterCIDR = cp.Cluster.Spec.Network.PodCIDR
		c.APIServerProxy = nodeagent.APIServerProxy{CAFile: pkiPath("cluster-ca.crt")}
		c.Server = nodeagent.Server{Address: nodeagent.DefaultServerAddress, CertFile: pkiPath("agent-server.crt"),
			KeyFile: pkiPath("agent-server.key"), ClientCAFile: pkiPath("cluster-ca.crt")}
		for _, m := range cp.Cluster.Masters() {
			c.APIServerProxy.Backends = append(c.APIServerProxy.Backends, v1alpha1.HostPort(m.Address, 6443))
		}
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := nodeagent.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"cluster-ca.crt", "agent.kubeconfig", "agent-client.crt", "agent-client.key", "agent-server.crt", "agent-server.key"},
	// The agent API's serving certificate is polled (certreload); the
	// client certificate is in the kubeconfig, read at start.
	ReloadsCerts: []string{"agent-server.crt", "agent-server.key"},
	// The health listener, the node-local load balancer, the agent API.
	Ports: []int{10248, 6444, 10250},
	After: []string{"containerd.service"},
	Health: func(ctx context.Context, _ *ControlPlane, h Host) error {
		_, err := loopbackGet(ctx, h, nodeagent.DefaultHealthAddress, "/readyz")
		return err
	},
	Wait:     APIServerWait,
	NeedsAPI: true,
	// Pods, sandboxes, routes, the masquerade table and the CNI bridge.
	Cleanup: "cleanup",
}

// clusterDNSIP is the cluster DNS Service's address: the 10th of the
// service range, as kubeadm and the lab use.
func clusterDNSIP(c *v1alpha1.Cluster) (netip.Addr, error) {
	p, err := netip.ParsePrefix(c.Spec.Network.ServiceCIDR)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("spec.network.serviceCIDR: %w", err)
	}
	a := p.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	return a, nil
}

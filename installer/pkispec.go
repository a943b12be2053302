package installer

import (
	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/pki"
)

// PKISpec is what the PKI needs of a loaded (defaulted, valid) cluster spec.
func PKISpec(c *v1alpha1.Cluster) pki.Spec {
	s := pki.Spec{
		ClusterName:         c.Metadata.Name,
		APIServerURL:        c.APIServerURL(),
		LoadBalancerAddress: c.Spec.LoadBalancer.Address,
		ClusterDomain:       c.Spec.Network.ClusterDomain,
		Dir:                 c.Spec.PKI.Dir,
		CAValidity:          c.CAValidity(),
		CertValidity:        c.CertValidity(),
	}
	// An invalid service CIDR leaves the IP unset; NewInventory says so.
	s.KubernetesServiceIP, _ = c.KubernetesServiceIP()
	for _, h := range c.Spec.Hosts {
		s.Hosts = append(s.Hosts, pki.Host{Name: h.Name, Address: h.Address, Role: h.Role})
	}
	return s
}

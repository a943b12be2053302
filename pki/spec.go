package pki

import (
	"fmt"
	"net/netip"
	"time"
)

// Host roles, as the cluster spec names them. They decide which
// certificates a host gets.
const (
	RoleMaster       = "master"
	RoleWorker       = "worker"
	RoleLoadBalancer = "loadbalancer"
)

// Host is one machine the PKI issues for.
type Host struct {
	Name, Address, Role string
}

// Spec is everything the PKI needs to know about a cluster: who the hosts
// are, where clients reach the apiservers and the Service network the
// apiserver certificate must name. The cluster spec is converted into it
// by its users, so this package depends on nothing of theirs.
type Spec struct {
	// ClusterName names the CAs' organisation and the kubeconfigs' cluster.
	ClusterName string
	// Hosts in spec order.
	Hosts []Host
	// APIServerURL is what clients dial: the load balancer, or the only master.
	APIServerURL string
	// LoadBalancerAddress is the load balancer's IP (empty without one);
	// the apiserver certificate names it.
	LoadBalancerAddress string
	// KubernetesServiceIP is the ClusterIP of the "kubernetes" Service.
	KubernetesServiceIP netip.Addr
	// ClusterDomain is the Service DNS domain (cluster.local).
	ClusterDomain string
	// Dir is where the PKI lives unless NewInventory is given another.
	Dir string
	// CAValidity and CertValidity are the lifetimes of new CAs and leaves.
	CAValidity, CertValidity time.Duration
}

// withRole returns the hosts of one role, in spec order.
func (s Spec) withRole(role string) []Host {
	var out []Host
	for _, h := range s.Hosts {
		if h.Role == role {
			out = append(out, h)
		}
	}
	return out
}

func (s Spec) validate() error {
	if s.CAValidity <= 0 {
		return fmt.Errorf("the CA validity %s is not a positive duration", s.CAValidity)
	}
	if s.CertValidity <= 0 {
		return fmt.Errorf("the certificate validity %s is not a positive duration", s.CertValidity)
	}
	if !s.KubernetesServiceIP.IsValid() {
		return fmt.Errorf("no kubernetes Service IP")
	}
	if s.APIServerURL == "" {
		return fmt.Errorf("the cluster has no master and no load balancer: no apiserver URL")
	}
	return nil
}

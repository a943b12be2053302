package v1alpha1

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Host returns the host with this name, or nil.
func (c *Cluster) Host(name string) *Host {
	for i := range c.Spec.Hosts {
		if c.Spec.Hosts[i].Name == name {
			return &c.Spec.Hosts[i]
		}
	}
	return nil
}

// HostsWithRole returns the hosts of one role, in file order.
func (c *Cluster) HostsWithRole(role string) []Host {
	var out []Host
	for _, h := range c.Spec.Hosts {
		if h.Role == role {
			out = append(out, h)
		}
	}
	return out
}

// Masters returns the master hosts in file order.
func (c *Cluster) Masters() []Host { return c.HostsWithRole(RoleMaster) }

// Workers returns the worker hosts in file order.
func (c *Cluster) Workers() []Host { return c.HostsWithRole(RoleWorker) }

// HostSSH returns the SSH settings for a host: spec.ssh with the host's
// overrides applied.
func (c *Cluster) HostSSH(h Host) SSH {
	s := c.Spec.SSH
	if o := h.SSH; o != nil {
		if o.User != "" {
			s.User = o.User
		}
		if o.Port != 0 {
			s.Port = o.Port
		}
		if o.IdentityFile != "" {
			s.IdentityFile = o.IdentityFile
		}
		if o.KnownHosts != "" {
			s.KnownHosts = o.KnownHosts
		}
		if o.SudoPasswordEnv != "" {
			s.SudoPasswordEnv = o.SudoPasswordEnv
		}
		if o.Bastion != "" {
			s.Bastion = o.Bastion
		}
	}
	return s
}

// APIServerURL is the URL clients use to reach the apiservers: the load
// balancer when there is one, else the only master.
func (c *Cluster) APIServerURL() string {
	if lb := c.Spec.LoadBalancer; lb.Address != "" {
		return "https://" + netip.AddrPortFrom(netip.MustParseAddr(lb.Address), uint16(lb.Port)).String()
	}
	if m := c.Masters(); len(m) > 0 {
		return "https://" + netip.AddrPortFrom(netip.MustParseAddr(m[0].Address), DefaultLBPort).String()
	}
	return ""
}

// KubernetesServiceIP is the first address of the service CIDR, the
// ClusterIP of the "kubernetes" Service.
func (c *Cluster) KubernetesServiceIP() (netip.Addr, error) {
	p, err := netip.ParsePrefix(c.Spec.Network.ServiceCIDR)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("spec.network.serviceCIDR: %w", err)
	}
	return p.Masked().Addr().Next(), nil
}

// CAValidity is spec.pki.caValidity as a duration.
func (c *Cluster) CAValidity() time.Duration { return mustDuration(c.Spec.PKI.CAValidity) }

// CertValidity is spec.pki.certValidity as a duration.
func (c *Cluster) CertValidity() time.Duration { return mustDuration(c.Spec.PKI.CertValidity) }

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0
	}
	return d
}

// HostPort joins an address and a port.
func HostPort(addr string, port int) string {
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() {
		return "[" + addr + "]:" + strconv.Itoa(port)
	}
	return addr + ":" + strconv.Itoa(port)
}

package installer

import (
	"context"
	"fmt"
	"net"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
)

// tunneler is a Host that can connect onwards from itself (SSHHost).
type tunneler interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Dialer is how this machine reaches the daemons on the hosts (etcd's
// :2379, the apiservers' and the LB's :6443) for health checks and status.
// A host reached through a bastion is reached through its own SSH
// connection, since the bastion carries SSH only; every other address is
// dialled directly.
type Dialer struct {
	via    map[string]tunneler // address → the host to tunnel through
	direct net.Dialer
}

// NewDialer routes each host whose effective spec.ssh names a bastion
// through its SSH connection (hosts must be connected before a dial). An
// external load balancer is reached through the first such master when
// the masters are behind a bastion.
func NewDialer(c *v1alpha1.Cluster, hosts []Host) *Dialer {
	d := &Dialer{via: map[string]tunneler{}, direct: net.Dialer{Timeout: 5 * time.Second}}
	byName := map[string]Host{}
	for _, h := range hosts {
		byName[h.Name()] = h
	}
	var firstMaster tunneler
	for _, h := range c.Spec.Hosts {
		t, ok := byName[h.Name].(tunneler)
		if !ok || c.HostSSH(h).Bastion == "" {
			continue
		}
		d.via[h.Address] = t
		if h.Role == v1alpha1.RoleMaster && firstMaster == nil {
			firstMaster = t
		}
	}
	lb := c.Spec.LoadBalancer.Address
	if _, ok := d.via[lb]; !ok && lb != "" && firstMaster != nil {
		d.via[lb] = firstMaster
	}
	return d
}

// Tunnels reports whether any address is reached through SSH.
func (d *Dialer) Tunnels() bool { return len(d.via) > 0 }

// DialContext connects to addr ("host:port"), through SSH where the host
// is behind a bastion.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if t, ok := d.via[host]; ok {
		return t.DialContext(ctx, network, addr)
	}
	return d.direct.DialContext(ctx, network, addr)
}

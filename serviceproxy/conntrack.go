package serviceproxy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// staleUDPFilters lists the conntrack entries to delete after moving
// from old to rs, as upstream does: UDP has no connection to close, so an
// entry that still points at a removed endpoint (or records a packet
// that went nowhere while the Service had no endpoint) would keep
// sending a client's packets into the void until it expires.
//   - an endpoint left a UDP service port: the entries from any of its
//     addresses (or its NodePort) to that endpoint;
//   - a UDP service address gained its first endpoint: every entry to it.
func staleUDPFilters(old, rs *Ruleset) []*netlink.ConntrackFilter {
	if old == nil {
		return nil
	}
	var out []*netlink.ConntrackFilter
	add := func(dst netip.Addr, dport uint16, replySrc netip.Addr) {
		f := &netlink.ConntrackFilter{}
		_ = f.AddProtocol(protoUDP)
		if dst.IsValid() {
			_ = f.AddIP(netlink.ConntrackOrigDstIP, dst.AsSlice())
		}
		if dport != 0 {
			_ = f.AddPort(netlink.ConntrackOrigDstPort, dport)
		}
		if replySrc.IsValid() {
			_ = f.AddIP(netlink.ConntrackReplySrcIP, replySrc.AsSlice())
		}
		out = append(out, f)
	}
	for _, name := range sortedKeys(old.UDP) {
		o := old.UDP[name]
		keep := addrSet(rs.UDP[name].Endpoints)
		for _, ep := range o.Endpoints {
			if keep[ep] {
				continue
			}
			for _, k := range o.Keys {
				add(k.Addr, k.Port, ep)
			}
			if o.NodePort != 0 {
				add(netip.Addr{}, o.NodePort, ep)
			}
		}
	}
	for _, name := range sortedKeys(rs.UDP) {
		for _, k := range rs.UDP[name].Keys {
			if _, now := rs.ServiceIPs[k]; now {
				if _, before := old.ServiceIPs[k]; !before {
					add(k.Addr, k.Port, netip.Addr{})
				}
			}
		}
		if np := rs.UDP[name].NodePort; np != 0 {
			k := nodePortKey{Proto: protoUDP, Port: np}
			if _, now := rs.NodePorts[k]; now {
				if _, before := old.NodePorts[k]; !before {
					add(netip.Addr{}, np, netip.Addr{})
				}
			}
		}
	}
	return out
}

// deleteConntrack deletes the entries matching any of filters, through
// h (a handle in the proxy's network namespace). It returns how many
// went.
func deleteConntrack(h *netlink.Handle, filters []*netlink.ConntrackFilter) (uint, error) {
	if len(filters) == 0 {
		return 0, nil
	}
	cf := make([]netlink.CustomConntrackFilter, len(filters))
	for i, f := range filters {
		cf[i] = f
	}
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, cf...)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return n, fmt.Errorf("conntrack: %w", err)
	}
	return n, nil
}

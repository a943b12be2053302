package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// The pod network between nodes needs no overlay when the nodes share an
// L2 segment (the lab, most racks): each agent routes every other node's
// pod CIDR to that node's InternalIP, and masquerades only what its own
// pods send outside the cluster's pod range, so pods see each other's
// real addresses.
const (
	// routeProtocol marks the routes the agent installs (the kernel keeps
	// it on the route; `ip route show proto 66`), so it can tell its own
	// from anyone else's and remove exactly those.
	routeProtocol = netlink.RouteProtocol(66)
	// natTable is the agent's nftables table (family ip): one postrouting
	// chain with the masquerade rule. Nothing else touches it.
	natTable = "kforge-agent"
)

// podRoute is one route to another node's pods.
type podRoute struct {
	Dst netip.Prefix
	Via netip.Addr
}

// wantedRoutes lists, sorted, the routes to the other nodes' pod CIDRs:
// one per node that has a pod CIDR and an IPv4 InternalIP, none to self.
func wantedRoutes(self string, nodes []*corev1.Node) []podRoute {
	var out []podRoute
	for _, n := range nodes {
		if n.Name == self || n.Spec.PodCIDR == "" {
			continue
		}
		dst, err := netip.ParsePrefix(n.Spec.PodCIDR)
		if err != nil || !dst.Addr().Is4() {
			continue
		}
		var via netip.Addr
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
				via = ip
				break
			}
		}
		if !via.IsValid() {
			continue
		}
		out = append(out, podRoute{Dst: dst.Masked(), Via: via})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dst.String() < out[j].Dst.String() })
	return out
}

// syncRoutes makes the kernel's routes marked routeProtocol exactly want:
// it replaces each wanted route and deletes the marked ones no longer
// wanted. A route whose gateway is not on a connected network fails alone;
// the others are still written. It returns how many routes changed.
func syncRoutes(want []podRoute) (int, error) {
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, fmt.Errorf("routes: list: %w", err)
	}
	current := map[podRoute]bool{}
	for _, r := range have {
		if r.Dst == nil || r.Gw == nil {
			continue
		}
		p, ok := prefixOf(r.Dst)
		via, ok2 := netip.AddrFromSlice(r.Gw.To4())
		if ok && ok2 {
			current[podRoute{Dst: p, Via: via}] = true
		}
	}
	wanted := map[netip.Prefix]bool{}
	var errs []error
	changed := 0
	for _, w := range want {
		wanted[w.Dst] = true
		if current[w] {
			continue
		}
		err := netlink.RouteReplace(&netlink.Route{
			Dst:      &net.IPNet{IP: w.Dst.Addr().AsSlice(), Mask: net.CIDRMask(w.Dst.Bits(), 32)},
			Gw:       w.Via.AsSlice(),
			Protocol: routeProtocol,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", w.Dst, w.Via, err))
			continue
		}
		changed++
	}
	for _, r := range have {
		p, ok := prefixOf(r.Dst)
		if !ok || wanted[p] {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("route %s: delete: %w", p, err))
			continue
		}
		changed++
	}
	return changed, errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked(), true
}

// removeRoutes deletes every route the agent installed.
func removeRoutes() error {
	_, err := syncRoutes(nil)
	return err
}

// syncMasquerade writes the agent's nftables table: in postrouting,
// packets from this node's pods (podCIDR) to anywhere outside the
// cluster's pod range (clusterCIDR) leave with the node's address. The
// table, chain and rule are written in one netlink batch, which the kernel
// applies whole or not at all.
func syncMasquerade(podCIDR, clusterCIDR netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: natTable, Family: nftables.TableFamilyIPv4})
	ch := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	c.FlushChain(ch)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: masqueradeExprs(podCIDR, clusterCIDR)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: table %s: %w", natTable, err)
	}
	return nil
}

// masqueradeExprs is `ip saddr podCIDR ip daddr != clusterCIDR masquerade`.
func masqueradeExprs(podCIDR, clusterCIDR netip.Prefix) []expr.Any {
	match := func(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
		mask := net.CIDRMask(p.Bits(), 32)
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
		}
	}
	out := match(12, podCIDR, expr.CmpOpEq)                     // IPv4 source address
	out = append(out, match(16, clusterCIDR, expr.CmpOpNeq)...) // destination
	return append(out, &expr.Masq{})
}

// removeMasquerade deletes the agent's nftables table, if there is one.
func removeMasquerade() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, t := range tables {
		if t.Name == natTable {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("nftables: delete table %s: %w", natTable, err)
			}
		}
	}
	return nil
}

// podNetResync is how often routes and the masquerade rule are rewritten
// from the Nodes even when no Node changed (someone may have flushed them).
const podNetResync = 30 * time.Second

// watchNodes feeds the pod network from a cluster-wide Node informer; only
// with a cluster CIDR (otherwise the agent routes nothing).
func (a *Agent) watchNodes() error {
	if a.cfg.CNI.ClusterCIDR == "" {
		return nil
	}
	inf := a.svcFactory.Core().V1().Nodes()
	a.nodes = inf.Lister()
	a.synced = append(a.synced, inf.Informer().HasSynced)
	a.podNetKick = make(chan struct{}, 1)
	kick := func(any) {
		select {
		case a.podNetKick <- struct{}{}:
		default:
		}
	}
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: kick, UpdateFunc: func(_, o any) { kick(o) }, DeleteFunc: kick,
	})
	return err
}

// runPodNetwork keeps the routes to the other nodes' pods and the
// masquerade rule in line with the Nodes until ctx ends. Both stay in
// place when the agent stops: running pods keep their network.
func (a *Agent) runPodNetwork(ctx context.Context) {
	cluster := netip.MustParsePrefix(a.cfg.CNI.ClusterCIDR) // validated
	t := time.NewTicker(podNetResync)
	defer t.Stop()
	var lastErr string
	for {
		nodes, err := a.nodes.List(everything)
		if err == nil {
			var n int
			n, err = syncRoutes(wantedRoutes(a.cfg.NodeName, nodes))
			if n > 0 {
				a.log.Info("pod routes updated", "changed", n)
			}
		}
		if own, ok := a.podCIDR.Load().(string); ok && own != "" && a.cfg.CNI.Masquerade {
			if p, perr := netip.ParsePrefix(own); perr == nil {
				err = errors.Join(err, syncMasquerade(p.Masked(), cluster.Masked()))
			}
		}
		msg := "" // each failure is logged once, not every resync
		if err != nil {
			if msg = err.Error(); msg != lastErr {
				a.log.Warn("pod network between nodes", "err", err)
			}
		}
		lastErr = msg
		select {
		case <-ctx.Done():
			return
		case <-a.podNetKick:
		case <-t.C:
		}
	}
}

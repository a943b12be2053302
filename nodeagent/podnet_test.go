package nodeagent

import (
	"net"
	"net/netip"
	goruntime "runtime"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testNode(name, podCIDR, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: podCIDR}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

func TestWantedRoutes(t *testing.T) {
	nodes := []*corev1.Node{
		testNode("w2", "198.19.2.0/24", "198.18.0.12"),
		testNode("w1", "198.19.1.0/24", "198.18.0.11"), // self
		testNode("w3", "198.19.3.7/24", "198.18.0.13"), // not masked
		testNode("w4", "", "198.18.0.14"),              // no pod CIDR yet
		testNode("w5", "198.19.5.0/24", ""),            // no address yet
		testNode("w6", "fd00::/64", "198.18.0.16"),     // IPv6: not routed
	}
	got := wantedRoutes("w1", nodes)
	want := []podRoute{
		{netip.MustParsePrefix("198.19.2.0/24"), netip.MustParseAddr("198.18.0.12")},
		{netip.MustParsePrefix("198.19.3.0/24"), netip.MustParseAddr("198.18.0.13")},
	}
	if len(got) != len(want) {
		t.Fatalf("routes = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("routes = %v, want %v", got, want)
		}
	}
}

// inNewNetNS runs f on a locked thread inside a fresh network namespace
// with a bridge 198.18.5.1/24 up, so routes via 198.18.5.x resolve.
func inNewNetNS(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		goruntime.LockOSThread() // never unlocked: the thread dies with the goroutine
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			t.Errorf("new network namespace: %v", err)
			return
		}
		defer ns.Close()
		defer func() { _ = netns.Set(orig) }()
		link := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "node0"}}
		if err := netlink.LinkAdd(link); err != nil {
			t.Error(err)
			return
		}
		addr, _ := netlink.ParseAddr("198.18.5.1/24")
		if err := netlink.AddrAdd(link, addr); err != nil {
			t.Error(err)
			return
		}
		if err := netlink.LinkSetUp(link); err != nil {
			t.Error(err)
			return
		}
		f()
	}()
	<-done
}

func routesMarked(t *testing.T) map[string]string {
	t.Helper()
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rs {
		out[r.Dst.String()] = r.Gw.String()
	}
	return out
}

func TestSyncRoutesInNetNS(t *testing.T) {
	inNewNetNS(t, func() {
		// Someone else's route in the same range of addresses: never touched.
		_, other, _ := net.ParseCIDR("198.19.9.0/24")
		if err := netlink.RouteAdd(&netlink.Route{Dst: other, Gw: net.ParseIP("198.18.5.9")}); err != nil {
			t.Error(err)
			return
		}
		want := []podRoute{
			{netip.MustParsePrefix("198.19.2.0/24"), netip.MustParseAddr("198.18.5.2")},
			{netip.MustParsePrefix("198.19.3.0/24"), netip.MustParseAddr("198.18.5.3")},
		}
		if n, err := syncRoutes(want); err != nil || n != 2 {
			t.Errorf("first sync: changed %d, %v; want 2, nil", n, err)
		}
		if n, err := syncRoutes(want); err != nil || n != 0 {
			t.Errorf("second sync: changed %d, %v; want 0, nil", n, err)
		}
		// w3 moved to another address, w2 left, an unreachable gateway fails alone.
		want = []podRoute{
			{netip.MustParsePrefix("198.19.3.0/24"), netip.MustParseAddr("198.18.5.4")},
			{netip.MustParsePrefix("198.19.4.0/24"), netip.MustParseAddr("203.0.113.1")},
		}
		n, err := syncRoutes(want)
		if err == nil || n != 2 {
			t.Errorf("third sync: changed %d, %v; want 2 and an error for 203.0.113.1", n, err)
		}
		got := routesMarked(t)
		if len(got) != 1 || got["198.19.3.0/24"] != "198.18.5.4" {
			t.Errorf("routes = %v, want only 198.19.3.0/24 via 198.18.5.4", got)
		}
		if err := removeRoutes(); err != nil {
			t.Error(err)
		}
		if got := routesMarked(t); len(got) != 0 {
			t.Errorf("after removeRoutes: %v", got)
		}
		all, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		found := false
		for _, r := range all {
			found = found || (r.Dst != nil && r.Dst.String() == "198.19.9.0/24")
		}
		if !found {
			t.Error("a route the agent did not install was removed")
		}
	})
}

func TestMasqueradeInNetNS(t *testing.T) {
	inNewNetNS(t, func() {
		pod, cluster := netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("198.19.0.0/16")
		for range 2 { // idempotent: one rule after two syncs
			if err := syncMasquerade(pod, cluster); err != nil {
				t.Error(err)
				return
			}
		}
		c, err := nftables.New()
		if err != nil {
			t.Error(err)
			return
		}
		rules, err := c.GetRules(&nftables.Table{Name: natTable, Family: nftables.TableFamilyIPv4}, &nftables.Chain{Name: "postrouting"})
		if err != nil || len(rules) != 1 {
			t.Errorf("rules in %s = %d (%v), want 1", natTable, len(rules), err)
		}
		if err := removeMasquerade(); err != nil {
			t.Error(err)
		}
		if err := removeMasquerade(); err != nil { // nothing left: no error
			t.Error(err)
		}
		tables, _ := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		for _, tb := range tables {
			if tb.Name == natTable {
				t.Error("table still present after removeMasquerade")
			}
		}
	})
}

package serviceproxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
)

// lab is three fresh network namespaces: node (where the rules go),
// client (198.18.100.2, behind the node's 198.18.100.1) and server
// (198.18.101.2 and .3, behind the node's 198.18.101.1).
type lab struct {
	node, client, server netns.NsHandle
	nodeNL               *netlink.Handle
}

// runIn runs f on a thread of its own inside ns and waits for it; the
// thread is never handed back to the scheduler (it dies with its
// goroutine), so no other goroutine inherits the namespace.
func runIn(t testing.TB, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		goruntime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			t.Errorf("entering netns: %v", err)
			return
		}
		f()
	}()
	<-done
}

func newNS(t testing.TB) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		goruntime.LockOSThread()
		h, err = netns.New()
	}()
	<-done
	if err != nil {
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newLab(t testing.TB) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	l := &lab{node: newNS(t), client: newNS(t), server: newNS(t)}
	var err error
	if l.nodeNL, err = netlink.NewHandleAt(l.node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.nodeNL.Close)
	link := func(name string, peerNS netns.NsHandle, nodeAddr string, peerAddrs ...string) {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(peerNS))}
		if err := l.nodeNL.LinkAdd(veth); err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
		a, _ := netlink.ParseAddr(nodeAddr)
		must(t, l.nodeNL.AddrAdd(veth, a))
		must(t, l.nodeNL.LinkSetUp(veth))
		ph, err := netlink.NewHandleAt(peerNS)
		if err != nil {
			t.Fatal(err)
		}
		defer ph.Close()
		peer, err := ph.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		for _, pa := range peerAddrs {
			a, _ := netlink.ParseAddr(pa)
			must(t, ph.AddrAdd(peer, a))
		}
		must(t, ph.LinkSetUp(peer))
		lo, _ := ph.LinkByName("lo")
		must(t, ph.LinkSetUp(lo))
		gw := net.ParseIP(strings.Split(nodeAddr, "/")[0])
		must(t, ph.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: gw}))
	}
	link("c0", l.client, "198.18.100.1/24", "198.18.100.2/24")
	link("s0", l.server, "198.18.101.1/24", "198.18.101.2/24", "198.18.101.3/24")
	lo, _ := l.nodeNL.LinkByName("lo")
	must(t, l.nodeNL.LinkSetUp(lo))
	runIn(t, l.node, func() {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			t.Errorf("ip_forward: %v", err)
		}
	})
	return l
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serveTCP answers every connection to addr (in the server namespace)
// with addr itself, until the test ends.
func (l *lab) serveTCP(t testing.TB, addr string) {
	var ln net.Listener
	var err error
	runIn(t, l.server, func() { ln, err = net.Listen("tcp4", addr) })
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, addr)
			c.Close()
		}
	}()
}

// serveUDP echoes each datagram to addr prefixed with addr.
func (l *lab) serveUDP(t testing.TB, addr string) {
	var pc net.PacketConn
	var err error
	runIn(t, l.server, func() { pc, err = net.ListenPacket("udp4", addr) })
	must(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(addr+" "), buf[:n]...), from)
		}
	}()
}

// get connects from the client namespace to addr and returns what the
// server said.
func (l *lab) get(t testing.TB, addr string) (string, error) {
	var out string
	var err error
	runIn(t, l.client, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		var b []byte
		b, err = io.ReadAll(c)
		out = string(b)
	})
	return out, err
}

// udpConn is a connected UDP socket of the client namespace.
func (l *lab) udpConn(t testing.TB, addr string) net.Conn {
	var c net.Conn
	var err error
	runIn(t, l.client, func() { c, err = net.Dial("udp4", addr) })
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func udpAsk(c net.Conn, msg string) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func (l *lab) writer(t testing.TB) *Writer {
	w, err := NewWriter(int(l.node))
	must(t, err)
	t.Cleanup(func() { w.Close() })
	return w
}

func TestKernelClusterIPNodePortReject(t *testing.T) {
	l := newLab(t)
	l.serveTCP(t, "198.18.101.2:8080")
	l.serveTCP(t, "198.18.101.3:8080")
	web := svc("default", "web", "198.18.16.10", corev1.ServiceTypeNodePort, port("http", corev1.ProtocolTCP, 80, 30080))
	empty := svc("default", "empty", "198.18.16.11", corev1.ServiceTypeNodePort, port("http", corev1.ProtocolTCP, 80, 30081))
	in := Input{
		Services:  []*corev1.Service{web, empty},
		Slices:    slicesOf(web, "http", corev1.ProtocolTCP, 8080, ep("198.18.101.2", "n2", true), ep("198.18.101.3", "n2", true)),
		NodeName:  "n1",
		NodeIPs:   []netip.Addr{netip.MustParseAddr("198.18.100.1")},
		PodPrefix: netip.MustParsePrefix("198.19.0.0/16"),
	}
	w := l.writer(t)
	if _, err := w.Sync(Build(in), true); err != nil {
		t.Fatal(err)
	}

	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		got, err := l.get(t, "198.18.16.10:80")
		if err != nil {
			t.Fatalf("ClusterIP: %v", err)
		}
		seen[got] = true
	}
	if !seen["198.18.101.2:8080"] || !seen["198.18.101.3:8080"] {
		t.Errorf("ClusterIP reached %v, want both endpoints", seen)
	}
	if got, err := l.get(t, "198.18.100.1:30080"); err != nil || !strings.HasPrefix(got, "198.18.101.") {
		t.Errorf("NodePort: %q, %v", got, err)
	}
	for _, addr := range []string{"198.18.16.11:80", "198.18.100.1:30081"} {
		_, err := l.get(t, addr)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s without endpoints: err = %v, want connection refused", addr, err)
		}
	}

	// An incremental change: one endpoint leaves, the empty Service
	// gets one.
	in.Slices = append(slicesOf(web, "http", corev1.ProtocolTCP, 8080, ep("198.18.101.3", "n2", true)),
		slicesOf(empty, "http", corev1.ProtocolTCP, 8080, ep("198.18.101.2", "n2", true))...)
	if full, err := w.Sync(Build(in), false); err != nil || full {
		t.Fatalf("incremental sync: full=%v err=%v", full, err)
	}
	for range 20 {
		if got, err := l.get(t, "198.18.16.10:80"); err != nil || got != "198.18.101.3:8080" {
			t.Fatalf("after the change: %q, %v", got, err)
		}
	}
	if got, err := l.get(t, "198.18.16.11:80"); err != nil || got != "198.18.101.2:8080" {
		t.Errorf("the formerly empty Service: %q, %v", got, err)
	}

	// What the kernel holds, read back.
	c, err := nftables.New(nftables.WithNetNSFd(int(l.node)))
	must(t, err)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	must(t, err)
	names := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			names[ch.Name] = true
		}
	}
	for _, want := range []string{"svc-default/web/TCP/http", "ext-default/web/TCP/http", "svc-default/empty/TCP/http"} {
		if !names[want] {
			t.Errorf("chain %s missing; have %v", want, names)
		}
	}

	must(t, RemoveTable(int(l.node)))
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	must(t, err)
	for _, tb := range tables {
		if tb.Name == TableName {
			t.Errorf("table %s still there after RemoveTable", TableName)
		}
	}
}

func TestKernelUDPConntrack(t *testing.T) {
	l := newLab(t)
	l.serveUDP(t, "198.18.101.2:5353")
	l.serveUDP(t, "198.18.101.3:5353")
	dns := svc("kube-system", "dns", "198.18.16.12", corev1.ServiceTypeClusterIP, port("dns", corev1.ProtocolUDP, 53, 0))
	in := Input{
		Services: []*corev1.Service{dns},
		Slices:   slicesOf(dns, "dns", corev1.ProtocolUDP, 5353, ep("198.18.101.2", "n2", true)),
		NodeName: "n1",
	}
	w := l.writer(t)
	applied := Build(in)
	if _, err := w.Sync(applied, true); err != nil {
		t.Fatal(err)
	}
	c := l.udpConn(t, "198.18.16.12:53")
	if got, err := udpAsk(c, "q1"); err != nil || got != "198.18.101.2:5353 q1" {
		t.Fatalf("UDP through the ClusterIP: %q, %v", got, err)
	}
	countTo := func(ep string) int {
		flows, err := l.nodeNL.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
		must(t, err)
		n := 0
		for _, f := range flows {
			if f.Forward.Protocol == protoUDP && f.Forward.DstIP.String() == "198.18.16.12" && f.Reverse.SrcIP.String() == ep {
				n++
			}
		}
		return n
	}
	if countTo("198.18.101.2") != 1 {
		t.Fatalf("conntrack entries to the endpoint = %d, want 1", countTo("198.18.101.2"))
	}

	// The endpoint goes, another comes: the client's next datagram (same
	// socket, same 5-tuple) must reach the new one.
	in.Slices = slicesOf(dns, "dns", corev1.ProtocolUDP, 5353, ep("198.18.101.3", "n2", true))
	next := Build(in)
	if _, err := w.Sync(next, false); err != nil {
		t.Fatal(err)
	}
	if _, err := deleteConntrack(l.nodeNL, staleUDPFilters(applied, next)); err != nil {
		t.Fatal(err)
	}
	if n := countTo("198.18.101.2"); n != 0 {
		t.Errorf("%d stale conntrack entries to the removed endpoint", n)
	}
	if got, err := udpAsk(c, "q2"); err != nil || got != "198.18.101.3:5353 q2" {
		t.Errorf("UDP after the endpoint change: %q, %v", got, err)
	}
}

package clusterdns

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func service(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: strings.Split(clusterIP, ","), Ports: ports},
	}
}

type ep struct {
	addr, host string
	ready      bool
}

func slice(ns, svc, name string, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready)}}
		if e.host != "" {
			x.Hostname = ptr(e.host)
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

// testStore is a cluster: a ClusterIP Service with named ports, a
// dual-stack one, a headless one with two ready endpoints (one with a
// hostname) and a not-ready one, an ExternalName Service pointing into
// the cluster and one pointing outside.
func testStore() *Store {
	web := service("default", "web", "198.18.16.20",
		corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80},
		corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53})
	dual := service("default", "dual", "198.18.16.21")
	dual.Spec.ClusterIPs = []string{"198.18.16.21", "fd00::21"}
	db := service("data", "db", corev1.ClusterIPNone)
	ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "alias"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "web.default.svc.cluster.local"}}
	out := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "out"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.org"}}
	empty := service("data", "empty", corev1.ClusterIPNone)
	ports := []discoveryv1.EndpointPort{{Name: ptr("pg"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(5432))}}
	dbSlice := slice("data", "db", "db-1", ports,
		ep{"198.19.1.5", "db-0", true}, ep{"198.19.2.6", "", true}, ep{"198.19.3.7", "db-2", false})
	webSlice := slice("default", "web", "web-1", nil, ep{"198.19.1.9", "", true})
	return NewMemoryStore(web, dual, db, ext, out, empty, dbSlice, webSlice)
}

func newTestResolver(fwd *Forwarder) *Resolver {
	return NewResolver(testStore(), "cluster.local", 5*time.Second, fwd)
}

func query(t *testing.T, r *Resolver, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	resp, _ := r.Answer(context.Background(), m)
	if resp.Id != m.Id || !resp.Response {
		t.Fatalf("%s: answer id %d response %v, want id %d, a response", name, resp.Id, resp.Response, m.Id)
	}
	return resp
}

// rrs renders the answer section compactly: "A 1.2.3.4", "SRV 0 100 80 x.".
func rrs(sec []dns.RR) []string {
	var out []string
	for _, rr := range sec {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(f[3:], " "))
	}
	return out
}

func TestClusterRecords(t *testing.T) {
	r := newTestResolver(nil)
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		ans   string // rrs joined with "; "
		extra string
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "A 198.18.16.20", ""},
		{"WEB.Default.SVC.cluster.LOCAL.", dns.TypeA, dns.RcodeSuccess, "A 198.18.16.20", ""},
		{"web.default.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, "", ""},
		{"web.default.svc.cluster.local.", dns.TypeTXT, dns.RcodeSuccess, "", ""},
		{"dual.default.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, "AAAA fd00::21", ""},
		{"dual.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "A 198.18.16.21", ""},
		{"nope.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, "", ""},
		{"default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "", ""},
		{"nons.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, "", ""},
		{"svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "", ""},
		{"cluster.local.", dns.TypeA, dns.RcodeSuccess, "", ""},
		{"cluster.local.", dns.TypeNS, dns.RcodeSuccess, "NS ns.dns.cluster.local.", ""},
		{"a.b.web.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, "", ""},
		{"other.cluster.local.", dns.TypeA, dns.RcodeNameError, "", ""},
		// Headless: ready endpoints only, by hostname or dashed address.
		{"db.data.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "A 198.19.1.5; A 198.19.2.6", ""},
		{"db-0.db.data.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "A 198.19.1.5", ""},
		{"198-19-2-6.db.data.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "A 198.19.2.6", ""},
		{"db-2.db.data.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, "", ""},
		{"empty.data.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "", ""},
		// A ClusterIP Service has no endpoint names.
		{"198-19-1-9.web.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, "", ""},
		// SRV.
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
			"SRV 0 100 80 web.default.svc.cluster.local.", "A 198.18.16.20"},
		{"_dns._udp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
			"SRV 0 100 53 web.default.svc.cluster.local.", "A 198.18.16.20"},
		{"_dns._tcp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeNameError, "", ""},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "", ""},
		{"_tcp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess, "", ""},
		{"_sctp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeNameError, "", ""},
		{"_pg._tcp.db.data.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
			"SRV 0 50 5432 db-0.db.data.svc.cluster.local.; SRV 0 50 5432 198-19-2-6.db.data.svc.cluster.local.",
			"A 198.19.1.5; A 198.19.2.6"},
		{"web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
			"SRV 0 100 80 web.default.svc.cluster.local.; SRV 0 100 53 web.default.svc.cluster.local.", "A 198.18.16.20"},
		// ExternalName: a CNAME, chased inside the cluster.
		{"alias.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess,
			"CNAME web.default.svc.cluster.local.; A 198.18.16.20", ""},
		{"alias.default.svc.cluster.local.", dns.TypeCNAME, dns.RcodeSuccess, "CNAME web.default.svc.cluster.local.", ""},
		{"out.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "CNAME example.org.", ""},
		// Pods.
		{"198-19-1-5.default.pod.cluster.local.", dns.TypeA, dns.RcodeSuccess, "A 198.19.1.5", ""},
		{"198-19-1-5.default.pod.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, "", ""},
		{"fd00--5.default.pod.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, "AAAA fd00::5", ""},
		{"198-19-1.default.pod.cluster.local.", dns.TypeA, dns.RcodeNameError, "", ""},
		{"default.pod.cluster.local.", dns.TypeA, dns.RcodeSuccess, "", ""},
		// PTR of ClusterIPs and endpoint addresses.
		{"20.16.18.198.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "PTR web.default.svc.cluster.local.", ""},
		{"5.1.19.198.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "PTR db-0.db.data.svc.cluster.local.", ""},
		{"9.1.19.198.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "PTR 198-19-1-9.web.default.svc.cluster.local.", ""},
		{"1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR, dns.RcodeSuccess,
			"PTR dual.default.svc.cluster.local.", ""},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.name, dns.TypeToString[tc.qtype]), func(t *testing.T) {
			resp := query(t, r, tc.name, tc.qtype)
			if resp.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := strings.Join(rrs(resp.Answer), "; "); got != tc.ans {
				t.Errorf("answer %q, want %q", got, tc.ans)
			}
			if got := strings.Join(rrs(resp.Extra), "; "); got != tc.extra {
				t.Errorf("extra %q, want %q", got, tc.extra)
			}
			if !resp.Authoritative {
				t.Error("not authoritative")
			}
			for _, rr := range resp.Answer[:min(1, len(resp.Answer))] {
				if rr.Header().Name != tc.name {
					t.Errorf("record %s names %q, not the question's %q", rr, rr.Header().Name, tc.name)
				}
			}
			negative := resp.Rcode == dns.RcodeNameError || len(resp.Answer) == 0
			if soa := len(resp.Ns) == 1 && resp.Ns[0].Header().Rrtype == dns.TypeSOA; negative != soa {
				t.Errorf("negative %v but authority %v", negative, resp.Ns)
			}
		})
	}
}

// The headless Service's record set follows its endpoints' readiness and
// publishNotReadyAddresses.
func TestHeadlessPublishNotReady(t *testing.T) {
	r := newTestResolver(nil)
	o, _, _ := r.store.services.GetByKey("data/db")
	svc := o.(*corev1.Service).DeepCopy()
	svc.Spec.PublishNotReadyAddresses = true
	if err := r.store.services.Update(svc); err != nil {
		t.Fatal(err)
	}
	resp := query(t, r, "db.data.svc.cluster.local.", dns.TypeA)
	if got := strings.Join(rrs(resp.Answer), "; "); got != "A 198.19.1.5; A 198.19.2.6; A 198.19.3.7" {
		t.Errorf("answer %q", got)
	}
}

func TestInvalidQueries(t *testing.T) {
	r := newTestResolver(nil)
	m := new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if resp, _ := r.Answer(context.Background(), m); resp.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s, want FORMERR", dns.RcodeToString[resp.Rcode])
	}
	m = new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.Opcode = dns.OpcodeStatus
	if resp, _ := r.Answer(context.Background(), m); resp.Rcode != dns.RcodeNotImplemented {
		t.Errorf("STATUS opcode: %s, want NOTIMP", dns.RcodeToString[resp.Rcode])
	}
	m = new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if resp, _ := r.Answer(context.Background(), m); resp.Rcode != dns.RcodeBadVers || resp.IsEdns0() == nil {
		t.Errorf("EDNS version 1: %s, want BADVERS with an OPT", dns.RcodeToString[resp.Rcode])
	}
	m = new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	if resp, _ := r.Answer(context.Background(), m); resp.Rcode != dns.RcodeNotImplemented {
		t.Errorf("CHAOS class: %s, want NOTIMP", dns.RcodeToString[resp.Rcode])
	}
}

// Until the informers have synced, a cluster name is SERVFAIL, never a
// false NXDOMAIN.
func TestNotSyncedIsServfail(t *testing.T) {
	r := newTestResolver(nil)
	r.synced.Store(false)
	if resp := query(t, r, "nope.default.svc.cluster.local.", dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
}

// The EDNS answer carries our OPT and the client's DO bit.
func TestEDNSAnswer(t *testing.T) {
	r := newTestResolver(nil)
	m := new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.SetEdns0(4096, true)
	resp, _ := r.Answer(context.Background(), m)
	opt := resp.IsEdns0()
	if opt == nil || opt.UDPSize() != ednsSize || !opt.Do() {
		t.Fatalf("OPT %v", opt)
	}
}

func TestDashedAndReverseAddrs(t *testing.T) {
	for _, s := range []string{"10-0-0-1", "fd00--1", "2001-db8-0-0-0-0-0-1"} {
		a, ok := dashedAddr(s)
		if !ok || dashed(a) == "" {
			t.Errorf("%s: %v %v", s, a, ok)
		}
	}
	for _, s := range []string{"10-0-0", "10-0-0-1-2", "x-y-z-w", "::1", "0-0-0-0-0-ffff-a00-1"} {
		if a, ok := dashedAddr(s); ok {
			t.Errorf("%s parsed as %v", s, a)
		}
	}
	for name, want := range map[string]string{
		"4.3.2.1.in-addr.arpa.": "1.2.3.4",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.": "2001:db8::1",
		"3.2.1.in-addr.arpa.":   "",
		"x.3.2.1.in-addr.arpa.": "",
		"10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.": "",
	} {
		a, ok := reverseAddr(name)
		got := ""
		if ok {
			got = a.String()
		}
		if got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// udpWriter is a dns.ResponseWriter on UDP that keeps the message.
type udpWriter struct{ msg *dns.Msg }

func (w *udpWriter) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (w *udpWriter) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
}
func (w *udpWriter) WriteMsg(m *dns.Msg) error { w.msg = m; return nil }
func (w *udpWriter) Write([]byte) (int, error) { return 0, nil }
func (w *udpWriter) Close() error              { return nil }
func (w *udpWriter) TsigStatus() error         { return nil }
func (w *udpWriter) TsigTimersOnly(bool)       {}
func (w *udpWriter) Hijack()                   {}
func (w *udpWriter) Network() string           { return "udp" }

// A headless Service with many endpoints does not fit 512 bytes: over UDP
// the answer is cut and flagged TC.
func TestTruncatesLargeUDPAnswers(t *testing.T) {
	var eps []ep
	for i := range 60 {
		eps = append(eps, ep{fmt.Sprintf("198.19.%d.%d", i/250, i%250+1), "", true})
	}
	store := NewMemoryStore(service("default", "big", corev1.ClusterIPNone), slice("default", "big", "big-1", nil, eps...))
	r := NewResolver(store, "cluster.local", 5*time.Second, nil)
	m := new(dns.Msg)
	m.SetQuestion("big.default.svc.cluster.local.", dns.TypeA)
	w := &udpWriter{}
	r.ServeDNS(w, m)
	packed, err := w.msg.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !w.msg.Truncated || len(packed) > dns.MinMsgSize || len(w.msg.Answer) >= 60 {
		t.Errorf("TC %v, %d bytes, %d answers", w.msg.Truncated, len(packed), len(w.msg.Answer))
	}
	// With a 4096-byte EDNS buffer all 60 fit.
	m.SetEdns0(4096, false)
	r.ServeDNS(w, m)
	if w.msg.Truncated || len(w.msg.Answer) != 60 {
		t.Errorf("EDNS: TC %v, %d answers", w.msg.Truncated, len(w.msg.Answer))
	}
}

// BenchmarkAnswer is the resolver's own cost for a ClusterIP Service's A
// record, without the network.
func BenchmarkAnswer(b *testing.B) {
	r := newTestResolver(nil)
	m := new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	for b.Loop() {
		if resp, _ := r.Answer(context.Background(), m); len(resp.Answer) != 1 {
			b.Fatal(resp)
		}
	}
}

package clusterdns

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// ednsSize is the UDP payload size this server offers and asks upstreams
// for: the DNS flag day 2020 value, which avoids IP fragmentation.
const ednsSize = 1232

// Resolver answers DNS queries: names under the cluster domain from the
// Store, following the Kubernetes DNS specification, and every other name
// through the Forwarder. It is a dns.Handler.
type Resolver struct {
	store  *Store
	zone   string // the cluster domain, lower case, fully qualified
	ttl    uint32
	serial uint32
	fwd    *Forwarder
	m      *metrics

	// synced is false until the Store holds the API's contents; until
	// then cluster names get SERVFAIL rather than a false NXDOMAIN.
	synced atomic.Bool
}

// NewResolver answers for domain (cluster.local) from store with records
// of the given TTL, and forwards other names to fwd (nil: SERVFAIL). It
// starts synced; the daemon clears that until its informers have synced.
func NewResolver(store *Store, domain string, ttl time.Duration, fwd *Forwarder) *Resolver {
	r := &Resolver{store: store, zone: dns.CanonicalName(domain), ttl: uint32(ttl / time.Second), fwd: fwd,
		serial: uint32(time.Now().Unix())}
	r.synced.Store(true)
	return r
}

// ServeDNS answers one query. Requests the server could not parse never
// get here: the dns library answers them FORMERR (NOTIMP for an unknown
// opcode). A UDP answer larger than the client's buffer (512 bytes, or
// its EDNS size) is cut with the TC bit set, so the client asks again
// over TCP.
func (r *Resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	resp, zone := r.Answer(context.Background(), req)
	if isUDP(w) {
		resp.Truncate(clientSize(req))
	}
	_ = w.WriteMsg(resp)
	r.m.observe(zone, resp.Rcode, time.Since(start))
}

// isUDP reports whether w answers over UDP.
func isUDP(w dns.ResponseWriter) bool {
	return w.LocalAddr() != nil && w.LocalAddr().Network() == "udp"
}

// clientSize is the largest UDP answer the client takes.
func clientSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > dns.MinMsgSize {
		return int(min(opt.UDPSize(), ednsSize))
	}
	return dns.MinMsgSize
}

// Zones named in metrics.
const (
	zoneCluster = "cluster"
	zoneForward = "forward"
	zoneInvalid = "invalid"
)

// Answer builds the response to req, and says which zone answered it
// (cluster, forward or invalid).
func (r *Resolver) Answer(ctx context.Context, req *dns.Msg) (*dns.Msg, string) {
	resp := new(dns.Msg)
	if len(req.Question) != 1 {
		resp.SetRcodeFormatError(req)
		return resp, zoneInvalid
	}
	if req.Opcode != dns.OpcodeQuery {
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp, zoneInvalid
	}
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		resp.SetRcode(req, dns.RcodeBadVers)
		resp.SetEdns0(ednsSize, false)
		return resp, zoneInvalid
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	zone := zoneCluster
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		resp.SetRcode(req, dns.RcodeNotImplemented)
		zone = zoneInvalid
	case dns.IsSubDomain(r.zone, name):
		if !r.synced.Load() {
			resp.SetRcode(req, dns.RcodeServerFailure)
			break
		}
		resp.SetReply(req)
		resp.Authoritative = true
		r.cluster(ctx, resp, q, name)
	default:
		if ptr := r.reverse(q, name); ptr != nil {
			resp.SetReply(req)
			resp.Authoritative = true
			resp.Answer = ptr
			break
		}
		zone = zoneForward
		resp = r.forward(ctx, req)
	}
	resp.RecursionAvailable = true
	resp.Extra = slices.DeleteFunc(resp.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
	if opt != nil {
		resp.SetEdns0(ednsSize, opt.Do())
	}
	return resp, zone
}

// forward sends req to the upstreams (through the cache).
func (r *Resolver) forward(ctx context.Context, req *dns.Msg) *dns.Msg {
	if r.fwd == nil {
		resp := new(dns.Msg)
		return resp.SetRcode(req, dns.RcodeServerFailure)
	}
	return r.fwd.Resolve(ctx, req)
}

// cluster fills resp for a name under the cluster domain.
func (r *Resolver) cluster(ctx context.Context, resp *dns.Msg, q dns.Question, name string) {
	rel := strings.TrimSuffix(strings.TrimSuffix(name, r.zone), ".")
	var labels []string
	if rel != "" {
		labels = strings.Split(rel, ".")
	}
	ans, extra, rcode := r.lookup(ctx, q, name, labels)
	resp.Rcode = rcode
	resp.Answer, resp.Extra = ans, extra
	if rcode == dns.RcodeNameError || (rcode == dns.RcodeSuccess && len(ans) == 0) {
		resp.Ns = []dns.RR{r.soa()}
	}
}

// lookup answers the question for name (lower case), whose labels below
// the cluster domain are given, with the answer and additional records and
// the rcode: NXDOMAIN when the name does not exist, success with no
// answer (NODATA) when it exists without records of the type.
func (r *Resolver) lookup(ctx context.Context, q dns.Question, name string, labels []string) (ans, extra []dns.RR, rcode int) {
	n := len(labels)
	if n == 0 { // the zone apex
		switch q.Qtype {
		case dns.TypeSOA:
			return []dns.RR{r.soa()}, nil, dns.RcodeSuccess
		case dns.TypeNS:
			return []dns.RR{&dns.NS{Hdr: r.hdr(q.Name, dns.TypeNS), Ns: "ns.dns." + r.zone}}, nil, dns.RcodeSuccess
		}
		return nil, nil, dns.RcodeSuccess
	}
	switch labels[n-1] {
	case "svc":
		return r.lookupService(ctx, q, name, labels[:n-1])
	case "pod":
		return r.lookupPod(q, labels[:n-1])
	}
	return nil, nil, dns.RcodeNameError
}

// lookupService answers names under svc.DOMAIN: labels are what comes
// before "svc" (NS, SVC.NS, HOST.SVC.NS, _PORT._PROTO.SVC.NS).
func (r *Resolver) lookupService(ctx context.Context, q dns.Question, name string, labels []string) ([]dns.RR, []dns.RR, int) {
	n := len(labels)
	switch {
	case n == 0: // svc.DOMAIN
		return nil, nil, dns.RcodeSuccess
	case n == 1: // NS.svc.DOMAIN exists while the namespace has a Service
		if r.store.hasNamespace(labels[0]) {
			return nil, nil, dns.RcodeSuccess
		}
		return nil, nil, dns.RcodeNameError
	case n > 4:
		return nil, nil, dns.RcodeNameError
	}
	ns, svcName := labels[n-1], labels[n-2]
	svc := r.store.service(ns, svcName)
	if svc == nil {
		return nil, nil, dns.RcodeNameError
	}
	switch {
	case n == 2:
		return r.serviceRecords(ctx, q, name, svc)
	case n == 4 && strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_"):
		return r.srvRecords(q, svc, labels[0][1:], labels[1][1:])
	case n == 3 && strings.HasPrefix(labels[0], "_"):
		// _PROTO.SVC.NS: an empty non-terminal when a port uses PROTO.
		for _, p := range r.servicePorts(svc) {
			if strings.EqualFold(string(p.proto), labels[0][1:]) {
				return nil, nil, dns.RcodeSuccess
			}
		}
		return nil, nil, dns.RcodeNameError
	case n == 3 && headless(svc):
		return r.endpointRecords(q, svc, labels[0])
	}
	return nil, nil, dns.RcodeNameError
}

// serviceRecords answers SVC.NS.svc.DOMAIN: the ClusterIPs, the ready
// endpoints of a headless Service, a CNAME for an ExternalName Service;
// SRV gives every named port.
func (r *Resolver) serviceRecords(ctx context.Context, q dns.Question, name string, svc *corev1.Service) ([]dns.RR, []dns.RR, int) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return r.externalName(ctx, q, svc)
	}
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		var addrs []netip.Addr
		if headless(svc) {
			for _, ep := range r.readyEndpoints(svc) {
				addrs = append(addrs, ep.addr)
			}
		} else {
			addrs = clusterIPs(svc)
		}
		return r.addressRecords(q.Name, q.Qtype, addrs), nil, dns.RcodeSuccess
	case dns.TypeSRV:
		var ans, extra []dns.RR
		for _, p := range r.servicePorts(svc) {
			a, e, _ := r.srvRecords(dns.Question{Name: q.Name, Qtype: dns.TypeSRV}, svc, p.name, strings.ToLower(string(p.proto)))
			ans, extra = append(ans, a...), append(extra, e...)
		}
		return ans, dedupe(extra), dns.RcodeSuccess
	}
	return nil, nil, dns.RcodeSuccess
}

// externalName answers with a CNAME to the Service's externalName, and
// for address queries also with the target's records when they can be
// found (in the cluster domain, or upstream).
func (r *Resolver) externalName(ctx context.Context, q dns.Question, svc *corev1.Service) ([]dns.RR, []dns.RR, int) {
	target := dns.Fqdn(strings.ToLower(svc.Spec.ExternalName))
	ans := []dns.RR{&dns.CNAME{Hdr: r.hdr(q.Name, dns.TypeCNAME), Target: target}}
	if q.Qtype == dns.TypeCNAME || q.Qtype == dns.TypeANY {
		return ans, nil, dns.RcodeSuccess
	}
	chase := new(dns.Msg)
	chase.SetQuestion(target, q.Qtype)
	if dns.IsSubDomain(r.zone, target) {
		rel := strings.TrimSuffix(strings.TrimSuffix(target, r.zone), ".")
		var labels []string
		if rel != "" {
			labels = strings.Split(rel, ".")
		}
		// One level only: an ExternalName pointing at another one is
		// left as the first CNAME.
		if len(labels) == 3 && labels[2] == "svc" {
			if s := r.store.service(labels[1], labels[0]); s != nil && s.Spec.Type == corev1.ServiceTypeExternalName {
				return ans, nil, dns.RcodeSuccess
			}
		}
		more, _, rcode := r.lookup(ctx, chase.Question[0], target, labels)
		if rcode == dns.RcodeSuccess {
			ans = append(ans, more...)
		}
		return ans, nil, dns.RcodeSuccess
	}
	if r.fwd != nil {
		if up := r.fwd.Resolve(ctx, chase); up.Rcode == dns.RcodeSuccess {
			ans = append(ans, up.Answer...)
		}
	}
	return ans, nil, dns.RcodeSuccess
}

// port is a named port of a Service or of its endpoints.
type port struct {
	name  string
	proto corev1.Protocol
	port  int32
}

// servicePorts are the Service's named ports: its own for a ClusterIP
// Service, its endpoints' for a headless one.
func (r *Resolver) servicePorts(svc *corev1.Service) []port {
	var out []port
	if headless(svc) {
		for _, s := range r.store.endpointSlices(svc.Namespace, svc.Name) {
			for _, p := range s.Ports {
				if p.Name == nil || *p.Name == "" || p.Port == nil {
					continue
				}
				pr := corev1.ProtocolTCP
				if p.Protocol != nil {
					pr = *p.Protocol
				}
				if np := (port{*p.Name, pr, *p.Port}); !slices.Contains(out, np) {
					out = append(out, np)
				}
			}
		}
		return out
	}
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			out = append(out, port{p.Name, p.Protocol, p.Port})
		}
	}
	return out
}

// srvRecords answers _PORT._PROTO.SVC.NS.svc.DOMAIN: for a ClusterIP
// Service one SRV to the Service's name, for a headless one an SRV per
// ready endpoint to its own name; the addresses go in the additional
// section.
func (r *Resolver) srvRecords(q dns.Question, svc *corev1.Service, portName, proto string) ([]dns.RR, []dns.RR, int) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil, dns.RcodeNameError
	}
	svcName := svc.Name + "." + svc.Namespace + ".svc." + r.zone
	var ans, extra []dns.RR
	found := false
	if !headless(svc) {
		for _, p := range svc.Spec.Ports {
			if !strings.EqualFold(p.Name, portName) || !strings.EqualFold(string(p.Protocol), proto) {
				continue
			}
			found = true
			if q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeANY {
				ans = append(ans, &dns.SRV{Hdr: r.hdr(q.Name, dns.TypeSRV), Priority: 0, Weight: 100, Port: uint16(p.Port), Target: svcName})
				extra = append(extra, r.addressRecords(svcName, dns.TypeANY, clusterIPs(svc))...)
			}
		}
	} else {
		eps := r.readyEndpoints(svc)
		for _, ep := range eps {
			for _, p := range ep.ports {
				if !strings.EqualFold(p.name, portName) || !strings.EqualFold(string(p.proto), proto) {
					continue
				}
				found = true
				if q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeANY {
					target := ep.name + "." + svcName
					ans = append(ans, &dns.SRV{Hdr: r.hdr(q.Name, dns.TypeSRV), Priority: 0, Weight: uint16(max(1, 100/len(eps))), Port: uint16(p.port), Target: target})
					extra = append(extra, r.addressRecords(target, dns.TypeANY, []netip.Addr{ep.addr})...)
				}
			}
		}
	}
	if !found {
		return nil, nil, dns.RcodeNameError
	}
	return ans, dedupe(extra), dns.RcodeSuccess
}

// endpointRecords answers HOST.SVC.NS.svc.DOMAIN for a headless Service:
// the ready endpoints whose hostname (or, without one, dashed address) is
// host.
func (r *Resolver) endpointRecords(q dns.Question, svc *corev1.Service, host string) ([]dns.RR, []dns.RR, int) {
	var addrs []netip.Addr
	for _, ep := range r.readyEndpoints(svc) {
		if ep.name == host {
			addrs = append(addrs, ep.addr)
		}
	}
	if len(addrs) == 0 {
		return nil, nil, dns.RcodeNameError
	}
	return r.addressRecords(q.Name, q.Qtype, addrs), nil, dns.RcodeSuccess
}

// lookupPod answers A-B-C-D.NS.pod.DOMAIN (and the dashed IPv6 form)
// with the address the name spells, as upstream's "pods insecure" mode
// does: no Pod is looked up.
func (r *Resolver) lookupPod(q dns.Question, labels []string) ([]dns.RR, []dns.RR, int) {
	switch len(labels) {
	case 0, 1: // pod.DOMAIN, NS.pod.DOMAIN
		return nil, nil, dns.RcodeSuccess
	case 2:
		a, ok := dashedAddr(labels[0])
		if !ok {
			return nil, nil, dns.RcodeNameError
		}
		return r.addressRecords(q.Name, q.Qtype, []netip.Addr{a}), nil, dns.RcodeSuccess
	}
	return nil, nil, dns.RcodeNameError
}

// dashedAddr parses 10-0-0-1 or 2001-db8--1.
func dashedAddr(s string) (netip.Addr, bool) {
	if strings.ContainsAny(s, ":.%") {
		return netip.Addr{}, false
	}
	if strings.Count(s, "-") == 3 {
		a, err := netip.ParseAddr(strings.ReplaceAll(s, "-", "."))
		return a, err == nil && a.Is4()
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(s, "-", ":"))
	return a, err == nil && a.Is6() && !a.Is4In6()
}

// dashed is the inverse of dashedAddr: an endpoint's name without a
// hostname.
func dashed(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// reverse answers PTR queries for ClusterIPs and endpoint addresses; nil
// when the address is not the cluster's (the query goes upstream).
func (r *Resolver) reverse(q dns.Question, name string) []dns.RR {
	if q.Qtype != dns.TypePTR || !r.synced.Load() {
		return nil
	}
	ip, ok := reverseAddr(name)
	if !ok {
		return nil
	}
	var targets []string
	for _, svc := range r.store.servicesByIP(ip) {
		targets = append(targets, svc.Name+"."+svc.Namespace+".svc."+r.zone)
	}
	for _, s := range r.store.slicesByIP(ip) {
		svcName := s.Labels[discoveryv1.LabelServiceName]
		if svcName == "" {
			continue
		}
		for _, ep := range s.Endpoints {
			for _, a := range ep.Addresses {
				if pa, err := netip.ParseAddr(a); err == nil && pa.Unmap() == ip {
					targets = append(targets, endpointName(ep, ip)+"."+svcName+"."+s.Namespace+".svc."+r.zone)
				}
			}
		}
	}
	slices.Sort(targets)
	targets = slices.Compact(targets)
	var out []dns.RR
	for _, t := range targets {
		out = append(out, &dns.PTR{Hdr: r.hdr(q.Name, dns.TypePTR), Ptr: t})
	}
	return out
}

// reverseAddr parses D.C.B.A.in-addr.arpa. or the 32-nibble ip6.arpa
// name (lower case, fully qualified).
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		p := strings.Split(rest, ".")
		if len(p) != 4 {
			return netip.Addr{}, false
		}
		slices.Reverse(p)
		a, err := netip.ParseAddr(strings.Join(p, "."))
		return a, err == nil && a.Is4()
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		p := strings.Split(rest, ".")
		if len(p) != 32 {
			return netip.Addr{}, false
		}
		slices.Reverse(p)
		var b strings.Builder
		for i, nib := range p {
			if len(nib) != 1 {
				return netip.Addr{}, false
			}
			if i > 0 && i%4 == 0 {
				b.WriteByte(':')
			}
			b.WriteString(nib)
		}
		a, err := netip.ParseAddr(b.String())
		return a, err == nil && a.Is6()
	}
	return netip.Addr{}, false
}

// endpoint is one address of a headless Service.
type endpoint struct {
	name  string // hostname, or the dashed address
	addr  netip.Addr
	ports []port
}

// endpointName is an endpoint's DNS label: its hostname, or its dashed
// address.
func endpointName(ep discoveryv1.Endpoint, a netip.Addr) string {
	if ep.Hostname != nil && *ep.Hostname != "" {
		return strings.ToLower(*ep.Hostname)
	}
	return dashed(a)
}

// readyEndpoints are the addresses of the Service's ready endpoints (all
// of them when the Service publishes not-ready addresses), sorted, one per
// address.
func (r *Resolver) readyEndpoints(svc *corev1.Service) []endpoint {
	var out []endpoint
	seen := map[netip.Addr]bool{}
	for _, s := range r.store.endpointSlices(svc.Namespace, svc.Name) {
		var ports []port
		for _, p := range s.Ports {
			if p.Name == nil || p.Port == nil {
				continue
			}
			pr := corev1.ProtocolTCP
			if p.Protocol != nil {
				pr = *p.Protocol
			}
			ports = append(ports, port{*p.Name, pr, *p.Port})
		}
		for _, ep := range s.Endpoints {
			if !svc.Spec.PublishNotReadyAddresses && ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				pa, err := netip.ParseAddr(a)
				if err != nil || seen[pa.Unmap()] {
					continue
				}
				pa = pa.Unmap()
				seen[pa] = true
				out = append(out, endpoint{name: endpointName(ep, pa), addr: pa, ports: ports})
			}
		}
	}
	slices.SortFunc(out, func(a, b endpoint) int { return a.addr.Compare(b.addr) })
	return out
}

// addressRecords are the A (IPv4) and AAAA (IPv6) records among addrs that
// qtype asks for (TypeANY: both), named name.
func (r *Resolver) addressRecords(name string, qtype uint16, addrs []netip.Addr) []dns.RR {
	var out []dns.RR
	for _, a := range addrs {
		switch {
		case a.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
			out = append(out, &dns.A{Hdr: r.hdr(name, dns.TypeA), A: a.AsSlice()})
		case a.Is6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
			out = append(out, &dns.AAAA{Hdr: r.hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	return out
}

// hdr is the header of a record of the cluster domain.
func (r *Resolver) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: r.ttl}
}

// soa is the cluster domain's SOA, sent with negative answers: its
// minimum (the negative-caching TTL) is the record TTL.
func (r *Resolver) soa() dns.RR {
	return &dns.SOA{
		Hdr: r.hdr(r.zone, dns.TypeSOA),
		Ns:  "ns.dns." + r.zone, Mbox: "hostmaster." + r.zone,
		Serial: r.serial, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: r.ttl,
	}
}

// dedupe drops repeated records.
func dedupe(rrs []dns.RR) []dns.RR {
	seen := map[string]bool{}
	out := rrs[:0]
	for _, rr := range rrs {
		if k := rr.String(); !seen[k] {
			seen[k] = true
			out = append(out, rr)
		}
	}
	return out
}

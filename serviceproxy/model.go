package serviceproxy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// IP protocol numbers, as the kernel's meta l4proto reports them.
const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// svcKey is one (address, protocol, port) a Service answers on.
type svcKey struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

// nodePortKey is one (protocol, port) a NodePort answers on, on every
// node address.
type nodePortKey struct {
	Proto uint8
	Port  uint16
}

// ruleKind says what one rule of a generated chain does.
type ruleKind int

const (
	// ruleMasqSrcNotIn marks for masquerade a packet whose source is
	// outside Prefix.
	ruleMasqSrcNotIn ruleKind = iota
	// ruleMasq marks every packet for masquerade.
	ruleMasq
	// ruleLocalToCluster sends traffic the node itself sends (source is
	// a local address) or a pod sends (source in Prefix, when valid) to
	// the cluster-wide chain Target, masquerading the node's own.
	ruleLocalToCluster
	// ruleAffinity jumps to Target when the source is in the affinity
	// set Set.
	ruleAffinity
	// ruleDispatch picks one of Targets at random.
	ruleDispatch
	// ruleDrop drops the packet.
	ruleDrop
	// ruleHairpin marks for masquerade a packet whose source is Addr
	// (an endpoint reaching itself through its Service).
	ruleHairpin
	// ruleAffinityUpdate records the source in Set for Timeout.
	ruleAffinityUpdate
	// ruleDNAT rewrites the destination to Addr:Port for protocol Proto.
	ruleDNAT
	// ruleDNATRandom rewrites the destination to one of Endpoints, at
	// random, for protocol Proto.
	ruleDNATRandom
)

// rule is one rule of a generated chain, comparable so that a sync can
// tell which chains changed.
type rule struct {
	Kind      ruleKind
	Prefix    netip.Prefix
	Addr      netip.Addr
	Port      uint16
	Proto     uint8
	Target    string
	Set       string
	Timeout   time.Duration
	Targets   []string
	Endpoints []netip.AddrPort
}

func (r rule) equal(o rule) bool {
	return r.Kind == o.Kind && r.Prefix == o.Prefix && r.Addr == o.Addr && r.Port == o.Port &&
		r.Proto == o.Proto && r.Target == o.Target && r.Set == o.Set && r.Timeout == o.Timeout &&
		slices.Equal(r.Targets, o.Targets) && slices.Equal(r.Endpoints, o.Endpoints)
}

func rulesEqual(a, b []rule) bool { return slices.EqualFunc(a, b, rule.equal) }

// udpPort is what conntrack cleanup needs of a UDP service port: the
// addresses and NodePort it answers on and its endpoints' addresses.
type udpPort struct {
	Keys      []svcKey
	NodePort  uint16
	Endpoints []netip.Addr
}

// Ruleset is the wanted content of the kforge table, apart from its
// fixed chains and rules: what Build makes from Services and
// EndpointSlices and what a sync writes.
type Ruleset struct {
	// Chains are the per-service (svc-, ext-) chains and, for ClientIP
	// affinity, the per-endpoint (ep-) chains, by name.
	Chains map[string][]rule
	// AffinitySets are the ClientIP affinity sets by name, with their
	// timeout.
	AffinitySets map[string]time.Duration
	// ServiceIPs and NodePorts map what a Service answers on to its
	// chain; NoEndpoints and NoEndpointNodePorts are what it answers on
	// with no endpoint to send to (rejected).
	ServiceIPs          map[svcKey]string
	NodePorts           map[nodePortKey]string
	NoEndpoints         map[svcKey]bool
	NoEndpointNodePorts map[nodePortKey]bool
	// NodePortAddresses are the node addresses NodePorts answer on.
	NodePortAddresses []netip.Addr
	// Hairpin are the endpoint addresses whose traffic to themselves
	// through a Service is masqueraded (so the reply comes back through
	// the node).
	// (IPv4 addresses as arrays: cheaper map keys than netip.Addr.)
	Hairpin map[[4]byte]bool
	// UDP holds the UDP service ports by chain name, for conntrack.
	UDP map[string]udpPort
	// Skipped lists what could not be expressed, by Service
	// (namespace/name), with the reason.
	Skipped map[string][]string
}

// Input is what Build reads.
type Input struct {
	Services  []*corev1.Service
	Slices    []*discoveryv1.EndpointSlice
	NodeName  string
	NodeIPs   []netip.Addr
	PodPrefix netip.Prefix // the cluster's pod range; may be invalid (none)
}

// ServiceNameLabel names a slice's Service (discovery.k8s.io's label).
const ServiceNameLabel = discoveryv1.LabelServiceName

// endpoint is one usable backend of a service port.
type endpoint struct {
	Addr        netip.Addr
	Port        uint16
	Ready       bool
	Serving     bool
	Terminating bool
	Local       bool
}

// Build computes the wanted ruleset: a pure function of its input.
// Headless and ExternalName Services are left alone; a service port that
// cannot be expressed (a protocol other than TCP, UDP and SCTP, a port out
// of range, an address that is not IPv4) is skipped and listed in
// Skipped, and the others are still built.
func Build(in Input) *Ruleset { return new(Builder).Build(in) }

// Builder is Build with a memory: each Service's part of the ruleset is
// built again only when the Service or one of its EndpointSlices is a
// different object than last time (informers hand out a new object for
// every change and never modify one), so a sync after one change costs
// one Service's work plus merging. Not safe for concurrent use.
type Builder struct {
	nodeName  string
	podPrefix netip.Prefix
	parts     map[string]builtService
}

type builtService struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	part   *Ruleset
}

func newRuleset() *Ruleset {
	return &Ruleset{
		Chains:              map[string][]rule{},
		AffinitySets:        map[string]time.Duration{},
		ServiceIPs:          map[svcKey]string{},
		NodePorts:           map[nodePortKey]string{},
		NoEndpoints:         map[svcKey]bool{},
		NoEndpointNodePorts: map[nodePortKey]bool{},
		UDP:                 map[string]udpPort{},
		Hairpin:             map[[4]byte]bool{},
		Skipped:             map[string][]string{},
	}
}

// Build is the package's Build, reusing what it built before for the
// Services whose objects did not change.
func (b *Builder) Build(in Input) *Ruleset {
	if b.parts == nil || b.nodeName != in.NodeName || b.podPrefix != in.PodPrefix {
		b.parts, b.nodeName, b.podPrefix = map[string]builtService{}, in.NodeName, in.PodPrefix
	}
	rs := newRuleset()
	for _, a := range in.NodeIPs {
		if a.Is4() {
			rs.NodePortAddresses = append(rs.NodePortAddresses, a)
		}
	}
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range in.Slices {
		name := s.Labels[ServiceNameLabel]
		if name == "" || s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		k := s.Namespace + "/" + name
		slicesBySvc[k] = append(slicesBySvc[k], s)
	}
	parts := make(map[string]builtService, len(in.Services))
	for _, svc := range in.Services {
		k := svc.Namespace + "/" + svc.Name
		sl := slicesBySvc[k]
		slices.SortFunc(sl, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
		p, ok := b.parts[k]
		if !ok || p.svc != svc || !slices.Equal(p.slices, sl) {
			p = builtService{svc: svc, slices: sl, part: newRuleset()}
			buildService(p.part, in, svc, sl)
		}
		parts[k] = p
		merge(rs, p.part)
	}
	b.parts = parts
	return rs
}

// merge adds one Service's part to rs.
func merge(rs, p *Ruleset) {
	maps.Copy(rs.Chains, p.Chains)
	maps.Copy(rs.AffinitySets, p.AffinitySets)
	maps.Copy(rs.ServiceIPs, p.ServiceIPs)
	maps.Copy(rs.NodePorts, p.NodePorts)
	maps.Copy(rs.NoEndpoints, p.NoEndpoints)
	maps.Copy(rs.NoEndpointNodePorts, p.NoEndpointNodePorts)
	maps.Copy(rs.UDP, p.UDP)
	maps.Copy(rs.Hairpin, p.Hairpin)
	maps.Copy(rs.Skipped, p.Skipped)
}

func protoNumber(p corev1.Protocol) (uint8, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return protoTCP, true
	case corev1.ProtocolUDP:
		return protoUDP, true
	case corev1.ProtocolSCTP:
		return protoSCTP, true
	}
	return 0, false
}

func buildService(rs *Ruleset, in Input, svc *corev1.Service, eps []*discoveryv1.EndpointSlice) {
	key := svc.Namespace + "/" + svc.Name
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone || svc.Spec.ClusterIP == "" {
		return
	}
	if _, ok := svc.Labels["service.kubernetes.io/service-proxy-name"]; ok {
		return // another proxy's
	}
	skip := func(format string, args ...any) {
		rs.Skipped[key] = append(rs.Skipped[key], fmt.Sprintf(format, args...))
	}
	clusterIP, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !clusterIP.Is4() {
		skip("clusterIP %q is not an IPv4 address", svc.Spec.ClusterIP)
		return
	}
	var externalIPs []netip.Addr
	for _, e := range svc.Spec.ExternalIPs {
		a, err := netip.ParseAddr(e)
		if err != nil || !a.Is4() {
			skip("externalIP %q is not an IPv4 address", e)
			continue
		}
		externalIPs = append(externalIPs, a)
	}
	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = 10800 * time.Second
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	itpLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	etpLocal := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
		(svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer || len(externalIPs) > 0)
	hasNodePort := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer

	for _, sp := range svc.Spec.Ports {
		proto, ok := protoNumber(sp.Protocol)
		if !ok {
			skip("port %q: protocol %s is not supported", sp.Name, sp.Protocol)
			continue
		}
		if sp.Port < 1 || sp.Port > 65535 {
			skip("port %q: port %d is out of range", sp.Name, sp.Port)
			continue
		}
		nodePort := uint16(0)
		if hasNodePort && sp.NodePort != 0 {
			if sp.NodePort < 1 || sp.NodePort > 65535 {
				skip("port %q: nodePort %d is out of range", sp.Name, sp.NodePort)
				continue
			}
			nodePort = uint16(sp.NodePort)
		}
		spName := key + "/" + string(protoName(proto)) + "/" + portID(sp)
		all := endpointsFor(eps, sp, proto, in.NodeName)
		cluster := usable(all, itpLocal)
		local := usable(all, true)

		// Endpoint chains, shared by the cluster and the external path.
		epChain := func(e endpoint) string {
			return "ep-" + spName + "/" + netip.AddrPortFrom(e.Addr, e.Port).String()
		}
		affSet := func(e endpoint) string {
			return "aff-" + spName + "/" + netip.AddrPortFrom(e.Addr, e.Port).String()
		}
		addEndpoint := func(e endpoint) {
			name := epChain(e)
			if _, done := rs.Chains[name]; done {
				return
			}
			rules := []rule{{Kind: ruleHairpin, Addr: e.Addr}}
			if affinity > 0 {
				rs.AffinitySets[affSet(e)] = affinity
				rules = append(rules, rule{Kind: ruleAffinityUpdate, Set: affSet(e), Timeout: affinity})
			}
			rs.Chains[name] = append(rules, rule{Kind: ruleDNAT, Addr: e.Addr, Port: e.Port, Proto: proto})
		}
		// dispatch sends to one of eps: a DNAT straight from the
		// service chain (through the shared endpoint map when there are
		// several), or, with ClientIP affinity, through per-endpoint
		// chains that remember each client.
		dispatch := func(eps []endpoint) []rule {
			if affinity == 0 {
				var aps []netip.AddrPort
				for _, e := range eps {
					aps = append(aps, netip.AddrPortFrom(e.Addr, e.Port))
					rs.Hairpin[e.Addr.As4()] = true
				}
				if len(aps) == 1 {
					return []rule{{Kind: ruleDNAT, Addr: aps[0].Addr(), Port: aps[0].Port(), Proto: proto}}
				}
				return []rule{{Kind: ruleDNATRandom, Endpoints: aps, Proto: proto}}
			}
			var rules []rule
			var targets []string
			for _, e := range eps {
				addEndpoint(e)
				targets = append(targets, epChain(e))
				rules = append(rules, rule{Kind: ruleAffinity, Set: affSet(e), Target: epChain(e)})
			}
			return append(rules, rule{Kind: ruleDispatch, Targets: targets})
		}

		svcChain := "svc-" + spName
		clusterKeys := []svcKey{{Addr: clusterIP, Proto: proto, Port: uint16(sp.Port)}}
		if len(cluster) == 0 {
			for _, k := range clusterKeys {
				rs.NoEndpoints[k] = true
			}
		} else {
			var rules []rule
			if in.PodPrefix.IsValid() {
				rules = append(rules, rule{Kind: ruleMasqSrcNotIn, Prefix: in.PodPrefix})
			}
			rs.Chains[svcChain] = append(rules, dispatch(cluster)...)
			for _, k := range clusterKeys {
				rs.ServiceIPs[k] = svcChain
			}
		}

		// The external path: externalIPs and the NodePort.
		var extKeys []svcKey
		for _, a := range externalIPs {
			extKeys = append(extKeys, svcKey{Addr: a, Proto: proto, Port: uint16(sp.Port)})
		}
		if len(extKeys) > 0 || nodePort != 0 {
			extChain := "ext-" + spName
			var rules []rule
			switch {
			case !etpLocal && len(cluster) > 0:
				rules = append([]rule{{Kind: ruleMasq}}, dispatch(cluster)...)
			case etpLocal && (len(local) > 0 || len(cluster) > 0):
				// Local policy keeps the client's address: no masquerade,
				// only this node's endpoints. The node's own and its pods'
				// traffic may go anywhere, as upstream.
				if len(cluster) > 0 {
					cl := dispatch(cluster)
					toCluster := "svc-" + spName
					if _, ok := rs.Chains[toCluster]; !ok || itpLocal {
						toCluster = extChain + "/cluster"
						rs.Chains[toCluster] = append([]rule{{Kind: ruleMasq}}, cl...)
					}
					rules = append(rules, rule{Kind: ruleLocalToCluster, Prefix: in.PodPrefix, Target: toCluster})
				}
				if len(local) > 0 {
					rules = append(rules, dispatch(local)...)
				} else {
					rules = append(rules, rule{Kind: ruleDrop})
				}
			}
			if rules == nil {
				for _, k := range extKeys {
					rs.NoEndpoints[k] = true
				}
				if nodePort != 0 {
					rs.NoEndpointNodePorts[nodePortKey{Proto: proto, Port: nodePort}] = true
				}
			} else {
				rs.Chains[extChain] = rules
				for _, k := range extKeys {
					rs.ServiceIPs[k] = extChain
				}
				if nodePort != 0 {
					rs.NodePorts[nodePortKey{Proto: proto, Port: nodePort}] = extChain
				}
			}
		}
		if proto == protoUDP {
			u := udpPort{Keys: append(clusterKeys, extKeys...), NodePort: nodePort}
			for _, e := range all {
				u.Endpoints = append(u.Endpoints, e.Addr)
			}
			rs.UDP[svcChain] = u
		}
	}
}

func protoName(p uint8) corev1.Protocol {
	switch p {
	case protoUDP:
		return corev1.ProtocolUDP
	case protoSCTP:
		return corev1.ProtocolSCTP
	}
	return corev1.ProtocolTCP
}

// portID names a service port in chain names: its name, or its number
// when it has none (a single-port Service).
func portID(sp corev1.ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return strconv.Itoa(int(sp.Port))
}

// endpointsFor lists the endpoints of the slices serving service port sp,
// one per address and port, sorted.
func endpointsFor(slices []*discoveryv1.EndpointSlice, sp corev1.ServicePort, proto uint8, nodeName string) []endpoint {
	seen := map[netip.AddrPort]bool{}
	var out []endpoint
	for _, s := range slices {
		var port int32
		for _, p := range s.Ports {
			pp := corev1.ProtocolTCP
			if p.Protocol != nil {
				pp = *p.Protocol
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == sp.Name && pp == protoName(proto) && p.Port != nil {
				port = *p.Port
			}
		}
		if port < 1 || port > 65535 {
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			a, err := netip.ParseAddr(e.Addresses[0])
			if err != nil || !a.Is4() {
				continue
			}
			ap := netip.AddrPortFrom(a, uint16(port))
			if seen[ap] {
				continue
			}
			seen[ap] = true
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := ready
			if e.Conditions.Serving != nil {
				serving = *e.Conditions.Serving
			}
			term := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			out = append(out, endpoint{
				Addr: a, Port: uint16(port), Ready: ready && !term, Serving: serving, Terminating: term,
				Local: e.NodeName != nil && *e.NodeName == nodeName,
			})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return netip.AddrPortFrom(out[i].Addr, out[i].Port).Compare(netip.AddrPortFrom(out[j].Addr, out[j].Port)) < 0
	})
	return out
}

// usable picks the endpoints traffic goes to: the ready ones, or when
// none is ready the serving terminating ones (so connections drain
// rather than fail during a rollout); onlyLocal keeps this node's.
func usable(all []endpoint, onlyLocal bool) []endpoint {
	var ready, term []endpoint
	for _, e := range all {
		if onlyLocal && !e.Local {
			continue
		}
		switch {
		case e.Ready:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			term = append(term, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return term
}

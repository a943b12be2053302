package serviceproxy

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

var (
	nodeIP = netip.MustParseAddr("198.18.0.21")
	podNet = netip.MustParsePrefix("198.19.0.0/16")
	ap     = netip.MustParseAddrPort
	baseIn = func(svcs []*corev1.Service, sl ...[]*discoveryv1.EndpointSlice) Input {
		return Input{Services: svcs, Slices: slices.Concat(sl...), NodeName: "n1", NodeIPs: []netip.Addr{nodeIP}, PodPrefix: podNet}
	}
	key = func(addr string, proto uint8, port uint16) svcKey {
		return svcKey{Addr: netip.MustParseAddr(addr), Proto: proto, Port: port}
	}
)

func TestBuildClusterIP(t *testing.T) {
	web := svc("default", "web", "198.18.16.20", corev1.ServiceTypeClusterIP, port("http", corev1.ProtocolTCP, 80, 0))
	rs := Build(baseIn([]*corev1.Service{web},
		slicesOf(web, "http", corev1.ProtocolTCP, 8080, ep("198.19.1.6", "n2", true), ep("198.19.1.5", "n1", true), ep("198.19.2.9", "n3", false))))
	chain := "svc-default/web/TCP/http"
	if got := rs.ServiceIPs[key("198.18.16.20", protoTCP, 80)]; got != chain {
		t.Fatalf("service-ips → %q, want %q", got, chain)
	}
	want := []rule{
		{Kind: ruleMasqSrcNotIn, Prefix: podNet},
		{Kind: ruleDNATRandom, Proto: protoTCP, Endpoints: []netip.AddrPort{ap("198.19.1.5:8080"), ap("198.19.1.6:8080")}},
	}
	if !rulesEqual(rs.Chains[chain], want) {
		t.Errorf("chain = %+v\nwant %+v", rs.Chains[chain], want)
	}
	if len(rs.Chains) != 1 || len(rs.NoEndpoints) != 0 || len(rs.NodePorts) != 0 {
		t.Errorf("extra objects: %+v", rs)
	}
	if !rs.Hairpin[netip.MustParseAddr("198.19.1.5").As4()] || rs.Hairpin[netip.MustParseAddr("198.19.2.9").As4()] {
		t.Errorf("hairpin = %v, want the two ready endpoints", rs.Hairpin)
	}
}

func TestBuildTerminatingOnlyWhenNoneReady(t *testing.T) {
	web := svc("default", "web", "198.18.16.20", corev1.ServiceTypeClusterIP, port("", corev1.ProtocolTCP, 80, 0))
	both := baseIn([]*corev1.Service{web}, slicesOf(web, "", corev1.ProtocolTCP, 80, ep("198.19.1.5", "n1", true), terminating("198.19.1.6", "n1")))
	rs := Build(both)
	if r := rs.Chains["svc-default/web/TCP/80"]; len(r) != 2 || r[1].Kind != ruleDNAT || r[1].Addr != netip.MustParseAddr("198.19.1.5") {
		t.Errorf("with a ready endpoint: %+v", r)
	}
	only := baseIn([]*corev1.Service{web}, slicesOf(web, "", corev1.ProtocolTCP, 80, terminating("198.19.1.6", "n1")))
	rs = Build(only)
	if r := rs.Chains["svc-default/web/TCP/80"]; len(r) != 2 || r[1].Addr != netip.MustParseAddr("198.19.1.6") {
		t.Errorf("with only a terminating endpoint: %+v", r)
	}
}

func TestBuildNoEndpointsRejects(t *testing.T) {
	s := svc("default", "np", "198.18.16.21", corev1.ServiceTypeNodePort, port("dns", corev1.ProtocolUDP, 53, 30053))
	s.Spec.ExternalIPs = []string{"198.18.0.99"}
	rs := Build(baseIn([]*corev1.Service{s}))
	for _, k := range []svcKey{key("198.18.16.21", protoUDP, 53), key("198.18.0.99", protoUDP, 53)} {
		if !rs.NoEndpoints[k] {
			t.Errorf("%v not in no-endpoint-services: %v", k, rs.NoEndpoints)
		}
	}
	if !rs.NoEndpointNodePorts[nodePortKey{Proto: protoUDP, Port: 30053}] {
		t.Errorf("NodePort not rejected: %v", rs.NoEndpointNodePorts)
	}
	if len(rs.Chains) != 0 || len(rs.ServiceIPs) != 0 {
		t.Errorf("chains for a Service with no endpoints: %v", rs.Chains)
	}
}

func TestBuildNodePortAndExternalTrafficPolicy(t *testing.T) {
	s := svc("default", "np", "198.18.16.22", corev1.ServiceTypeNodePort, port("http", corev1.ProtocolTCP, 80, 30080))
	sl := slicesOf(s, "http", corev1.ProtocolTCP, 8080, ep("198.19.1.5", "n1", true), ep("198.19.2.5", "n2", true))
	rs := Build(baseIn([]*corev1.Service{s}, sl))
	ext := "ext-default/np/TCP/http"
	if rs.NodePorts[nodePortKey{Proto: protoTCP, Port: 30080}] != ext {
		t.Fatalf("nodeports = %v", rs.NodePorts)
	}
	if r := rs.Chains[ext]; len(r) != 2 || r[0].Kind != ruleMasq || len(r[1].Endpoints) != 2 {
		t.Errorf("Cluster policy: %+v", r)
	}
	if !slices.Equal(rs.NodePortAddresses, []netip.Addr{nodeIP}) {
		t.Errorf("nodeport addresses %v", rs.NodePortAddresses)
	}

	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	rs = Build(baseIn([]*corev1.Service{s}, sl))
	r := rs.Chains[ext]
	if len(r) != 2 || r[0].Kind != ruleLocalToCluster || r[0].Target != "svc-default/np/TCP/http" ||
		r[1].Kind != ruleDNAT || r[1].Addr != netip.MustParseAddr("198.19.1.5") {
		t.Errorf("Local policy: %+v", r)
	}
	// No endpoint on this node: external traffic is dropped, the node's
	// own still reaches the others.
	rs = Build(baseIn([]*corev1.Service{s}, slicesOf(s, "http", corev1.ProtocolTCP, 8080, ep("198.19.2.5", "n2", true))))
	if r := rs.Chains[ext]; len(r) != 2 || r[0].Kind != ruleLocalToCluster || r[1].Kind != ruleDrop {
		t.Errorf("Local policy without a local endpoint: %+v", r)
	}
}

func TestBuildInternalTrafficPolicyLocal(t *testing.T) {
	s := svc("default", "loc", "198.18.16.23", corev1.ServiceTypeClusterIP, port("http", corev1.ProtocolTCP, 80, 0))
	local := corev1.ServiceInternalTrafficPolicyLocal
	s.Spec.InternalTrafficPolicy = &local
	rs := Build(baseIn([]*corev1.Service{s}, slicesOf(s, "http", corev1.ProtocolTCP, 80, ep("198.19.2.5", "n2", true))))
	if !rs.NoEndpoints[key("198.18.16.23", protoTCP, 80)] || len(rs.Chains) != 0 {
		t.Errorf("no local endpoint: %+v", rs)
	}
}

func TestBuildSessionAffinity(t *testing.T) {
	s := svc("default", "aff", "198.18.16.24", corev1.ServiceTypeClusterIP, port("http", corev1.ProtocolTCP, 80, 0))
	s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	timeout := int32(60)
	s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
	rs := Build(baseIn([]*corev1.Service{s}, slicesOf(s, "http", corev1.ProtocolTCP, 80, ep("198.19.1.5", "n1", true), ep("198.19.1.6", "n1", true))))
	epChain := "ep-default/aff/TCP/http/198.19.1.5:80"
	set := "aff-default/aff/TCP/http/198.19.1.5:80"
	if rs.AffinitySets[set] != time.Minute {
		t.Errorf("affinity sets %v", rs.AffinitySets)
	}
	want := []rule{{Kind: ruleHairpin, Addr: netip.MustParseAddr("198.19.1.5")}, {Kind: ruleAffinityUpdate, Set: set, Timeout: time.Minute},
		{Kind: ruleDNAT, Addr: netip.MustParseAddr("198.19.1.5"), Port: 80, Proto: protoTCP}}
	if !rulesEqual(rs.Chains[epChain], want) {
		t.Errorf("endpoint chain %+v", rs.Chains[epChain])
	}
	r := rs.Chains["svc-default/aff/TCP/http"]
	if len(r) != 4 || r[1].Kind != ruleAffinity || r[1].Target != epChain || r[3].Kind != ruleDispatch || len(r[3].Targets) != 2 {
		t.Errorf("service chain %+v", r)
	}
}

func TestBuildSkipsWhatItCannotExpress(t *testing.T) {
	bad := svc("default", "bad", "198.18.16.25", corev1.ServiceTypeClusterIP,
		port("weird", "ICMP", 80, 0), port("big", corev1.ProtocolTCP, 70000, 0), port("ok", corev1.ProtocolSCTP, 9, 0))
	v6 := svc("default", "v6", "fd00::1", corev1.ServiceTypeClusterIP, port("http", corev1.ProtocolTCP, 80, 0))
	headless := svc("default", "headless", corev1.ClusterIPNone, corev1.ServiceTypeClusterIP, port("http", corev1.ProtocolTCP, 80, 0))
	ext := svc("default", "ext", "", corev1.ServiceTypeExternalName)
	good := svc("default", "good", "198.18.16.26", corev1.ServiceTypeClusterIP, port("http", corev1.ProtocolTCP, 80, 0))
	rs := Build(baseIn([]*corev1.Service{bad, v6, headless, ext, good},
		slicesOf(good, "http", corev1.ProtocolTCP, 80, ep("198.19.1.5", "n1", true)),
		slicesOf(headless, "http", corev1.ProtocolTCP, 80, ep("198.19.1.5", "n1", true))))
	if len(rs.Skipped["default/bad"]) != 2 || len(rs.Skipped["default/v6"]) != 1 || len(rs.Skipped) != 2 {
		t.Errorf("skipped = %v", rs.Skipped)
	}
	if !rs.NoEndpoints[key("198.18.16.25", protoSCTP, 9)] {
		t.Errorf("the SCTP port of the partly bad Service is missing")
	}
	if rs.ServiceIPs[key("198.18.16.26", protoTCP, 80)] == "" {
		t.Errorf("a good Service was blocked by the others")
	}
	for name := range rs.Chains {
		if name != "svc-default/good/TCP/http" {
			t.Errorf("unexpected chain %s", name)
		}
	}
}

func TestBuildUDPConntrackFilters(t *testing.T) {
	dns := svc("kube-system", "dns", "198.18.16.10", corev1.ServiceTypeClusterIP, port("dns", corev1.ProtocolUDP, 53, 0))
	before := Build(baseIn([]*corev1.Service{dns}, slicesOf(dns, "dns", corev1.ProtocolUDP, 53, ep("198.19.1.5", "n1", true), ep("198.19.1.6", "n1", true))))
	after := Build(baseIn([]*corev1.Service{dns}, slicesOf(dns, "dns", corev1.ProtocolUDP, 53, ep("198.19.1.6", "n1", true))))
	if f := staleUDPFilters(before, after); len(f) != 1 {
		t.Errorf("one endpoint gone: %d filters, want 1", len(f))
	}
	empty := Build(baseIn([]*corev1.Service{dns}))
	if f := staleUDPFilters(empty, after); len(f) != 1 {
		t.Errorf("first endpoint: %d filters, want 1 (the Service address)", len(f))
	}
	if f := staleUDPFilters(after, after); len(f) != 0 {
		t.Errorf("no change: %d filters", len(f))
	}
	if f := staleUDPFilters(nil, after); len(f) != 0 {
		t.Errorf("first sync: %d filters", len(f))
	}
}

// TestBuilderMatchesBuild: a Builder reusing its parts gives what Build
// gives from scratch, after a slice, a Service and the set of Services
// change.
func TestBuilderMatchesBuild(t *testing.T) {
	a := svc("default", "a", "198.18.16.30", corev1.ServiceTypeNodePort, port("http", corev1.ProtocolTCP, 80, 30080))
	c := svc("default", "c", "198.18.16.31", corev1.ServiceTypeClusterIP, port("dns", corev1.ProtocolUDP, 53, 0))
	in := baseIn([]*corev1.Service{a, c},
		slicesOf(a, "http", corev1.ProtocolTCP, 80, ep("198.19.1.5", "n1", true), ep("198.19.1.6", "n2", true)),
		slicesOf(c, "dns", corev1.ProtocolUDP, 53, ep("198.19.1.7", "n1", true)))
	var b Builder
	check := func(step string) {
		t.Helper()
		got, want := b.Build(in), Build(in)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the Builder's ruleset differs from Build's:\n%+v\n%+v", step, got, want)
		}
	}
	check("first")
	in.Slices[0] = slicesOf(a, "http", corev1.ProtocolTCP, 80, ep("198.19.1.6", "n2", true))[0]
	check("a slice changed")
	a2 := a.DeepCopy()
	a2.Spec.Type = corev1.ServiceTypeClusterIP
	a2.Spec.Ports[0].NodePort = 0
	in.Services[0] = a2
	check("a Service changed")
	in.Services = in.Services[1:]
	check("a Service went")
}

package clusterdns_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"kforge.dev/kforge/clusterdns"
	"kforge.dev/kforge/controlplane/local"
	"kforge.dev/kforge/controlplane/local/localtest"
)

const dnsIP = "10.96.0.10" // the 10th address of local.ServiceCIDR

// controlPlane is a local control plane with an admin client.
type controlPlane struct {
	*localtest.ControlPlane
	admin kubernetes.Interface
	dir   string
}

func upControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	lc := localtest.Start(t)
	return &controlPlane{ControlPlane: lc, admin: lc.Client(t), dir: lc.Dir}
}

// stop ends the control plane (once).
func (cp *controlPlane) stop(t *testing.T) { cp.Stop(t) }

func restConfig(t *testing.T, path string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// instance is a running dns role.
type instance struct {
	d      *clusterdns.DNS
	cancel context.CancelFunc
	done   chan error
}

// readyNode creates Node name with Ready=True, as its agent would.
func readyNode(t *testing.T, cp *controlPlane, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := cp.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The controller manager writes the new Node too (its pod range).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cp.admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
		_, err = cp.admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startDNS runs an instance for node (a Ready Node made here) with the
// role's own identity (the dns client certificate), forwarding to
// upstream.
func startDNS(t *testing.T, cp *controlPlane, node, upstream string) *instance {
	t.Helper()
	readyNode(t, cp, node)
	cfg := clusterdns.NewConfig()
	cfg.Kubeconfig = "unused"
	cfg.NodeName = node
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.HealthAddress = "127.0.0.1:0"
	cfg.Service.ClusterIP = dnsIP
	cfg.Service.ResyncPeriod = time.Second
	cfg.Upstream.Servers = []string{upstream}
	cfg.Upstream.Timeout = time.Second
	cfg.LameDuck = 0
	kc := restConfig(t, filepath.Join(cp.dir, local.PKIDir, "kubeconfigs", "dns.kubeconfig"))
	d, err := clusterdns.NewWithRESTConfig(cfg, kc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{d: d, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- d.Run(ctx) }()
	t.Cleanup(func() { in.stop(t) })
	eventually(t, "instance ready", func() error {
		resp, err := http.Get("http://" + d.HealthAddr().String() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	return in
}

func (in *instance) stop(t *testing.T) {
	if in.done == nil {
		return
	}
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("dns Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("dns Run did not return 15s after cancel")
	}
	in.done = nil
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lookup asks addr over net (udp or tcp) and returns the rcode and the
// answers' data ("A 1.2.3.4").
func lookup(addr, network, name string, qtype uint16, edns bool) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	resp, _, err := c.Exchange(m, addr)
	return resp, err
}

func answers(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(f[3:], " "))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// expect polls until name answers want (answers joined, sorted).
func expect(t *testing.T, addr, name string, qtype uint16, want string) {
	t.Helper()
	eventually(t, name, func() error {
		resp, err := lookup(addr, "udp", name, qtype, false)
		if err != nil {
			return err
		}
		if got := answers(resp); got != want || resp.Rcode != dns.RcodeSuccess {
			return fmt.Errorf("%s: %q, want %q", dns.RcodeToString[resp.Rcode], got, want)
		}
		return nil
	})
}

func TestDNSAgainstTheAPI(t *testing.T) {
	cp := upControlPlane(t)
	ctx := context.Background()
	up := clusterdns.StartUpstream(t)

	// A ClusterIP Service, and a headless one whose endpoints a test
	// writes (the control plane has no node to run pods).
	web, err := cp.admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var eps []discoveryv1.Endpoint
	for i := range 60 {
		ready := i != 1
		eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/200, i%200+1)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	host := "db-0"
	eps[0].Hostname = &host
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "db-1", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps[:3],
	}
	if slice, err = cp.admin.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	a := startDNS(t, cp, "w1", up)
	addr := a.d.Addr().String()

	// The instance made the kube-dns Service at the fixed address and
	// registered itself behind it.
	var svc *corev1.Service
	eventually(t, "kube-dns created", func() (err error) {
		svc, err = cp.admin.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		return err
	})
	if svc.Spec.ClusterIP != dnsIP || len(svc.Spec.Selector) != 0 || len(svc.Spec.Ports) != 2 {
		t.Errorf("kube-dns Service %+v", svc.Spec)
	}
	eventually(t, "the w1 EndpointSlice", func() error {
		s, err := cp.admin.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, "kube-dns-w1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		e := s.Endpoints
		if len(e) != 1 || e[0].Addresses[0] != "127.0.0.1" || e[0].Conditions.Ready == nil || !*e[0].Conditions.Ready ||
			*e[0].NodeName != "w1" || len(s.Ports) != 2 || int(*s.Ports[0].Port) != a.d.Addr().Port ||
			s.Labels[discoveryv1.LabelServiceName] != "kube-dns" || s.Labels[discoveryv1.LabelManagedBy] != clusterdns.ManagedBy {
			return fmt.Errorf("slice %+v", s)
		}
		return nil
	})

	// Records, over UDP and TCP.
	expect(t, addr, "web.default.svc.cluster.local.", dns.TypeA, "A "+web.Spec.ClusterIP)
	expect(t, addr, "kubernetes.default.svc.cluster.local.", dns.TypeA, "A 10.96.0.1")
	expect(t, addr, "kube-dns.kube-system.svc.cluster.local.", dns.TypeA, "A "+dnsIP)
	expect(t, addr, "db.default.svc.cluster.local.", dns.TypeA, "A 10.244.0.1; A 10.244.0.3")
	expect(t, addr, "db-0.db.default.svc.cluster.local.", dns.TypeA, "A 10.244.0.1")
	expect(t, addr, "_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, "SRV 0 100 80 web.default.svc.cluster.local.")
	rev, _ := dns.ReverseAddr(web.Spec.ClusterIP)
	expect(t, addr, rev, dns.TypePTR, "PTR web.default.svc.cluster.local.")
	expect(t, addr, "example.org.", dns.TypeA, "A 192.0.2.1")
	resp, err := lookup(addr, "tcp", "web.default.svc.cluster.local.", dns.TypeA, false)
	if err != nil || answers(resp) != "A "+web.Spec.ClusterIP {
		t.Errorf("over TCP: %v %v", resp, err)
	}
	if resp, err = lookup(addr, "udp", "nope.default.svc.cluster.local.", dns.TypeA, false); err != nil || resp.Rcode != dns.RcodeNameError {
		t.Errorf("missing Service: %v %v", resp, err)
	}

	// Endpoints follow the API: all 60 (59 ready) do not fit a UDP
	// answer, which is truncated; TCP has them all.
	slice.Endpoints = eps
	if _, err := cp.admin.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "59 endpoints over TCP", func() error {
		resp, err := lookup(addr, "tcp", "db.default.svc.cluster.local.", dns.TypeA, false)
		if err != nil {
			return err
		}
		if len(resp.Answer) != 59 {
			return fmt.Errorf("%d answers", len(resp.Answer))
		}
		return nil
	})
	resp, err = lookup(addr, "udp", "db.default.svc.cluster.local.", dns.TypeA, false)
	if err != nil || !resp.Truncated || len(resp.Answer) >= 59 {
		t.Errorf("over UDP: err %v, TC %v, %d answers", err, resp != nil && resp.Truncated, len(resp.Answer))
	}

	// A malformed query (a question cut short) is FORMERR.
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a', 'b'}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var formerr dns.Msg
	if err := formerr.Unpack(buf[:n]); err != nil || formerr.Id != 0x1234 || formerr.Rcode != dns.RcodeFormatError {
		t.Errorf("malformed query: %v, %v", &formerr, err)
	}

	// The answers are counted.
	mresp, err := http.Get("http://" + a.d.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`kforge_dns_requests_total{rcode="NOERROR",zone="cluster"}`, `kforge_dns_requests_total{rcode="NXDOMAIN",zone="cluster"}`,
		`kforge_dns_requests_total{rcode="NOERROR",zone="forward"}`, `kforge_dns_cache_requests_total{result="miss"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A second instance registers beside the first; stopping it removes
	// its slice and leaves the first.
	b := startDNS(t, cp, "w2", up)
	eventually(t, "two kube-dns slices", func() error { return sliceNames(ctx, cp.admin, "kube-dns-w1", "kube-dns-w2") })
	expect(t, b.d.Addr().String(), "web.default.svc.cluster.local.", dns.TypeA, "A "+web.Spec.ClusterIP)
	b.stop(t)
	if err := sliceNames(ctx, cp.admin, "kube-dns-w1"); err != nil {
		t.Errorf("after w2 stopped: %v", err)
	}

	// With the API gone, answers go on from what the informers hold.
	cp.stop(t)
	expect(t, addr, "web.default.svc.cluster.local.", dns.TypeA, "A "+web.Spec.ClusterIP)
	expect(t, addr, "db-0.db.default.svc.cluster.local.", dns.TypeA, "A 10.244.0.1")
	expect(t, addr, "example.org.", dns.TypeA, "A 192.0.2.1")
}

// sliceNames checks the kube-dns EndpointSlices are exactly want.
func sliceNames(ctx context.Context, c kubernetes.Interface, want ...string) error {
	l, err := c.DiscoveryV1().EndpointSlices("kube-system").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kube-dns"})
	if err != nil {
		return err
	}
	var got []string
	for _, s := range l.Items {
		got = append(got, s.Name)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("slices %v, want %v", got, want)
	}
	return nil
}

// Registration repairs what goes wrong: a deleted kube-dns Service comes
// back at the next resync, and the slice of an instance whose Node is gone
// (killed without cleaning up) is marked not ready.
func TestRegistrationRepairs(t *testing.T) {
	cp := upControlPlane(t)
	ctx := context.Background()
	ready := true
	ghost, node, name, proto, port := "ghost", "ghost", "dns", corev1.ProtocolUDP, int32(53)
	if _, err := cp.admin.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-" + ghost, Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns", discoveryv1.LabelManagedBy: clusterdns.ManagedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.2.3"}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = startDNS(t, cp, "w1", "127.0.0.1:9")
	eventually(t, "kube-dns created", func() error {
		_, err := cp.admin.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		return err
	})
	eventually(t, "the ghost's endpoint retired", func() error {
		s, err := cp.admin.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, "kube-dns-"+ghost, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c := s.Endpoints[0].Conditions; c.Ready == nil || *c.Ready {
			return fmt.Errorf("conditions %+v", c)
		}
		return nil
	})
	// Its own Node not Ready: the instance registers as not ready, the
	// same rule it applies to its peers.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cp.admin.CoreV1().Nodes().Get(ctx, "w1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Conditions[0].Status = corev1.ConditionFalse
		_, err = cp.admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "w1 not ready", func() error {
		s, err := cp.admin.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, "kube-dns-w1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c := s.Endpoints[0].Conditions; c.Ready == nil || *c.Ready {
			return fmt.Errorf("conditions %+v", c)
		}
		return nil
	})
	if err := cp.admin.CoreV1().Services("kube-system").Delete(ctx, "kube-dns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "kube-dns recreated", func() error {
		svc, err := cp.admin.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if svc.Spec.ClusterIP != dnsIP {
			return fmt.Errorf("clusterIP %s", svc.Spec.ClusterIP)
		}
		return nil
	})
}

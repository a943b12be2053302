package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kforge.dev/kforge/clusterdns"
)

// goal is the p99 the cluster DNS must answer within from its cache.
const goal = time.Millisecond

type options struct {
	queries  int
	clients  int
	services int
}

func main() {
	var o options
	flag.IntVar(&o.queries, "queries", 20000, "queries per kind and concurrency")
	flag.IntVar(&o.clients, "clients", 8, "concurrent clients in the second round")
	flag.IntVar(&o.services, "services", 2000, "Services in the store (plus their EndpointSlices)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.queries < 1 || o.clients < 1 || o.services < 1 {
		return fmt.Errorf("-queries, -clients and -services must be positive")
	}
	upstream, stopUp, err := startUpstream()
	if err != nil {
		return err
	}
	defer stopUp()
	store := clusterdns.NewMemoryStore(objects(o.services)...)
	fwd := clusterdns.NewForwarder([]string{upstream}, 2*time.Second, clusterdns.NewCache(10000, 30*time.Second, 5*time.Second))
	r := clusterdns.NewResolver(store, "cluster.local", 5*time.Second, fwd)
	addr, stop, err := serve(r)
	if err != nil {
		return err
	}
	defer stop()

	kinds := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
	}{
		{"ClusterIP Service A", "svc-7.ns-7.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess},
		{"headless Service A (10 endpoints)", "headless-3.ns-3.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess},
		{"SRV of a named port", "_http._tcp.svc-9.ns-9.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess},
		{"missing name (NXDOMAIN)", "nope.ns-1.svc.cluster.local.", dns.TypeA, dns.RcodeNameError},
		{"forwarded name, cached", "example.org.", dns.TypeA, dns.RcodeSuccess},
	}
	fmt.Fprintf(os.Stderr, "bench: %d Services (%d headless with 10 endpoints each) on %s, %d queries per row, GOMAXPROCS %d\n",
		o.services, o.services/10, addr, o.queries, runtime.GOMAXPROCS(0))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "query\tclients\tq/s\tp50\tp99\tmax\tp99 / 1ms goal\t")
	for _, clients := range []int{1, o.clients} {
		for _, k := range kinds {
			fmt.Fprintf(os.Stderr, "bench: %s, %d client(s)\n", k.name, clients)
			lat, elapsed, err := measure(addr, k.qname, k.qtype, k.rcode, o.queries, clients)
			if err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			slices.Sort(lat)
			p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%.2f\t\n", k.name, clients, float64(len(lat))/elapsed.Seconds(),
				round(p(0.5)), round(p(0.99)), round(lat[len(lat)-1]), float64(p(0.99))/float64(goal))
		}
	}
	return tw.Flush()
}

func round(d time.Duration) time.Duration { return d.Round(time.Microsecond) }

// measure sends n queries for name from clients goroutines, each on its
// own UDP socket, one at a time, and returns every latency.
func measure(addr, name string, qtype uint16, rcode, n, clients int) ([]time.Duration, time.Duration, error) {
	// Warm the cache (a forwarded name's first ask goes upstream).
	if _, err := exchange(addr, name, qtype, rcode); err != nil {
		return nil, 0, err
	}
	lat := make([]time.Duration, n)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			conn, err := cl.Dial(addr)
			if err != nil {
				errs[c] = err
				return
			}
			defer conn.Close()
			m := new(dns.Msg)
			m.SetQuestion(name, qtype)
			for i := c; i < n; i += clients {
				m.Id = dns.Id()
				t0 := time.Now()
				resp, _, err := cl.ExchangeWithConnContext(context.Background(), m, conn)
				lat[i] = time.Since(t0)
				if err != nil {
					errs[c] = err
					return
				}
				if resp.Rcode != rcode {
					errs[c] = fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return nil, 0, err
		}
	}
	return lat, elapsed, nil
}

func exchange(addr, name string, qtype uint16, rcode int) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	resp, _, err := (&dns.Client{Net: "udp", Timeout: 2 * time.Second}).Exchange(m, addr)
	if err == nil && resp.Rcode != rcode {
		err = fmt.Errorf("%s: rcode %s", name, dns.RcodeToString[resp.Rcode])
	}
	return resp, err
}

// objects are n Services in n namespaces; every tenth is headless with an
// EndpointSlice of 10 ready endpoints, the others have a named port.
func objects(n int) []any {
	var out []any
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i)
		if i%10 == 3 {
			name := fmt.Sprintf("headless-%d", i)
			out = append(out, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}})
			s := &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
			}
			ready := true
			for j := range 10 {
				s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
					Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256+j)},
					Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
			}
			out = append(out, s)
			continue
		}
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		out = append(out, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("svc-%d", i)},
			Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}})
	}
	return out
}

// serve runs h on a loopback UDP port.
func serve(h dns.Handler) (string, func(), error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	started := make(chan struct{})
	s := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.ActivateAndServe()
	}()
	<-started
	return pc.LocalAddr().String(), func() {
		_ = s.Shutdown()
		<-done
	}, nil
}

// startUpstream is a resolver on loopback answering every A query with
// 192.0.2.1, TTL 300.
func startUpstream() (string, func(), error) {
	return serveFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		q := req.Question[0]
		resp.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 1)}}
		_ = w.WriteMsg(resp)
	})
}

func serveFunc(f dns.HandlerFunc) (string, func(), error) { return serve(f) }

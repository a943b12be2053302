package clusterdns

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeUpstream is a DNS server on 127.0.0.1 (UDP and TCP, one port) that
// answers example.org A with 192.0.2.1 (TTL 300), nx.example.org with
// NXDOMAIN, and big.example.org with TC over UDP and the full answer over
// TCP. It counts the queries it gets per transport.
type fakeUpstream struct {
	addr     string
	udp, tcp atomic.Int32
}

func startUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	handler := func(tcp bool) dns.HandlerFunc {
		return func(w dns.ResponseWriter, req *dns.Msg) {
			if tcp {
				u.tcp.Add(1)
			} else {
				u.udp.Add(1)
			}
			resp := new(dns.Msg)
			resp.SetReply(req)
			q := req.Question[0]
			switch strings.ToLower(q.Name) {
			case "example.org.":
				resp.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 1)}}
			case "nx.example.org.":
				resp.Rcode = dns.RcodeNameError
				resp.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
					Ns: "ns.example.org.", Mbox: "h.example.org.", Minttl: 10}}
			case "big.example.org.":
				if !tcp {
					resp.Truncated = true
					break
				}
				resp.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 2)}}
			default:
				resp.Rcode = dns.RcodeRefused
			}
			_ = w.WriteMsg(resp)
		}
	}
	us := &dns.Server{PacketConn: pc, Handler: handler(false)}
	ts := &dns.Server{Listener: ln, Handler: handler(true)}
	var wg sync.WaitGroup
	for _, s := range []*dns.Server{us, ts} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { _ = s.ActivateAndServe() })
		<-started
	}
	t.Cleanup(func() {
		_ = us.Shutdown()
		_ = ts.Shutdown()
		wg.Wait()
	})
	return u
}

func ask(f *Forwarder, name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	return f.Resolve(context.Background(), m)
}

func TestForwardAndCache(t *testing.T) {
	u := startUpstream(t)
	f := NewForwarder([]string{u.addr}, 2*time.Second, NewCache(100, 30*time.Second, 5*time.Second))
	r := NewResolver(NewMemoryStore(), "cluster.local", 5*time.Second, f)

	m := new(dns.Msg)
	m.SetQuestion("Example.ORG.", dns.TypeA)
	resp, zone := r.Answer(context.Background(), m)
	if zone != zoneForward || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 || resp.Id != m.Id {
		t.Fatalf("zone %s, answer %v", zone, resp)
	}
	// Capped at the cache's 30s, not the upstream's 300s.
	if ttl := resp.Answer[0].Header().Ttl; ttl != 30 {
		t.Errorf("TTL %d, want 30", ttl)
	}
	if resp.Question[0].Name != "Example.ORG." {
		t.Errorf("question %v", resp.Question)
	}
	// The second ask (any case) comes from the cache.
	again := ask(f, "example.org.")
	if u.udp.Load() != 1 || len(again.Answer) != 1 {
		t.Errorf("upstream asked %d times, answer %v", u.udp.Load(), again)
	}
	// NXDOMAIN passes through and is cached too.
	for range 2 {
		if nx := ask(f, "nx.example.org."); nx.Rcode != dns.RcodeNameError {
			t.Errorf("nx: %s", dns.RcodeToString[nx.Rcode])
		}
	}
	if u.udp.Load() != 2 {
		t.Errorf("upstream asked %d times, want 2", u.udp.Load())
	}
	// A truncated UDP answer is asked again over TCP.
	big := ask(f, "big.example.org.")
	if big.Truncated || len(big.Answer) != 1 || u.tcp.Load() != 1 {
		t.Errorf("big: %v, %d TCP queries", big, u.tcp.Load())
	}
	// REFUSED upstream is a failure: SERVFAIL.
	if refused := ask(f, "other.test."); refused.Rcode != dns.RcodeServerFailure {
		t.Errorf("refused: %s", dns.RcodeToString[refused.Rcode])
	}
}

// An upstream that never answers costs one timeout: the query is
// SERVFAIL, and so is the next one, from the cache, without asking again.
func TestForwardToSilentUpstream(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var got atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	f := NewForwarder([]string{pc.LocalAddr().String()}, 300*time.Millisecond, NewCache(100, 30*time.Second, 5*time.Second))
	for range 3 {
		if resp := ask(f, "example.org."); resp.Rcode != dns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
		}
	}
	if got.Load() != 1 {
		t.Errorf("upstream got %d queries, want 1 (the failure is cached)", got.Load())
	}
	pc.Close()
	<-done
}

// Without any upstream a forwarded query is SERVFAIL at once.
func TestForwardWithoutUpstream(t *testing.T) {
	f := NewForwarder(nil, 2*time.Second, nil)
	if resp := ask(f, "example.org."); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
	}
	r := NewResolver(NewMemoryStore(), "cluster.local", 5*time.Second, nil)
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	if resp, _ := r.Answer(context.Background(), m); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("no forwarder: %s", dns.RcodeToString[resp.Rcode])
	}
}

// Cached answers age: their TTLs count down; they expire.
func TestCacheAging(t *testing.T) {
	c := NewCache(2, time.Minute, 5*time.Second)
	now := time.Unix(1000, 0)
	m := new(dns.Msg)
	m.SetQuestion("a.test.", dns.TypeA)
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "a.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.IPv4(192, 0, 2, 1)}}
	k := cacheKey{name: "a.test.", qtype: dns.TypeA, qclass: dns.ClassINET}
	c.put(k, m, now)
	if got := c.get(k, now.Add(10*time.Second)); got == nil || got.Answer[0].Header().Ttl != 20 {
		t.Errorf("after 10s: %v", got)
	}
	if got := c.get(k, now.Add(30*time.Second)); got != nil {
		t.Errorf("after 30s: %v", got)
	}
	// Full: a third key makes room.
	for i, n := range []string{"b.", "c.", "d."} {
		c.put(cacheKey{name: n}, m, now)
		if c.Len() != min(i+1, 2) {
			t.Errorf("len %d after %d puts", c.Len(), i+1)
		}
	}
	// A zero TTL answer is not kept; size 0 keeps nothing.
	m.Answer[0].Header().Ttl = 0
	c2 := NewCache(0, time.Minute, time.Second)
	c2.put(k, m, now)
	if c2.get(k, now) != nil || c2.Len() != 0 {
		t.Error("size 0 cache kept an answer")
	}
}

func TestResolvConfServers(t *testing.T) {
	got := ResolvConfServers([]byte(`# generated
nameserver 127.0.0.53
nameserver ::1
nameserver 198.18.0.1
nameserver fe80::1%eth0 ; link-local
nameserver 0.0.0.0
search example.org
nameserver not-an-ip
options edns0 trust-ad
`))
	want := "198.18.0.1:53 [fe80::1]:53"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

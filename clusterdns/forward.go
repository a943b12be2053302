package clusterdns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// minAttempt is the least time one upstream gets when several share the
// forward timeout.
const minAttempt = 200 * time.Millisecond

// Forwarder sends the queries outside the cluster domain to the host's
// resolvers and caches their answers. With no upstream at all it answers
// SERVFAIL at once; an upstream that does not answer costs one timeout,
// after which the failure is cached for the cache's failure TTL.
type Forwarder struct {
	servers []string // IP:port
	timeout time.Duration
	cache   *Cache
	udp     *dns.Client
	tcp     *dns.Client
	m       *metrics
}

// NewForwarder forwards to servers (IP:port) within timeout per query,
// through cache (nil: none).
func NewForwarder(servers []string, timeout time.Duration, cache *Cache) *Forwarder {
	return &Forwarder{
		servers: servers, timeout: timeout, cache: cache,
		udp: &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: timeout},
		tcp: &dns.Client{Net: "tcp", Timeout: timeout},
	}
}

// Servers are the upstreams, in the order they are tried.
func (f *Forwarder) Servers() []string { return f.servers }

// Resolve answers req from the cache or the upstreams: the first upstream
// that answers wins; SERVFAIL when none does within the timeout.
func (f *Forwarder) Resolve(ctx context.Context, req *dns.Msg) *dns.Msg {
	q := req.Question[0]
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	key := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: do, cd: req.CheckingDisabled}
	now := time.Now()
	if resp := f.cache.get(key, now); resp != nil {
		f.m.cacheHit()
		resp.Id = req.Id
		resp.Question = []dns.Question{q}
		return resp
	}
	f.m.cacheMiss()
	up := new(dns.Msg)
	up.Id = dns.Id()
	up.RecursionDesired = req.RecursionDesired
	up.CheckingDisabled = req.CheckingDisabled
	up.Question = []dns.Question{q}
	up.SetEdns0(ednsSize, do)

	start := time.Now()
	resp, err := f.exchange(ctx, up)
	f.m.forwarded(time.Since(start), err)
	if err != nil {
		fail := new(dns.Msg)
		fail.SetRcode(req, dns.RcodeServerFailure)
		f.cache.put(key, fail, now)
		return fail
	}
	resp.Id = req.Id
	resp.Question = []dns.Question{q}
	if !resp.Truncated {
		f.cache.put(key, resp, now)
	}
	if f.cache != nil && f.cache.size > 0 {
		// Served as the cache will serve it: never longer than maxTTL.
		capTTL(resp, f.cache.maxTTL)
	}
	return resp
}

// errNoUpstream is what exchange returns without any upstream.
var errNoUpstream = errors.New("no upstream nameserver")

// exchange tries each upstream in turn within the timeout, retrying over
// TCP when a UDP answer is truncated.
func (f *Forwarder) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if len(f.servers) == 0 {
		return nil, errNoUpstream
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var errs []error
	for i, s := range f.servers {
		left := time.Until(deadline(ctx))
		if left <= 0 {
			break
		}
		// The remaining time is shared by the upstreams not tried yet.
		per := max(left/time.Duration(len(f.servers)-i), min(minAttempt, left))
		actx, acancel := context.WithTimeout(ctx, per)
		resp, _, err := f.udp.ExchangeContext(actx, m, s)
		if err == nil && resp.Truncated {
			resp, _, err = f.tcp.ExchangeContext(actx, m, s)
		}
		acancel()
		if err == nil && resp.Rcode != dns.RcodeServerFailure && resp.Rcode != dns.RcodeRefused {
			return resp, nil
		}
		if err == nil {
			err = fmt.Errorf("%s answered %s", s, dns.RcodeToString[resp.Rcode])
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		errs = append(errs, context.DeadlineExceeded)
	}
	return nil, errors.Join(errs...)
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// ResolvConfServers reads the nameservers of a resolv.conf as IP:port,
// skipping loopback ones: a local stub (127.0.0.53) may send the cluster's
// queries back here, and would not be reachable from a pod's view anyway.
func ResolvConfServers(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		host, _, _ := strings.Cut(f[1], "%") // a zone of a link-local address
		a, err := netip.ParseAddr(host)
		if err != nil || a.Unmap().IsLoopback() || a.IsUnspecified() {
			continue
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), 53).String())
	}
	return out
}

// cacheKey identifies a cached answer.
type cacheKey struct {
	name          string
	qtype, qclass uint16
	do, cd        bool
}

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// Cache keeps upstream answers for their TTL (capped), and failures for
// the failure TTL. When full, an arbitrary entry makes room.
type Cache struct {
	size            int
	maxTTL, failTTL time.Duration

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

// NewCache holds up to size answers; 0 turns caching off.
func NewCache(size int, maxTTL, failureTTL time.Duration) *Cache {
	return &Cache{size: size, maxTTL: maxTTL, failTTL: failureTTL, entries: map[cacheKey]cacheEntry{}}
}

// Len is the number of answers held.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// get returns a copy of the answer for k with its TTLs reduced by the
// time it has been held, or nil.
func (c *Cache) get(k cacheKey, now time.Time) *dns.Msg {
	if c == nil || c.size == 0 {
		return nil
	}
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && !now.Before(e.expires) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := e.msg.Copy()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			h.Ttl = max(h.Ttl-min(age, h.Ttl), 0)
		}
	}
	return m
}

// put stores m for k: a failure for the failure TTL, an answer for its
// smallest TTL (the SOA minimum for a negative one), capped by maxTTL.
func (c *Cache) put(k cacheKey, m *dns.Msg, now time.Time) {
	if c == nil || c.size == 0 {
		return
	}
	ttl := c.ttlOf(m)
	if ttl <= 0 {
		return
	}
	m = m.Copy()
	capTTL(m, ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.size {
		for old := range c.entries {
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = cacheEntry{msg: m, stored: now, expires: now.Add(ttl)}
}

// capTTL lowers m's record TTLs to ttl at most.
func capTTL(m *dns.Msg, ttl time.Duration) {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT && time.Duration(h.Ttl)*time.Second > ttl {
				h.Ttl = uint32(ttl / time.Second)
			}
		}
	}
}

// ttlOf is how long m may be kept.
func (c *Cache) ttlOf(m *dns.Msg) time.Duration {
	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return c.failTTL
	}
	var ttl time.Duration = -1
	take := func(d time.Duration) {
		if ttl < 0 || d < ttl {
			ttl = d
		}
	}
	for _, rr := range m.Answer {
		take(time.Duration(rr.Header().Ttl) * time.Second)
	}
	if len(m.Answer) == 0 {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				take(time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second)
			}
		}
	}
	if ttl < 0 { // a negative answer without an SOA
		ttl = c.failTTL
	}
	return min(ttl, c.maxTTL)
}

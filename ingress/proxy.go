package ingress

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
)

// Proxy is the data path: an http.Handler that routes each request by
// the current Table to a pod endpoint, over per-endpoint keep-alive
// pools. Swap a new Table in with SetTable; requests in flight finish on
// the one they started with.
type Proxy struct {
	table     atomic.Pointer[Table]
	transport *http.Transport
	defaults  Options
	// HTTPSPort is the port HTTP→HTTPS redirects name (omitted when 443).
	HTTPSPort   int
	failTimeout time.Duration
	maxRetries  int
	metrics     *metrics
	log         *accessLog
}

// ProxyOptions configure a Proxy.
type ProxyOptions struct {
	Upstream UpstreamConfig
	// MaxBodyBytes is the default request body limit (0: none).
	MaxBodyBytes int64
	HTTPSPort    int
	// Registry, when set, gets the data path's metrics.
	Registry prometheus.Registerer
	// AccessLog, when set, gets one JSON line per request, buffered:
	// FlushAccessLog writes them out.
	AccessLog io.Writer
}

// NewProxy returns a Proxy with an empty table (every request gets 404).
func NewProxy(o ProxyOptions) *Proxy {
	p := &Proxy{
		defaults:  Options{ConnectTimeout: o.Upstream.ConnectTimeout, Timeout: o.Upstream.Timeout, MaxBodyBytes: o.MaxBodyBytes},
		HTTPSPort: o.HTTPSPort, failTimeout: o.Upstream.FailTimeout, maxRetries: o.Upstream.MaxRetries,
	}
	if o.Registry != nil {
		p.metrics = newMetrics(o.Registry)
	}
	if o.AccessLog != nil {
		p.log = newAccessLog(o.AccessLog)
	}
	p.transport = &http.Transport{
		DialContext:           p.dial,
		MaxIdleConns:          0, // no cluster-wide cap: each endpoint has its own pool
		MaxIdleConnsPerHost:   o.Upstream.MaxIdlePerEndpoint,
		IdleConnTimeout:       60 * time.Second,
		ResponseHeaderTimeout: o.Upstream.Timeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass encodings through untouched
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	p.table.Store(&Table{})
	return p
}

// SetTable makes t the routing table of every new request.
func (p *Proxy) SetTable(t *Table) { p.table.Store(t) }

// Table is the current routing table.
func (p *Proxy) Table() *Table { return p.table.Load() }

// FlushAccessLog writes out the buffered access log lines.
func (p *Proxy) FlushAccessLog() error {
	if p.log == nil {
		return nil
	}
	return p.log.Flush()
}

// Close drops idle upstream connections.
func (p *Proxy) Close() { p.transport.CloseIdleConnections() }

type connectTimeoutKey struct{}

// dial connects to an endpoint within the route's connect timeout.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: p.defaults.ConnectTimeout, KeepAlive: 30 * time.Second}
	if t, ok := ctx.Value(connectTimeoutKey{}).(time.Duration); ok && t > 0 {
		d.Timeout = t
	}
	return d.DialContext(ctx, network, addr)
}

// pick chooses an endpoint of b not in tried and not marked down (a down
// one when nothing else is left): round-robin, or the fewer requests in
// flight of two when leastRequest.
func pick(b *Backend, tried []*endpoint, leastRequest bool) *endpoint {
	n := len(b.endpoints)
	if n == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	usable := func(e *endpoint, allowDown bool) bool {
		for _, t := range tried {
			if t == e {
				return false
			}
		}
		return allowDown || !e.down(now)
	}
	if leastRequest && n > 1 && len(tried) == 0 {
		a, c := b.endpoints[rand.IntN(n)], b.endpoints[rand.IntN(n)]
		if a.down(now) {
			a = c
		}
		if !c.down(now) && c.active.Load() < a.active.Load() {
			a = c
		}
		if !a.down(now) {
			return a
		}
	}
	start := int(b.next.Add(1) - 1)
	for _, allowDown := range []bool{false, true} {
		for i := range n {
			if e := b.endpoints[(start+i)%n]; usable(e, allowDown) {
				return e
			}
		}
	}
	return nil
}

// copyHeader copies src into dst without hop-by-hop fields, those the
// Connection field names included.
func copyHeader(dst, src http.Header) {
	conn := src["Connection"]
	for k, vv := range src {
		if isHop(k) {
			continue
		}
		if len(conn) > 0 && connectionNames(conn, k) {
			continue
		}
		dst[k] = vv
	}
}

// isHop says whether k is a hop-by-hop field (RFC 9110 7.6.1).
func isHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

func connectionNames(conn []string, k string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if textproto.TrimString(f) != "" && strings.EqualFold(textproto.TrimString(f), k) {
				return true
			}
		}
	}
	return false
}

// upgradeType is the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// bodyTracker passes a request body to the upstream, remembers whether
// any of it was read (then a retry could not replay it) and leaves
// closing to the server.
type bodyTracker struct {
	rc   io.ReadCloser
	read bool
}

func (b *bodyTracker) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.read = true
	}
	return n, err
}

func (b *bodyTracker) Close() error { return nil }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// requestID is the client's X-Request-ID or a new random one.
func requestID(h http.Header) string {
	if v := h.Get("X-Request-Id"); v != "" {
		return v
	}
	var raw [16]byte
	var out [32]byte
	a, b := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		raw[i], raw[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	hex.Encode(out[:], raw[:])
	return string(out[:])
}

// logEntry is what one request leaves for the access log and metrics.
type logEntry struct {
	start      time.Time
	status     int
	bytes      int64
	route      *Route
	upstream   string
	upstreamMs float64
	requestID  string
	retries    int
}

// ServeHTTP routes one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := logEntry{start: time.Now()}
	p.serve(w, r, &e)
	if p.metrics != nil {
		p.metrics.request(&e)
	}
	if p.log != nil {
		p.log.write(r, &e)
	}
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, e *logEntry) {
	route := p.table.Load().Match(r.Host, r.URL.Path)
	e.route = route
	if route == nil {
		e.status = http.StatusNotFound
		plainPage(w, http.StatusNotFound, "404 Not Found", "No route for this host and path.")
		return
	}
	if r.TLS == nil && route.Redirect {
		target := "https://" + hostOnly(r.Host)
		if p.HTTPSPort != 0 && p.HTTPSPort != 443 {
			target += ":" + strconv.Itoa(p.HTTPSPort)
		}
		target += r.URL.RequestURI()
		e.status = http.StatusPermanentRedirect
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
		return
	}
	if len(route.Backend.endpoints) == 0 {
		e.status = http.StatusServiceUnavailable
		plainPage(w, http.StatusServiceUnavailable, "503 Service Unavailable", "No ready endpoint for "+route.Backend.Name+".")
		return
	}
	opts := route.Options
	if opts.MaxBodyBytes > 0 {
		if r.ContentLength > opts.MaxBodyBytes {
			e.status = http.StatusRequestEntityTooLarge
			plainPage(w, http.StatusRequestEntityTooLarge, "413 Request Entity Too Large", "The request body is larger than this route takes.")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, opts.MaxBodyBytes)
		}
	}
	p.forward(w, r, route, e)
}

func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

// plainPage writes a small HTML page with status code.
func plainPage(w http.ResponseWriter, code int, title, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, "<html><head><title>"+title+"</title></head><body><h1>"+title+"</h1><p>"+text+"</p><hr>kforge ingress</body></html>\n")
}

// outgoing builds the upstream request's header.
func outgoingHeader(r *http.Request, upgrade, reqID string) http.Header {
	h := make(http.Header, len(r.Header)+7)
	copyHeader(h, r.Header)
	clientIP := r.RemoteAddr
	if host, _, err := net.SplitHostPort(clientIP); err == nil {
		clientIP = host
	}
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + clientIP}
	} else {
		h["X-Forwarded-For"] = []string{clientIP}
	}
	h["X-Real-Ip"] = []string{clientIP}
	proto, port := "http", "80"
	if r.TLS != nil {
		proto, port = "https", "443"
	}
	if _, p, err := net.SplitHostPort(r.Host); err == nil {
		port = p
	}
	h["X-Forwarded-Proto"] = []string{proto}
	h["X-Forwarded-Host"] = []string{r.Host}
	h["X-Forwarded-Port"] = []string{port}
	h["X-Request-Id"] = []string{reqID}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // no Go default
	}
	if upgrade != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{upgrade}
	} else if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		h["Te"] = []string{"trailers"}
	}
	return h
}

// forward sends the request to an endpoint, trying others when a
// connection fails before the request could have reached the pod, or
// (idempotent requests without a body read) on 502/503/504.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, route *Route, e *logEntry) {
	opts := route.Options
	upgrade := upgradeType(r.Header)
	e.requestID = requestID(r.Header)
	header := outgoingHeader(r, upgrade, e.requestID)
	w.Header()["X-Request-Id"] = []string{e.requestID}

	var body *bodyTracker
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		body = &bodyTracker{rc: r.Body}
	}
	ctx := r.Context()
	if opts.ConnectTimeout != p.defaults.ConnectTimeout {
		ctx = context.WithValue(ctx, connectTimeoutKey{}, opts.ConnectTimeout)
	}
	var timedOut atomic.Bool
	if opts.Timeout != p.defaults.Timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		timer := time.AfterFunc(opts.Timeout, func() { timedOut.Store(true); cancel() })
		defer timer.Stop()
	}
	var tried [4]*endpoint
	triedN := 0
	var lastErr error
	for attempt := 0; attempt <= p.maxRetries; attempt++ {
		ep := pick(route.Backend, tried[:min(triedN, len(tried))], opts.LeastRequest)
		if ep == nil {
			break
		}
		if triedN < len(tried) {
			tried[triedN] = ep
		}
		triedN++
		if attempt > 0 {
			e.retries++
		}
		out := &http.Request{
			Method: r.Method,
			URL: &url.URL{Scheme: "http", Host: ep.addr, Path: r.URL.Path, RawPath: r.URL.RawPath,
				RawQuery: r.URL.RawQuery},
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: header, Host: r.Host, ContentLength: r.ContentLength,
		}
		if body != nil {
			out.Body = body
		} else {
			out.ContentLength = 0
		}
		out = out.WithContext(ctx)
		e.upstream = ep.addr
		ep.active.Add(1)
		t0 := time.Now()
		resp, err := p.transport.RoundTrip(out)
		e.upstreamMs = float64(time.Since(t0).Microseconds()) / 1000
		if err != nil {
			ep.active.Add(-1)
			lastErr = err
			if r.Context().Err() != nil {
				e.status = 499 // the client went away
				return
			}
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				e.status = http.StatusRequestEntityTooLarge
				plainPage(w, e.status, "413 Request Entity Too Large", "The request body is larger than this route takes.")
				return
			}
			if timedOut.Load() || isTimeout(err) {
				if isDial(err) {
					ep.downUntil.Store(time.Now().Add(p.failTimeout).UnixNano())
					continue
				}
				e.status = http.StatusGatewayTimeout
				plainPage(w, e.status, "504 Gateway Timeout", "The upstream did not answer in time.")
				return
			}
			fresh := body == nil || !body.read
			if isDial(err) {
				ep.downUntil.Store(time.Now().Add(p.failTimeout).UnixNano())
			}
			if fresh && (isDial(err) || idempotent(r.Method)) {
				continue
			}
			break
		}
		if (resp.StatusCode == 502 || resp.StatusCode == 503 || resp.StatusCode == 504) &&
			idempotent(r.Method) && body == nil && upgrade == "" && attempt < p.maxRetries && triedN < len(route.Backend.endpoints) {
			_ = resp.Body.Close()
			ep.active.Add(-1)
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			p.switchProtocols(w, resp, upgrade, e)
			ep.active.Add(-1)
			return
		}
		p.respond(w, resp, e)
		ep.active.Add(-1)
		return
	}
	e.status = http.StatusBadGateway
	msg := "No endpoint could be reached."
	if lastErr != nil && r.Context().Err() == nil {
		msg = "The upstream connection failed."
	}
	plainPage(w, e.status, "502 Bad Gateway", msg)
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// respond copies an upstream response to the client, flushing as it goes
// when the length is unknown (streams, server-sent events).
func (p *Proxy) respond(w http.ResponseWriter, resp *http.Response, e *logEntry) {
	defer resp.Body.Close()
	h := w.Header()
	copyHeader(h, resp.Header)
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	e.status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	flush := resp.ContentLength < 0
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			wn, werr := w.Write(buf[:n])
			e.bytes += int64(wn)
			if werr != nil {
				return // the client went away; closing the body drops the upstream connection
			}
			if flush {
				_ = rc.Flush()
			}
		}
		if rerr != nil {
			break
		}
	}
	for k, vv := range resp.Trailer {
		h[k] = vv
	}
}

// switchProtocols joins the client and the upstream after a 101
// (WebSocket and other upgrades) and copies both ways until either side
// closes.
func (p *Proxy) switchProtocols(w http.ResponseWriter, resp *http.Response, upgrade string, e *logEntry) {
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || !strings.EqualFold(upgrade, resp.Header.Get("Upgrade")) {
		_ = resp.Body.Close()
		e.status = http.StatusBadGateway
		plainPage(w, e.status, "502 Bad Gateway", "The upstream switched to a protocol that was not asked for.")
		return
	}
	defer up.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		e.status = http.StatusInternalServerError
		plainPage(w, e.status, "500 Internal Server Error", "This connection cannot be upgraded.")
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	e.status = http.StatusSwitchingProtocols
	h := resp.Header.Clone()
	copied := http.Header{}
	copyHeader(copied, h)
	copied["Connection"] = []string{"Upgrade"}
	copied["Upgrade"] = []string{resp.Header.Get("Upgrade")}
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return
	}
	if err := copied.Write(brw); err != nil {
		return
	}
	if _, err := brw.WriteString("\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(up, bufferedReader{brw.Reader, conn})
		done <- struct{}{}
	})
	wg.Go(func() {
		n, _ := io.Copy(conn, up)
		e.bytes += n
		done <- struct{}{}
	})
	<-done
	_ = conn.Close()
	_ = up.Close()
	wg.Wait()
}

// bufferedReader reads what the server had buffered, then the
// connection.
type bufferedReader struct {
	br   *bufio.Reader
	conn net.Conn
}

func (b bufferedReader) Read(p []byte) (int, error) {
	if b.br.Buffered() > 0 {
		return b.br.Read(p)
	}
	return b.conn.Read(p)
}

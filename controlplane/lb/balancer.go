package lb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/cert"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// Balancer is a TCP load balancer over a set of backends with active
// HTTPS health checks; SetBackends replaces the set while it runs. It is the lb role's component and, built
// from a Config with MetricsAddress "", the agent's node-local LB.
//
// Use: New, Start, then Addr, Ready, Backends, Handler; Close once.
type Balancer struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	checker *http.Client

	// backends is the current set, replaced whole by SetBackends (under
	// mu) and read without a lock on every connection.
	backends atomic.Pointer[[]*backend]
	rr       atomic.Uint64 // rotates the start of every pick

	ln        net.Listener
	metricsLn net.Listener
	http      *http.Server
	errc      chan error
	accepting chan struct{} // closed when the accept loop has ended

	started atomic.Bool
	closing atomic.Bool

	// loops are the health checkers and the metrics server; conns the
	// per-connection goroutines.
	loops      sync.WaitGroup
	conns      sync.WaitGroup
	stopChecks context.CancelFunc
	checkCtx   context.Context // parent of every checker; nil before Start

	// connCtx is cancelled when Close gives up waiting: dials in flight
	// stop at once.
	connCtx     context.Context
	cancelConns context.CancelFunc

	mu          sync.Mutex
	open        map[*proxyConn]struct{}
	forceClosed bool
	allDone     chan struct{} // closed by the last connection to end while closing, or nil

	closeOnce sync.Once
}

// backend is one apiserver. healthy and active are read by the proxy on
// every connection; fails and oks belong to its checker goroutine.
type backend struct {
	addr    string
	stop    context.CancelFunc // ends its checker; nil before Start
	healthy atomic.Bool
	active  atomic.Int64
	total   atomic.Uint64

	fails, oks int
}

// proxyConn is one client connection and, once dialed, its backend
// connection and that backend.
type proxyConn struct {
	client  net.Conn
	server  net.Conn
	backend *backend
}

// BackendStatus is a snapshot of one backend, for status output and tests.
type BackendStatus struct {
	Address           string `json:"address"`
	Healthy           bool   `json:"healthy"`
	ActiveConnections int64  `json:"activeConnections"`
	TotalConnections  uint64 `json:"totalConnections"`
}

// New validates cfg, reads the health-check TLS files and returns a
// Balancer that has not bound anything yet. log may be nil.
func New(cfg *Config, log *slog.Logger) (*Balancer, error) {
	if err := roleconfig.Validate("lb", cfg); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tlsCfg, err := checkTLS(&cfg.HealthCheck)
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	b := &Balancer{
		cfg:     *cfg,
		log:     log.With("component", "lb"),
		metrics: newMetrics(),
		checker: &http.Client{
			Transport: &http.Transport{
				TLSClientConfig: tlsCfg,
				// A fresh connection per check tests what a new client
				// connection would meet: TCP accept and the TLS handshake.
				DisableKeepAlives:   true,
				TLSHandshakeTimeout: cfg.HealthCheck.Timeout,
				Proxy:               nil,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		errc: make(chan error, 2),
		open: map[*proxyConn]struct{}{},
	}
	b.cfg.Backends = append([]string(nil), cfg.Backends...)
	bes := make([]*backend, 0, len(b.cfg.Backends))
	for _, addr := range b.cfg.Backends {
		bes = append(bes, &backend{addr: addr})
		b.metrics.add(addr)
	}
	b.backends.Store(&bes)
	b.connCtx, b.cancelConns = context.WithCancel(context.Background())
	return b, nil
}

func checkTLS(h *HealthCheck) (*tls.Config, error) {
	pool, err := cert.NewPool(h.CAFile)
	if err != nil {
		return nil, fmt.Errorf("health check CA: %w", err)
	}
	c := &tls.Config{RootCAs: pool, ServerName: h.ServerName, MinVersion: tls.VersionTLS12}
	if h.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(h.CertFile, h.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("health check client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Start binds the proxy and metrics listeners, runs the first health
// check of every backend at once and then every period, and starts
// accepting. Until a backend passes a check, connections are refused.
// ctx bounds nothing after Start returns: stop with Close.
func (b *Balancer) Start(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("lb: already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", b.cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("lb: %w", err)
	}
	b.ln = ln
	if b.cfg.MetricsAddress != "" {
		mln, err := lc.Listen(ctx, "tcp", b.cfg.MetricsAddress)
		if err != nil {
			ln.Close()
			return fmt.Errorf("lb: metrics: %w", err)
		}
		b.metricsLn = mln
		b.http = &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 5 * time.Second}
		b.loops.Add(1)
		go func() {
			defer b.loops.Done()
			if err := b.http.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.fail(fmt.Errorf("lb: metrics server: %w", err))
			}
		}()
	}

	checkCtx, cancel := context.WithCancel(context.Background())
	b.mu.Lock()
	b.checkCtx, b.stopChecks = checkCtx, cancel
	for _, be := range b.list() {
		b.startCheck(be)
	}
	b.mu.Unlock()
	b.accepting = make(chan struct{})
	go b.acceptLoop()
	b.log.Info("load balancer started", "listen", ln.Addr().String(), "backends", b.cfg.Backends)
	return nil
}

// list is the current backends.
func (b *Balancer) list() []*backend { return *b.backends.Load() }

// startCheck starts be's checker; b.mu is held and Start has run.
func (b *Balancer) startCheck(be *backend) {
	ctx, cancel := context.WithCancel(b.checkCtx)
	be.stop = cancel
	b.loops.Add(1)
	go b.checkLoop(ctx, be)
}

// SetBackends replaces the backends with addrs (host:port, in order).
// Backends that stay keep their health and connections; new ones start
// unhealthy until their checks pass, as at start; removed ones stop being
// checked and their open connections are closed, so clients reconnect to
// one that remains. An empty addrs is refused: a balancer with no backend
// serves nobody, and the caller's source of addresses is more likely
// wrong than the cluster empty. It reports whether the set changed.
func (b *Balancer) SetBackends(addrs []string) (bool, error) {
	if len(addrs) == 0 {
		return false, errors.New("lb: refusing an empty backend list")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing.Load() {
		return false, errors.New("lb: closing")
	}
	old := b.list()
	byAddr := make(map[string]*backend, len(old))
	for _, be := range old {
		byAddr[be.addr] = be
	}
	next := make([]*backend, 0, len(addrs))
	seen := map[string]bool{}
	changed := len(addrs) != len(old)
	for i, a := range addrs {
		if seen[a] {
			continue
		}
		seen[a] = true
		if i >= len(old) || old[i].addr != a {
			changed = true
		}
		if be := byAddr[a]; be != nil {
			next = append(next, be)
			continue
		}
		be := &backend{addr: a}
		b.metrics.add(a)
		if b.checkCtx != nil {
			b.startCheck(be)
		}
		next = append(next, be)
	}
	if !changed {
		return false, nil
	}
	b.backends.Store(&next)
	for _, be := range old {
		if seen[be.addr] {
			continue
		}
		if be.stop != nil {
			be.stop()
		}
		be.healthy.Store(false)
		n := b.shutConnsToLocked(be)
		b.metrics.remove(be.addr)
		b.log.Warn("backend removed", "backend", be.addr, "connectionsReset", n)
	}
	b.cfg.Backends = append([]string(nil), addrs...)
	b.log.Info("backends replaced", "backends", addrs)
	return true, nil
}

// fail reports an error on Err without blocking.
func (b *Balancer) fail(err error) {
	select {
	case b.errc <- err:
	default:
	}
}

// Err delivers a fatal error of a running Balancer (its listener or its
// metrics server failed).
func (b *Balancer) Err() <-chan error { return b.errc }

// Addr is the proxy's bound address (useful when listening on port 0).
func (b *Balancer) Addr() net.Addr { return b.ln.Addr() }

// MetricsAddr is the metrics listener's address, or nil when disabled.
func (b *Balancer) MetricsAddr() net.Addr {
	if b.metricsLn == nil {
		return nil
	}
	return b.metricsLn.Addr()
}

// Ready reports whether at least one backend is healthy and the
// Balancer is not closing.
func (b *Balancer) Ready() bool {
	if b.closing.Load() {
		return false
	}
	for _, be := range b.list() {
		if be.healthy.Load() {
			return true
		}
	}
	return false
}

// Backends returns a snapshot of every backend, in the order given.
func (b *Balancer) Backends() []BackendStatus {
	bes := b.list()
	out := make([]BackendStatus, 0, len(bes))
	for _, be := range bes {
		out = append(out, BackendStatus{
			Address:           be.addr,
			Healthy:           be.healthy.Load(),
			ActiveConnections: be.active.Load(),
			TotalConnections:  be.total.Load(),
		})
	}
	return out
}

// Registry is the Balancer's own Prometheus registry (never the global
// one); the lb role adds the Go and process collectors to it.
func (b *Balancer) Registry() *prometheus.Registry { return b.metrics.reg }

// Close shuts the Balancer down, in order:
//  1. /readyz turns 503 and the proxy listener closes: no new connections;
//  2. open connections get ShutdownGracePeriod to end by themselves, then
//     are closed (and dials in flight cancelled);
//  3. the health checkers stop;
//  4. the metrics server shuts down (2 s for in-flight scrapes).
//
// It returns once every goroutine the Balancer started has ended. Close
// on a Balancer that was never started only releases its resources.
func (b *Balancer) Close() {
	b.closeOnce.Do(func() {
		b.mu.Lock() // SetBackends starts no checker once closing is seen
		b.closing.Store(true)
		b.mu.Unlock()
		if b.ln != nil {
			b.ln.Close()
			<-b.accepting
		}
		b.drain()
		if b.stopChecks != nil {
			b.stopChecks()
		}
		if b.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := b.http.Shutdown(ctx); err != nil {
				b.http.Close()
			}
			cancel()
		}
		b.loops.Wait()
		b.cancelConns()
		if t, ok := b.checker.Transport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
		b.log.Info("load balancer closed")
	})
}

// drain waits up to the grace period for open connections, then closes
// the rest and waits for their goroutines.
func (b *Balancer) drain() {
	b.mu.Lock()
	n := len(b.open)
	var done chan struct{}
	if n > 0 {
		done = make(chan struct{})
		b.allDone = done
	}
	b.mu.Unlock()
	if n > 0 {
		b.log.Info("waiting for open connections", "connections", n, "grace", b.cfg.ShutdownGracePeriod)
		t := time.NewTimer(b.cfg.ShutdownGracePeriod)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
	// Close what is left. The accept loop has ended, so nothing new is
	// tracked after this.
	b.mu.Lock()
	b.forceClosed = true
	left := len(b.open)
	for pc := range b.open {
		pc.client.Close()
		if pc.server != nil {
			pc.server.Close()
		}
	}
	b.mu.Unlock()
	if left > 0 {
		b.log.Info("closed connections still open after the grace period", "connections", left)
	}
	b.cancelConns()
	b.conns.Wait()
}

// acceptLoop accepts until the listener closes. Temporary errors (such as
// running out of file descriptors) back off and retry.
func (b *Balancer) acceptLoop() {
	defer close(b.accepting)
	var delay time.Duration
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if b.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				b.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			b.fail(fmt.Errorf("lb: accept: %w", err))
			return
		}
		delay = 0
		pc := &proxyConn{client: c}
		if !b.track(pc) {
			refuse(c)
			continue
		}
		b.conns.Add(1)
		go b.serve(pc)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// track records a new connection; false once Close has force-closed.
func (b *Balancer) track(pc *proxyConn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.forceClosed {
		return false
	}
	b.open[pc] = struct{}{}
	return true
}

// setServer records the dialed backend connection; false when Close
// force-closed the connection, or the backend was marked down, while it
// was being dialed.
func (b *Balancer) setServer(pc *proxyConn, be *backend, server net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.forceClosed || !be.healthy.Load() {
		// Closed, or marked down while being dialed (record would have
		// missed this connection).
		return false
	}
	pc.server, pc.backend = server, be
	return true
}

// shutConnsTo resets the open connections to a backend just marked down,
// as haproxy's on-marked-down shutdown-sessions: a client stuck on a
// master that stopped answering (a hung process, a partition) would
// otherwise wait for its own timeouts; reset, it reconnects through the
// LB to a healthy one at once.
func (b *Balancer) shutConnsTo(be *backend) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.shutConnsToLocked(be)
}

// shutConnsToLocked is shutConnsTo with b.mu held.
func (b *Balancer) shutConnsToLocked(be *backend) int {
	n := 0
	for pc := range b.open {
		if pc.backend == be {
			refuse(pc.client)
			pc.server.Close()
			n++
		}
	}
	return n
}

func (b *Balancer) untrack(pc *proxyConn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.open, pc)
	if len(b.open) == 0 && b.allDone != nil {
		close(b.allDone)
		b.allDone = nil
	}
}

// refuse closes a client connection with a reset, so the client learns
// at once rather than after a timeout or a clean EOF it might retry on.
func refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// serve dials a healthy backend (another one if a dial fails) and
// copies bytes both ways until both directions have ended.
func (b *Balancer) serve(pc *proxyConn) {
	defer b.conns.Done()
	defer b.untrack(pc)

	be, server := b.dial()
	if server == nil {
		b.metrics.rejected.Inc()
		refuse(pc.client)
		return
	}
	if !b.setServer(pc, be, server) {
		server.Close()
		refuse(pc.client)
		return
	}
	be.active.Add(1)
	be.total.Add(1)
	b.metrics.connected(be.addr)
	defer func() {
		be.active.Add(-1)
		b.metrics.disconnected(be.addr)
	}()

	client := pc.client
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := pipe(server, client); err != nil {
			client.Close()
			server.Close()
		}
	}()
	if err := pipe(client, server); err != nil {
		client.Close()
		server.Close()
	}
	<-done
	client.Close()
	server.Close()
}

// pipe copies src to dst until src's EOF, then half-closes dst so the
// peer sees the end of the stream while the other direction goes on.
// An error in either connection is returned: the caller closes both.
func pipe(dst, src net.Conn) error {
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return dst.Close()
}

// dial tries healthy backends, in the policy's order, until one accepts.
// It returns nil when none is healthy or every dial failed.
func (b *Balancer) dial() (*backend, net.Conn) {
	d := net.Dialer{Timeout: b.cfg.DialTimeout}
	tried := make(map[*backend]bool, 3)
	for {
		be := b.pick(tried)
		if be == nil {
			return nil, nil
		}
		tried[be] = true
		c, err := d.DialContext(b.connCtx, "tcp", be.addr)
		if err == nil {
			return be, c
		}
		b.metrics.dialFailures.WithLabelValues(be.addr).Inc()
		b.log.Info("backend dial failed; trying another", "backend", be.addr, "err", err)
		if b.connCtx.Err() != nil {
			return nil, nil
		}
	}
}

// pick returns the next healthy backend not yet tried, or nil.
func (b *Balancer) pick(tried map[*backend]bool) *backend {
	bes := b.list()
	n := len(bes)
	start := int(b.rr.Add(1) % uint64(n))
	var best *backend
	for i := range n {
		be := bes[(start+i)%n]
		if tried[be] || !be.healthy.Load() {
			continue
		}
		if b.cfg.Balance == BalanceRoundRobin {
			return be
		}
		if best == nil || be.active.Load() < best.active.Load() {
			best = be
		}
	}
	return best
}

// checkLoop checks be at once and then every period until ctx ends.
func (b *Balancer) checkLoop(ctx context.Context, be *backend) {
	defer b.loops.Done()
	t := time.NewTicker(b.cfg.HealthCheck.Period)
	defer t.Stop()
	for {
		err := b.check(ctx, be.addr)
		if ctx.Err() != nil {
			return
		}
		b.record(be, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check does one HTTPS GET of the health path; any 2xx is healthy.
func (b *Balancer) check(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.HealthCheck.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+b.cfg.HealthCheck.Path, nil)
	if err != nil {
		return err
	}
	resp, err := b.checker.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s %q", b.cfg.HealthCheck.Path, resp.Status, body)
	}
	return nil
}

// record applies one check result to be's thresholds.
func (b *Balancer) record(be *backend, err error) {
	h := b.cfg.HealthCheck
	if err != nil {
		b.metrics.checkFailures.WithLabelValues(be.addr).Inc()
		be.oks = 0
		be.fails++
		if be.healthy.Load() && be.fails >= h.UnhealthyThreshold {
			be.healthy.Store(false)
			b.metrics.up.WithLabelValues(be.addr).Set(0)
			n := b.shutConnsTo(be)
			b.log.Warn("backend is down", "backend", be.addr, "failures", be.fails, "err", err, "connectionsReset", n)
		} else {
			b.log.Debug("health check failed", "backend", be.addr, "failures", be.fails, "err", err)
		}
		return
	}
	be.fails = 0
	be.oks++
	if !be.healthy.Load() && be.oks >= h.HealthyThreshold {
		be.healthy.Store(true)
		b.metrics.up.WithLabelValues(be.addr).Set(1)
		b.log.Warn("backend is up", "backend", be.addr)
	}
}

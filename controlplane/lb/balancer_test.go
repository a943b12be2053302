package lb

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAPIServer answers /readyz (200, or 503 while failing) and any other
// path with its name, over TLS like an apiserver.
type fakeAPIServer struct {
	name    string
	srv     *httptest.Server
	failing atomic.Bool
	hits    atomic.Int64
}

func (f *fakeAPIServer) addr() string { return f.srv.Listener.Addr().String() }

func startFakes(t *testing.T, n int) ([]*fakeAPIServer, string) {
	t.Helper()
	var fakes []*fakeAPIServer
	for i := range n {
		f := &fakeAPIServer{name: fmt.Sprintf("m%d", i+1)}
		f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/readyz" {
				if f.failing.Load() {
					http.Error(w, "etcd: unavailable", http.StatusServiceUnavailable)
					return
				}
				_, _ = w.Write([]byte("ok"))
				return
			}
			f.hits.Add(1)
			_, _ = w.Write([]byte(f.name))
		}))
		f.srv.Config.ErrorLog = nil
		f.srv.StartTLS()
		t.Cleanup(f.srv.Close)
		fakes = append(fakes, f)
	}
	// Every httptest TLS server uses the same certificate (for 127.0.0.1).
	ca := filepath.Join(t.TempDir(), "ca.crt")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fakes[0].srv.Certificate().Raw})
	if err := os.WriteFile(ca, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return fakes, ca
}

func testConfig(fakes []*fakeAPIServer, ca string) *Config {
	c := NewConfig()
	c.ListenAddress = "127.0.0.1:0"
	c.MetricsAddress = "127.0.0.1:0"
	c.ShutdownGracePeriod = 300 * time.Millisecond
	c.HealthCheck.CAFile = ca
	for _, f := range fakes {
		c.Backends = append(c.Backends, f.addr())
	}
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func startBalancer(t *testing.T, cfg *Config) *Balancer {
	t.Helper()
	b, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// eventually polls cond every 10 ms until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func healthy(b *Balancer) map[string]bool {
	out := map[string]bool{}
	for _, s := range b.Backends() {
		out[s.Address] = s.Healthy
	}
	return out
}

func allHealthy(b *Balancer) bool {
	for _, h := range healthy(b) {
		if !h {
			return false
		}
	}
	return true
}

// client speaks HTTPS through the LB to the fakes, one connection per request.
func client(ca string) *http.Client {
	pemBytes, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
			DisableKeepAlives: true,
		},
	}
}

func whoami(c *http.Client, addr string) (string, error) {
	resp, err := c.Get("https://" + addr + "/whoami")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestBalancerFailover(t *testing.T) {
	fakes, ca := startFakes(t, 3)
	before := runtime.NumGoroutine()
	b, err := New(testConfig(fakes, ca), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	lbAddr := b.Addr().String()
	metricsURL := "http://" + b.MetricsAddr().String()
	c := client(ca)
	defer c.CloseIdleConnections()

	eventually(t, 3*time.Second, "every backend healthy after start", func() bool { return allHealthy(b) })
	if code, _ := httpGet(t, metricsURL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d with every backend healthy", code)
	}

	// Requests are spread over all three.
	counts := map[string]int{}
	for range 30 {
		name, err := whoami(c, lbAddr)
		if err != nil {
			t.Fatal(err)
		}
		counts[name]++
	}
	for _, f := range fakes {
		if counts[f.name] == 0 {
			t.Errorf("no request reached %s: %v", f.name, counts)
		}
	}

	// m2 fails its readiness: out within 3 s, then no request reaches it.
	m2 := fakes[1]
	m2.failing.Store(true)
	failedAt := time.Now()
	eventually(t, 3*time.Second+500*time.Millisecond, "m2 out", func() bool { return !healthy(b)[m2.addr()] })
	t.Logf("m2 out after %s", time.Since(failedAt).Round(time.Millisecond))
	if _, body := httpGet(t, metricsURL+"/metrics"); !strings.Contains(body, fmt.Sprintf("kforge_lb_backend_up{backend=%q} 0", m2.addr())) {
		t.Errorf("metrics do not show m2 down:\n%s", body)
	}
	hits := m2.hits.Load()
	for range 20 {
		name, err := whoami(c, lbAddr)
		if err != nil {
			t.Fatal(err)
		}
		if name == m2.name {
			t.Fatal("a request reached m2 after it was taken out")
		}
	}
	if m2.hits.Load() != hits {
		t.Error("m2 got requests while out")
	}

	// m2 recovers: back in after one good check, and takes requests again.
	m2.failing.Store(false)
	eventually(t, 2*time.Second, "m2 back", func() bool { return healthy(b)[m2.addr()] })
	eventually(t, 5*time.Second, "a request reaches m2 again", func() bool {
		name, err := whoami(c, lbAddr)
		return err == nil && name == m2.name
	})

	// Everything fails: not ready, connections refused fast.
	for _, f := range fakes {
		f.failing.Store(true)
	}
	eventually(t, 3*time.Second+500*time.Millisecond, "every backend out", func() bool { return !b.Ready() })
	if code, body := httpGet(t, metricsURL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no healthy backend") {
		t.Errorf("/readyz = %d %q with no healthy backend", code, body)
	}
	start := time.Now()
	if _, err := whoami(c, lbAddr); err == nil {
		t.Error("a request went through with no healthy backend")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusing took %s", d)
	}
	conn, err := net.Dial("tcp", lbAddr)
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Error("the LB held a connection open with no healthy backend")
		}
	}
	if _, body := httpGet(t, metricsURL+"/metrics"); !strings.Contains(body, "kforge_lb_rejected_connections_total 2") {
		t.Errorf("metrics do not count the refused connections:\n%s", grepLines(body, "kforge_lb_"))
	}

	// Close, then every goroutine the LB started is gone.
	b.Close()
	c.CloseIdleConnections()
	eventually(t, 3*time.Second, "no goroutine left behind", func() bool { return runtime.NumGoroutine() <= before })
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// openThrough opens a TLS connection through the LB and waits until the
// LB counts it.
func openThrough(t *testing.T, b *Balancer, ca string) *tls.Conn {
	t.Helper()
	pemBytes, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	conn, err := tls.Dial("tcp", b.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the LB counts the connection", func() bool { return b.Backends()[0].ActiveConnections == 1 })
	return conn
}

func TestCloseWaitsThenClosesLongConnections(t *testing.T) {
	fakes, ca := startFakes(t, 1)
	cfg := testConfig(fakes, ca)
	cfg.ShutdownGracePeriod = 400 * time.Millisecond
	b := startBalancer(t, cfg)
	eventually(t, 3*time.Second, "backend healthy", func() bool { return b.Ready() })
	conn := openThrough(t, b, ca)
	defer conn.Close()

	start := time.Now()
	b.Close()
	if d := time.Since(start); d < cfg.ShutdownGracePeriod {
		t.Errorf("Close returned after %s, before the %s grace period", d, cfg.ShutdownGracePeriod)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the long connection is still open after Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", b.Addr().String(), time.Second); err == nil {
		t.Error("the LB still accepts after Close")
	}
}

func TestCloseDrainsOpenConnections(t *testing.T) {
	fakes, ca := startFakes(t, 1)
	cfg := testConfig(fakes, ca)
	cfg.ShutdownGracePeriod = time.Minute
	b := startBalancer(t, cfg)
	eventually(t, 3*time.Second, "backend healthy", func() bool { return b.Ready() })
	conn := openThrough(t, b, ca)
	defer conn.Close()

	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	eventually(t, 2*time.Second, "the listener closes", func() bool {
		c, err := net.DialTimeout("tcp", b.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if code, _ := httpGet(t, "http://"+b.MetricsAddr().String()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d while closing", code)
	}
	// The open connection still works while draining.
	if _, err := io.WriteString(conn, "GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(conn)
	if err != nil || !strings.HasSuffix(string(resp), "m1") {
		t.Fatalf("request while draining: %q %v", resp, err)
	}
	select {
	case <-closed:
	default:
		// The backend closed (Connection: close); the LB ends the
		// connection once the client closes too.
	}
	conn.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waits after the last connection ended")
	}
}

// TestDialRetryAndHalfClose uses a plain TCP echo backend the checks
// never pass, marked healthy by hand, beside a dead one: every connection
// lands on the echo after the dead dial fails, and a client's FIN goes
// through while the answer still comes back.
func TestDialRetryAndHalfClose(t *testing.T) {
	_, ca := startFakes(t, 1)
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				data, _ := io.ReadAll(c) // until the client's FIN
				_, _ = c.Write(append([]byte("got: "), data...))
			}()
		}
	}()
	deadLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := deadLn.Addr().String()
	deadLn.Close()

	cfg := NewConfig()
	cfg.ListenAddress, cfg.MetricsAddress = "127.0.0.1:0", ""
	cfg.Backends = []string{dead, echo.Addr().String()}
	cfg.Balance = BalanceRoundRobin
	cfg.HealthCheck.CAFile = ca
	cfg.HealthCheck.Period = time.Hour // one check at start, which fails once: below the threshold
	cfg.HealthCheck.Timeout = 500 * time.Millisecond
	b := startBalancer(t, cfg)
	for _, be := range b.list() {
		be.healthy.Store(true)
	}

	for i := range 4 {
		c, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("hello %d", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "got: "+msg {
			t.Fatalf("connection %d: %q %v", i, got, err)
		}
	}
	if n := b.Backends()[1].TotalConnections; n != 4 {
		t.Errorf("echo backend took %d connections, want 4", n)
	}
	var rec strings.Builder
	srv := httptest.NewRecorder()
	b.Handler().ServeHTTP(srv, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	rec.WriteString(srv.Body.String())
	if !strings.Contains(rec.String(), fmt.Sprintf("kforge_lb_backend_dial_failures_total{backend=%q}", dead)) ||
		strings.Contains(rec.String(), fmt.Sprintf("kforge_lb_backend_dial_failures_total{backend=%q} 0", dead)) {
		t.Errorf("dial failures to the dead backend not counted:\n%s", grepLines(rec.String(), "kforge_lb_backend_dial"))
	}
}

func TestNewRejectsInvalidConfigAndMissingCA(t *testing.T) {
	if _, err := New(NewConfig(), nil); err == nil {
		t.Error("New accepted a config without backends")
	}
	c := NewConfig()
	c.Backends = []string{"127.0.0.1:1"}
	c.HealthCheck.CAFile = filepath.Join(t.TempDir(), "missing.crt")
	if _, err := New(c, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New with a missing CA file: %v", err)
	}
}

// TestCheckTimesOutOnAHungBackend: a backend that accepts and never
// answers fails its check within the timeout, and a stopped one at once.
func TestCheckTimesOutOnAHungBackend(t *testing.T) {
	_, ca := startFakes(t, 1)
	hung, err := net.Listen("tcp", "127.0.0.1:0") // never accepted: the handshake hangs
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	stopped, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stoppedAddr := stopped.Addr().String()
	stopped.Close()

	cfg := NewConfig()
	cfg.Backends = []string{hung.Addr().String(), stoppedAddr}
	cfg.HealthCheck.CAFile = ca
	cfg.HealthCheck.Timeout = 200 * time.Millisecond
	b, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, addr := range cfg.Backends {
		start := time.Now()
		if err := b.check(t.Context(), addr); err == nil {
			t.Errorf("%s passed its check", addr)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("checking %s took %s with a %s timeout", addr, d, cfg.HealthCheck.Timeout)
		}
	}
}

// A backend marked down has its open connections reset, so a client on a
// master that stopped answering reconnects to a healthy one at once;
// connections to the other backends stay.
func TestBackendMarkedDownResetsItsConnections(t *testing.T) {
	fakes, ca := startFakes(t, 2)
	cfg := testConfig(fakes, ca)
	b := startBalancer(t, cfg)
	eventually(t, 3*time.Second, "backends healthy", func() bool { return allHealthy(b) })
	pemBytes, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	// Open connections until each backend has one (the LB rotates).
	var conns []*tls.Conn
	byBackend := map[string]*tls.Conn{}
	for len(byBackend) < 2 && len(conns) < 10 {
		conn, err := tls.Dial("tcp", b.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		if _, err := conn.Write([]byte("GET /who HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if byBackend[string(body)] == nil {
			byBackend[string(body)] = conn
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(byBackend) != 2 {
		t.Fatalf("connections reached %d backends, want 2", len(byBackend))
	}
	fakes[0].failing.Store(true)
	eventually(t, 5*time.Second, "m1 marked down", func() bool { return !healthy(b)[fakes[0].addr()] })

	down := byBackend["m1"]
	_ = down.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := down.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the connection to the backend marked down is still open: %v", err)
	}
	up := byBackend["m2"]
	if _, err := up.Write([]byte("GET /who HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatalf("the connection to the healthy backend: %v", err)
	}
	_ = up.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(up), nil)
	if err != nil {
		t.Fatalf("the connection to the healthy backend: %v", err)
	}
	resp.Body.Close()
	eventually(t, 2*time.Second, "m1's connections counted gone", func() bool { return b.Backends()[0].ActiveConnections == 0 })
}

func TestSetBackendsWhileRunning(t *testing.T) {
	fakes, ca := startFakes(t, 3)
	cfg := testConfig(fakes[:2], ca)
	cfg.HealthCheck.Period = 100 * time.Millisecond
	cfg.HealthCheck.Timeout = 90 * time.Millisecond
	b := startBalancer(t, cfg)
	eventually(t, 5*time.Second, "m1 and m2 healthy", func() bool { return allHealthy(b) })
	c := client(ca)

	// A long connection to m1, which is about to be removed.
	conn, err := tls.Dial("tcp", b.Addr().String(), &tls.Config{RootCAs: c.Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	if _, err := b.SetBackends(nil); err == nil {
		t.Error("an empty backend list was accepted")
	}
	if changed, err := b.SetBackends([]string{fakes[0].addr(), fakes[1].addr()}); err != nil || changed {
		t.Errorf("the same list: changed %v, %v; want false, nil", changed, err)
	}
	// m1 out, m3 in: m2 keeps its health at once, m3 turns healthy after
	// its checks, and only m2 and m3 serve.
	changed, err := b.SetBackends([]string{fakes[1].addr(), fakes[2].addr(), fakes[1].addr()})
	if err != nil || !changed {
		t.Fatalf("SetBackends: changed %v, %v", changed, err)
	}
	h := healthy(b)
	if len(h) != 2 || !h[fakes[1].addr()] {
		t.Fatalf("right after the change: %v, want m2 healthy and m3 not yet", h)
	}
	eventually(t, 5*time.Second, "m3 healthy", func() bool { return allHealthy(b) })
	seen := map[string]int{}
	for range 20 {
		name, err := whoami(c, b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if seen["m1"] != 0 || seen["m2"] == 0 || seen["m3"] == 0 {
		t.Errorf("answers after the change: %v, want m2 and m3 only", seen)
	}
	// The connection that went to the removed backend (or to m2: the pick
	// rotates) ends or still works; it never hangs.
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = conn.Write([]byte("GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"))
	buf := make([]byte, 256)
	if _, err := conn.Read(buf); err != nil && strings.Contains(err.Error(), "timeout") {
		t.Errorf("a connection to a removed backend hung: %v", err)
	}
	status, body := httpGet(t, "http://"+b.MetricsAddr().String()+"/metrics")
	if status != 200 || strings.Contains(body, `kforge_lb_backend_up{backend="`+fakes[0].addr()+`"}`) {
		t.Errorf("metrics still report the removed backend's health (status %d)", status)
	}
}

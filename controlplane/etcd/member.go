package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/etcdhttp"
	"go.uber.org/zap"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// Member is one running etcd member with its health and metrics server
// and its maintenance loops. Create it with NewMember, then Start it; it
// runs until Close.
type Member struct {
	cfg *Config
	log *slog.Logger
	zl  *zap.Logger

	etcd      *embed.Etcd
	metricsLn net.Listener
	http      *http.Server
	reg       *prometheus.Registry
	metrics   *maintenanceMetrics

	joining    bool          // started with the join marker (JoinMarker)
	readyc     chan struct{} // closed once joined and a leader is known
	errc       chan error    // fatal errors while running; buffered
	cancel     context.CancelFunc
	wg         sync.WaitGroup // the serving and watching goroutines Start starts
	loops      sync.WaitGroup // the maintenance loops
	closing    atomic.Bool
	defragging atomic.Bool
	closeOnce  sync.Once
}

// NewMember validates cfg and returns a Member that has not started.
// log receives etcd's own logs too (bridged from zap); nil discards them.
func NewMember(cfg *Config, log *slog.Logger) (*Member, error) {
	if err := roleconfig.Validate("etcd", cfg); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "etcd", "member", cfg.Name)
	reg := prometheus.NewRegistry()
	m := &Member{
		cfg:     cfg,
		log:     log,
		reg:     reg,
		metrics: newMaintenanceMetrics(reg),
		readyc:  make(chan struct{}),
		errc:    make(chan error, 1),
	}
	m.zl = newZapLogger(log, m.closing.Load)
	return m, nil
}

// Start opens the metrics listener, starts the embedded etcd server and
// the maintenance loops, and returns without waiting for the member to
// join: wait on ReadyNotify for that. On error everything it started is
// closed again. ctx only bounds startup.
func (m *Member) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ec, err := m.cfg.embedConfig(m.zl)
	if err != nil {
		return err
	}
	if m.joining = m.cfg.joinsExisting(); m.joining {
		ec.ClusterState = ClusterStateExisting
		m.log.Info("joining the existing cluster (the installer added this member)", "marker", JoinMarker(m.cfg.DataDir))
	}
	ln, err := net.Listen("tcp", m.cfg.MetricsAddress)
	if err != nil {
		return fmt.Errorf("etcd: metrics listener: %w", err)
	}
	m.metricsLn = ln
	e, err := embed.StartEtcd(ec)
	if err != nil {
		ln.Close()
		return fmt.Errorf("etcd: starting member %s: %w", m.cfg.Name, err)
	}
	m.etcd = e

	m.http = &http.Server{Handler: m.handler(), ReadHeaderTimeout: 5 * time.Second}
	loopCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Go(func() {
		if err := m.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.fail(fmt.Errorf("etcd: metrics server: %w", err))
		}
	})
	m.wg.Go(func() { m.watchReady(loopCtx) })
	m.wg.Go(func() { m.watchErrors(loopCtx) })
	if m.cfg.Compaction.Interval > 0 {
		m.loops.Go(func() { m.compactLoop(loopCtx) })
	}
	if m.cfg.Defrag.Interval > 0 {
		m.loops.Go(func() { m.defragLoop(loopCtx) })
	}
	return nil
}

// fail reports a fatal error on Err, keeping only the first.
func (m *Member) fail(err error) {
	select {
	case m.errc <- err:
	default:
	}
}

// JoinMarker is the file beside a data dir that makes a member with an
// empty data dir join the existing cluster (initialClusterState
// "existing") whatever its config says. The installer writes it after
// adding the member to the cluster (a master whose data was lost); the
// member removes it once it has joined. The config itself keeps "new",
// which etcd ignores once a data dir exists, so re-runs render the same
// file and restart nothing.
func JoinMarker(dataDir string) string { return filepath.Clean(dataDir) + ".join" }

// joinsExisting reports a join marker beside an empty data dir. A marker
// beside a data dir that has a member is stale and removed.
func (c *Config) joinsExisting() bool {
	marker := JoinMarker(c.DataDir)
	if _, err := os.Stat(marker); err != nil {
		return false
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "member")); err == nil {
		_ = os.Remove(marker)
		return false
	}
	return true
}

// watchReady closes readyc once etcd has joined the cluster (published
// its attributes through raft) and a leader is known.
func (m *Member) watchReady(ctx context.Context) {
	srv := m.etcd.Server
	select {
	case <-srv.ReadyNotify():
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for srv.Leader() == 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
	m.log.Info("member ready", "id", srv.MemberID().String(), "leader", srv.Leader().String())
	if m.joining {
		// Joined: the data dir now says so; the marker has done its work.
		if err := os.Remove(JoinMarker(m.cfg.DataDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("removing the join marker", "err", err)
		}
	}
	close(m.readyc)
}

// watchErrors turns serving errors and an unexpected server stop (for
// example this member was removed from the cluster) into Err.
func (m *Member) watchErrors(ctx context.Context) {
	errc := m.etcd.Err()
	for {
		select {
		case err, ok := <-errc:
			if !ok {
				return
			}
			if err != nil && !m.closing.Load() {
				m.fail(fmt.Errorf("etcd: %w", err))
			}
		case <-m.etcd.Server.StopNotify():
			if !m.closing.Load() {
				m.fail(errors.New("etcd: the server stopped"))
			}
			return
		case <-ctx.Done():
			return
		}
	}
}

// ReadyNotify is closed once the member has joined the cluster and the
// cluster has a leader.
func (m *Member) ReadyNotify() <-chan struct{} { return m.readyc }

// Err delivers the first fatal error of a running member (serving
// failed, or the server stopped on its own). The caller should Close.
func (m *Member) Err() <-chan error { return m.errc }

// Etcd is the embedded server, for tests and for callers that need the
// low-level handle (member ID, leader, revision).
func (m *Member) Etcd() *embed.Etcd { return m.etcd }

// MetricsAddr is the bound address of the health and metrics listener
// (useful when the config asked for port 0).
func (m *Member) MetricsAddr() net.Addr { return m.metricsLn.Addr() }

// Close stops the member; it is safe to call more than once. In order:
//  1. mark the member as closing, so /readyz fails and errors are no
//     longer reported;
//  2. stop the compaction and defragmentation loops (a running defrag
//     finishes first);
//  3. close embedded etcd: drain client requests, stop raft, close peer
//     listeners (see embed.Etcd.Close);
//  4. shut down the health and metrics server;
//  5. wait for every goroutine Start started.
func (m *Member) Close() {
	m.closeOnce.Do(func() {
		m.closing.Store(true)
		if m.cancel != nil {
			m.cancel()
		}
		m.loops.Wait()
		if m.etcd != nil {
			m.etcd.Close()
		}
		if m.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := m.http.Shutdown(ctx); err != nil {
				m.http.Close()
			}
			cancel()
		}
		m.wg.Wait()
		m.log.Info("member closed")
	})
}

// Run starts a member, logs when it is ready and runs it until ctx is
// cancelled (then it closes cleanly and returns nil) or it fails.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	m, err := NewMember(cfg, log)
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	defer m.Close()
	select {
	case <-m.ReadyNotify():
		m.log.Warn("etcd member ready", "clientURLs", cfg.advertiseClientURLs(), "metrics", m.MetricsAddr().String())
	case err := <-m.Err():
		return err
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-m.Err():
		return err
	case <-ctx.Done():
		m.log.Warn("shutting down")
		return nil
	}
}

// healthCheckTimeout bounds one of etcd's health checks; without quorum a
// linearizable read would otherwise wait for the caller to give up.
const healthCheckTimeout = 3 * time.Second

// handler serves /healthz, /readyz, /metrics, and etcd's own /health,
// /livez and /readyz checks under /etcd/.
func (m *Member) handler() http.Handler {
	inner := http.NewServeMux()
	etcdhttp.HandleHealth(m.zl, inner, m.etcd.Server)

	forward := func(w http.ResponseWriter, r *http.Request, path string) {
		// etcd's checks read through raft with no deadline of their own.
		ctx, cancel := context.WithTimeout(r.Context(), healthCheckTimeout)
		defer cancel()
		r2 := r.Clone(ctx)
		r2.URL.Path = path
		r2.URL.RawPath = ""
		inner.ServeHTTP(w, r2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-m.etcd.Server.StopNotify():
			http.Error(w, "etcd server stopped", http.StatusServiceUnavailable)
			return
		default:
		}
		forward(w, r, "/livez")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if reason := m.notReady(); reason != "" {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		forward(w, r, "/readyz")
	})
	mux.HandleFunc("GET /etcd/{path...}", func(w http.ResponseWriter, r *http.Request) {
		forward(w, r, "/"+r.PathValue("path"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(
		prometheus.Gatherers{prometheus.DefaultGatherer, m.reg},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError},
	))
	return mux
}

// notReady says why the member is not ready, or "" when it is.
func (m *Member) notReady() string {
	switch {
	case m.closing.Load():
		return "shutting down"
	case m.defragging.Load():
		return "defragmenting"
	}
	select {
	case <-m.readyc:
	default:
		return "member has not joined the cluster yet"
	}
	if m.etcd.Server.Leader() == 0 {
		return "no leader"
	}
	return ""
}

// embedConfig translates the kforge config into etcd's.
func (c *Config) embedConfig(zl *zap.Logger) (*embed.Config, error) {
	ec := embed.NewConfig()
	ec.Name = c.Name
	ec.Dir = c.DataDir
	var err error
	parse := func(field string, list []string) []url.URL {
		out := make([]url.URL, 0, len(list))
		for _, s := range list {
			u, perr := url.Parse(s)
			if perr != nil && err == nil {
				err = fmt.Errorf("etcd: %s: %w", field, perr)
			}
			if u != nil {
				out = append(out, *u)
			}
		}
		return out
	}
	ec.ListenPeerUrls = parse("listenPeerURLs", c.ListenPeerURLs)
	ec.AdvertisePeerUrls = parse("advertisePeerURLs", c.advertisePeerURLs())
	ec.ListenClientUrls = parse("listenClientURLs", c.ListenClientURLs)
	ec.AdvertiseClientUrls = parse("advertiseClientURLs", c.advertiseClientURLs())
	if err != nil {
		return nil, err
	}
	ec.InitialCluster = c.InitialCluster
	ec.ClusterState = c.InitialClusterState
	ec.InitialClusterToken = c.InitialClusterToken

	ec.ClientTLSInfo = transport.TLSInfo{
		CertFile:       c.TLS.CertFile,
		KeyFile:        c.TLS.KeyFile,
		TrustedCAFile:  c.TLS.TrustedCAFile,
		ClientCertAuth: true,
	}
	ec.PeerTLSInfo = transport.TLSInfo{
		CertFile:       c.TLS.PeerCertFile,
		KeyFile:        c.TLS.PeerKeyFile,
		TrustedCAFile:  c.TLS.TrustedCAFile,
		ClientCertAuth: true,
	}

	ec.TickMs = uint(c.HeartbeatInterval / time.Millisecond)
	ec.ElectionMs = uint(c.ElectionTimeout / time.Millisecond)
	ec.QuotaBackendBytes = c.QuotaBackendBytes

	// kforge compacts itself (compactLoop): etcd's compactor can keep a
	// time window or a revision count, not both.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "0"

	// The JSON gateway would dial the member with the serving certificate
	// as a client certificate; nothing of ours uses it.
	ec.EnableGRPCGateway = false

	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
	return ec, nil
}

package clusterdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/health"
)

// DNS is one instance of the cluster DNS role. Build it with New, then
// call Run once.
type DNS struct {
	cfg    *Config
	log    *slog.Logger
	client kubernetes.Interface

	factory  informers.SharedInformerFactory
	synced   []cache.InformerSynced
	store    *Store
	resolver *Resolver
	fwd      *Forwarder
	cache    *Cache

	registry *prometheus.Registry
	metrics  *metrics

	udp       net.PacketConn
	tcp       net.Listener
	port      int
	advertise netip.Addr
	health    net.Listener // nil when HealthAddress is empty

	ready atomic.Bool
	kick  chan struct{} // asks the registration loop to run now

	nodeWarned bool // the last registration found our Node not Ready (registerLoop only)
}

// New builds an instance from cfg (validated here) with a client from
// cfg.Kubeconfig, and binds its UDP, TCP and health listeners. Run must
// follow: it closes them.
func New(cfg *Config, log *slog.Logger) (*DNS, error) {
	if err := roleconfig.Validate("dns", cfg); err != nil {
		return nil, err
	}
	kc, err := roleconfig.LoadKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return NewWithRESTConfig(cfg, kc, log)
}

// NewWithRESTConfig is New with the client configuration given instead of
// read from cfg.Kubeconfig (which it ignores).
func NewWithRESTConfig(cfg *Config, kc *rest.Config, log *slog.Logger) (*DNS, error) {
	if err := roleconfig.Validate("dns", cfg); err != nil {
		return nil, err
	}
	client, err := roleconfig.NewClient(kc, "kforge-dns")
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return newDNS(cfg, client, log)
}

func newDNS(cfg *Config, client kubernetes.Interface, log *slog.Logger) (*DNS, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &DNS{
		cfg: cfg, log: log.With("component", "dns"), client: client,
		factory:  informers.NewSharedInformerFactory(client, 0),
		registry: prometheus.NewRegistry(),
		kick:     make(chan struct{}, 1),
	}
	d.advertise, _ = cfg.advertise()

	servers, err := d.upstreams()
	if err != nil {
		return nil, err
	}
	svcInf := d.factory.Core().V1().Services().Informer()
	sliceInf := d.factory.Discovery().V1().EndpointSlices().Informer()
	if err := svcInf.AddIndexers(serviceIndexers()); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if err := sliceInf.AddIndexers(sliceIndexers()); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	d.synced = []cache.InformerSynced{svcInf.HasSynced, sliceInf.HasSynced}
	d.store = &Store{services: svcInf.GetIndexer(), slices: sliceInf.GetIndexer()}

	d.cache = NewCache(cfg.Cache.Size, cfg.Cache.MaxTTL, cfg.Cache.FailureTTL)
	d.metrics = newMetrics(d.registry, func() float64 { return float64(d.cache.Len()) })
	d.fwd = NewForwarder(servers, cfg.Upstream.Timeout, d.cache)
	d.fwd.m = d.metrics
	d.resolver = NewResolver(d.store, cfg.ClusterDomain, cfg.TTL, d.fwd)
	d.resolver.m = d.metrics
	d.resolver.synced.Store(false)

	if err := d.listen(); err != nil {
		return nil, err
	}
	if cfg.HealthAddress != "" {
		if d.health, err = net.Listen("tcp", cfg.HealthAddress); err != nil {
			d.closeListeners()
			return nil, fmt.Errorf("dns: health listener: %w", err)
		}
	}
	return d, nil
}

// upstreams are the configured servers, or those of the resolv.conf (none
// when it is missing: every forwarded query then fails at once).
func (d *DNS) upstreams() ([]string, error) {
	if len(d.cfg.Upstream.Servers) > 0 {
		var out []string
		for _, s := range d.cfg.Upstream.Servers {
			a, err := upstreamAddr(s)
			if err != nil {
				return nil, fmt.Errorf("dns: upstream %q: %w", s, err)
			}
			out = append(out, a)
		}
		return out, nil
	}
	data, err := os.ReadFile(d.cfg.Upstream.ResolvConf)
	if errors.Is(err, os.ErrNotExist) {
		d.log.Warn("no resolv.conf: names outside the cluster domain will fail", "path", d.cfg.Upstream.ResolvConf)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	servers := ResolvConfServers(data)
	if len(servers) == 0 {
		d.log.Warn("resolv.conf names no non-loopback nameserver: names outside the cluster domain will fail", "path", d.cfg.Upstream.ResolvConf)
	}
	return servers, nil
}

// listen binds UDP on the listen address, then TCP on the same port (the
// port UDP got, when it was 0).
func (d *DNS) listen() error {
	host, _, _ := net.SplitHostPort(d.cfg.ListenAddress)
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", d.cfg.ListenAddress)
		if err != nil {
			return fmt.Errorf("dns: UDP listener: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			_ = pc.Close()
			if _, p, _ := net.SplitHostPort(d.cfg.ListenAddress); p == "0" && attempt < 5 {
				continue // the free UDP port was taken on TCP: try another
			}
			return fmt.Errorf("dns: TCP listener: %w", err)
		}
		d.udp, d.tcp, d.port = pc, ln, port
		return nil
	}
}

func (d *DNS) closeListeners() {
	_ = d.udp.Close()
	_ = d.tcp.Close()
	if d.health != nil {
		_ = d.health.Close()
	}
}

// Addr is the UDP address queries are answered on (TCP uses the same
// port).
func (d *DNS) Addr() *net.UDPAddr { return d.udp.LocalAddr().(*net.UDPAddr) }

// HealthAddr is the health listener's address, or nil without one.
func (d *DNS) HealthAddr() net.Addr {
	if d.health == nil {
		return nil
	}
	return d.health.Addr()
}

// Registry is the instance's metrics registry.
func (d *DNS) Registry() *prometheus.Registry { return d.registry }

// Upstreams are the servers names outside the cluster domain go to.
func (d *DNS) Upstreams() []string { return d.fwd.Servers() }

// Ready is true once the informers have synced and both servers answer,
// until shutdown begins.
func (d *DNS) Ready() bool { return d.ready.Load() }

// Handler serves /healthz, /readyz and /metrics.
func (d *DNS) Handler() http.Handler {
	return health.Handler(func() string {
		if !d.Ready() {
			return "informers not synced or shutting down"
		}
		return ""
	}, d.registry)
}

// Run serves until ctx ends, then shuts down in order: not ready, remove
// the EndpointSlice, keep answering for the lame-duck period, stop the
// DNS servers, the informers and the health server. While the API is
// unreachable it goes on answering from what the informers hold. It
// returns nil after a cancel, or the error of a server that failed.
func (d *DNS) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 3)
	var wg sync.WaitGroup
	defer wg.Wait()

	var hsrv *http.Server
	if d.health != nil {
		hsrv = &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := hsrv.Serve(d.health); err != nil && !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("dns: health server: %w", err)
			}
		})
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			_ = hsrv.Shutdown(sctx)
		}()
	}

	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &dns.Server{PacketConn: d.udp, Handler: d.resolver, NotifyStartedFunc: notify}
	tcp := &dns.Server{Listener: d.tcp, Handler: d.resolver, NotifyStartedFunc: notify,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	for _, s := range []*dns.Server{udp, tcp} {
		wg.Go(func() {
			if err := s.ActivateAndServe(); err != nil && runCtx.Err() == nil {
				failed <- fmt.Errorf("dns: %s server: %w", s.Net, err)
			}
		})
	}
	stopServers := func() {
		for _, s := range []*dns.Server{udp, tcp} {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.ShutdownContext(sctx)
			c()
		}
	}

	d.factory.Start(runCtx.Done())
	defer d.factory.Shutdown()
	wg.Go(func() {
		if !cache.WaitForCacheSync(runCtx.Done(), d.synced...) {
			return
		}
		for range 2 {
			select {
			case <-started:
			case <-runCtx.Done():
				return
			}
		}
		d.resolver.synced.Store(true)
		d.ready.Store(true)
		d.log.Info("informers synced, answering for the cluster domain", "domain", d.cfg.ClusterDomain)
		d.poke()
	})
	regDone := make(chan struct{})
	if d.cfg.Service.Register {
		go func() {
			defer close(regDone)
			d.registerLoop(runCtx)
		}()
	} else {
		close(regDone)
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-failed:
	}
	d.ready.Store(false)
	cancel()
	<-regDone
	if d.cfg.Service.Register {
		dctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		if derr := d.deleteSlice(dctx); derr != nil {
			d.log.Warn("could not remove this instance from the DNS Service", "err", derr)
		} else if err == nil && d.cfg.LameDuck > 0 {
			time.Sleep(d.cfg.LameDuck)
		}
		c()
	}
	stopServers()
	return err
}

// poke asks the registration loop to run now.
func (d *DNS) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// registerLoop keeps the Service and this instance's EndpointSlice as
// they should be, every resync period and when readiness changes, until
// ctx ends.
func (d *DNS) registerLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.Service.ResyncPeriod)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		}
		err := d.register(ctx, d.Ready())
		if ctx.Err() != nil {
			return
		}
		d.metrics.registered(err)
		switch {
		case err != nil && err.Error() != lastErr:
			d.log.Warn("could not register this instance behind the DNS Service; retrying", "err", err)
			lastErr = err.Error()
		case err == nil && lastErr != "":
			d.log.Info("registered behind the DNS Service")
			lastErr = ""
		}
	}
}

// Run is the dns role: New, the Go and process collectors, Run.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	d, err := New(cfg, log)
	if err != nil {
		return err
	}
	d.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	attrs := []any{"listen", d.Addr().String(), "domain", cfg.ClusterDomain, "upstreams", d.Upstreams()}
	if a := d.HealthAddr(); a != nil {
		attrs = append(attrs, "health", a.String())
	}
	d.log.Warn("dns running", attrs...)
	return d.Run(ctx)
}

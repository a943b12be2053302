package serviceproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"

	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/health"
)

// Retry bounds after a failed transaction, and how long /healthz stays
// healthy while syncs fail (kube-proxy's default healthz timeout).
const (
	retryMin      = time.Second
	retryMax      = 30 * time.Second
	healthTimeout = 2 * time.Minute
	nodeRetry     = 5 * time.Second
)

// Proxy is the service proxy of one node. Build it with New, then call
// Run once.
type Proxy struct {
	cfg    *Config
	log    *slog.Logger
	client kubernetes.Interface

	factory     informers.SharedInformerFactory
	services    corelisters.ServiceLister
	slices      discoverylisters.EndpointSliceLister
	synced      []cache.InformerSynced
	kick        chan struct{}
	broadcaster events.EventBroadcaster
	recorder    events.EventRecorder

	builder   Builder
	writer    *Writer
	nl        *netlink.Handle
	podPrefix netip.Prefix
	nodeIPs   []netip.Addr // NodePort addresses; from the Node when not configured
	applied   *Ruleset     // the last ruleset written
	reported  map[string]string

	registry *prometheus.Registry
	metrics  *metrics
	ln       net.Listener

	lastSuccess atomic.Int64 // unix nanoseconds; 0 before the first
	lastFailure atomic.Int64
	mu          sync.Mutex // guards running
	running     bool
}

// New builds a Proxy from cfg (validated here), with a client from
// cfg.Kubeconfig, writing the host's own network namespace, and binds
// the health listener. Run must follow: it closes the listener.
func New(cfg *Config, log *slog.Logger) (*Proxy, error) {
	if err := roleconfig.Validate("proxy", cfg); err != nil {
		return nil, err
	}
	kc, err := roleconfig.LoadKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return NewWithRESTConfig(cfg, kc, -1, log)
}

// NewWithRESTConfig is New with the client configuration given instead
// of read from cfg.Kubeconfig, writing the rules into the network
// namespace of nsFd (-1: the process's own).
func NewWithRESTConfig(cfg *Config, kc *rest.Config, nsFd int, log *slog.Logger) (*Proxy, error) {
	if err := roleconfig.Validate("proxy", cfg); err != nil {
		return nil, err
	}
	client, err := roleconfig.NewClient(kc, "kforge-proxy")
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		cfg: cfg, log: log.With("component", "proxy"), client: client,
		factory:  informers.NewSharedInformerFactory(client, 0),
		kick:     make(chan struct{}, 1),
		reported: map[string]string{},
		registry: prometheus.NewRegistry(),
	}
	if cfg.ClusterCIDR != "" {
		p.podPrefix = netip.MustParsePrefix(cfg.ClusterCIDR).Masked() // validated
	}
	for _, a := range cfg.NodePortAddresses {
		p.nodeIPs = append(p.nodeIPs, netip.MustParseAddr(a)) // validated
	}
	svcInf := p.factory.Core().V1().Services()
	sliceInf := p.factory.Discovery().V1().EndpointSlices()
	p.services, p.slices = svcInf.Lister(), sliceInf.Lister()
	p.synced = []cache.InformerSynced{svcInf.Informer().HasSynced, sliceInf.Informer().HasSynced}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { p.poke() }, UpdateFunc: func(any, any) { p.poke() }, DeleteFunc: func(any) { p.poke() },
	}
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), sliceInf.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
	}
	p.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	p.recorder = p.broadcaster.NewRecorder(scheme.Scheme, "kforge-proxy")
	if p.writer, err = NewWriter(nsFd); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if nsFd >= 0 {
		p.nl, err = netlink.NewHandleAt(netns.NsHandle(nsFd))
	} else {
		p.nl, err = netlink.NewHandle()
	}
	if err != nil {
		p.writer.Close()
		return nil, fmt.Errorf("proxy: netlink: %w", err)
	}
	p.metrics = newMetrics(p.registry, p.writer)
	if cfg.HealthAddress != "" {
		if p.ln, err = net.Listen("tcp", cfg.HealthAddress); err != nil {
			p.writer.Close()
			p.nl.Close()
			return nil, fmt.Errorf("proxy: health listener: %w", err)
		}
	}
	return p, nil
}

func (p *Proxy) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Registry is the proxy's own metrics registry.
func (p *Proxy) Registry() *prometheus.Registry { return p.registry }

// HealthAddr is the health listener's address, or nil without one.
func (p *Proxy) HealthAddr() net.Addr {
	if p.ln == nil {
		return nil
	}
	return p.ln.Addr()
}

// Healthy is true once a sync succeeded, unless syncs have failed since
// and the last success is older than the health timeout.
func (p *Proxy) Healthy() bool {
	ok := p.lastSuccess.Load()
	if ok == 0 {
		return false
	}
	return p.lastFailure.Load() < ok || time.Since(time.Unix(0, ok)) < healthTimeout
}

// Handler serves /healthz (with the last sync's time, as kube-proxy),
// /readyz and /metrics.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	health := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		last := time.Time{}
		if n := p.lastSuccess.Load(); n != 0 {
			last = time.Unix(0, n)
		}
		if !p.Healthy() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"lastUpdated": last, "currentTime": time.Now()})
	}
	mux.HandleFunc("/healthz", health)
	mux.HandleFunc("/readyz", health)
	mux.Handle("/metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
	return mux
}

// Run proxies until ctx ends. It rebuilds the table once the informers
// have synced, then applies changes as they come (at most one sync per
// MinSyncInterval) and rebuilds it whole every SyncPeriod. A failed
// transaction leaves the last good table in place and is retried with
// backoff. On return the table stays: Services keep working while the
// proxy restarts; Cleanup removes it.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return errors.New("proxy: Run called twice")
	}
	p.running = true
	p.mu.Unlock()
	defer p.writer.Close()
	defer p.nl.Close()

	serveErr := make(chan error, 1)
	if p.ln != nil {
		defer health.Serve(p.ln, p.Handler(), "proxy", serveErr)()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := p.broadcaster.StartRecordingToSinkWithContext(runCtx); err != nil {
		return fmt.Errorf("proxy: events: %w", err)
	}
	defer p.broadcaster.Shutdown()
	p.factory.Start(runCtx.Done())
	defer p.factory.Shutdown()
	if !cache.WaitForCacheSync(runCtx.Done(), p.synced...) {
		return nil
	}
	p.log.Info("informers synced")

	full := true
	fullTick := time.NewTicker(p.cfg.SyncPeriod)
	defer fullTick.Stop()
	var retry <-chan time.Time
	backoff := retryMin
	var last time.Time
	for {
		if wait := p.cfg.MinSyncInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case err := <-serveErr:
				return err
			case <-time.After(wait):
			}
		}
		// Drain a pending kick: this sync covers it.
		select {
		case <-p.kick:
		default:
		}
		last = time.Now()
		needNode, err := p.sync(ctx, full)
		switch {
		case err != nil:
			p.log.Error("sync failed; the last good rules stay in place", "err", err, "retryIn", backoff)
			retry = time.After(backoff)
			backoff = min(backoff*2, retryMax)
			full = true
		case needNode:
			retry = time.After(nodeRetry)
			full = false
		default:
			retry, backoff, full = nil, retryMin, false
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-serveErr:
			return err
		case <-p.kick:
			p.poke() // seen again at the top of the loop
		case <-fullTick.C:
			full = true
		case <-retry:
		}
	}
}

// sync writes the ruleset built from the listers; needNode reports that
// the NodePort addresses are still unknown.
func (p *Proxy) sync(ctx context.Context, full bool) (needNode bool, err error) {
	start := time.Now()
	ips, needNode := p.nodePortAddresses(ctx)
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return needNode, err
	}
	slices, err := p.slices.List(labels.Everything())
	if err != nil {
		return needNode, err
	}
	rs := p.builder.Build(Input{Services: svcs, Slices: slices, NodeName: p.cfg.NodeName, NodeIPs: ips, PodPrefix: p.podPrefix})
	wasFull, err := p.writer.Sync(rs, full)
	kind := "partial"
	if wasFull {
		kind = "full"
	}
	p.metrics.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	if err != nil {
		p.metrics.errors.Inc()
		p.lastFailure.Store(time.Now().UnixNano())
		return needNode, err
	}
	n, cerr := deleteConntrack(p.nl, staleUDPFilters(p.applied, rs))
	if cerr != nil {
		p.log.Warn("deleting stale UDP conntrack entries", "err", cerr)
	}
	p.metrics.conntrack.Add(float64(n))
	p.applied = rs
	p.lastSuccess.Store(time.Now().UnixNano())
	p.metrics.lastSync.SetToCurrentTime()
	p.report(rs)
	if wasFull {
		p.log.Info("rules rebuilt", "services", len(svcs), "rules", p.writer.Rules(), "took", time.Since(start).Round(time.Millisecond))
	}
	return needNode, nil
}

// nodePortAddresses are the configured ones, or the node's InternalIPs
// read once from its Node.
func (p *Proxy) nodePortAddresses(ctx context.Context) ([]netip.Addr, bool) {
	if len(p.nodeIPs) > 0 {
		return p.nodeIPs, false
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := p.client.CoreV1().Nodes().Get(gctx, p.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		p.log.Warn("NodePorts wait for the node's addresses", "node", p.cfg.NodeName, "err", err)
		return nil, true
	}
	var ips []netip.Addr
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP && ip.Is4() {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		p.log.Warn("NodePorts wait for the node's addresses", "node", p.cfg.NodeName, "err", "no IPv4 InternalIP yet")
		return nil, true
	}
	p.nodeIPs = ips
	p.log.Info("NodePort addresses", "addresses", ips)
	return ips, false
}

// report records a warning event on each Service with ports the proxy
// cannot express, once per distinct reason.
func (p *Proxy) report(rs *Ruleset) {
	p.metrics.skipped.Set(float64(len(rs.Skipped)))
	keys := make([]string, 0, len(rs.Skipped))
	for k := range rs.Skipped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		msg := strings.Join(rs.Skipped[k], "; ")
		if p.reported[k] == msg {
			continue
		}
		p.reported[k] = msg
		ns, name, _ := strings.Cut(k, "/")
		svc, err := p.services.Services(ns).Get(name)
		if err != nil {
			continue
		}
		p.log.Warn("service not proxied in part", "service", k, "reason", msg)
		p.recorder.Eventf(svc, nil, corev1.EventTypeWarning, "ServiceNotProxied", "Sync", "%s", msg)
	}
	for k := range p.reported {
		if _, ok := rs.Skipped[k]; !ok {
			delete(p.reported, k)
		}
	}
}

// Run is the proxy role: New, the Go and process collectors, Run.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	p, err := New(cfg, log)
	if err != nil {
		return err
	}
	p.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	attrs := []any{"node", cfg.NodeName, "table", TableName}
	if a := p.HealthAddr(); a != nil {
		attrs = append(attrs, "health", a.String())
	}
	p.log.Warn("proxy running", attrs...)
	return p.Run(ctx)
}

// Cleanup removes what the proxy made on this host, for `kforge reset`
// once it has stopped: its nftables table.
func Cleanup(_ context.Context, _ *Config, _ *slog.Logger) error {
	return RemoveTable(-1)
}

package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"

	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/health"
)

// Well-known IngressClass and Ingress annotations.
const (
	DefaultClassAnnotation = networkingv1.AnnotationIsDefaultIngressClass
	legacyClassAnnotation  = "kubernetes.io/ingress.class"
)

// Controller is one instance of the ingress role: informers feed a route
// table that the data path (Proxy) serves on the HTTP and HTTPS
// listeners. Build it with New, then call Run once.
type Controller struct {
	cfg    *Config
	log    *slog.Logger
	client kubernetes.Interface

	factory   informers.SharedInformerFactory
	synced    []cache.InformerSynced
	ingresses networkinglisters.IngressLister
	classes   networkinglisters.IngressClassLister
	services  corelisters.ServiceLister
	slices    discoverylisters.EndpointSliceLister
	secrets   corelisters.SecretLister

	Builder  *Builder
	proxy    *Proxy
	defCert  *tls.Certificate
	reported map[string]bool // events already sent, by Ingress UID, reason and message
	statusQ  workqueue.TypedRateLimitingInterface[string]
	kick     chan struct{}

	broadcaster events.EventBroadcaster
	recorder    events.EventRecorder
	registry    *prometheus.Registry
	metrics     *metrics // the proxy's

	httpLn, httpsLn, healthLn net.Listener
	ready                     atomic.Bool
}

// New builds an instance from cfg (validated here) with a client from
// cfg.Kubeconfig, and binds its listeners. Run must follow: it closes
// them.
func New(cfg *Config, log *slog.Logger) (*Controller, error) {
	if err := roleconfig.Validate("ingress", cfg); err != nil {
		return nil, err
	}
	kc, err := roleconfig.LoadKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("ingress: %w", err)
	}
	return NewWithRESTConfig(cfg, kc, log, os.Stdout)
}

// NewWithRESTConfig is New with the client configuration given instead
// of read from cfg.Kubeconfig (which it ignores); the access log goes to
// accessLog.
func NewWithRESTConfig(cfg *Config, kc *rest.Config, log *slog.Logger, accessLog io.Writer) (*Controller, error) {
	if err := roleconfig.Validate("ingress", cfg); err != nil {
		return nil, err
	}
	client, err := roleconfig.NewClient(kc, "kforge-ingress")
	if err != nil {
		return nil, fmt.Errorf("ingress: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		cfg: cfg, log: log.With("component", "ingress"), client: client,
		factory:  informers.NewSharedInformerFactory(client, 0),
		reported: map[string]bool{},
		statusQ: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ingress-status"}),
		kick:     make(chan struct{}, 1),
		registry: prometheus.NewRegistry(),
	}
	if c.defCert, err = selfSigned(); err != nil {
		return nil, err
	}
	ingInf := c.factory.Networking().V1().Ingresses()
	classInf := c.factory.Networking().V1().IngressClasses()
	svcInf := c.factory.Core().V1().Services()
	sliceInf := c.factory.Discovery().V1().EndpointSlices()
	secInf := c.factory.Core().V1().Secrets()
	c.ingresses, c.classes, c.services, c.slices, c.secrets =
		ingInf.Lister(), classInf.Lister(), svcInf.Lister(), sliceInf.Lister(), secInf.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.poke() }, UpdateFunc: func(_, _ any) { c.poke() }, DeleteFunc: func(any) { c.poke() },
	}
	for _, inf := range []cache.SharedIndexInformer{ingInf.Informer(), classInf.Informer(), svcInf.Informer(), sliceInf.Informer(), secInf.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("ingress: %w", err)
		}
		c.synced = append(c.synced, inf.HasSynced)
	}
	c.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, "kforge-ingress")

	httpsPort := 0
	if err := c.listen(&httpsPort); err != nil {
		return nil, err
	}
	c.Builder = NewBuilder(Options{ConnectTimeout: cfg.Upstream.ConnectTimeout, Timeout: cfg.Upstream.Timeout, MaxBodyBytes: cfg.Client.MaxBodyBytes})
	po := ProxyOptions{Upstream: cfg.Upstream, MaxBodyBytes: cfg.Client.MaxBodyBytes, HTTPSPort: httpsPort, Registry: c.registry}
	if cfg.AccessLog {
		po.AccessLog = accessLog
	}
	c.proxy = NewProxy(po)
	c.metrics = c.proxy.metrics
	return c, nil
}

func (c *Controller) listen(httpsPort *int) error {
	var err error
	if c.httpLn, err = net.Listen("tcp", c.cfg.HTTPAddress); err != nil {
		return fmt.Errorf("ingress: HTTP listener: %w", err)
	}
	if c.cfg.HTTPSAddress != "" {
		if c.httpsLn, err = net.Listen("tcp", c.cfg.HTTPSAddress); err != nil {
			c.closeListeners()
			return fmt.Errorf("ingress: HTTPS listener: %w", err)
		}
		*httpsPort = c.httpsLn.Addr().(*net.TCPAddr).Port
	}
	if c.cfg.HealthAddress != "" {
		if c.healthLn, err = net.Listen("tcp", c.cfg.HealthAddress); err != nil {
			c.closeListeners()
			return fmt.Errorf("ingress: health listener: %w", err)
		}
	}
	return nil
}

func (c *Controller) closeListeners() {
	for _, ln := range []net.Listener{c.httpLn, c.httpsLn, c.healthLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// HTTPAddr and HTTPSAddr are the data path's bound addresses (HTTPSAddr
// is nil without TLS); HealthAddr is the health listener's, or nil.
func (c *Controller) HTTPAddr() net.Addr { return c.httpLn.Addr() }

// HTTPSAddr is the HTTPS listener's address, or nil.
func (c *Controller) HTTPSAddr() net.Addr {
	if c.httpsLn == nil {
		return nil
	}
	return c.httpsLn.Addr()
}

// HealthAddr is the health listener's address, or nil.
func (c *Controller) HealthAddr() net.Addr {
	if c.healthLn == nil {
		return nil
	}
	return c.healthLn.Addr()
}

// Registry is the instance's metrics registry.
func (c *Controller) Registry() *prometheus.Registry { return c.registry }

// Table is the routing table being served.
func (c *Controller) Table() *Table { return c.proxy.Table() }

// Ready is true once the informers synced and the first table serves,
// until shutdown begins.
func (c *Controller) Ready() bool { return c.ready.Load() }

// Handler serves /healthz, /readyz and /metrics.
func (c *Controller) Handler() http.Handler {
	return health.Handler(func() string {
		if !c.Ready() {
			return "informers not synced or shutting down"
		}
		return ""
	}, c.registry)
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// dataServer is an http.Server for one data-path listener.
func (c *Controller) dataServer() *http.Server {
	return &http.Server{
		Handler:           c.proxy,
		ReadHeaderTimeout: c.cfg.Client.ReadHeaderTimeout,
		ReadTimeout:       c.cfg.Client.ReadTimeout,
		IdleTimeout:       c.cfg.Client.IdleTimeout,
		MaxHeaderBytes:    c.cfg.Client.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				c.metrics.connections.Inc()
			case http.StateClosed, http.StateHijacked:
				c.metrics.connections.Dec()
			}
		},
	}
}

// Run serves until ctx ends, then shuts down in order: not ready, stop
// accepting and let requests in flight finish (up to shutdownGrace),
// stop the status worker, the informers and the event broadcaster, flush
// the access log, stop the health server. It returns nil after a cancel,
// or the error of a server that failed.
func (c *Controller) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 4)
	var wg sync.WaitGroup
	defer wg.Wait()

	if c.healthLn != nil {
		hsrv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := hsrv.Serve(c.healthLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("ingress: health server: %w", err)
			}
		})
		defer func() {
			sctx, cc := context.WithTimeout(context.Background(), 2*time.Second)
			defer cc()
			_ = hsrv.Shutdown(sctx)
		}()
	}
	if c.proxy.log != nil {
		defer func() { _ = c.proxy.FlushAccessLog() }()
		wg.Go(func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
					_ = c.proxy.FlushAccessLog()
				}
			}
		})
	}
	if err := c.broadcaster.StartRecordingToSinkWithContext(runCtx); err != nil {
		c.closeListeners()
		return fmt.Errorf("ingress: events: %w", err)
	}
	defer c.broadcaster.Shutdown()
	c.factory.Start(runCtx.Done())
	defer c.factory.Shutdown()
	defer c.statusQ.ShutDown()

	httpSrv := c.dataServer()
	var httpsSrv *http.Server
	if c.httpsLn != nil {
		httpsSrv = c.dataServer()
		httpsSrv.TLSConfig = c.proxy.TLSConfig(c.defCert)
	}
	serving := make(chan struct{})
	wg.Go(func() {
		if !cache.WaitForCacheSync(runCtx.Done(), c.synced...) {
			return
		}
		if c.cfg.Class.Create {
			c.ensureClass(runCtx)
		}
		c.rebuild()
		close(serving)
		wg.Go(func() {
			if err := httpSrv.Serve(c.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("ingress: HTTP server: %w", err)
			}
		})
		if httpsSrv != nil {
			wg.Go(func() {
				if err := httpsSrv.ServeTLS(c.httpsLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
					failed <- fmt.Errorf("ingress: HTTPS server: %w", err)
				}
			})
		}
		c.ready.Store(true)
		c.log.Info("informers synced, serving", "ingresses", c.proxy.Table().Ingresses, "routes", c.proxy.Table().Routes)
		wg.Go(func() { c.statusWorker(runCtx) })
		for {
			select {
			case <-runCtx.Done():
				return
			case <-c.kick:
				c.rebuild()
			}
		}
	})

	var err error
	select {
	case <-ctx.Done():
	case err = <-failed:
	}
	c.ready.Store(false)
	select {
	case <-serving:
		sctx, cc := context.WithTimeout(context.Background(), c.cfg.ShutdownGrace)
		_ = httpSrv.Shutdown(sctx)
		if httpsSrv != nil {
			_ = httpsSrv.Shutdown(sctx)
		}
		cc()
	default:
		_ = c.httpLn.Close()
		if c.httpsLn != nil {
			_ = c.httpsLn.Close()
		}
	}
	cancel()
	c.statusQ.ShutDown()
	c.proxy.Close()
	return err
}

// served says whether this controller serves ing: its class is one whose
// controller is ours (or our class name), or it has none and the
// cluster's default class is ours.
func (c *Controller) served(ing *networkingv1.Ingress, ours map[string]bool, defaultOurs bool) bool {
	if n := ing.Spec.IngressClassName; n != nil {
		return ours[*n]
	}
	if a := ing.Annotations[legacyClassAnnotation]; a != "" {
		return ours[a]
	}
	return defaultOurs
}

// classes returns the IngressClass names this controller serves and
// whether the default class is one of them.
func (c *Controller) ourClasses() (map[string]bool, bool) {
	ours := map[string]bool{c.cfg.Class.Name: true}
	defaultOurs := false
	all, _ := c.classes.List(labels.Everything())
	for _, ic := range all {
		mine := ic.Spec.Controller == c.cfg.Class.Controller
		if mine {
			ours[ic.Name] = true
		} else if ic.Name == c.cfg.Class.Name {
			delete(ours, ic.Name) // our name taken by another controller's class
		}
		if ic.Annotations[DefaultClassAnnotation] == "true" && mine {
			defaultOurs = true
		}
	}
	return ours, defaultOurs
}

// rebuild builds a table from the informers' contents, swaps it in,
// reports new problems and queues status updates.
func (c *Controller) rebuild() {
	start := time.Now()
	ours, defaultOurs := c.ourClasses()
	all, _ := c.ingresses.List(labels.Everything())
	var mine []*networkingv1.Ingress
	for _, ing := range all {
		if c.served(ing, ours, defaultOurs) {
			mine = append(mine, ing)
		}
	}
	t, problems := c.Builder.Build(c.sources(mine))
	c.proxy.SetTable(t)
	c.metrics.swapped(t, time.Since(start))
	c.log.Debug("routing table swapped in", "ingresses", t.Ingresses, "routes", t.Routes, "took", time.Since(start))

	seen := map[string]bool{}
	for _, p := range problems {
		k := string(p.Ingress.UID) + "\x00" + p.Reason + "\x00" + p.Message
		seen[k] = true
		if !c.reported[k] {
			c.recorder.Eventf(p.Ingress, nil, corev1.EventTypeWarning, p.Reason, "Route", "%s", p.Message)
			c.log.Warn("ingress problem", "ingress", p.Ingress.Namespace+"/"+p.Ingress.Name, "reason", p.Reason, "message", p.Message)
		}
	}
	c.reported = seen
	if len(c.cfg.StatusAddresses) > 0 {
		for _, ing := range mine {
			if !hasAddresses(ing.Status.LoadBalancer.Ingress, c.cfg.StatusAddresses) {
				c.statusQ.Add(ing.Namespace + "/" + ing.Name)
			}
		}
	}
}

// sources backs a build with the listers.
func (c *Controller) sources(ings []*networkingv1.Ingress) Sources {
	return Sources{
		Ingresses: ings,
		Service: func(ns, name string) *corev1.Service {
			s, err := c.services.Services(ns).Get(name)
			if err != nil {
				return nil
			}
			return s
		},
		Slices: func(ns, svc string) []*discoveryv1.EndpointSlice {
			out, _ := c.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc}))
			return out
		},
		Secret: func(ns, name string) *corev1.Secret {
			s, err := c.secrets.Secrets(ns).Get(name)
			if err != nil {
				return nil
			}
			return s
		},
	}
}

// Run is the ingress role: New, the Go and process collectors, Run.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	c, err := New(cfg, log)
	if err != nil {
		return err
	}
	c.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	attrs := []any{"http", c.HTTPAddr().String(), "class", cfg.Class.Name}
	if a := c.HTTPSAddr(); a != nil {
		attrs = append(attrs, "https", a.String())
	}
	if a := c.HealthAddr(); a != nil {
		attrs = append(attrs, "health", a.String())
	}
	c.log.Warn("ingress running", attrs...)
	return c.Run(ctx)
}

package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"

	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/health"
)

// Scheduler places the pods whose spec.schedulerName is its name onto
// nodes. Build it with New, then call Run once.
type Scheduler struct {
	cfg    *Config
	log    *slog.Logger
	client kubernetes.Interface

	factory    informers.SharedInformerFactory
	podLister  corelisters.PodLister
	nodeLister corelisters.NodeLister
	nsLister   corelisters.NamespaceLister
	synced     []cache.InformerSynced
	queue      *schedulingQueue
	cache      *schedCache
	snap       *snapshot // the scheduling cycle's (worker only)
	nextStart  int       // where the next cycle starts looking at nodes (worker only)

	broadcaster events.EventBroadcaster
	recorder    events.EventRecorder

	registry *prometheus.Registry
	metrics  *metrics
	ln       net.Listener // nil when HealthAddress is empty

	ready    atomic.Bool
	identity string

	mu       sync.Mutex
	stopping bool
	workers  sync.WaitGroup
	binds    sync.WaitGroup // binding goroutines
	bindSem  chan struct{}  // bounds the binds in flight
}

// maxConcurrentBinds bounds the binding goroutines; the client's rate
// limit is what paces them.
const maxConcurrentBinds = 64

// New builds a Scheduler from cfg (validated here) with a client from
// cfg.Kubeconfig, and binds the health listener. Run must follow: it
// closes the listener.
func New(cfg *Config, log *slog.Logger) (*Scheduler, error) {
	if err := roleconfig.Validate("scheduler", cfg); err != nil {
		return nil, err
	}
	kc, err := roleconfig.LoadKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	return NewWithRESTConfig(cfg, kc, log)
}

// NewWithRESTConfig is New with the client configuration given instead of
// read from cfg.Kubeconfig (which it ignores).
func NewWithRESTConfig(cfg *Config, kc *rest.Config, log *slog.Logger) (*Scheduler, error) {
	client, err := roleconfig.NewClient(kc, "kforge-scheduler")
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	// Events get a client of their own, as upstream's scheduler does, so
	// they do not take binds' share of the client rate limit.
	eventClient, err := roleconfig.NewClient(kc, "kforge-scheduler")
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	return newScheduler(cfg, client, eventClient, log)
}

// newScheduler builds the Scheduler around client, recording events
// through eventClient (tests pass fakes).
func newScheduler(cfg *Config, client, eventClient kubernetes.Interface, log *slog.Logger) (*Scheduler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var err error
	s := &Scheduler{
		cfg:      cfg,
		log:      log.With("component", "scheduler"),
		client:   client,
		factory:  informers.NewSharedInformerFactory(client, 0),
		registry: prometheus.NewRegistry(),
		queue:    newSchedulingQueue(),
		cache:    newSchedCache(),
		snap:     newSnapshot(),
		bindSem:  make(chan struct{}, maxConcurrentBinds),
	}
	s.identity = cfg.LeaderElection.ID()
	pods := s.factory.Core().V1().Pods()
	nodes := s.factory.Core().V1().Nodes()
	namespaces := s.factory.Core().V1().Namespaces()
	s.podLister, s.nodeLister, s.nsLister = pods.Lister(), nodes.Lister(), namespaces.Lister()
	s.synced = []cache.InformerSynced{pods.Informer().HasSynced, nodes.Informer().HasSynced, namespaces.Informer().HasSynced}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.podChanged(nil, obj) },
		UpdateFunc: s.podChanged,
		DeleteFunc: s.podDeleted,
	}); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n, ok := obj.(*corev1.Node); ok {
				s.cache.setNode(n)
				s.queue.moveAll(false)
			}
		},
		UpdateFunc: func(old, obj any) {
			n, ok := obj.(*corev1.Node)
			if !ok {
				return
			}
			s.cache.setNode(n)
			if o, ok := old.(*corev1.Node); ok && nodeChangeMatters(o, n) {
				s.queue.moveAll(false)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				s.cache.removeNode(n.Name)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: eventClient.EventsV1()})
	s.recorder = s.broadcaster.NewRecorder(scheme.Scheme, cfg.SchedulerName)
	s.metrics = newMetrics(s.registry, func() float64 { return float64(s.queue.len()) })
	if cfg.HealthAddress != "" {
		if s.ln, err = net.Listen("tcp", cfg.HealthAddress); err != nil {
			return nil, fmt.Errorf("scheduler: health listener: %w", err)
		}
	}
	return s, nil
}

// Registry is the scheduler's own metrics registry; Run adds nothing to
// it, so the role adds the Go and process collectors.
func (s *Scheduler) Registry() *prometheus.Registry { return s.registry }

// HealthAddr is the health listener's address, or nil without one.
func (s *Scheduler) HealthAddr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Ready is true once the informers have synced, until shutdown begins;
// with leader election on, a synced instance is ready whether it leads
// or stands by.
func (s *Scheduler) Ready() bool { return s.ready.Load() }

// Handler serves /healthz, /readyz and /metrics.
func (s *Scheduler) Handler() http.Handler {
	return health.Handler(func() string {
		if !s.Ready() {
			return "informers not synced or shutting down"
		}
		return ""
	}, s.registry)
}

// Run schedules until ctx ends, then shuts down in order: stop taking
// work and wait for the worker, release the lease, stop the informers
// and the event broadcaster, close the health server. It returns nil
// after a cancel, roleconfig.ErrLeaseLost (wrapped) when the lease was
// lost, or the health server's error. A lost lease ends the scheduler
// for good: the process should exit and be restarted.
func (s *Scheduler) Run(ctx context.Context) error {
	serveErr := make(chan error, 1)
	if s.ln != nil {
		defer health.Serve(s.ln, s.Handler(), "scheduler", serveErr)()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.broadcaster.StartRecordingToSinkWithContext(runCtx); err != nil {
		return fmt.Errorf("scheduler: events: %w", err)
	}
	defer s.broadcaster.Shutdown()
	s.factory.Start(runCtx.Done())
	defer s.factory.Shutdown()

	started := make(chan error, 1)
	go func() {
		if !cache.WaitForCacheSync(runCtx.Done(), s.synced...) {
			started <- nil
			return
		}
		s.ready.Store(true)
		s.log.Info("informers synced", "schedulerName", s.cfg.SchedulerName)
		started <- nil
	}()

	var err error
	select {
	case <-started:
	case err = <-serveErr:
	}
	var campaignDone chan error
	cancelCampaign := func() {}
	if err == nil && runCtx.Err() == nil {
		// The campaign stops the worker before it releases the lease, so
		// the next leader never binds beside this one.
		var campaignCtx context.Context
		campaignCtx, cancelCampaign = context.WithCancel(runCtx)
		campaignDone = make(chan error, 1)
		c := roleconfig.Campaign{Config: s.cfg.LeaderElection, Client: s.client, Identity: s.identity, Log: s.log, Lead: s.lead}
		go func() { campaignDone <- c.Run(campaignCtx) }()
		select {
		case <-ctx.Done():
		case err = <-serveErr:
		case err = <-campaignDone:
			campaignDone = nil
			if err != nil {
				err = fmt.Errorf("scheduler: %w", err)
			}
		}
	}

	s.ready.Store(false)
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.queue.close()
	s.workers.Wait()
	s.binds.Wait()
	cancelCampaign()
	if campaignDone != nil {
		<-campaignDone
	}
	cancel()
	return err
}

// Run is the scheduler role: New, the Go and process collectors, Run.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	attrs := []any{"schedulerName", cfg.SchedulerName, "leaderElection", cfg.LeaderElection.Enabled}
	if a := s.HealthAddr(); a != nil {
		attrs = append(attrs, "health", a.String())
	}
	s.log.Warn("scheduler running", attrs...)
	return s.Run(ctx)
}

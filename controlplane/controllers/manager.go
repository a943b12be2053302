package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"

	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/health"
)

// runner is what every controller is to the manager.
type runner interface {
	Run(ctx context.Context, workers int) error
}

// Manager is the controller-manager role: the health/metrics listener,
// leader election and, while leading, the controllers on one shared
// informer factory.
type Manager struct {
	cfg      *Config
	log      *slog.Logger
	client   kubernetes.Interface
	meta     metadata.Interface
	registry *prometheus.Registry
	metrics  *metrics
	leading  atomic.Bool
	ready    atomic.Bool
	// rootCA is what the root-ca-cert-publisher publishes.
	rootCA []byte
}

// NewManager builds a Manager from a validated config: it reads the
// kubeconfig but contacts nothing.
func NewManager(cfg *Config, log *slog.Logger) (*Manager, error) {
	if err := roleconfig.Validate("controller-manager", cfg); err != nil {
		return nil, err
	}
	rc, err := roleconfig.LoadKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("controller-manager: %w", err)
	}
	return NewManagerForConfig(cfg, rc, log)
}

// NewManagerForConfig is NewManager with a client config in hand.
func NewManagerForConfig(cfg *Config, rc *rest.Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client, err := roleconfig.NewClient(rc, "kforge-controller-manager")
	if err != nil {
		return nil, fmt.Errorf("controller-manager: %w", err)
	}
	meta, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("controller-manager: %w", err)
	}
	rootCA, err := rootCABundle(cfg.RootCAFile, rc)
	if err != nil {
		return nil, fmt.Errorf("controller-manager: %w", err)
	}
	reg := prometheus.NewRegistry()
	return &Manager{cfg: cfg, log: log, client: client, meta: meta, registry: reg, metrics: newMetrics(reg), rootCA: rootCA}, nil
}

// Registry is the manager's own Prometheus registry.
func (m *Manager) Registry() *prometheus.Registry { return m.registry }

// Run serves health and metrics, campaigns for the Lease (when leader
// election is on) and runs the controllers while leading. It returns nil
// when ctx ends (the controllers stop before the Lease is released), or
// an error when it cannot start, a controller fails, or the Lease is lost
// (roleconfig.ErrLeaseLost, wrapped): the caller should exit, as upstream
// does, so a fresh process campaigns again with empty caches.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	if m.cfg.MetricsAddress != "" {
		ln, err := net.Listen("tcp", m.cfg.MetricsAddress)
		if err != nil {
			return fmt.Errorf("controller-manager: metrics listener: %w", err)
		}
		srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() { _ = srv.Serve(ln) })
		defer srv.Close() // runs before wg.Wait
		m.log.Info("serving health and metrics", "address", ln.Addr().String())
	}

	c := roleconfig.Campaign{
		Config: m.cfg.LeaderElection,
		Client: m.client,
		Log:    m.log,
		Lead: func(ctx context.Context) error {
			m.leading.Store(true)
			m.metrics.leader.Set(1)
			defer func() {
				m.leading.Store(false)
				m.metrics.leader.Set(0)
			}()
			return m.runControllers(ctx)
		},
	}
	m.ready.Store(true) // campaigning is ready: a standby is healthy
	if err := c.Run(ctx); err != nil {
		if errors.Is(err, roleconfig.ErrLeaseLost) {
			return fmt.Errorf("controller-manager: %w", err)
		}
		return err
	}
	return nil
}

// runControllers starts the enabled controllers on one shared informer
// factory and blocks until ctx ends and every controller has returned.
func (m *Manager) runControllers(ctx context.Context) error {
	f := informers.NewSharedInformerFactory(m.client, m.cfg.Resync)
	// One event broadcaster for the process; each controller records
	// through its own recorder, named as upstream's.
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: m.client.EventsV1()})
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		return fmt.Errorf("controller-manager: events: %w", err)
	}
	defer broadcaster.Shutdown()
	var runners []runner
	add := func(name string, build func() (runner, error)) error {
		if !m.cfg.Enabled(name) {
			return nil
		}
		r, err := build()
		if err != nil {
			return fmt.Errorf("controller-manager: %s: %w", name, err)
		}
		runners = append(runners, r)
		return nil
	}
	// addIf adds a controller that only runs when its settings are given.
	addIf := func(on bool, name string, build func() (runner, error)) error {
		if !on {
			return nil
		}
		return add(name, build)
	}
	log := m.log
	if err := errors.Join(
		add(NameReplicaSet, func() (runner, error) {
			c, err := NewReplicaSetController(m.client, f.Apps().V1().ReplicaSets(), f.Core().V1().Pods(), log, m.metrics)
			if err == nil {
				c.recorder = newRecorder(broadcaster, reporterReplicaSet)
			}
			return c, err
		}),
		add(NameDeployment, func() (runner, error) {
			c, err := NewDeploymentController(m.client, f.Apps().V1().Deployments(), f.Apps().V1().ReplicaSets(), log, m.metrics)
			if err == nil {
				c.recorder = newRecorder(broadcaster, reporterDeployment)
			}
			return c, err
		}),
		add(NameEndpoints, func() (runner, error) {
			return NewEndpointsController(m.client, f.Core().V1().Services(), f.Core().V1().Pods(),
				f.Core().V1().Endpoints(), f.Discovery().V1().EndpointSlices(), log, m.metrics)
		}),
		add(NameServiceAccount, func() (runner, error) {
			return NewServiceAccountController(m.client, f.Core().V1().Namespaces(), f.Core().V1().ServiceAccounts(), log, m.metrics)
		}),
		add(NameGarbageCollector, func() (runner, error) {
			return NewGarbageCollector(m.client, f, log, m.metrics)
		}),
		add(NameNamespace, func() (runner, error) {
			return NewNamespaceController(m.client, m.meta, f.Core().V1().Namespaces(), log, m.metrics)
		}),
		addIf(len(m.rootCA) > 0, NameRootCACertPublisher, func() (runner, error) {
			return NewRootCACertPublisher(m.client, f.Core().V1().Namespaces(), m.rootCA, m.cfg.Resync, log, m.metrics)
		}),
		add(NameClusterRoleAggregation, func() (runner, error) {
			return NewClusterRoleAggregationController(m.client, f.Rbac().V1().ClusterRoles(), log, m.metrics)
		}),
		addIf(m.cfg.ClusterCIDR != "", NameNodeIPAM, func() (runner, error) {
			return NewNodeIPAMController(m.client, f.Core().V1().Nodes(), m.cfg.ClusterCIDR, m.cfg.NodeCIDRMaskSize, log, m.metrics)
		}),
		add(NameDaemonSet, func() (runner, error) {
			c, err := NewDaemonSetController(m.client, f.Apps().V1().DaemonSets(), f.Apps().V1().ControllerRevisions(),
				f.Core().V1().Pods(), f.Core().V1().Nodes(), log, m.metrics)
			if err == nil {
				c.recorder = newRecorder(broadcaster, reporterDaemonSet)
			}
			return c, err
		}),
		add(NameStatefulSet, func() (runner, error) {
			c, err := NewStatefulSetController(m.client, f.Apps().V1().StatefulSets(), f.Apps().V1().ControllerRevisions(),
				f.Core().V1().Pods(), log, m.metrics)
			if err == nil {
				c.recorder = newRecorder(broadcaster, reporterStatefulSet)
			}
			return c, err
		}),
		add(NameJob, func() (runner, error) {
			c, err := NewJobController(m.client, f.Batch().V1().Jobs(), f.Core().V1().Pods(), log, m.metrics)
			if err == nil {
				c.recorder = newRecorder(broadcaster, reporterJob)
			}
			return c, err
		}),
		add(NameCronJob, func() (runner, error) {
			c, err := NewCronJobController(m.client, f.Batch().V1().CronJobs(), f.Batch().V1().Jobs(), log, m.metrics)
			if err == nil {
				c.recorder = newRecorder(broadcaster, reporterCronJob)
			}
			return c, err
		}),
		add(NameDisruption, func() (runner, error) {
			return NewDisruptionController(m.client, f.Policy().V1().PodDisruptionBudgets(), f.Core().V1().Pods(),
				f.Apps().V1().ReplicaSets(), f.Apps().V1().Deployments(), f.Apps().V1().StatefulSets(), log, m.metrics)
		}),
		add(NameTTLAfterFinished, func() (runner, error) {
			return NewTTLAfterFinishedController(m.client, f.Batch().V1().Jobs(), log, m.metrics)
		}),
		add(NameNodeLifecycle, func() (runner, error) {
			c, err := NewNodeLifecycleController(m.client, f.Core().V1().Nodes(), f.Coordination().V1().Leases(), f.Core().V1().Pods(),
				m.cfg.NodeMonitorGracePeriod, log, m.metrics)
			if err == nil {
				c.recorder = newRecorder(broadcaster, reporterNodeLifecycle)
			}
			return c, err
		}),
	); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown() // waits for the informers' goroutines
	var wg sync.WaitGroup
	errs := make([]error, len(runners))
	for i, r := range runners {
		wg.Go(func() { errs[i] = r.Run(ctx, m.cfg.Workers) })
	}
	m.ready.Store(true)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(errs...)
}

// Handler serves /healthz (the process is up), /readyz (campaigning or
// running controllers) and /metrics.
func (m *Manager) Handler() http.Handler {
	return health.Handler(func() string {
		if !m.ready.Load() {
			return "informers not synced or shutting down"
		}
		return ""
	}, m.registry)
}

// Leading reports whether this manager holds the Lease now.
func (m *Manager) Leading() bool { return m.leading.Load() }

// Run is the controller-manager role: a Manager from cfg with the Go and
// process collectors, until ctx ends.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	m, err := NewManager(cfg, log)
	if err != nil {
		return err
	}
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m.Run(ctx)
}

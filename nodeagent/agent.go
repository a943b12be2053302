package nodeagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"

	"kforge.dev/kforge/controlplane/lb"
	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/certreload"
	"kforge.dev/kforge/internal/health"
	"kforge.dev/kforge/nodeagent/server"
)

// How the agent paces itself.
const (
	podWorkers     = 8
	podResync      = 10 * time.Second // every pod is synced at least this often
	orphanInterval = 30 * time.Second
	syncBackoffMin = 500 * time.Millisecond
	syncBackoffMax = 30 * time.Second
)

// Agent is the node agent: it registers its Node, keeps its Lease and
// status fresh, and runs the pods bound to the node. Build it with New,
// then call Run once.
type Agent struct {
	cfg     *Config
	log     *slog.Logger
	client  kubernetes.Interface
	version string

	rt  *runtime
	net *network

	factory     informers.SharedInformerFactory // pods of this node
	svcFactory  informers.SharedInformerFactory // services, for the env vars
	pods        corelisters.PodLister
	services    corelisters.ServiceLister
	nodes       corelisters.NodeLister // all Nodes, with a cluster CIDR only
	podNetKick  chan struct{}
	synced      []cache.InformerSynced
	queue       workqueue.TypedRateLimitingInterface[string]
	broadcaster events.EventBroadcaster
	recorder    events.EventRecorder
	probes      *prober
	cgroups     map[string]bool

	registry *prometheus.Registry
	metrics  *agentMetrics
	ln       net.Listener
	// The agent API (nodeagent/server): its listener and TLS, nil when
	// off.
	apiLn  net.Listener
	api    *server.Server
	apiTLS *tls.Config
	// apiReload re-reads the agent API's certificate and client CA.
	apiReload *certreload.Watcher
	started   time.Time

	runtimeVersion atomic.Value // string
	podCIDR        atomic.Value // string
	nodeReady      atomic.Bool
	ready          atomic.Bool

	// Admission (admit.go): the pods admitted to run here, and the
	// allocatable last reported.
	admitMu     sync.Mutex
	admitted    map[types.UID]bool
	allocatable atomic.Value // corev1.ResourceList

	mu         sync.Mutex
	pullErrors map[string]int // image → failed attempts in a row, for ImagePullBackOff
	readySeen  map[string]bool
	workers    sync.WaitGroup
	tokens     *tokenCache // service-account tokens of the pods' volumes
}

// options are knobs tests turn; the role uses the zero value.
type options struct {
	// cniExec runs CNI plugins; nil runs them in the agent's namespace.
	cniExec invoke.Exec
}

// New builds an Agent from cfg (validated here) with a client from
// cfg.Kubeconfig, connects to containerd (lazily) and binds the health
// listener. Run must follow: it closes both.
func New(cfg *Config, log *slog.Logger) (*Agent, error) {
	if err := roleconfig.Validate("agent", cfg); err != nil {
		return nil, err
	}
	kc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("agent: kubeconfig: %w", err)
	}
	return NewWithRESTConfig(cfg, kc, log)
}

// NewWithRESTConfig is New with the client configuration given instead of
// read from cfg.Kubeconfig (which it ignores).
func NewWithRESTConfig(cfg *Config, kc *rest.Config, log *slog.Logger) (*Agent, error) {
	return newAgent(cfg, kc, log, options{})
}

func newAgent(cfg *Config, kc *rest.Config, log *slog.Logger, o options) (*Agent, error) {
	if err := roleconfig.Validate("agent", cfg); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withNodeName()
	kc = rest.CopyConfig(kc)
	kc.UserAgent = "kforge-agent/" + cfg.NodeName
	if kc.QPS == 0 {
		kc.QPS, kc.Burst = 50, 100
	}
	client, err := kubernetes.NewForConfig(kc)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{
		cfg:        cfg,
		log:        log.With("component", "agent", "node", cfg.NodeName),
		client:     client,
		version:    cfg.Version,
		cgroups:    cgroupControllers(),
		registry:   prometheus.NewRegistry(),
		pullErrors: map[string]int{},
		readySeen:  map[string]bool{},
		admitted:   map[types.UID]bool{},
		tokens:     newTokenCache(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](syncBackoffMin, syncBackoffMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "agent-pods"}),
	}
	if a.version == "" {
		a.version = "dev"
	}
	if a.net, err = newNetwork(cfg, o.cniExec); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if a.rt, err = newRuntime(cfg, a.log); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.probes = newProber(a)
	a.factory = informers.NewSharedInformerFactoryWithOptions(client, podResync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	a.svcFactory = informers.NewSharedInformerFactory(client, 0)
	podInf := a.factory.Core().V1().Pods()
	svcInf := a.svcFactory.Core().V1().Services()
	a.pods, a.services = podInf.Lister(), svcInf.Lister()
	a.synced = []cache.InformerSynced{podInf.Informer().HasSynced, svcInf.Informer().HasSynced}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueue,
		UpdateFunc: func(_, obj any) { a.enqueue(obj) },
		DeleteFunc: a.enqueue,
	}); err != nil {
		a.rt.c.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.watchNodes(); err != nil {
		a.rt.c.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	a.recorder = a.broadcaster.NewRecorder(scheme.Scheme, "kubelet")
	a.metrics = newAgentMetrics(a.registry, a.runningPods)
	a.rt.timing = a.metrics.since
	a.started = time.Now()
	if cfg.HealthAddress != "" {
		if a.ln, err = net.Listen("tcp", cfg.HealthAddress); err != nil {
			a.rt.c.Close()
			return nil, fmt.Errorf("agent: health listener: %w", err)
		}
	}
	if cfg.Server.Enabled() {
		if err := a.newAPI(client); err != nil {
			a.rt.c.Close()
			if a.ln != nil {
				a.ln.Close()
			}
			return nil, err
		}
	}
	return a, nil
}

// withNodeName is a copy of c with NodeName defaulted to the host name.
func (c *Config) withNodeName() *Config {
	cp := *c
	if cp.NodeName == "" {
		cp.NodeName = defaultNodeName()
	}
	return &cp
}

func (a *Agent) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	a.queue.Add(key)
}

// enqueueAll queues every pod of the node.
func (a *Agent) enqueueAll() {
	pods, err := a.pods.List(everything)
	if err != nil {
		return
	}
	for _, p := range pods {
		a.enqueue(p)
	}
}

// newAPI builds the agent API and binds its listener; the bound port is
// what the Node publishes in status.daemonEndpoints.
func (a *Agent) newAPI(client kubernetes.Interface) error {
	tc, reload, err := server.TLSConfig(a.cfg.Server.CertFile, a.cfg.Server.KeyFile, a.cfg.Server.ClientCAFile)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	api, err := server.New(server.Options{NodeName: a.cfg.NodeName, Pods: podsAPI{a}, Client: client,
		Metrics: a.registry, Logger: a.log})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	ln, err := net.Listen("tcp", a.cfg.Server.Address)
	if err != nil {
		return fmt.Errorf("agent: API listener: %w", err)
	}
	reload.Log = a.log
	a.api, a.apiTLS, a.apiReload, a.apiLn = api, tc, reload, ln
	a.cfg.serverPort = int32(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

// APIAddr is the agent API's address, or nil without it.
func (a *Agent) APIAddr() net.Addr {
	if a.apiLn == nil {
		return nil
	}
	return a.apiLn.Addr()
}

// HealthAddr is the health listener's address, or nil without one.
func (a *Agent) HealthAddr() net.Addr {
	if a.ln == nil {
		return nil
	}
	return a.ln.Addr()
}

// NodeName is the name of the Node this agent runs.
func (a *Agent) NodeName() string { return a.cfg.NodeName }

// Ready is true once the node is registered and the pod informers have
// synced, until shutdown begins.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Registry is the agent's metrics registry.
func (a *Agent) Registry() *prometheus.Registry { return a.registry }

// Handler serves /healthz (the process is up), /readyz (Ready, and the
// Node it reports is Ready: what kforge up waits for) and /metrics.
func (a *Agent) Handler() http.Handler {
	return health.Handler(func() string {
		switch {
		case !a.Ready():
			return "node not registered, informers not synced, or shutting down"
		case !a.nodeReady.Load():
			return "the Node is not Ready (container runtime unreachable, or no pod CIDR yet)"
		}
		return ""
	}, a.registry)
}

// Run runs the agent until ctx ends, then shuts down in order: stop
// taking pod work and wait for the workers, stop the probes, the
// heartbeats and the informers, flush events, close the health server
// and the containerd connection. Containers keep running: a restarted
// agent adopts them. It returns nil after a cancel, or the first error
// that stops it.
func (a *Agent) Run(ctx context.Context) error {
	defer a.rt.c.Close()
	// Container output copies stop (FIFOs kept for the next agent) once
	// the pod workers are done.
	defer a.rt.closeIO()
	var bg sync.WaitGroup // every goroutine below; waited for before returning
	runCtx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		bg.Wait()
	}()
	serveErr := make(chan error, 3)
	if a.api != nil {
		bg.Go(func() {
			if err := a.api.Serve(runCtx, a.apiLn, a.apiTLS); err != nil {
				serveErr <- err
			}
		})
		bg.Go(func() { a.apiReload.Run(runCtx) })
	}
	if a.ln != nil {
		srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
		bg.Go(func() {
			if err := srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("agent: health server: %w", err)
			}
		})
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			_ = srv.Shutdown(sctx)
		}()
	}
	// The node-local apiserver load balancer first: the kubeconfig may
	// point at it.
	var proxy *lb.Balancer
	if len(a.cfg.APIServerProxy.Backends) > 0 {
		b, err := lb.New(a.cfg.APIServerProxy.lbConfig(), a.log)
		if err != nil {
			return fmt.Errorf("agent: apiserver proxy: %w", err)
		}
		if err := b.Start(runCtx); err != nil {
			return fmt.Errorf("agent: apiserver proxy: %w", err)
		}
		defer b.Close()
		proxy = b
		// Registering before a backend passed its first check would only
		// be refused and retried 2 s later.
		_ = wait.PollUntilContextTimeout(runCtx, 50*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
			return b.Ready(), nil
		})
		bg.Go(func() {
			select {
			case err := <-b.Err():
				serveErr <- fmt.Errorf("agent: apiserver proxy: %w", err)
			case <-runCtx.Done():
			}
		})
	}
	if err := a.broadcaster.StartRecordingToSinkWithContext(runCtx); err != nil {
		return fmt.Errorf("agent: events: %w", err)
	}
	defer a.broadcaster.Shutdown()

	// Register, retrying while the apiserver is unreachable.
	var node *corev1.Node
	err := wait.PollUntilContextCancel(runCtx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := a.registerNode(ctx)
		if err != nil {
			a.log.Warn("node registration failed, retrying", "err", err)
			return false, nil
		}
		node = n
		return true, nil
	})
	if err != nil {
		return nil // cancelled
	}
	a.setPodCIDR(node)
	if proxy != nil {
		f, err := a.followAPIServers(proxy)
		if err != nil {
			return fmt.Errorf("agent: apiserver proxy: %w", err)
		}
		f.Start(runCtx.Done())
		defer f.Shutdown()
	}
	if err := a.renewLease(runCtx); err != nil {
		a.log.Warn("lease", "err", err)
	}
	if err := a.updateNodeStatus(runCtx); err != nil {
		a.log.Warn("node status", "err", err)
	}

	a.factory.Start(runCtx.Done())
	a.svcFactory.Start(runCtx.Done())
	defer a.factory.Shutdown()
	defer a.svcFactory.Shutdown()
	if !cache.WaitForCacheSync(runCtx.Done(), a.synced...) {
		return nil
	}
	if err := a.cleanupOrphans(runCtx); err != nil {
		a.log.Warn("cleaning up orphans", "err", err)
	}
	a.ready.Store(true)
	a.log.Info("agent running", "containerd", a.cfg.Containerd.Socket)

	bg.Go(func() {
		wait.UntilWithContext(runCtx, func(ctx context.Context) {
			if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("lease renewal failed", "err", err)
			}
		}, a.cfg.LeaseRenewInterval)
	})
	bg.Go(func() {
		wait.UntilWithContext(runCtx, func(ctx context.Context) {
			if err := a.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("node status update failed", "err", err)
			}
		}, a.cfg.StatusUpdateInterval)
	})
	bg.Go(func() { a.watchExits(runCtx) })
	if a.nodes != nil {
		bg.Go(func() { a.runPodNetwork(runCtx) })
	}
	bg.Go(func() {
		wait.UntilWithContext(runCtx, func(ctx context.Context) {
			if err := a.cleanupOrphans(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("cleaning up orphans", "err", err)
			}
		}, orphanInterval)
	})
	for range podWorkers {
		a.workers.Go(func() {
			for a.processNext(runCtx) {
			}
		})
	}

	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	a.ready.Store(false)
	a.queue.ShutDown()
	cancel()
	a.workers.Wait()
	a.probes.stopAll()
	return err
}

func (a *Agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	err := a.syncPod(ctx, key)
	if err == nil {
		a.queue.Forget(key)
		return true
	}
	if ctx.Err() == nil {
		a.log.Warn("pod sync failed, retrying", "pod", key, "err", err)
		a.queue.AddRateLimited(key)
	}
	return true
}

// watchExits requeues a pod whenever one of its containers exits, so a
// crash is seen at once rather than at the next resync. It resubscribes
// when containerd restarts.
func (a *Agent) watchExits(ctx context.Context) {
	for ctx.Err() == nil {
		subCtx, cancel := context.WithCancel(ctx)
		ch, errs := a.rt.c.Subscribe(subCtx, `topic=="/tasks/exit"`)
	loop:
		for {
			select {
			case env := <-ch:
				if env == nil {
					break loop
				}
				ev, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				exit, ok := ev.(*apievents.TaskExit)
				if !ok || exit.ID != exit.ContainerID {
					continue // an exec'd process (a probe), not the container
				}
				a.requeueContainer(ctx, exit.ContainerID)
			case err := <-errs:
				if err != nil && ctx.Err() == nil {
					a.log.Warn("containerd events", "err", err)
				}
				break loop
			case <-ctx.Done():
				break loop
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func (a *Agent) requeueContainer(ctx context.Context, id string) {
	c, err := a.rt.c.LoadContainer(ctx, id)
	if err != nil {
		return
	}
	l, err := c.Labels(ctx)
	if err != nil || l[labelPodUID] == "" {
		return
	}
	a.queue.Add(l[labelPodNamespace] + "/" + l[labelPodName])
}

// Run is the agent role: New, the Go and process collectors, Run.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	a, err := New(cfg, log)
	if err != nil {
		return err
	}
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	attrs := []any{"node", a.cfg.NodeName, "containerd", cfg.Containerd.Socket}
	if addr := a.HealthAddr(); addr != nil {
		attrs = append(attrs, "health", addr.String())
	}
	if addr := a.APIAddr(); addr != nil {
		attrs = append(attrs, "api", addr.String())
	}
	a.log.Warn("agent starting", attrs...)
	return a.Run(ctx)
}

// agentMetrics are the agent's own Prometheus metrics.
type agentMetrics struct {
	startLatency prometheus.Histogram
	syncs        *prometheus.CounterVec
	// operations times the steps of starting a pod, as the kubelet's
	// runtime operation histograms do: where a pod's start time goes.
	operations *prometheus.HistogramVec
}

// The operations timed in kforge_agent_pod_operation_duration_seconds.
const (
	opNetNS        = "sandbox_netns"   // the pod's network namespace
	opNetwork      = "sandbox_network" // CNI ADD of its interface and address
	opVolumes      = "volumes"         // the pod's volumes set up
	opImage        = "image"           // the image looked up (or pulled) and unpacked
	opSpec         = "container_spec"  // the OCI spec: env, mounts, security
	opCreate       = "container_create"
	opStart        = "container_start" // task created and started
	opStatusUpdate = "status_update"   // the pod status written to the API
)

// since records one operation that began at start.
func (m *agentMetrics) since(op string, start time.Time) {
	if m != nil {
		m.operations.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
}

func newAgentMetrics(reg prometheus.Registerer, running func() float64) *agentMetrics {
	m := &agentMetrics{
		startLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kforge_agent_pod_start_duration_seconds",
			Help:    "Time from a pod's creation to the agent first reporting it Ready.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_agent_pod_syncs_total",
			Help: "Pod syncs by result (ok or error).",
		}, []string{"result"}),
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kforge_agent_pod_operation_duration_seconds",
			Help:    "Duration of the steps of starting a pod, by operation.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"operation"}),
	}
	reg.MustRegister(m.startLatency, m.syncs, m.operations, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kforge_agent_running_pods",
		Help: "Pods of this node the agent knows, not terminated.",
	}, running))
	return m
}

func (a *Agent) runningPods() float64 {
	pods, err := a.pods.List(everything)
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range pods {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			n++
		}
	}
	return float64(n)
}

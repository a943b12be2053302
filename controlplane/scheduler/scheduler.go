package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// Backoff for pods that could not be placed (and for API errors): the
// same bounds upstream uses for unschedulable pods. A node change or a
// deleted pod requeues them at once.
const (
	initialBackoff = 500 * time.Millisecond
	maxBackoff     = 10 * time.Second
)

// errUnschedulable tells the worker to back off without logging an error.
var errUnschedulable = errors.New("no feasible node")

// Scheduler places the pods whose spec.schedulerName is its name onto
// nodes. Build it with New, then call Run once.
type Scheduler struct {
	cfg    *Config
	log    *slog.Logger
	client kubernetes.Interface

	factory    informers.SharedInformerFactory
	podLister  corelisters.PodLister
	nodeLister corelisters.NodeLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]

	broadcaster events.EventBroadcaster
	recorder    events.EventRecorder

	registry *prometheus.Registry
	metrics  *metrics
	ln       net.Listener // nil when HealthAddress is empty

	ready    atomic.Bool
	identity string

	mu       sync.Mutex
	assumed  map[string]*corev1.Pod // bound by us, not yet seen bound by the informer
	firstTry map[string]time.Time   // first attempt of each pending pod
	stopping bool
	workers  sync.WaitGroup
	rotate   int // the tie-break start, moved on each placement (worker only)
}

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
	return newScheduler(cfg, client, log)
}

// newScheduler builds the Scheduler around client (tests pass a fake).
func newScheduler(cfg *Config, client kubernetes.Interface, log *slog.Logger) (*Scheduler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var err error
	s := &Scheduler{
		cfg:      cfg,
		log:      log.With("component", "scheduler"),
		client:   client,
		factory:  informers.NewSharedInformerFactory(client, 0),
		assumed:  map[string]*corev1.Pod{},
		firstTry: map[string]time.Time{},
		registry: prometheus.NewRegistry(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](initialBackoff, maxBackoff),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "scheduler"}),
	}
	s.identity = cfg.LeaderElection.ID()
	pods := s.factory.Core().V1().Pods()
	nodes := s.factory.Core().V1().Nodes()
	s.podLister, s.nodeLister = pods.Lister(), nodes.Lister()
	s.synced = []cache.InformerSynced{pods.Informer().HasSynced, nodes.Informer().HasSynced}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.podChanged(nil, obj) },
		UpdateFunc: s.podChanged,
		DeleteFunc: s.podDeleted,
	}); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.requeuePending() },
		UpdateFunc: func(old, obj any) {
			if nodeChangeMatters(old.(*corev1.Node), obj.(*corev1.Node)) {
				s.requeuePending()
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	s.recorder = s.broadcaster.NewRecorder(scheme.Scheme, cfg.SchedulerName)
	s.metrics = newMetrics(s.registry, s.pendingPods)
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
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready: informers not synced or shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
}

// Run schedules until ctx ends, then shuts down in order: stop taking
// work and wait for the worker, release the lease, stop the informers
// and the event broadcaster, close the health server. It returns nil
// after a cancel, roleconfig.ErrLeaseLost (wrapped) when the lease was
// lost, or the health server's error. A lost lease ends the scheduler
// for good: the process should exit and be restarted.
func (s *Scheduler) Run(ctx context.Context) error {
	var srv *http.Server
	serveErr := make(chan error, 1)
	if s.ln != nil {
		srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("scheduler: health server: %w", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
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
	s.queue.ShutDown()
	s.workers.Wait()
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

// lead runs the worker until ctx ends (shutdown or a lost lease): the
// queue shuts down with it, since the scheduler does not lead twice. A
// single worker keeps placements sequential, so each one sees the
// resources the previous one took.
func (s *Scheduler) lead(ctx context.Context) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	s.workers.Add(1)
	s.mu.Unlock()
	defer s.workers.Done()
	s.metrics.leader.Set(1)
	defer s.metrics.leader.Set(0)
	stop := context.AfterFunc(ctx, s.queue.ShutDown)
	defer stop()
	s.requeuePending() // pods added while standing by were queued too; this is cheap insurance
	for s.processNext(ctx) {
	}
	return nil
}

func (s *Scheduler) processNext(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	if ctx.Err() != nil {
		// Not leading any more: leave the pod for the next leader (or
		// for us, when we lead again).
		s.queue.Add(key)
		return false
	}
	switch err := s.sync(ctx, key); {
	case err == nil:
		s.queue.Forget(key)
	case errors.Is(err, errUnschedulable):
		s.queue.AddRateLimited(key)
	default:
		s.log.Warn("scheduling failed; will retry", "pod", key, "err", err)
		s.queue.AddRateLimited(key)
	}
	return true
}

// needsScheduling: ours, unbound, alive.
func (s *Scheduler) needsScheduling(pod *corev1.Pod) bool {
	name := pod.Spec.SchedulerName
	if name == "" {
		name = DefaultSchedulerName
	}
	return name == s.cfg.SchedulerName && pod.Spec.NodeName == "" &&
		pod.DeletionTimestamp == nil && !terminated(pod)
}

// podChanged handles an added pod (old nil) or an updated one. An
// update requeues a pending pod only when its spec changed (tolerations,
// say): our own status writes must not cut its backoff short.
func (s *Scheduler) podChanged(old, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key, err := cache.MetaNamespaceKeyFunc(pod)
	if err != nil {
		return
	}
	if pod.Spec.NodeName != "" {
		s.mu.Lock()
		delete(s.assumed, key)
		delete(s.firstTry, key)
		s.mu.Unlock()
		return
	}
	if !s.needsScheduling(pod) {
		return
	}
	if o, ok := old.(*corev1.Pod); ok && s.needsScheduling(o) && equality.Semantic.DeepEqual(o.Spec, pod.Spec) {
		return
	}
	s.queue.Add(key)
}

func (s *Scheduler) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key, err := cache.MetaNamespaceKeyFunc(pod)
	if err != nil {
		return
	}
	s.mu.Lock()
	delete(s.assumed, key)
	delete(s.firstTry, key)
	s.mu.Unlock()
	if pod.Spec.NodeName != "" {
		s.requeuePending() // its resources and ports are free now
	}
}

// requeuePending queues every pod that waits for this scheduler, at once
// (ahead of its backoff): something changed that may make it fit.
func (s *Scheduler) requeuePending() {
	pods, err := s.podLister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		if s.needsScheduling(p) {
			if key, err := cache.MetaNamespaceKeyFunc(p); err == nil {
				s.queue.Add(key)
			}
		}
	}
}

func (s *Scheduler) pendingPods() float64 {
	pods, err := s.podLister.List(labels.Everything())
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range pods {
		if s.needsScheduling(p) {
			n++
		}
	}
	return float64(n)
}

// nodeChangeMatters: heartbeats change nodes every few seconds; only
// what the filters and scores read should requeue pending pods.
func nodeChangeMatters(old, cur *corev1.Node) bool {
	if nodeReady(old) != nodeReady(cur) || old.Spec.Unschedulable != cur.Spec.Unschedulable ||
		!labels.Equals(old.Labels, cur.Labels) || len(old.Spec.Taints) != len(cur.Spec.Taints) {
		return true
	}
	for i := range old.Spec.Taints {
		if !old.Spec.Taints[i].MatchTaint(&cur.Spec.Taints[i]) || old.Spec.Taints[i].Value != cur.Spec.Taints[i].Value {
			return true
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods} {
		a, b := old.Status.Allocatable[r], cur.Status.Allocatable[r]
		if a.Cmp(b) != 0 {
			return true
		}
	}
	return false
}

// sync tries to place the pod named key. It is level-triggered: it reads
// the pod, the nodes and the pods on them from the listers (plus the
// binds this scheduler made that the informer has not shown yet).
func (s *Scheduler) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := s.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !s.needsScheduling(pod) {
		return nil
	}
	s.mu.Lock()
	_, isAssumed := s.assumed[key]
	first, seen := s.firstTry[key]
	if !seen && !isAssumed {
		first = time.Now()
		s.firstTry[key] = first
	}
	s.mu.Unlock()
	if isAssumed {
		return nil
	}

	nodes, err := s.nodeLister.List(labels.Everything())
	if err != nil {
		return err
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	all, err := s.podLister.List(labels.Everything())
	if err != nil {
		return err
	}
	infos := buildNodeInfos(nodes, s.withAssumed(all))
	var feasible []*nodeInfo
	reasons := map[string]int{}
	for _, n := range nodes {
		ni := infos[n.Name]
		why := filter(pod, ni)
		if len(why) == 0 {
			feasible = append(feasible, ni)
			continue
		}
		for _, r := range why {
			reasons[r]++
		}
	}
	if len(feasible) == 0 {
		msg := failureMessage(len(nodes), reasons)
		s.metrics.attempts.WithLabelValues(resultUnschedulable).Inc()
		s.log.Info("unschedulable", "pod", key, "reason", msg)
		s.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "FailedScheduling", "Scheduling", msg)
		if err := s.markUnschedulable(ctx, pod, msg); err != nil {
			s.log.Warn("updating PodScheduled", "pod", key, "err", err)
		}
		return errUnschedulable
	}

	ni := pickNode(pod, feasible, s.rotate)
	s.rotate++
	node := ni.node.Name
	err = s.client.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{})
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		// Another scheduler instance bound it in the moment between two
		// leaders; the apiserver kept the first bind. Nothing to do.
		s.metrics.attempts.WithLabelValues(resultConflict).Inc()
		s.log.Info("pod already bound", "pod", key)
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		s.metrics.attempts.WithLabelValues(resultError).Inc()
		return fmt.Errorf("binding %s to %s: %w", key, node, err)
	}
	bound := pod.DeepCopy()
	bound.Spec.NodeName = node
	s.mu.Lock()
	s.assumed[key] = bound
	delete(s.firstTry, key)
	s.mu.Unlock()
	s.metrics.attempts.WithLabelValues(resultScheduled).Inc()
	s.metrics.e2e.Observe(time.Since(first).Seconds())
	s.log.Info("scheduled", "pod", key, "node", node)
	s.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Scheduled", "Binding",
		"Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, node)
	return nil
}

// withAssumed replaces the informer's copies of pods this scheduler has
// bound but the informer still shows unbound.
func (s *Scheduler) withAssumed(pods []*corev1.Pod) []*corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.assumed) == 0 {
		return pods
	}
	out := make([]*corev1.Pod, len(pods))
	for i, p := range pods {
		out[i] = p
		if p.Spec.NodeName != "" {
			continue
		}
		if a := s.assumed[p.Namespace+"/"+p.Name]; a != nil && a.UID == p.UID {
			out[i] = a
		}
	}
	return out
}

// markUnschedulable sets the pod's PodScheduled condition to False,
// reason Unschedulable, through the status subresource; it skips the
// write when the condition already says so.
func (s *Scheduler) markUnschedulable(ctx context.Context, pod *corev1.Pod, msg string) error {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse &&
			c.Reason == corev1.PodReasonUnschedulable && c.Message == msg {
			return nil
		}
	}
	p := pod.DeepCopy()
	cond := corev1.PodCondition{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: corev1.PodReasonUnschedulable, Message: msg,
		LastTransitionTime: metav1.Now(),
	}
	replaced := false
	for i, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			if c.Status == cond.Status {
				cond.LastTransitionTime = c.LastTransitionTime
			}
			p.Status.Conditions[i] = cond
			replaced = true
		}
	}
	if !replaced {
		p.Status.Conditions = append(p.Status.Conditions, cond)
	}
	_, err := s.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // the next attempt reads the newer pod
	}
	return err
}

package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// loop is the part every controller shares: a named rate-limited queue of
// keys drained by workers that call sync.
type loop struct {
	name    string
	queue   workqueue.TypedRateLimitingInterface[string]
	sync    func(ctx context.Context, key string) error
	synced  []cache.InformerSynced
	log     *slog.Logger
	metrics *metrics
}

func newLoop(name string, log *slog.Logger, m *metrics, sync func(context.Context, string) error, synced ...cache.InformerSynced) *loop {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &loop{
		name: name,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		sync:    sync,
		synced:  synced,
		log:     log.With("controller", name),
		metrics: m,
	}
}

// enqueue adds obj's namespace/name key; handlers call only this.
func (l *loop) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	l.queue.Add(key)
}

// handler enqueues the object itself on every event.
func (l *loop) handler() cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    l.enqueue,
		UpdateFunc: func(_, n any) { l.enqueue(n) },
		DeleteFunc: l.enqueue,
	}
}

// Run waits for the caches, runs workers until ctx ends, then shuts the
// queue down and waits for the workers to return.
func (l *loop) Run(ctx context.Context, workers int) error {
	defer l.queue.ShutDown()
	if !cache.WaitForNamedCacheSync(l.name, ctx.Done(), l.synced...) {
		return fmt.Errorf("%s: caches did not sync", l.name)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for l.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	l.queue.ShutDown()
	wg.Wait()
	return nil
}

func (l *loop) processNext(ctx context.Context) bool {
	key, quit := l.queue.Get()
	if quit {
		return false
	}
	defer l.queue.Done(key)
	start := time.Now()
	err := l.sync(ctx, key)
	if l.metrics != nil {
		l.metrics.observe(l.name, err, time.Since(start))
	}
	if err == nil {
		l.queue.Forget(key)
		return true
	}
	if ctx.Err() == nil {
		l.log.Info("sync failed, retrying", "key", key, "err", err)
	}
	l.queue.AddRateLimited(key)
	return true
}

// metrics are the controller manager's own Prometheus metrics.
type metrics struct {
	syncs    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	leader   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_controller_syncs_total",
			Help: "Syncs by controller and result (ok or error).",
		}, []string{"controller", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kforge_controller_sync_duration_seconds",
			Help:    "How long one sync took, by controller.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"controller"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kforge_controller_manager_leader",
			Help: "1 while this controller manager holds the leader Lease.",
		}),
	}
	reg.MustRegister(m.syncs, m.duration, m.leader)
	return m
}

func (m *metrics) observe(controller string, err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.syncs.WithLabelValues(controller, result).Inc()
	m.duration.WithLabelValues(controller).Observe(d.Seconds())
}

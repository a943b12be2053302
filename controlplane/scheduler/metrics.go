package scheduler

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Attempt results, the values of the result label of
// kforge_scheduler_schedule_attempts_total.
const (
	resultScheduled     = "scheduled"
	resultUnschedulable = "unschedulable"
	resultError         = "error"
	// resultConflict is a bind the apiserver refused because the pod was
	// already bound (by another scheduler that briefly thought it led):
	// not a failure, the pod is placed.
	resultConflict = "conflict"
)

type metrics struct {
	attempts *prometheus.CounterVec
	e2e      prometheus.Histogram
	leader   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, pending func() float64) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_scheduler_schedule_attempts_total",
			Help: "Scheduling attempts by result: scheduled, unschedulable, error or conflict (already bound).",
		}, []string{"result"}),
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kforge_scheduler_e2e_scheduling_duration_seconds",
			Help:    "Time from a pod's first scheduling attempt to its successful bind.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kforge_scheduler_leader",
			Help: "1 while this instance holds the leader lease (or runs without leader election).",
		}),
	}
	for _, r := range []string{resultScheduled, resultUnschedulable, resultError, resultConflict} {
		m.attempts.WithLabelValues(r)
	}
	reg.MustRegister(m.attempts, m.e2e, m.leader,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kforge_scheduler_pending_pods",
			Help: "Pods for this scheduler that are not bound to a node yet.",
		}, pending))
	return m
}

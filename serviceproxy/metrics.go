package serviceproxy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	duration  *prometheus.HistogramVec
	errors    prometheus.Counter
	conntrack prometheus.Counter
	lastSync  prometheus.Gauge
	skipped   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, w *Writer) *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kforge_proxy_sync_duration_seconds",
			Help:    "Time to build and write the rules, by kind: full (the table rebuilt) or partial (changes only).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"kind"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kforge_proxy_sync_errors_total",
			Help: "nftables transactions the kernel refused (the previous rules stayed in place).",
		}),
		conntrack: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kforge_proxy_conntrack_deleted_total",
			Help: "Stale UDP conntrack entries deleted after endpoint changes.",
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kforge_proxy_last_sync_timestamp_seconds",
			Help: "When the rules were last written successfully.",
		}),
		skipped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kforge_proxy_services_skipped",
			Help: "Services with at least one port the proxy cannot express.",
		}),
	}
	reg.MustRegister(m.duration, m.errors, m.conntrack, m.lastSync, m.skipped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kforge_proxy_rules",
			Help: "Rules in the kforge nftables table after the last sync.",
		}, func() float64 { return float64(w.Rules()) }))
	return m
}

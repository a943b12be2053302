package ingress

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the role's Prometheus series. A nil *metrics records
// nothing.
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	upstream    *prometheus.HistogramVec
	retries     prometheus.Counter
	connections prometheus.Gauge
	reloads     prometheus.Counter
	routes      prometheus.Gauge
	ingresses   prometheus.Gauge
	buildTime   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_ingress_requests_total",
			Help: "Requests served, by Ingress (namespace/name, empty when none matched), Service and status code.",
		}, []string{"ingress", "service", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kforge_ingress_request_duration_seconds", Help: "Time from the request's headers to the end of its response, by Ingress.",
			Buckets: buckets,
		}, []string{"ingress"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kforge_ingress_upstream_duration_seconds", Help: "Time until an endpoint's response headers, by Service.",
			Buckets: buckets,
		}, []string{"service"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kforge_ingress_upstream_retries_total", Help: "Requests sent again to another endpoint.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kforge_ingress_active_connections", Help: "Client connections open (HTTP and HTTPS).",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kforge_ingress_config_reloads_total", Help: "Routing tables built and swapped in.",
		}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kforge_ingress_routes", Help: "Host/path routes in the current table.",
		}),
		ingresses: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kforge_ingress_ingresses", Help: "Ingresses served by the current table.",
		}),
		buildTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kforge_ingress_config_build_seconds", Help: "Time to build a routing table.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1},
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.upstream, m.retries, m.connections, m.reloads, m.routes, m.ingresses, m.buildTime)
	return m
}

// request records one finished request.
func (m *metrics) request(e *logEntry) {
	ing, svc := "", ""
	if e.route != nil {
		ing, svc = e.route.Ingress, e.route.Backend.Service
	}
	m.requests.WithLabelValues(ing, svc, strconv.Itoa(e.status)).Inc()
	m.duration.WithLabelValues(ing).Observe(time.Since(e.start).Seconds())
	if e.upstream != "" {
		m.upstream.WithLabelValues(svc).Observe(e.upstreamMs / 1000)
	}
	if e.retries > 0 {
		m.retries.Add(float64(e.retries))
	}
}

// swapped records a new table.
func (m *metrics) swapped(t *Table, took time.Duration) {
	m.reloads.Inc()
	m.routes.Set(float64(t.Routes))
	m.ingresses.Set(float64(t.Ingresses))
	m.buildTime.Observe(took.Seconds())
}

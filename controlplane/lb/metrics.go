package lb

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the kforge_lb_* series, in the Balancer's own registry.
type metrics struct {
	reg           *prometheus.Registry
	up            *prometheus.GaugeVec
	active        *prometheus.GaugeVec
	connections   *prometheus.CounterVec
	dialFailures  *prometheus.CounterVec
	checkFailures *prometheus.CounterVec
	rejected      prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kforge_lb_backend_up",
			Help: "1 when the backend passes its health checks and takes new connections, else 0.",
		}, []string{"backend"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kforge_lb_backend_active_connections",
			Help: "Connections open through the load balancer to the backend.",
		}, []string{"backend"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_lb_backend_connections_total",
			Help: "Connections proxied to the backend.",
		}, []string{"backend"}),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_lb_backend_dial_failures_total",
			Help: "Failed connection attempts to the backend (the connection was retried on another one).",
		}, []string{"backend"}),
		checkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_lb_health_check_failures_total",
			Help: "Failed health checks of the backend.",
		}, []string{"backend"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kforge_lb_rejected_connections_total",
			Help: "Client connections closed because no healthy backend accepted them.",
		}),
	}
	m.reg.MustRegister(m.up, m.active, m.connections, m.dialFailures, m.checkFailures, m.rejected)
	return m
}

// add creates every series of a backend at zero, so it shows before its
// first event.
func (m *metrics) add(addr string) {
	m.up.WithLabelValues(addr).Set(0)
	m.active.WithLabelValues(addr).Set(0)
	m.connections.WithLabelValues(addr)
	m.dialFailures.WithLabelValues(addr)
	m.checkFailures.WithLabelValues(addr)
}

// remove drops a removed backend's health series. Its connection series
// stay: connections closing after the removal still count down to 0.
func (m *metrics) remove(addr string) {
	m.up.DeleteLabelValues(addr)
	m.dialFailures.DeleteLabelValues(addr)
	m.checkFailures.DeleteLabelValues(addr)
}

func (m *metrics) connected(addr string) {
	m.connections.WithLabelValues(addr).Inc()
	m.active.WithLabelValues(addr).Inc()
}

func (m *metrics) disconnected(addr string) {
	m.active.WithLabelValues(addr).Dec()
}

// Handler serves /healthz (200 while the Balancer is not closing),
// /readyz (200 when at least one backend is healthy, else 503 with every
// backend's state) and /metrics (the kforge_lb_* series). The lb role
// serves it on MetricsAddress; an embedding process can mount it.
func (b *Balancer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if b.closing.Load() {
			http.Error(w, "closing", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if b.Ready() {
			_, _ = w.Write([]byte("ok"))
			return
		}
		var s strings.Builder
		if b.closing.Load() {
			s.WriteString("closing\n")
		} else {
			s.WriteString("no healthy backend\n")
		}
		for _, st := range b.Backends() {
			fmt.Fprintf(&s, "%s healthy=%t\n", st.Address, st.Healthy)
		}
		http.Error(w, s.String(), http.StatusServiceUnavailable)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}

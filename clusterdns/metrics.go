package clusterdns

import (
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the role's Prometheus series. A nil *metrics records
// nothing (the resolver and forwarder work without one).
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	cache     *prometheus.CounterVec
	forwards  *prometheus.CounterVec
	fwdTime   prometheus.Histogram
	registers *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, cacheLen func() float64) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_dns_requests_total",
			Help: "DNS queries answered, by zone (cluster, forward, invalid) and response code.",
		}, []string{"zone", "rcode"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kforge_dns_request_duration_seconds",
			Help:    "Time to answer a DNS query, by zone.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}, []string{"zone"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_dns_cache_requests_total",
			Help: "Forwarded queries looked up in the cache, by result (hit, miss).",
		}, []string{"result"}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_dns_forward_requests_total",
			Help: "Queries sent upstream, by result (ok, error).",
		}, []string{"result"}),
		fwdTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kforge_dns_forward_duration_seconds",
			Help:    "Time the upstreams took to answer (or fail).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		registers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kforge_dns_endpoint_writes_total",
			Help: "Writes of this instance's kube-dns EndpointSlice (and Service), by result (ok, error).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.duration, m.cache, m.forwards, m.fwdTime, m.registers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kforge_dns_cache_entries",
			Help: "Upstream answers held in the cache.",
		}, cacheLen))
	return m
}

func (m *metrics) observe(zone string, rcode int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(zone, dns.RcodeToString[rcode]).Inc()
	m.duration.WithLabelValues(zone).Observe(d.Seconds())
}

func (m *metrics) cacheHit() {
	if m != nil {
		m.cache.WithLabelValues("hit").Inc()
	}
}

func (m *metrics) cacheMiss() {
	if m != nil {
		m.cache.WithLabelValues("miss").Inc()
	}
}

func (m *metrics) forwarded(d time.Duration, err error) {
	if m == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.forwards.WithLabelValues(res).Inc()
	m.fwdTime.Observe(d.Seconds())
}

func (m *metrics) registered(err error) {
	if m == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.registers.WithLabelValues(res).Inc()
}

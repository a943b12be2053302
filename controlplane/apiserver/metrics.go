package apiserver

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// metrics are the Server's Prometheus metrics. They live in a registry the
// Server owns, never the global one: embedded etcd registers into the
// global registry, and `kforge local up` runs both in one process.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// newMetrics builds the registry; openWatches is read at scrape time.
func newMetrics(openWatches func() int) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apiserver_request_total",
			Help: "Requests served, by verb, resource and HTTP response code.",
		}, []string{"verb", "resource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "apiserver_request_duration_seconds",
			Help: "Response latency of requests other than WATCH, by verb and resource.",
			// Upstream's buckets, trimmed: the SLO is about 1 s.
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 10, 30, 60},
		}, []string{"verb", "resource"}),
	}
	m.reg.MustRegister(
		m.requests, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apiserver_open_watches",
			Help: "Watch streams being served.",
		}, func() float64 { return float64(openWatches()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// handler returns the Server wrapped with request metrics, serving
// /metrics itself (to system:masters; other users get 403, no
// certificate 401). Without metrics it is the Server alone.
func (s *Server) handler() http.Handler {
	if s.metrics == nil {
		return s
	}
	scrape := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		verb, resource := s.requestLabels(r)
		rw := &statusRecorder{ResponseWriter: w}
		if strings.Trim(r.URL.Path, "/") == "metrics" && r.Method == http.MethodGet {
			s.serveMetrics(rw, r, scrape)
		} else {
			s.ServeHTTP(rw, r)
		}
		code := rw.status
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(verb, resource, strconv.Itoa(code)).Inc()
		if verb != "WATCH" {
			s.metrics.latency.WithLabelValues(verb, resource).Observe(time.Since(start).Seconds())
		}
	})
}

// serveMetrics authenticates like any request; only system:masters may
// scrape until RBAC covers non-resource URLs.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, scrape http.Handler) {
	u, err := s.authenticate(r, "metrics")
	if err != nil {
		writeError(w, err)
		return
	}
	if !u.in("system:masters") {
		writeError(w, apierrors.NewForbidden(schema.GroupResource{}, "",
			&nonResourceDenied{user: u.Name, verb: "get", path: "/metrics"}))
		return
	}
	scrape.ServeHTTP(w, r)
}

type nonResourceDenied struct{ user, verb, path string }

func (e *nonResourceDenied) Error() string {
	return "User \"" + e.user + "\" cannot " + e.verb + " path \"" + e.path + "\""
}

// requestLabels names a request the way upstream's metrics do: verbs in
// upper case (LIST and WATCH told apart from GET, POST for create, APPLY
// for server-side apply), the resource's plural name with "/sub" for a
// subresource. Only resources of the table are named, so a client cannot
// grow the label set with made-up paths.
func (s *Server) requestLabels(r *http.Request) (verb, resource string) {
	path := strings.Trim(r.URL.Path, "/")
	if path == "" {
		return methodLabel(r.Method), ""
	}
	req, err := s.parseRequest(r, strings.Split(path, "/"))
	if err != nil || req.res == nil {
		return methodLabel(r.Method), ""
	}
	resource = req.res.Plural
	if req.sub != "" {
		resource += "/" + req.sub
	}
	switch req.verb {
	case "get":
		verb = "GET"
	case "list":
		verb = "LIST"
	case "watch":
		verb = "WATCH"
	case "create":
		verb = "POST"
	case "update":
		verb = "PUT"
	case "patch":
		verb = "PATCH"
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/apply-patch") {
			verb = "APPLY"
		}
	case "delete":
		verb = "DELETE"
	case "deletecollection":
		verb = "DELETECOLLECTION"
	default:
		verb = methodLabel(r.Method)
	}
	return verb, resource
}

// methodLabel bounds the method label to the methods HTTP defines.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// statusRecorder remembers the response code. It keeps Flush working for
// watches and lets http.ResponseController reach the real writer.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusRecorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

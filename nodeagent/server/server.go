package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"kforge.dev/kforge/nodeagent/podlogs"

	"kforge.dev/kforge/internal/certreload"
)

// Timeouts of streaming sessions, upstream's kubelet defaults.
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
)

// Pods is what the API serves from: the pods of this node. Errors that
// are apimachinery StatusErrors (NotFound, BadRequest) keep their code.
type Pods interface {
	// ContainerLog returns the CRI log file of a container of a pod of
	// this node (its previous attempt's with previous) and a func telling
	// whether that container may still write it.
	ContainerLog(ctx context.Context, ns, pod, container string, previous bool) (path string, running func() bool, err error)
	// Exec runs cmd in a running container with the given streams (in
	// nil: no input) until it exits; a non-zero exit is an error with
	// ExitStatus() int and Exited() bool, as k8s.io/utils/exec's.
	Exec(ctx context.Context, ns, pod, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error
	// Attach connects the streams to a running container's stdio.
	Attach(ctx context.Context, ns, pod, container string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error
	// PortForward copies between stream and a TCP connection to port on
	// the pod's loopback, in its network namespace.
	PortForward(ctx context.Context, ns, pod string, port int32, stream io.ReadWriteCloser) error
	// Summary is the node's and its pods' resource usage.
	Summary(ctx context.Context) (*statsapi.Summary, error)
}

// Options are what a Server needs.
type Options struct {
	// NodeName is the Node whose subresources requests are checked on.
	NodeName string
	// Pods serves the pod endpoints.
	Pods Pods
	// Client asks the apiserver for SubjectAccessReviews; the agent's own
	// identity, which must be allowed to create them.
	Client kubernetes.Interface
	// Metrics is served on /metrics; nil serves an empty registry.
	Metrics prometheus.Gatherer
	// AllowedTTL and DeniedTTL are how long an authorization answer is
	// reused; one minute and ten seconds when zero.
	AllowedTTL, DeniedTTL time.Duration
	Logger                *slog.Logger
}

// Server is the agent API's HTTP handler.
type Server struct {
	o     Options
	authz *authorizer
	log   *slog.Logger
	mux   *http.ServeMux
}

// New builds a Server.
func New(o Options) (*Server, error) {
	if o.Pods == nil || o.Client == nil || o.NodeName == "" {
		return nil, errors.New("agent API: Pods, Client and NodeName are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = prometheus.NewRegistry()
	}
	if o.AllowedTTL == 0 {
		o.AllowedTTL = time.Minute
	}
	if o.DeniedTTL == 0 {
		o.DeniedTTL = 10 * time.Second
	}
	s := &Server{o: o, log: o.Logger, authz: newAuthorizer(o.Client, o.NodeName, o.AllowedTTL, o.DeniedTTL)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /stats/summary", s.serveSummary)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", s.serveLogs)
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", s.serveExec)
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", s.serveExec)
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", s.serveAttach)
	mux.HandleFunc("/attach/{ns}/{pod}/{uid}/{container}", s.serveAttach)
	mux.HandleFunc("/portForward/{ns}/{pod}", s.servePortForward)
	mux.HandleFunc("/portForward/{ns}/{pod}/{uid}", s.servePortForward)
	s.mux = mux
	return s, nil
}

// ServeHTTP authenticates (a verified client certificate: CN is the
// user, O the groups), authorizes, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u, ok := authenticate(r)
	if !ok {
		writeStatus(w, apierrors.NewUnauthorized("Unauthorized"))
		return
	}
	verb, sub := attributes(r)
	allowed, reason, err := s.authz.allowed(r.Context(), u, verb, sub)
	if err != nil {
		s.log.Warn("agent API: authorization failed", "user", u.name, "err", err)
		writeStatus(w, apierrors.NewInternalError(fmt.Errorf("authorization: %w", err)))
		return
	}
	if !allowed {
		msg := fmt.Sprintf("user=%s verb=%s resource=nodes subresource=%s", u.name, verb, sub[0])
		if reason != "" {
			msg += ": " + reason
		}
		writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, s.o.NodeName, errors.New(msg)))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authenticate reads the verified client certificate.
func authenticate(r *http.Request) (user, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return user{}, false
	}
	c := r.TLS.VerifiedChains[0][0]
	if c.Subject.CommonName == "" {
		return user{}, false
	}
	return user{name: c.Subject.CommonName, groups: append(append([]string{}, c.Subject.Organization...), "system:authenticated")}, true
}

// attributes maps a request to the verb and the node subresources that
// allow it (any one of them), as upstream's kubelet.
func attributes(r *http.Request) (verb string, subs []string) {
	switch r.Method {
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
	default:
		verb = "get"
	}
	p := r.URL.Path
	switch {
	case p == "/healthz":
		return verb, []string{"healthz", "proxy"}
	case p == "/metrics" || strings.HasPrefix(p, "/metrics/"):
		return verb, []string{"metrics"}
	case p == "/stats" || strings.HasPrefix(p, "/stats/"):
		return verb, []string{"stats"}
	case p == "/logs" || strings.HasPrefix(p, "/logs/"):
		return verb, []string{"log"}
	case strings.HasPrefix(p, "/exec/"), strings.HasPrefix(p, "/attach/"), strings.HasPrefix(p, "/portForward/"), strings.HasPrefix(p, "/run/"):
		return "create", []string{"proxy"}
	}
	return verb, []string{"proxy"}
}

// writeStatus answers with a metav1.Status, as the apiserver does.
func writeStatus(w http.ResponseWriter, err error) {
	var st metav1.Status
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st = se.Status()
	} else {
		st = apierrors.NewInternalError(err).ErrStatus
	}
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	writeJSON(w, int(st.Code), &st)
}

func (s *Server) serveSummary(w http.ResponseWriter, r *http.Request) {
	sum, err := s.o.Pods.Summary(r.Context())
	if err != nil {
		writeStatus(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

// serveLogs streams a container's log with kubectl logs' options.
func (s *Server) serveLogs(w http.ResponseWriter, r *http.Request) {
	opts, previous, err := logOptions(r)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	path, running, err := s.o.Pods.ContainerLog(r.Context(), r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container"), previous)
	if err != nil {
		writeStatus(w, err)
		return
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && previous {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("previous terminated container %q in pod %q not found", r.PathValue("container"), r.PathValue("pod"))))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	out := io.Writer(w)
	if f, ok := w.(http.Flusher); ok && opts.Follow {
		out = flushWriter{w: w, f: f}
	}
	if err := podlogs.Read(r.Context(), path, opts, running, out); err != nil && r.Context().Err() == nil {
		s.log.Debug("agent API: reading a log", "path", path, "err", err)
	}
}

// flushWriter flushes every write, so a followed log reaches the client
// as it is written.
type flushWriter struct {
	w io.Writer
	f http.Flusher
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.f.Flush()
	return n, err
}

// logOptions reads the pods/log query.
func logOptions(r *http.Request) (podlogs.Options, bool, error) {
	q := r.URL.Query()
	var o podlogs.Options
	b := func(k string) (bool, error) {
		v := q.Get(k)
		if v == "" {
			return false, nil
		}
		return strconv.ParseBool(v)
	}
	n := func(k string) (*int64, error) {
		v := q.Get(k)
		if v == "" {
			return nil, nil
		}
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", k, err)
		}
		return &i, nil
	}
	var err error
	if o.Follow, err = b("follow"); err != nil {
		return o, false, fmt.Errorf("follow: %v", err)
	}
	if o.Timestamps, err = b("timestamps"); err != nil {
		return o, false, fmt.Errorf("timestamps: %v", err)
	}
	previous, err := b("previous")
	if err != nil {
		return o, false, fmt.Errorf("previous: %v", err)
	}
	if o.TailLines, err = n("tailLines"); err != nil {
		return o, false, err
	}
	if o.LimitBytes, err = n("limitBytes"); err != nil {
		return o, false, err
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		return o, false, errors.New("limitBytes: must be greater than 0")
	}
	since, err := n("sinceSeconds")
	if err != nil {
		return o, false, err
	}
	st := q.Get("sinceTime")
	switch {
	case since != nil && st != "":
		return o, false, errors.New("at most one of sinceTime or sinceSeconds may be specified")
	case since != nil:
		if *since < 1 {
			return o, false, errors.New("sinceSeconds: must be greater than 0")
		}
		o.Since = time.Now().Add(-time.Duration(*since) * time.Second)
	case st != "":
		t, err := time.Parse(time.RFC3339, st)
		if err != nil {
			return o, false, fmt.Errorf("sinceTime: %v", err)
		}
		o.Since = t
	}
	return o, previous, nil
}

// podRef is how the streaming handlers name a pod: NS/POD.
func podRef(ns, pod string) string { return ns + "/" + pod }

func splitRef(ref string) (ns, pod string) {
	ns, pod, _ = strings.Cut(ref, "/")
	return ns, pod
}

func (s *Server) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		writeStatus(w, apierrors.NewBadRequest("command is required"))
		return
	}
	remotecommand.ServeExec(w, r, streams{s.o.Pods}, podRef(r.PathValue("ns"), r.PathValue("pod")), r.PathValue("uid"),
		r.PathValue("container"), cmd, opts, streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (s *Server) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	remotecommand.ServeAttach(w, r, streams{s.o.Pods}, podRef(r.PathValue("ns"), r.PathValue("pod")), r.PathValue("uid"),
		r.PathValue("container"), opts, streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (s *Server) servePortForward(w http.ResponseWriter, r *http.Request) {
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	portforward.ServePortForward(w, r, streams{s.o.Pods}, podRef(r.PathValue("ns"), r.PathValue("pod")), r.PathValue("uid"),
		opts, streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

// streams adapts Pods to the streaming packages' interfaces.
type streams struct{ p Pods }

func (a streams) ExecInContainer(ctx context.Context, name, _ string, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	ns, pod := splitRef(name)
	return a.p.Exec(ctx, ns, pod, container, cmd, in, out, errOut, tty, resize)
}

func (a streams) AttachContainer(ctx context.Context, name, _ string, container string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	ns, pod := splitRef(name)
	return a.p.Attach(ctx, ns, pod, container, in, out, errOut, tty, resize)
}

func (a streams) PortForward(ctx context.Context, name, _ string, port int32, stream io.ReadWriteCloser) error {
	ns, pod := splitRef(name)
	return a.p.PortForward(ctx, ns, pod, port, stream)
}

// TLSConfig is the agent API's TLS: the serving certificate, and client
// certificates verified against the CA when given (a request without one
// is answered 401, not refused at the handshake). HTTP/1.1 only: the
// streaming protocols upgrade the connection. Both files are re-read
// when they change while the returned Watcher runs (its owner runs it
// until the API stops), so a rotated certificate needs no restart.
func TLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, *certreload.Watcher, error) {
	pair, err := certreload.NewKeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("agent API: serving certificate: %w", err)
	}
	cas, err := certreload.NewCABundle(clientCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("agent API: client CA: %w", err)
	}
	c := certreload.ServerConfig(&tls.Config{
		ClientAuth: tls.VerifyClientCertIfGiven,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}, pair, cas)
	return c, &certreload.Watcher{Items: []certreload.Reloader{pair, cas}}, nil
}

// Serve serves the API with TLS on l until ctx ends, then closes the
// listener and waits (up to five seconds) for requests to finish;
// streaming sessions are cut.
func (s *Server) Serve(ctx context.Context, l net.Listener, tlsConfig *tls.Config) error {
	hs := &http.Server{
		Handler:           s,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    1 << 20,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(l, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("agent API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.Close()
	}
	<-errc
	return err
}

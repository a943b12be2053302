package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// Options are what a Server needs; the role's config file maps to them.
type Options struct {
	// Store is the etcd-backed storage; the Server does not close it.
	Store *storage.Store
	// Resources is the table of kinds; DefaultResources() when nil.
	Resources []*Resource
	// ServiceCIDR is the range ClusterIPs are allocated from.
	ServiceCIDR string
	// Advertise is this apiserver's IP:port for the "kubernetes" Service's
	// Endpoints; empty publishes nothing and holds no master lease.
	Advertise string
	// MasterLeaseTTL is how long this apiserver's master lease outlives
	// its last refresh: an apiserver that dies without a clean stop leaves
	// the "kubernetes" Endpoints that long (plus one interval) after.
	// Whole seconds; 15s when zero.
	MasterLeaseTTL time.Duration
	// MasterLeaseInterval is how often the master lease is refreshed and
	// the "kubernetes" Endpoints reconciled with the live leases; 5s when
	// zero. It must be shorter than MasterLeaseTTL.
	MasterLeaseInterval time.Duration

	Logger *slog.Logger
	// Version and Commit are reported by /version.
	Version, Commit string
	// BookmarkInterval is how often an idle watch that asked for bookmarks
	// gets one; one minute when zero.
	BookmarkInterval time.Duration
	// EventTTL is how long an Event lives after its last write;
	// DefaultEventTTL when zero.
	EventTTL time.Duration
	// DisableMetrics turns off request metrics and /metrics (metrics.go).
	DisableMetrics bool
	// AuthzSyncTimeout is how long a request that needs RBAC waits for the
	// authorization index to load before it is answered 503; five seconds
	// when zero.
	AuthzSyncTimeout time.Duration
	// Limits bound requests in flight, their duration, patches, HTTP/2
	// streams and watches; zero fields take NewLimits' defaults.
	Limits Limits
	// Identity says who callers are (authn.go): client certificates and
	// service-account tokens.
	Identity Identity
	// NodeClientTLS is the client side of TLS toward the node agents
	// (NodeClientTLS builds it): without it the subresources they serve
	// (pods/log, exec, attach, portforward, nodes/proxy) answer 503.
	NodeClientTLS *tls.Config
}

// Server is the Kubernetes-compatible API server: the HTTP handler over the
// resource table and storage. Serve it with TLS that verifies client
// certificates when given (tls.VerifyClientCertIfGiven): a request without
// one is answered 401, not refused at the handshake.
type Server struct {
	cfg   Options
	reg   *Registry
	store *storage.Store
	log   *slog.Logger

	// serving is Serve's context: when it ends, watches end and /readyz
	// fails, while requests in flight finish.
	serving atomic.Pointer[context.Context]

	openapi openAPIDocs
	fields  fieldManagers

	watches sync.WaitGroup
	openW   sync.Mutex
	nWatch  int

	// inflight caps requests being served; watchers counts watches per
	// user; handlers are the goroutines of requests under a deadline.
	inflight *inFlight
	watchers watchCount
	handlers sync.WaitGroup

	metrics *metrics // nil when disabled

	authz *rbac.Authorizer
	// nodes is the Node authorizer's graph of pods and what they use
	// (nodeauthz.go); certs remembers verified client chains (authn.go).
	nodes *nodeGraph
	certs certVerifier
	// cache mirrors everything under /registry/ for reads that a write's
	// compare proves current (storage.Cache).
	cache     *storage.Cache
	indexOnce sync.Once

	// lease is this apiserver's master lease (endpoints.go); nil without
	// an advertise address.
	lease     *storage.LeasedKey
	leaseOnce sync.Once

	// nodeTransport reaches the node agents (nodeproxy.go); nil without
	// Options.NodeClientTLS.
	nodeTransport *http.Transport

	// crds serves the custom resources of the stored
	// CustomResourceDefinitions (crd.go).
	crds *crdWatcher
}

// New builds a Server. Call Bootstrap before serving.
func New(o Options) (*Server, error) {
	if o.Store == nil {
		return nil, errors.New("apiserver: no storage")
	}
	if o.Resources == nil {
		o.Resources = DefaultResources()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BookmarkInterval == 0 {
		o.BookmarkInterval = time.Minute
	}
	if o.EventTTL == 0 {
		o.EventTTL = DefaultEventTTL
	}
	if o.AuthzSyncTimeout == 0 {
		o.AuthzSyncTimeout = 5 * time.Second
	}
	if o.MasterLeaseTTL == 0 {
		o.MasterLeaseTTL = DefaultMasterLeaseTTL
	}
	if o.MasterLeaseInterval == 0 {
		o.MasterLeaseInterval = DefaultMasterLeaseInterval
	}
	o.Limits = o.Limits.withDefaults()
	if errs := o.Limits.validate(field.NewPath("limits")); len(errs) > 0 {
		return nil, fmt.Errorf("apiserver: %w", errs.ToAggregate())
	}
	if o.MasterLeaseInterval <= 0 || o.MasterLeaseInterval >= o.MasterLeaseTTL {
		return nil, fmt.Errorf("apiserver: the master lease interval %s must be positive and shorter than its TTL %s",
			o.MasterLeaseInterval, o.MasterLeaseTTL)
	}
	s := &Server{cfg: o, reg: NewRegistry(o.Resources), store: o.Store, log: o.Logger,
		authz: rbac.New(o.Store, o.Logger), nodes: newNodeGraph(), cache: storage.NewCache(), inflight: newInFlight(o.Limits)}
	s.reg = NewRegistry(append(slices.Clip(o.Resources), s.crdResource()))
	s.crds = newCRDWatcher(s)
	setJSONPatchCopyLimit(o.Limits.JSONPatchMaxCopyBytes)
	// An idle watch learns the cache's progress as often as it may send
	// a bookmark.
	s.cache.ProgressInterval = o.BookmarkInterval
	if o.Advertise != "" {
		ap, err := netip.ParseAddrPort(o.Advertise)
		if err != nil {
			return nil, fmt.Errorf("apiserver: advertise address %q: %w", o.Advertise, err)
		}
		s.lease = o.Store.LeasedKey(masterLeasePrefix+ap.Addr().String(), []byte(ap.String()), o.MasterLeaseTTL)
	}
	if !o.DisableMetrics {
		s.metrics = newMetrics(s.OpenWatches)
	}
	if o.NodeClientTLS != nil {
		s.nodeTransport = newNodeTransport(o.NodeClientTLS)
	}
	return s, nil
}

// Bootstrap creates what must exist from the start: the default, kube-system,
// kube-public and kube-node-lease namespaces, and the bootstrap RBAC policy
// (roles and bindings missing are created; existing ones are left as they
// are). It is idempotent.
func (s *Server) Bootstrap(ctx context.Context) error {
	nsRes := s.reg.Lookup("", "v1", "namespaces")
	for _, name := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		_, err := s.create(ctx, nsRes, "", ns)
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apiserver: creating namespace %s: %w", name, err)
		}
	}
	if s.cfg.ServiceCIDR != "" {
		// The "kubernetes" Service holds the first service address, as
		// upstream; in-cluster clients find the API through it.
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{"component": "apiserver", "provider": "kubernetes"}},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(6443)}}}}
		_, err := s.create(ctx, s.reg.Lookup("", "v1", "services"), metav1.NamespaceDefault, svc)
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apiserver: creating the kubernetes service: %w", err)
		}
	}
	// The master lease comes before the address: a peer reconciling the
	// Endpoints prunes an address without one.
	if s.lease != nil {
		if err := s.lease.Refresh(ctx); err != nil {
			return fmt.Errorf("apiserver: master lease: %w", err)
		}
	}
	if err := s.publishEndpoint(ctx, true); err != nil {
		return err
	}
	if err := s.dropUnservedEvents(ctx); err != nil {
		return err
	}
	return s.bootstrapRBAC(ctx)
}

// http2StreamBuffer is the HTTP/2 per-stream receive buffer and frame size
// (256 KiB holds nearly every API object in one frame).
const http2StreamBuffer = 256 << 10

// WaitForWatches waits until every open watch has ended (after the
// listener closed and their contexts ended).
func (s *Server) WaitForWatches() { s.watches.Wait() }

// user is an authenticated caller.
type user struct {
	Name   string
	UID    string
	Groups []string
	// Extra is what a service-account token adds (its pod and node).
	Extra map[string][]string
}

func (u user) in(group string) bool {
	for _, g := range u.Groups {
		if g == group {
			return true
		}
	}
	return false
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.Trim(r.URL.Path, "/")
	switch path {
	case "healthz", "livez":
		_, _ = w.Write([]byte("ok"))
		return
	case "readyz":
		if s.draining() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := s.store.Revision(ctx); err != nil {
			http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
		return
	}
	u, err := s.authenticate(r, path)
	if err != nil {
		writeError(w, err)
		return
	}
	u, err = s.impersonate(r.Context(), r, u)
	if err != nil {
		writeError(w, err)
		return
	}
	if isNodeAgentRequest(strings.Split(path, "/")) {
		// Long-running and possibly upgraded: no deadline wrapper, which
		// would hide the connection.
		s.serveAuthenticated(w, r, path, u)
		return
	}
	if isWatchRequest(r) {
		closeWatch, ok := s.watchers.open(s.cfg.Limits, u.Name)
		if !ok {
			writeError(w, tooManyRequests())
			return
		}
		defer closeWatch()
		s.serveAuthenticated(w, r, path, u)
		return
	}
	// As upstream's max-in-flight filter: a full server answers 429, except
	// to system:masters, who always get an answer.
	if release, ok := s.inflight.acquire(r.Method); ok {
		defer release()
	} else if !u.in("system:masters") {
		writeError(w, tooManyRequests())
		return
	}
	d, err := requestDeadline(r, s.cfg.Limits.RequestTimeout)
	if err != nil {
		writeError(w, err)
		return
	}
	withTimeout(w, r, d, &s.handlers, func(w http.ResponseWriter, r *http.Request) {
		s.serveAuthenticated(w, r, path, u)
	})
}

// draining reports that Serve's context has ended: the server finishes
// what is in flight and takes nothing new.
func (s *Server) draining() bool {
	ctx := s.serving.Load()
	return ctx != nil && (*ctx).Err() != nil
}

// isWatchRequest reports a watch: exempt from the in-flight cap and the
// request deadline, as upstream's long-running requests.
func isWatchRequest(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	w := r.URL.Query().Get("watch")
	return w == "1" || w == "true" || strings.Contains(r.URL.Path, "/watch/")
}

// serveAuthenticated routes a request of an authenticated user.
func (s *Server) serveAuthenticated(w http.ResponseWriter, r *http.Request, path string, u user) {
	var parts []string
	if path != "" {
		parts = strings.Split(path, "/")
	}
	if !isResourcePath(parts) {
		if err := s.authorizeNonResource(r.Context(), u, r.Method, "/"+path); err != nil {
			writeError(w, err)
			return
		}
	}
	if len(parts) == 0 {
		writeJSON(w, http.StatusOK, map[string][]string{"paths": {"/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"}})
		return
	}
	if r.Method == http.MethodGet && (s.serveDiscovery(w, r, parts) || s.serveOIDC(w, path)) {
		return
	}
	req, err := s.parseRequest(r, parts)
	if err != nil {
		writeError(w, err)
		return
	}
	req.user = u
	if err := s.authorize(r, req); err != nil {
		writeError(w, err)
		return
	}
	if err := s.admit(req); err != nil {
		writeError(w, err)
		return
	}
	if err := s.restrictNodeRequest(r.Context(), req); err != nil {
		writeError(w, err)
		return
	}
	s.serveResource(w, r, req)
}

// Serve serves the API on l with TLS until ctx ends, then shuts down:
// this apiserver leaves the "kubernetes" Endpoints, the listener closes,
// in-flight requests and watches end, then Serve returns. The first Serve
// also runs the RBAC index, the object cache and the master lease loop
// (endpoints.go) until it returns.
func (s *Server) Serve(ctx context.Context, l net.Listener, tlsConfig *tls.Config) error {
	if stop := s.startIndexes(ctx); stop != nil {
		defer stop()
	}
	stopLease := s.startMasterLease(ctx)
	defer stopLease()
	s.serving.Store(&ctx)
	// Requests get a context that outlives ctx: on shutdown the ones in
	// flight finish (up to the drain timeout) rather than fail with
	// "context canceled"; watches end with ctx (serveWatch).
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	hs := &http.Server{
		Handler:           s.handler(),
		TLSConfig:         tlsConfig,
		MaxHeaderBytes:    1 << 20,
		ReadHeaderTimeout: s.cfg.Limits.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.Limits.IdleTimeout,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: s.cfg.Limits.HTTP2MaxStreamsPerConnection,
			// Per-stream buffers sized as upstream: most API bodies fit
			// one frame, and a connection holds all its streams' buffers.
			MaxReceiveBufferPerStream:     http2StreamBuffer,
			MaxReadFrameSize:              http2StreamBuffer,
			MaxReceiveBufferPerConnection: http2StreamBuffer * s.cfg.Limits.HTTP2MaxStreamsPerConnection,
		},
		BaseContext: func(net.Listener) context.Context { return reqCtx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(l, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("apiserver: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Leave the "kubernetes" Endpoints before going: clients stop picking
	// this apiserver while it drains. The lease loop stops first, or it
	// could take the lease again after the release.
	stopLease()
	s.leaveEndpoints(shutdownCtx)
	err := hs.Shutdown(shutdownCtx)
	cancelRequests() // what is left after the drain timeout (exec, logs -f)
	s.WaitForWatches()
	s.handlers.Wait()
	if err != nil {
		return fmt.Errorf("apiserver: shutdown: %w", err)
	}
	return nil
}

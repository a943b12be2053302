package ingress

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"kforge.dev/kforge/internal/ingressvalidation"
)

// Annotations read from an Ingress (prefix ingress.kforge.dev/).
const (
	AnnotationPrefix         = "ingress.kforge.dev/"
	AnnotationSSLRedirect    = AnnotationPrefix + "ssl-redirect"
	AnnotationConnectTimeout = AnnotationPrefix + "proxy-connect-timeout"
	AnnotationReadTimeout    = AnnotationPrefix + "proxy-read-timeout"
	AnnotationBodySize       = AnnotationPrefix + "proxy-body-size"
	AnnotationLoadBalance    = AnnotationPrefix + "load-balance"
)

// Sources is what a Table is built from: the Ingresses this controller
// serves (already filtered by class) and lookups of what they refer to.
// The controller backs the lookups with informer listers.
type Sources struct {
	Ingresses []*networkingv1.Ingress
	// Service returns the Service or nil.
	Service func(namespace, name string) *corev1.Service
	// Slices returns the EndpointSlices of a Service.
	Slices func(namespace, service string) []*discoveryv1.EndpointSlice
	// Secret returns the Secret or nil.
	Secret func(namespace, name string) *corev1.Secret
}

// Problem is something wrong with one Ingress found while building a
// table; the controller reports it as an event on the Ingress.
type Problem struct {
	Ingress *networkingv1.Ingress
	Reason  string
	Message string
}

// Options are the per-Ingress settings of its routes (from annotations,
// over the role's defaults).
type Options struct {
	ConnectTimeout time.Duration
	Timeout        time.Duration
	// MaxBodyBytes limits the request body; 0 means no limit.
	MaxBodyBytes int64
	LeastRequest bool
}

// Route is where a matched request goes.
type Route struct {
	// Ingress is namespace/name of the Ingress that declared the route.
	Ingress string
	Host    string
	Path    string
	Exact   bool
	Backend *Backend
	Options *Options
	// Redirect sends plain-HTTP requests to HTTPS (the host is in the
	// Ingress's tls section and ssl-redirect is not "false").
	Redirect bool
}

// Backend is a Service port resolved to its ready endpoints. Routes to
// the same Service port share one Backend.
type Backend struct {
	// Name is namespace/service:port.
	Name string
	// Service is namespace/service (a metrics label).
	Service string
	// Problem says why there are no endpoints to send to, when known.
	Problem   string
	endpoints []*endpoint
	next      atomic.Uint64
}

// Endpoints are the backend's endpoint addresses (host:port).
func (b *Backend) Endpoints() []string {
	out := make([]string, len(b.endpoints))
	for i, e := range b.endpoints {
		out[i] = e.addr
	}
	return out
}

// endpoint is one pod address. Its state outlives table rebuilds: the
// Builder hands the same *endpoint to every table while the address is
// in use, so passive health and request counts carry over.
type endpoint struct {
	addr      string
	downUntil atomic.Int64 // unix nanoseconds; skipped until then
	active    atomic.Int64 // requests in flight
}

func (e *endpoint) down(now int64) bool { return e.downUntil.Load() > now }

// hostRules are the routes of one host.
type hostRules struct {
	exact    map[string]*Route
	prefixes []*Route // longest path first; older Ingress first on a tie
}

// Table is an immutable routing table. A new one replaces the old on
// every change; requests in flight keep the one they started with.
type Table struct {
	exact   map[string]*hostRules
	wild    map[string]*hostRules // by the suffix after "*."
	anyHost *hostRules
	def     *Route
	certs   map[string]*tls.Certificate // by host, "*.suffix" for wildcards
	// Ingresses and Routes count what the table holds.
	Ingresses, Routes int
}

// normalizeHost lowercases h and drops a port and a trailing dot.
func normalizeHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// rulesFor picks the rules of host: an exact host first, then a
// single-label wildcard, then the rules without a host.
func (t *Table) rulesFor(host string) *hostRules {
	if hr := t.exact[host]; hr != nil {
		return hr
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if hr := t.wild[host[i+1:]]; hr != nil {
			return hr
		}
	}
	return t.anyHost
}

// Match returns the route for a request's host (any case, with or without
// a port) and path, the default backend when no rule matches, or nil.
func (t *Table) Match(host, path string) *Route {
	if hr := t.rulesFor(normalizeHost(host)); hr != nil {
		if r := hr.match(path); r != nil {
			return r
		}
	}
	return t.def
}

func (hr *hostRules) match(path string) *Route {
	if r := hr.exact[path]; r != nil {
		return r
	}
	for _, r := range hr.prefixes {
		if prefixMatch(r.Path, path) {
			return r
		}
	}
	return nil
}

// prefixMatch is the Ingress spec's element-wise prefix match: p (without
// a trailing slash, or "/") matches path when path is p or continues it
// with a "/".
func prefixMatch(p, path string) bool {
	if p == "/" {
		return true
	}
	return strings.HasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/')
}

// Certificate returns the certificate for an SNI name: an exact host,
// then a wildcard; nil when the table has none.
func (t *Table) Certificate(serverName string) *tls.Certificate {
	h := normalizeHost(serverName)
	if c := t.certs[h]; c != nil {
		return c
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		return t.certs["*"+h[i:]]
	}
	return nil
}

// Builder makes tables, keeping what should outlive one table: endpoint
// state and parsed certificates. One goroutine at a time may use it.
type Builder struct {
	defaults  Options
	endpoints map[string]*endpoint
	certs     map[string]certEntry
}

type certEntry struct {
	version string
	cert    *tls.Certificate
	err     error
}

// NewBuilder returns a Builder whose routes take defaults where an
// Ingress's annotations say nothing.
func NewBuilder(defaults Options) *Builder {
	return &Builder{defaults: defaults, endpoints: map[string]*endpoint{}, certs: map[string]certEntry{}}
}

// sortIngresses orders ingresses oldest first (name breaks ties): the
// older one wins a conflict, as with ingress-nginx.
func sortIngresses(ings []*networkingv1.Ingress) []*networkingv1.Ingress {
	out := slices.Clone(ings)
	slices.SortFunc(out, func(a, b *networkingv1.Ingress) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Build makes a table from src. An Ingress with an invalid host or path
// is left out whole; a route whose Service or port cannot be resolved is
// kept and answers 503; both come back as problems.
func (b *Builder) Build(src Sources) (*Table, []Problem) {
	t := &Table{exact: map[string]*hostRules{}, wild: map[string]*hostRules{}, certs: map[string]*tls.Certificate{}}
	var problems []Problem
	backends := map[string]*Backend{}
	usedEps := map[string]*endpoint{}
	usedCerts := map[string]certEntry{}
	type key struct {
		host, path string
		exact      bool
	}
	claimed := map[key]string{}
	var defOwner string

	for _, ing := range sortIngresses(src.Ingresses) {
		id := ing.Namespace + "/" + ing.Name
		report := func(reason, format string, args ...any) {
			problems = append(problems, Problem{Ingress: ing, Reason: reason, Message: fmt.Sprintf(format, args...)})
		}
		if msg := validateIngress(ing); msg != "" {
			report("InvalidIngress", "not served: %s", msg)
			continue
		}
		opts, optProblems := b.options(ing)
		for _, m := range optProblems {
			report("InvalidAnnotation", "%s", m)
		}
		redirect := ing.Annotations[AnnotationSSLRedirect] != "false"
		tlsHosts := map[string]bool{}
		for _, tl := range ing.Spec.TLS {
			for _, h := range tl.Hosts {
				tlsHosts[normalizeHost(h)] = true
			}
			cert, err := b.certificate(src, ing.Namespace, tl.SecretName, usedCerts)
			if err != nil {
				report("TLSSecretInvalid", "serving a self-signed default certificate for %s: %v", strings.Join(tl.Hosts, ", "), err)
				continue
			}
			for _, h := range tl.Hosts {
				h = normalizeHost(h)
				if _, taken := t.certs[h]; !taken {
					t.certs[h] = cert
				}
			}
		}
		resolve := func(be *networkingv1.IngressBackend) *Backend {
			bk, problem := b.backend(src, ing.Namespace, be, backends, usedEps)
			if problem != "" {
				report("BackendNotFound", "%s", problem)
			}
			return bk
		}
		t.Ingresses++
		if db := ing.Spec.DefaultBackend; db != nil {
			if defOwner != "" {
				report("Conflict", "defaultBackend ignored: Ingress %s, older, has one", defOwner)
			} else {
				defOwner = id
				t.def = &Route{Ingress: id, Path: "/", Backend: resolve(db), Options: opts}
			}
		}
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			host := normalizeHost(rule.Host)
			hr := t.hostRules(host)
			for _, p := range rule.HTTP.Paths {
				exact := p.PathType != nil && *p.PathType == networkingv1.PathTypeExact
				path := p.Path
				if path == "" {
					path = "/"
				}
				if !exact && path != "/" {
					path = strings.TrimRight(path, "/")
				}
				k := key{host, path, exact}
				if owner, ok := claimed[k]; ok {
					report("Conflict", "host %q path %q ignored: Ingress %s, older, routes it", rule.Host, p.Path, owner)
					continue
				}
				claimed[k] = id
				r := &Route{Ingress: id, Host: host, Path: path, Exact: exact, Backend: resolve(&p.Backend), Options: opts,
					Redirect: redirect && host != "" && hostCovered(tlsHosts, host)}
				if exact {
					hr.exact[path] = r
				} else {
					hr.prefixes = append(hr.prefixes, r)
				}
				t.Routes++
			}
		}
	}
	for _, hr := range t.allRules() {
		slices.SortStableFunc(hr.prefixes, func(a, b *Route) int { return cmp.Compare(len(b.Path), len(a.Path)) })
	}
	b.endpoints, b.certs = usedEps, usedCerts
	return t, problems
}

func (t *Table) hostRules(host string) *hostRules {
	var m map[string]*hostRules
	var k string
	switch {
	case host == "":
		if t.anyHost == nil {
			t.anyHost = &hostRules{exact: map[string]*Route{}}
		}
		return t.anyHost
	case strings.HasPrefix(host, "*."):
		m, k = t.wild, host[2:]
	default:
		m, k = t.exact, host
	}
	hr := m[k]
	if hr == nil {
		hr = &hostRules{exact: map[string]*Route{}}
		m[k] = hr
	}
	return hr
}

func (t *Table) allRules() []*hostRules {
	var out []*hostRules
	for _, hr := range t.exact {
		out = append(out, hr)
	}
	for _, hr := range t.wild {
		out = append(out, hr)
	}
	if t.anyHost != nil {
		out = append(out, t.anyHost)
	}
	return out
}

// hostCovered says whether host is one of hosts, directly or through a
// wildcard entry.
func hostCovered(hosts map[string]bool, host string) bool {
	if hosts[host] {
		return true
	}
	if i := strings.IndexByte(host, '.'); i > 0 && !strings.HasPrefix(host, "*.") {
		return hosts["*"+host[i:]]
	}
	return false
}

// validateIngress returns why an Ingress cannot be served, or "": the
// API's validation, then what this controller serves (Service backends).
func validateIngress(ing *networkingv1.Ingress) string {
	if errs := ingressvalidation.Validate(ing); len(errs) > 0 {
		return errs.ToAggregate().Error()
	}
	for i, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for j, p := range rule.HTTP.Paths {
			if p.Backend.Service == nil {
				return fmt.Sprintf("rules[%d].http.paths[%d].backend: only Service backends are served", i, j)
			}
		}
	}
	if db := ing.Spec.DefaultBackend; db != nil && db.Service == nil {
		return "defaultBackend: only Service backends are served"
	}
	return ""
}

// options reads an Ingress's annotations over the defaults.
func (b *Builder) options(ing *networkingv1.Ingress) (*Options, []string) {
	o := b.defaults
	var bad []string
	dur := func(key string, into *time.Duration) {
		v, ok := ing.Annotations[key]
		if !ok {
			return
		}
		d, err := parseSeconds(v)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s=%q: %v (default kept)", key, v, err))
			return
		}
		*into = d
	}
	dur(AnnotationConnectTimeout, &o.ConnectTimeout)
	dur(AnnotationReadTimeout, &o.Timeout)
	if v, ok := ing.Annotations[AnnotationBodySize]; ok {
		n, err := parseSize(v)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s=%q: %v (default kept)", AnnotationBodySize, v, err))
		} else {
			o.MaxBodyBytes = n
		}
	}
	switch v := ing.Annotations[AnnotationLoadBalance]; v {
	case "", "round-robin":
	case "least-request":
		o.LeastRequest = true
	default:
		bad = append(bad, fmt.Sprintf("%s=%q: not round-robin or least-request (round-robin kept)", AnnotationLoadBalance, v))
	}
	if v, ok := ing.Annotations[AnnotationSSLRedirect]; ok && v != "true" && v != "false" {
		bad = append(bad, fmt.Sprintf("%s=%q: not true or false (true kept)", AnnotationSSLRedirect, v))
	}
	return &o, bad
}

// parseSeconds reads a timeout: a Go duration ("30s") or whole seconds
// ("30", as ingress-nginx takes them).
func parseSeconds(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("must be positive")
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("not a duration")
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive")
	}
	return d, nil
}

// parseSize reads a body size: nginx's "8k", "1m", "1g" (binary
// units), or a Kubernetes quantity ("10Mi", "1000"); "0" means no limit.
func parseSize(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	case strings.HasSuffix(s, "g"):
		mult, s = 1<<30, strings.TrimSuffix(s, "g")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return n * mult, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() < 0 {
		return 0, fmt.Errorf("not a size")
	}
	return q.Value(), nil
}

// certificate parses (once per Secret version) a TLS Secret.
func (b *Builder) certificate(src Sources, ns, name string, used map[string]certEntry) (*tls.Certificate, error) {
	if name == "" {
		return nil, errors.New("no secretName")
	}
	k := ns + "/" + name
	sec := src.Secret(ns, name)
	if sec == nil {
		return nil, fmt.Errorf("secret %s not found", k)
	}
	if e, ok := b.certs[k]; ok && e.version == sec.ResourceVersion {
		used[k] = e
		return e.cert, e.err
	}
	e := certEntry{version: sec.ResourceVersion}
	switch {
	case sec.Type != corev1.SecretTypeTLS && sec.Type != corev1.SecretTypeOpaque:
		e.err = fmt.Errorf("secret %s has type %s, not %s", k, sec.Type, corev1.SecretTypeTLS)
	case len(sec.Data[corev1.TLSCertKey]) == 0 || len(sec.Data[corev1.TLSPrivateKeyKey]) == 0:
		e.err = fmt.Errorf("secret %s lacks %s or %s", k, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	default:
		c, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			e.err = fmt.Errorf("secret %s: %w", k, err)
		} else {
			e.cert = &c
		}
	}
	used[k] = e
	return e.cert, e.err
}

// backend resolves an Ingress backend to a shared Backend and says what
// is wrong when it has no endpoints for a reason other than none being
// ready.
func (b *Builder) backend(src Sources, ns string, be *networkingv1.IngressBackend, backends map[string]*Backend, used map[string]*endpoint) (*Backend, string) {
	sb := be.Service
	portKey := sb.Port.Name
	if portKey == "" {
		portKey = strconv.Itoa(int(sb.Port.Number))
	}
	name := ns + "/" + sb.Name + ":" + portKey
	if bk, ok := backends[name]; ok {
		if bk.Problem != "" {
			return bk, bk.Problem
		}
		return bk, ""
	}
	bk := &Backend{Name: name, Service: ns + "/" + sb.Name}
	backends[name] = bk
	svc := src.Service(ns, sb.Name)
	if svc == nil {
		bk.Problem = fmt.Sprintf("Service %s/%s not found", ns, sb.Name)
		return bk, bk.Problem
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if (sb.Port.Name != "" && p.Name == sb.Port.Name) || (sb.Port.Name == "" && p.Port == sb.Port.Number) {
			sp = p
			break
		}
	}
	if sp == nil {
		bk.Problem = fmt.Sprintf("Service %s/%s has no port %s", ns, sb.Name, portKey)
		return bk, bk.Problem
	}
	if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
		bk.Problem = fmt.Sprintf("Service %s/%s port %s is %s, not TCP", ns, sb.Name, portKey, sp.Protocol)
		return bk, bk.Problem
	}
	seen := map[string]bool{}
	for _, sl := range src.Slices(ns, sb.Name) {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port := int32(-1)
		for _, p := range sl.Ports {
			pn := ""
			if p.Name != nil {
				pn = *p.Name
			}
			if pn == sp.Name && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if len(ep.Addresses) == 0 {
				continue
			}
			a, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			addr := net.JoinHostPort(a.String(), strconv.Itoa(int(port)))
			if seen[addr] {
				continue
			}
			seen[addr] = true
			e := used[addr]
			if e == nil {
				if e = b.endpoints[addr]; e == nil {
					e = &endpoint{addr: addr}
				}
				used[addr] = e
			}
			bk.endpoints = append(bk.endpoints, e)
		}
	}
	slices.SortFunc(bk.endpoints, func(x, y *endpoint) int { return cmp.Compare(x.addr, y.addr) })
	return bk, ""
}

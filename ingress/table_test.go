package ingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// world is an in-memory Sources.
type world struct {
	ings     []*networkingv1.Ingress
	services map[string]*corev1.Service
	slices   map[string][]*discoveryv1.EndpointSlice
	secrets  map[string]*corev1.Secret
}

func newWorld() *world {
	return &world{services: map[string]*corev1.Service{}, slices: map[string][]*discoveryv1.EndpointSlice{}, secrets: map[string]*corev1.Secret{}}
}

func (w *world) sources() Sources {
	return Sources{
		Ingresses: w.ings,
		Service:   func(ns, n string) *corev1.Service { return w.services[ns+"/"+n] },
		Slices:    func(ns, s string) []*discoveryv1.EndpointSlice { return w.slices[ns+"/"+s] },
		Secret:    func(ns, n string) *corev1.Secret { return w.secrets[ns+"/"+n] },
	}
}

// service adds Service ns/name with port 80 "http" and ready endpoints
// addrs on port 8080 (a not-ready one, 10.9.9.9, too).
func (w *world) service(ns, name string, addrs ...string) {
	w.services[ns+"/"+name] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	pn, port := "http", int32(8080)
	yes, no := true, false
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-x"}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &port}}}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}})
	}
	sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.9.9.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}})
	w.slices[ns+"/"+name] = []*discoveryv1.EndpointSlice{sl}
}

type path struct {
	path, typ, svc string
}

func ing(name string, age int, host string, paths ...path) *networkingv1.Ingress {
	i := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(time.Duration(age) * time.Minute))}}
	rule := networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{}}}
	for _, p := range paths {
		pt := networkingv1.PathType(p.typ)
		rule.HTTP.Paths = append(rule.HTTP.Paths, networkingv1.HTTPIngressPath{Path: p.path, PathType: &pt,
			Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: p.svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}})
	}
	i.Spec.Rules = []networkingv1.IngressRule{rule}
	return i
}

func build(t *testing.T, w *world) (*Table, []Problem) {
	t.Helper()
	return NewBuilder(Options{ConnectTimeout: time.Second, Timeout: time.Minute}).Build(w.sources())
}

func TestMatchPrecedence(t *testing.T) {
	w := newWorld()
	for _, s := range []string{"root", "foo", "foobar", "exact", "deep", "wild", "any", "def", "impl"} {
		w.service("default", s, "10.0.0.1")
	}
	w.ings = []*networkingv1.Ingress{
		ing("a", 1, "example.com",
			path{"/", "Prefix", "root"},
			path{"/foo", "Prefix", "foo"},
			path{"/foo/", "Exact", "exact"},
			path{"/foo/bar/baz", "Prefix", "deep"},
			path{"/foobar", "Prefix", "foobar"},
			path{"/impl", "ImplementationSpecific", "impl"}),
		ing("b", 2, "*.example.com", path{"/", "Prefix", "wild"}),
		ing("c", 3, "", path{"/any", "Prefix", "any"}),
	}
	d := ing("d", 4, "")
	d.Spec.Rules = nil
	d.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "def", Port: networkingv1.ServiceBackendPort{Name: "http"}}}
	w.ings = append(w.ings, d)
	tab, problems := build(t, w)
	if len(problems) != 0 {
		t.Fatalf("problems: %+v", problems)
	}
	for _, tc := range []struct{ host, path, want string }{
		{"example.com", "/", "root"},
		{"EXAMPLE.com:8080", "/x", "root"},
		{"example.com.", "/foo", "foo"},
		{"example.com", "/foo/", "exact"}, // Exact before Prefix
		{"example.com", "/foo/x", "foo"},
		{"example.com", "/foobar", "foobar"}, // element-wise: /foo does not take /foobar
		{"example.com", "/foobarx", "root"},
		{"example.com", "/foo/bar/baz/q", "deep"}, // longest first
		{"example.com", "/foo/bar/bazz", "foo"},
		{"example.com", "/impl/a", "impl"},
		{"a.example.com", "/x", "wild"},
		{"a.b.example.com", "/any", "any"}, // a wildcard covers a single label
		{"other.org", "/any/thing", "any"},
		{"other.org", "/nothing", "def"},
	} {
		r := tab.Match(tc.host, tc.path)
		got := ""
		if r != nil {
			got = strings.TrimPrefix(strings.Split(r.Backend.Name, ":")[0], "default/")
		}
		if got != tc.want {
			t.Errorf("Match(%q, %q) = %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
	if r := tab.Match("example.com", "/"); !slices.Equal(r.Backend.Endpoints(), []string{"10.0.0.1:8080"}) {
		t.Errorf("endpoints %v: want only the ready one", r.Backend.Endpoints())
	}
}

func TestNoMatchIs404(t *testing.T) {
	w := newWorld()
	w.service("default", "s", "10.0.0.1")
	w.ings = []*networkingv1.Ingress{ing("a", 1, "example.com", path{"/app", "Prefix", "s"})}
	tab, _ := build(t, w)
	for _, tc := range [][2]string{{"example.com", "/"}, {"example.com", "/application"}, {"other.com", "/app"}} {
		if r := tab.Match(tc[0], tc[1]); r != nil {
			t.Errorf("Match(%q, %q) = %s, want none", tc[0], tc[1], r.Backend.Name)
		}
	}
}

func TestConflictOlderWins(t *testing.T) {
	w := newWorld()
	w.service("default", "old", "10.0.0.1")
	w.service("default", "new", "10.0.0.2")
	w.ings = []*networkingv1.Ingress{
		ing("newer", 5, "example.com", path{"/app/", "Prefix", "new"}, path{"/other", "Prefix", "new"}),
		ing("older", 1, "example.com", path{"/app", "Prefix", "old"}),
	}
	tab, problems := build(t, w)
	if r := tab.Match("example.com", "/app"); r == nil || r.Ingress != "default/older" {
		t.Fatalf("route %+v: want the older Ingress", r)
	}
	if r := tab.Match("example.com", "/other"); r == nil || r.Ingress != "default/newer" {
		t.Errorf("the newer Ingress's other path should still serve: %+v", r)
	}
	if len(problems) != 1 || problems[0].Reason != "Conflict" || problems[0].Ingress.Name != "newer" {
		t.Errorf("problems %+v: want one Conflict on newer", problems)
	}
}

func TestInvalidIngressSkipped(t *testing.T) {
	w := newWorld()
	w.service("default", "s", "10.0.0.1")
	bad := []*networkingv1.Ingress{
		ing("relpath", 1, "a.com", path{"app", "Prefix", "s"}),
		ing("dots", 1, "b.com", path{"/a/../b", "Prefix", "s"}),
		ing("badhost", 1, "*.*.c.com", path{"/", "Prefix", "s"}),
		ing("badtype", 1, "d.com", path{"/", "Regex", "s"}),
	}
	good := ing("good", 2, "e.com", path{"/", "Prefix", "s"})
	nosvc := ing("nosvc", 3, "f.com", path{"/", "Prefix", "missing"})
	noport := ing("noport", 3, "g.com", path{"/", "Prefix", "s"})
	noport.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port = networkingv1.ServiceBackendPort{Name: "grpc"}
	w.ings = append(bad, good, nosvc, noport)
	tab, problems := build(t, w)
	reasons := map[string]string{}
	for _, p := range problems {
		reasons[p.Ingress.Name] = p.Reason
	}
	for _, b := range bad {
		if reasons[b.Name] != "InvalidIngress" {
			t.Errorf("%s: reason %q, want InvalidIngress", b.Name, reasons[b.Name])
		}
		if r := tab.Match(b.Spec.Rules[0].Host, "/"); r != nil {
			t.Errorf("%s is served", b.Name)
		}
	}
	if r := tab.Match("e.com", "/"); r == nil || len(r.Backend.endpoints) != 1 {
		t.Errorf("the valid Ingress does not serve: %+v", r)
	}
	for _, n := range []string{"nosvc", "noport"} {
		if reasons[n] != "BackendNotFound" {
			t.Errorf("%s: reason %q, want BackendNotFound", n, reasons[n])
		}
	}
	if r := tab.Match("f.com", "/"); r == nil || len(r.Backend.endpoints) != 0 || r.Backend.Problem == "" {
		t.Errorf("a route to a missing Service should stay, without endpoints: %+v", r)
	}
}

func TestEndpointStateOutlivesRebuild(t *testing.T) {
	w := newWorld()
	w.service("default", "s", "10.0.0.1", "10.0.0.2")
	w.ings = []*networkingv1.Ingress{ing("a", 1, "", path{"/", "Prefix", "s"})}
	b := NewBuilder(Options{})
	t1, _ := b.Build(w.sources())
	e1 := t1.Match("x", "/").Backend.endpoints[0]
	e1.downUntil.Store(42)
	t2, _ := b.Build(w.sources())
	if e2 := t2.Match("x", "/").Backend.endpoints[0]; e2 != e1 {
		t.Error("a rebuild lost the endpoint's state")
	}
}

// selfSignedPEM makes a certificate for names.
func selfSignedPEM(t testing.TB, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func TestTLSAndRedirect(t *testing.T) {
	w := newWorld()
	w.service("default", "s", "10.0.0.1")
	c1, k1 := selfSignedPEM(t, "a.com")
	c2, k2 := selfSignedPEM(t, "*.b.com")
	w.secrets["default/a"] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a", ResourceVersion: "1"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": c1, "tls.key": k1}}
	w.secrets["default/b"] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "b", ResourceVersion: "1"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": c2, "tls.key": k2}}
	w.secrets["default/bad"] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bad"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("junk"), "tls.key": k2}}
	a := ing("a", 1, "a.com", path{"/", "Prefix", "s"})
	a.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"a.com"}, SecretName: "a"}}
	b := ing("b", 2, "*.b.com", path{"/", "Prefix", "s"})
	b.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"*.b.com"}, SecretName: "b"}}
	b.Annotations = map[string]string{AnnotationSSLRedirect: "false"}
	c := ing("c", 3, "c.com", path{"/", "Prefix", "s"})
	c.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"c.com"}, SecretName: "bad"}}
	w.ings = []*networkingv1.Ingress{a, b, c}
	tab, problems := build(t, w)
	if got := tab.Certificate("A.com"); got == nil || got.Leaf.Subject.CommonName != "a.com" {
		t.Errorf("a.com: %v", got)
	}
	if got := tab.Certificate("x.b.com"); got == nil || got.Leaf.Subject.CommonName != "*.b.com" {
		t.Errorf("x.b.com: %v", got)
	}
	if got := tab.Certificate("c.com"); got != nil {
		t.Error("c.com has a certificate from a bad Secret")
	}
	if len(problems) != 1 || problems[0].Reason != "TLSSecretInvalid" || problems[0].Ingress.Name != "c" {
		t.Errorf("problems %+v", problems)
	}
	if !tab.Match("a.com", "/").Redirect || tab.Match("x.b.com", "/").Redirect || !tab.Match("c.com", "/").Redirect {
		t.Error("redirect: want a.com and c.com (TLS hosts), not x.b.com (ssl-redirect false)")
	}
}

func TestAnnotations(t *testing.T) {
	w := newWorld()
	w.service("default", "s", "10.0.0.1")
	a := ing("a", 1, "a.com", path{"/", "Prefix", "s"})
	a.Annotations = map[string]string{AnnotationConnectTimeout: "3", AnnotationReadTimeout: "2m",
		AnnotationBodySize: "8m", AnnotationLoadBalance: "least-request"}
	b := ing("b", 2, "b.com", path{"/", "Prefix", "s"})
	b.Annotations = map[string]string{AnnotationBodySize: "lots", AnnotationReadTimeout: "-1"}
	w.ings = []*networkingv1.Ingress{a, b}
	tab, problems := build(t, w)
	o := tab.Match("a.com", "/").Options
	if o.ConnectTimeout != 3*time.Second || o.Timeout != 2*time.Minute || o.MaxBodyBytes != 8<<20 || !o.LeastRequest {
		t.Errorf("options %+v", o)
	}
	if ob := tab.Match("b.com", "/").Options; ob.Timeout != time.Minute || ob.MaxBodyBytes != 0 {
		t.Errorf("bad annotations should keep defaults: %+v", ob)
	}
	if len(problems) != 2 {
		t.Errorf("problems %+v: want two InvalidAnnotation", problems)
	}
	for _, tc := range []struct {
		in   string
		want int64
	}{{"0", 0}, {"100", 100}, {"1k", 1024}, {"2G", 2 << 30}, {"10Mi", 10 << 20}} {
		if got, err := parseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v", tc.in, got, err)
		}
	}
}

func TestPick(t *testing.T) {
	b := &Backend{}
	for _, a := range []string{"a", "b", "c"} {
		b.endpoints = append(b.endpoints, &endpoint{addr: a})
	}
	seen := map[string]int{}
	for range 30 {
		seen[pick(b, nil, false).addr]++
	}
	if seen["a"] != 10 || seen["b"] != 10 || seen["c"] != 10 {
		t.Errorf("round-robin: %v", seen)
	}
	b.endpoints[1].downUntil.Store(time.Now().Add(time.Hour).UnixNano())
	for range 10 {
		if e := pick(b, nil, false); e.addr == "b" {
			t.Fatal("picked an endpoint marked down")
		}
	}
	if e := pick(b, []*endpoint{b.endpoints[0], b.endpoints[2]}, false); e == nil || e.addr != "b" {
		t.Errorf("with the others tried, the down one is the last resort: %v", e)
	}
	if e := pick(b, b.endpoints, false); e != nil {
		t.Errorf("all tried: got %v", e)
	}
	b.endpoints[1].downUntil.Store(0)
	b.endpoints[0].active.Store(100)
	b.endpoints[2].active.Store(100)
	hits := 0
	// Two random choices, the less busy kept: the idle one wins unless
	// neither choice is it, 5/9 of the time (round-robin: 1/3).
	for range 3000 {
		if pick(b, nil, true).addr == "b" {
			hits++
		}
	}
	if hits < 1400 {
		t.Errorf("least-request picked the idle endpoint %d times of 3000, want about 1667", hits)
	}
}

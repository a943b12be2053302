package ingress_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kforge.dev/kforge/controlplane/local"
	"kforge.dev/kforge/controlplane/local/localtest"
	"kforge.dev/kforge/ingress"
)

const ns = "default"

// env is a local control plane with one ingress instance in front of it.
type env struct {
	t      *testing.T
	admin  kubernetes.Interface
	ctl    *ingress.Controller
	http   string // host:port of the HTTP listener
	https  string
	logBuf *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func upEnv(t *testing.T) *env {
	t.Helper()
	cp := localtest.Start(t)
	dir, rc := cp.Dir, cp.Config
	e := &env{t: t, admin: kubernetes.NewForConfigOrDie(rc), logBuf: &syncBuffer{}}
	// The role's own identity, as the PKI issues it: RBAC is part of the
	// test.
	own, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, local.PKIDir, "kubeconfigs", "ingress.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	e.start(own)
	return e
}

// start runs an ingress instance with the admin identity on free ports.
func (e *env) start(rc *rest.Config) {
	t := e.t
	cfg := ingress.NewConfig()
	cfg.Kubeconfig = "unused"
	cfg.NodeName = "w1"
	cfg.HTTPAddress, cfg.HTTPSAddress, cfg.HealthAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.StatusAddresses = []string{"198.18.0.21"}
	cfg.Upstream.FailTimeout = 2 * time.Second
	ctl, err := ingress.NewWithRESTConfig(cfg, rc, slog.New(slog.DiscardHandler), e.logBuf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ingress Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("ingress Run did not return 20s after cancel")
		}
	})
	e.ctl, e.http, e.https = ctl, ctl.HTTPAddr().String(), ctl.HTTPSAddr().String()
	e.eventually("the instance is ready", func() error {
		if !ctl.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
}

// eventually polls f until it returns nil (30 s at most).
func (e *env) eventually(what string, f func() error) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client sends every request to the instance's listener, whatever the
// URL's host; TLS names come from the URL and certificates are not
// checked (tests look at them).
func (e *env) client(h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			target := e.http
			if strings.HasSuffix(addr, ":443") {
				target = e.https
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", target)
		},
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 64,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get returns status and body of a GET through the instance.
func get(c *http.Client, url string) (int, string, *http.Response, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp, err
}

// backend is a real HTTP server on a loopback address that answers its
// name and echoes the forwarding headers.
type backend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

func startBackend(t *testing.T, ip, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "X-Request-Id"} {
				w.Header().Set("Echo-"+k, r.Header.Get(k))
			}
			_, _ = io.WriteString(w, name)
		}
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	})}}
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() *net.TCPAddr { return b.srv.Listener.Addr().(*net.TCPAddr) }

// service creates a selectorless Service with port 80 "http".
func (e *env) service(name string) {
	e.t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	if _, err := e.admin.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// endpoints sets the Service's endpoints: one EndpointSlice per address
// (each backend has its own port), named SVC-i; extra slices are removed.
func (e *env) endpoints(svc string, addrs ...*net.TCPAddr) {
	e.t.Helper()
	ctx := context.Background()
	api := e.admin.DiscoveryV1().EndpointSlices(ns)
	ready := true
	for i, a := range addrs {
		name, port, proto := "http", int32(a.Port), corev1.ProtocolTCP
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", svc, i), Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{a.IP.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		}
		cur, err := api.Get(ctx, sl.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(ctx, sl, metav1.CreateOptions{})
		case err == nil:
			sl.ResourceVersion = cur.ResourceVersion
			_, err = api.Update(ctx, sl, metav1.UpdateOptions{})
		}
		if err != nil {
			e.t.Fatal(err)
		}
	}
	for i := len(addrs); ; i++ {
		err := api.Delete(ctx, fmt.Sprintf("%s-%d", svc, i), metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

type rule struct {
	host, path string
	exact      bool
	svc        string
}

func (e *env) ingress(name string, mutate func(*networkingv1.Ingress), rules ...rule) *networkingv1.Ingress {
	e.t.Helper()
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, r := range rules {
		pt := networkingv1.PathTypePrefix
		if r.exact {
			pt = networkingv1.PathTypeExact
		}
		ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{Host: r.host, IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: r.path, PathType: &pt,
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: r.svc, Port: networkingv1.ServiceBackendPort{Name: "http"}}}}}}}})
	}
	if mutate != nil {
		mutate(ing)
	}
	out, err := e.admin.NetworkingV1().Ingresses(ns).Create(context.Background(), ing, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// expect polls until GET url through the instance answers code and body.
func (e *env) expect(c *http.Client, url string, code int, body string) *http.Response {
	e.t.Helper()
	var resp *http.Response
	e.eventually("GET "+url, func() error {
		got, b, r, err := get(c, url)
		if err != nil {
			return err
		}
		if got != code || (body != "" && b != body) {
			return fmt.Errorf("got %d %q, want %d %q", got, b, code, body)
		}
		resp = r
		return nil
	})
	return resp
}

func certPEM(t *testing.T, cn string) (c, k []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		DNSNames: []string{cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
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

func (e *env) tlsSecret(name, cn string) *corev1.Secret {
	e.t.Helper()
	c, k := certPEM(e.t, cn)
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: c, corev1.TLSPrivateKeyKey: k}}
	ctx := context.Background()
	cur, err := e.admin.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = cur.ResourceVersion
		_, err = e.admin.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = e.admin.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// peerCN is the CommonName of the certificate the instance serves for
// an SNI name.
func (e *env) peerCN(sni string) (string, error) {
	conn, err := tls.Dial("tcp", e.https, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func TestIngress(t *testing.T) {
	e := upEnv(t)
	ctx := context.Background()
	c := e.client(false)

	// The instance creates the default IngressClass.
	e.eventually("IngressClass kforge", func() error {
		ic, err := e.admin.NetworkingV1().IngressClasses().Get(ctx, ingress.DefaultClassName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ic.Spec.Controller != ingress.DefaultController || ic.Annotations[ingress.DefaultClassAnnotation] != "true" {
			return fmt.Errorf("class %+v", ic)
		}
		return nil
	})

	names := []string{"root", "api", "apiv2", "exact", "wild", "def", "other"}
	for i, n := range names {
		b := startBackend(t, "127.0.0."+strconv.Itoa(2+i), n, nil)
		e.service(n)
		e.endpoints(n, b.addr())
	}
	e.ingress("main", nil,
		rule{"shop.test", "/", false, "root"},
		rule{"shop.test", "/api", false, "api"},
		rule{"shop.test", "/api/v2", false, "apiv2"},
		rule{"shop.test", "/api/exact", true, "exact"},
		rule{"*.wild.test", "/", false, "wild"})
	other := "other"
	e.ingress("other-class", func(i *networkingv1.Ingress) { i.Spec.IngressClassName = &other }, rule{"ignored.test", "/", false, "other"})
	e.ingress("default", func(i *networkingv1.Ingress) {
		i.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "def", Port: networkingv1.ServiceBackendPort{Number: 80}}}
	})

	// The apiserver gives an Ingress without a class the default one
	// (DefaultIngressClass admission), not one with the legacy annotation.
	if ing, err := e.admin.NetworkingV1().Ingresses(ns).Get(ctx, "main", metav1.GetOptions{}); err != nil ||
		ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != ingress.DefaultClassName {
		t.Errorf("main's class: %v %v, want kforge from the default IngressClass", err, ing.Spec.IngressClassName)
	}
	legacy := e.ingress("legacy", func(i *networkingv1.Ingress) {
		i.Annotations = map[string]string{"kubernetes.io/ingress.class": "kforge"}
	}, rule{"legacy.test", "/", false, "root"})
	if legacy.Spec.IngressClassName != nil {
		t.Errorf("an Ingress with the legacy class annotation got class %q", *legacy.Spec.IngressClassName)
	}

	t.Run("precedence", func(t *testing.T) {
		for _, tc := range []struct{ url, want string }{
			{"http://legacy.test/", "root"},
			{"http://shop.test/", "root"},
			{"http://shop.test/apix", "root"},
			{"http://shop.test/api", "api"},
			{"http://shop.test/api/v1", "api"},
			{"http://shop.test/api/v2/x", "apiv2"},
			{"http://shop.test/api/exact", "exact"},
			{"http://shop.test/api/exact/more", "api"},
			{"http://a.wild.test/x", "wild"},
			{"http://a.b.wild.test/x", "def"},
			{"http://unknown.test/", "def"},
			{"http://ignored.test/", "def"},
		} {
			e.expect(c, tc.url, 200, tc.want)
		}
	})

	t.Run("headers", func(t *testing.T) {
		resp := e.expect(c, "http://shop.test/api", 200, "api")
		h := resp.Header
		if h.Get("Echo-X-Forwarded-For") != "127.0.0.1" || h.Get("Echo-X-Real-Ip") != "127.0.0.1" ||
			h.Get("Echo-X-Forwarded-Proto") != "http" || h.Get("Echo-X-Forwarded-Host") != "shop.test" {
			t.Errorf("forwarding headers %v", h)
		}
		if id := h.Get("Echo-X-Request-Id"); len(id) != 32 || id != h.Get("X-Request-Id") {
			t.Errorf("request id %q, answered %q", id, h.Get("X-Request-Id"))
		}
		req, _ := http.NewRequest("GET", "http://shop.test/", nil)
		req.Header.Set("X-Request-Id", "given")
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		r2, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r2.Body.Close()
		if r2.Header.Get("Echo-X-Request-Id") != "given" || r2.Header.Get("Echo-X-Forwarded-For") != "203.0.113.9, 127.0.0.1" {
			t.Errorf("kept headers %v", r2.Header)
		}
		// Oversized headers get 431.
		big := strings.Repeat("x", 64<<10)
		req, _ = http.NewRequest("GET", "http://shop.test/", nil)
		req.Header.Set("X-Big", big)
		r3, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r3.Body.Close()
		if r3.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("oversized headers: %d, want 431", r3.StatusCode)
		}
	})

	t.Run("404 without a default backend", func(t *testing.T) {
		if err := e.admin.NetworkingV1().Ingresses(ns).Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.expect(c, "http://unknown.test/", 404, "")
		e.expect(c, "http://shop.test/api", 200, "api")
	})

	t.Run("status and events", func(t *testing.T) {
		e.eventually("status.loadBalancer", func() error {
			ing, err := e.admin.NetworkingV1().Ingresses(ns).Get(ctx, "main", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 1 || lb[0].IP != "198.18.0.21" {
				return fmt.Errorf("status %+v", lb)
			}
			return nil
		})
		ing, _ := e.admin.NetworkingV1().Ingresses(ns).Get(ctx, "other-class", metav1.GetOptions{})
		if len(ing.Status.LoadBalancer.Ingress) != 0 {
			t.Errorf("an Ingress of another class got status %+v", ing.Status.LoadBalancer)
		}
		// An invalid Ingress is refused by the apiserver, as upstream's
		// (the controller's own check, for objects stored before, is
		// TestInvalidIngressSkipped).
		badPT := networkingv1.PathTypePrefix
		_, err := e.admin.NetworkingV1().Ingresses(ns).Create(ctx, &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"},
			Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "bad.test", IngressRuleValue: networkingv1.IngressRuleValue{
				HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: "relative", PathType: &badPT,
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "root", Port: networkingv1.ServiceBackendPort{Name: "http"}}}}}}}}}}},
			metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) {
			t.Errorf("an Ingress with a relative Prefix path: %v, want 422 Invalid", err)
		}
		e.ingress("late", nil, rule{"late.test", "/", false, "late"}) // Service missing: 503 and an event
		e.expect(c, "http://late.test/", 503, "")
		e.expect(c, "http://shop.test/api", 200, "api")
		e.eventually("events", func() error {
			evs, err := e.admin.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, ev := range evs.Items {
				got[ev.Regarding.Name] = ev.Reason
			}
			if got["late"] != "BackendNotFound" {
				return fmt.Errorf("events by Ingress: %v", got)
			}
			return nil
		})
		b := startBackend(t, "127.0.0.20", "late", nil)
		e.service("late")
		e.endpoints("late", b.addr())
		e.expect(c, "http://late.test/", 200, "late")
	})

	t.Run("tls", func(t *testing.T) {
		e.tlsSecret("a-cert", "a.tls.test")
		e.tlsSecret("b-cert", "b.tls.test")
		e.ingress("tls", func(i *networkingv1.Ingress) {
			i.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"a.tls.test"}, SecretName: "a-cert"}, {Hosts: []string{"b.tls.test"}, SecretName: "b-cert"},
				{Hosts: []string{"c.tls.test"}, SecretName: "missing"}}
		}, rule{"a.tls.test", "/", false, "root"}, rule{"b.tls.test", "/", false, "api"}, rule{"c.tls.test", "/", false, "api"})
		e.ingress("tls-noredirect", func(i *networkingv1.Ingress) {
			i.Annotations = map[string]string{ingress.AnnotationSSLRedirect: "false"}
			i.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"d.tls.test"}, SecretName: "a-cert"}}
		}, rule{"d.tls.test", "/", false, "root"})
		for sni, want := range map[string]string{"a.tls.test": "a.tls.test", "b.tls.test": "b.tls.test",
			"c.tls.test": "kforge ingress default certificate", "nothing.test": "kforge ingress default certificate"} {
			e.eventually("certificate for "+sni, func() error {
				cn, err := e.peerCN(sni)
				if err != nil {
					return err
				}
				if cn != want {
					return fmt.Errorf("CN %q, want %q", cn, want)
				}
				return nil
			})
		}
		e.expect(c, "https://a.tls.test/", 200, "root")
		e.expect(c, "https://b.tls.test/", 200, "api")
		resp := e.expect(c, "http://a.tls.test/x?y=1", http.StatusPermanentRedirect, "")
		_, port, _ := net.SplitHostPort(e.https)
		if loc := resp.Header.Get("Location"); loc != "https://a.tls.test:"+port+"/x?y=1" {
			t.Errorf("redirect to %q", loc)
		}
		e.expect(c, "http://d.tls.test/", 200, "root")
		resp = e.expect(c, "https://a.tls.test/", 200, "root")
		if resp.Header.Get("Echo-X-Forwarded-Proto") != "https" {
			t.Errorf("X-Forwarded-Proto %q over TLS", resp.Header.Get("Echo-X-Forwarded-Proto"))
		}

		// A new certificate in the Secret is served without a restart.
		e.tlsSecret("a-cert", "renewed.a.tls.test")
		e.ingress("tls-renewed-name", func(i *networkingv1.Ingress) {
			i.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"renewed.a.tls.test"}, SecretName: "a-cert"}}
		}, rule{"renewed.a.tls.test", "/", false, "root"})
		e.eventually("the renewed certificate", func() error {
			cn, err := e.peerCN("a.tls.test")
			if err != nil {
				return err
			}
			if cn != "renewed.a.tls.test" {
				return fmt.Errorf("CN %q", cn)
			}
			return nil
		})
	})

	t.Run("http2", func(t *testing.T) {
		c2 := e.client(true)
		resp := e.expect(c2, "https://b.tls.test/", 200, "api")
		if resp.ProtoMajor != 2 {
			t.Errorf("protocol %s, want HTTP/2", resp.Proto)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		ws := startBackend(t, "127.0.0.30", "ws", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "websocket" {
				http.Error(w, "no upgrade", 400)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			_, _ = io.Copy(conn, brw) // echo
		})
		e.service("ws")
		e.endpoints("ws", ws.addr())
		e.ingress("ws", nil, rule{"ws.test", "/", false, "ws"})
		e.eventually("websocket echo", func() error {
			conn, err := net.Dial("tcp", e.http)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"); err != nil {
				return err
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return err
			}
			if resp.StatusCode != 101 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			for _, msg := range []string{"hello", "again"} {
				if _, err := io.WriteString(conn, msg); err != nil {
					return err
				}
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(br, buf); err != nil {
					return err
				}
				if string(buf) != msg {
					return fmt.Errorf("echo %q", buf)
				}
			}
			return nil
		})
	})

	t.Run("retries and body limit", func(t *testing.T) {
		good := startBackend(t, "127.0.0.40", "good", nil)
		failing := startBackend(t, "127.0.0.41", "failing", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "going away", http.StatusServiceUnavailable)
		})
		dead := startBackend(t, "127.0.0.42", "dead", nil)
		deadAddr := dead.addr()
		dead.srv.Close() // nothing listens there any more: dials fail
		e.service("retry")
		e.endpoints("retry", good.addr(), failing.addr(), deadAddr)
		e.ingress("retry", func(i *networkingv1.Ingress) {
			i.Annotations = map[string]string{ingress.AnnotationBodySize: "1k"}
		}, rule{"retry.test", "/", false, "retry"})
		e.expect(c, "http://retry.test/", 200, "good")
		for i := range 30 {
			code, body, _, err := get(c, "http://retry.test/")
			if err != nil || code != 200 || body != "good" {
				t.Fatalf("request %d: %d %q %v", i, code, body, err)
			}
		}
		if failing.hits.Load() == 0 {
			t.Error("the failing endpoint was never tried: the retries were not exercised")
		}
		// A POST is not retried on a 503; one with a body over the limit
		// gets 413.
		resp, err := c.Post("http://retry.test/", "text/plain", strings.NewReader(strings.Repeat("x", 2000)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("large body: %d, want 413", resp.StatusCode)
		}
	})

	t.Run("access log", func(t *testing.T) {
		e.eventually("an access log line", func() error {
			if !strings.Contains(e.logBuf.String(), `"host":"shop.test","method":"GET","uri":"/api"`) {
				return fmt.Errorf("no line for shop.test/api in %d bytes", len(e.logBuf.String()))
			}
			return nil
		})
	})

	t.Run("metrics and health", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			code, _, _, err := get(http.DefaultClient, "http://"+e.ctl.HealthAddr().String()+p)
			if err != nil || code != 200 {
				t.Errorf("%s: %d %v", p, code, err)
			}
		}
		_, body, _, err := get(http.DefaultClient, "http://"+e.ctl.HealthAddr().String()+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`kforge_ingress_requests_total{code="200",ingress="default/main",service="default/api"}`,
			"kforge_ingress_config_reloads_total", "kforge_ingress_active_connections"} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("rolling replacement under load", func(t *testing.T) {
		e.service("roll")
		gen := 0
		var cur []*backend
		next := func() []*backend {
			gen++
			var bs []*backend
			for i := range 3 {
				bs = append(bs, startBackend(t, fmt.Sprintf("127.0.%d.%d", 50+gen, 1+i), "roll", nil))
			}
			return bs
		}
		cur = next()
		addrs := func(bs []*backend) []*net.TCPAddr {
			var out []*net.TCPAddr
			for _, b := range bs {
				out = append(out, b.addr())
			}
			return out
		}
		e.endpoints("roll", addrs(cur)...)
		e.ingress("roll", nil, rule{"roll.test", "/", false, "roll"})
		e.expect(c, "http://roll.test/", 200, "roll")

		stop := make(chan struct{})
		var ok, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, body, _, err := get(c, "http://roll.test/")
					if err != nil || code != 200 || body != "roll" {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", code, body, err))
						continue
					}
					ok.Add(1)
				}
			})
		}
		// Replace the endpoints one at a time, as a rolling update does:
		// start a new pod, publish it, unpublish an old one, stop it.
		for round := range 3 {
			fresh := next()
			for i := range cur {
				mixed := append(addrs(fresh[:i+1]), addrs(cur[i+1:])...)
				e.endpoints("roll", mixed...)
				cur[i].srv.Close() // at once: requests may still be on their way to it
			}
			cur = fresh
			t.Logf("round %d: %d requests so far", round, ok.Load())
		}
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		t.Logf("rolling replacement: %d requests answered, %d failed", ok.Load(), failed.Load())
		if failed.Load() != 0 {
			t.Errorf("%d requests failed during the rolling replacement; first: %v", failed.Load(), firstErr.Load())
		}
		if ok.Load() == 0 {
			t.Error("no request was answered")
		}
	})
}

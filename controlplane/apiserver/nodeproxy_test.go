package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

// fakeAgent is a TLS server standing in for a node agent: it records
// what it is asked and by whom.
type fakeAgent struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // "CN METHOD PATH?QUERY"
}

func (f *fakeAgent) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		return ""
	}
	return f.seen[len(f.seen)-1]
}

func startFakeAgent(t *testing.T, ca *testCA) *fakeAgent {
	t.Helper()
	f := &fakeAgent{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := ""
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			cn = r.TLS.VerifiedChains[0][0].Subject.CommonName
		}
		f.mu.Lock()
		f.seen = append(f.seen, cn+" "+r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "credentials leaked", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "from the agent\n")
	}))
	sc, sk := ca.issue(t, "n1", nil, true)
	pair, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func TestNodeAgentProxy(t *testing.T) {
	ca := newCA(t)
	agent := startFakeAgent(t, ca)
	kc, kk := ca.issue(t, rbac.KubeletClientUser, nil, false)
	pair, err := tls.X509KeyPair(kc, kk)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	e := startServerWithCA(t, etcdtest.Start(t), ca, func(o *Options) {
		o.NodeClientTLS = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	})
	ctx := context.Background()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(agent.srv.URL, "https://"))
	p, _ := strconv.Atoi(port)
	node, err := e.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: host}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(p)
	if _, err := e.admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := e.admin.CoreV1().Pods("default")
	for _, pod := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "one"}, Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "two"}, Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "a", Image: "busybox"}, {Name: "b", Image: "busybox"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "pending"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}},
	} {
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// pods/log: the only container, the options passed on, the kubelet
	// client's identity toward the agent.
	tail := int64(3)
	body, err := pods.GetLogs("one", &corev1.PodLogOptions{TailLines: &tail, Timestamps: true, Previous: true}).DoRaw(ctx)
	if err != nil || string(body) != "from the agent\n" {
		t.Fatalf("pods/log: %q, %v", body, err)
	}
	if got, want := agent.last(), rbac.KubeletClientUser+" GET /containerLogs/default/one/c?previous=true&tailLines=3&timestamps=true"; got != want {
		t.Errorf("the agent saw %q, want %q", got, want)
	}
	if _, err := pods.GetLogs("two", &corev1.PodLogOptions{}).DoRaw(ctx); !apierrors.IsBadRequest(err) {
		t.Errorf("pods/log without a container of two: %v, want 400", err)
	}
	if _, err := pods.GetLogs("two", &corev1.PodLogOptions{Container: "b"}).DoRaw(ctx); err != nil || !strings.HasSuffix(agent.last(), "/containerLogs/default/two/b") {
		t.Errorf("pods/log of two/b: %v; agent saw %q", err, agent.last())
	}
	if _, err := pods.GetLogs("pending", &corev1.PodLogOptions{}).DoRaw(ctx); !apierrors.IsBadRequest(err) {
		t.Errorf("pods/log of an unscheduled pod: %v, want 400", err)
	}
	if _, err := pods.GetLogs("none", &corev1.PodLogOptions{}).DoRaw(ctx); !apierrors.IsNotFound(err) {
		t.Errorf("pods/log of a missing pod: %v, want 404", err)
	}

	// RBAC guards the subresources as any other: bob may read pods but
	// not their logs.
	bob := e.clientFor(t, "bob")
	if _, err := bob.CoreV1().Pods("default").GetLogs("one", &corev1.PodLogOptions{}).DoRaw(ctx); !apierrors.IsForbidden(err) {
		t.Errorf("bob's pods/log: %v, want 403", err)
	}

	// nodes/proxy/PATH with its query and method.
	raw, err := e.admin.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/n1/proxy/stats/summary").Param("only", "cpu").DoRaw(ctx)
	if err != nil || string(raw) != "from the agent\n" || agent.last() != rbac.KubeletClientUser+" GET /stats/summary?only=cpu" {
		t.Errorf("nodes/proxy: %q, %v; agent saw %q", raw, err, agent.last())
	}
	if err := e.admin.CoreV1().RESTClient().Post().AbsPath("/api/v1/nodes/n1/proxy/run/x").Do(ctx).Error(); err != nil || !strings.Contains(agent.last(), " POST /run/x") {
		t.Errorf("POST nodes/proxy: %v; agent saw %q", err, agent.last())
	}

	// exec: the stream flags in the agent's names; a WebSocket try with
	// v5.channel.k8s.io is refused before any upgrade (kubectl then falls
	// back to SPDY).
	execURL := e.host + "/api/v1/namespaces/default/pods/one/exec?" + url.Values{
		"command": {"echo", "hi"}, "stdin": {"true"}, "stdout": {"true"}, "tty": {"false"}}.Encode()
	hc := adminHTTPClient(t, e)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, execURL, nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || agent.last() != rbac.KubeletClientUser+" POST /exec/default/one/c?command=echo&command=hi&input=1&output=1" {
		t.Errorf("exec: %d; agent saw %q", resp.StatusCode, agent.last())
	}
	before := agent.last()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, execURL, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || agent.last() != before {
		t.Errorf("WebSocket v5 exec: %d (want 400); agent saw %q", resp.StatusCode, agent.last())
	}
	// portforward: ports become the agent's port parameter.
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, e.host+"/api/v1/namespaces/default/pods/one/portforward?ports=8080", nil)
	if resp, err = hc.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if agent.last() != rbac.KubeletClientUser+" POST /portForward/default/one?port=8080" {
		t.Errorf("portforward: agent saw %q", agent.last())
	}
}

// adminHTTPClient is a plain HTTP/1.1 client with the admin's certificate.
func adminHTTPClient(t *testing.T, e *env) *http.Client {
	t.Helper()
	c, k := e.ca.issue(t, "kubernetes-admin", []string{rbac.Masters}, false)
	cfg := &rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem, CertData: c, KeyData: k}}
	tc, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.NextProtos = []string{"http/1.1"}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
}

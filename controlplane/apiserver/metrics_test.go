package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// httpClient is a plain HTTPS client of the test server, with a client
// certificate for cn/orgs unless cn is empty.
func (e *env) httpClient(t *testing.T, cn string, orgs ...string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.cert)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cn != "" {
		c, k := e.ca.issue(t, cn, orgs, false)
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func scrape(t *testing.T, c *http.Client, host string) (int, string) {
	t.Helper()
	resp, err := c.Get(host + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetrics(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, cm("m", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, cm("m", nil), metav1.CreateOptions{}); err == nil {
		t.Fatal("duplicate create succeeded")
	}
	if _, err := cms.List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	admin := e.httpClient(t, "kubernetes-admin", "system:masters")
	deadline := time.Now().Add(5 * time.Second)
	var body string
	for {
		var code int
		code, body = scrape(t, admin, e.host)
		if code != http.StatusOK {
			t.Fatalf("admin scrape: %d %s", code, body)
		}
		if strings.Contains(body, "apiserver_open_watches 1") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`apiserver_request_total{code="201",resource="configmaps",verb="POST"} 1`,
		`apiserver_request_total{code="409",resource="configmaps",verb="POST"} 1`,
		`apiserver_request_total{code="200",resource="configmaps",verb="LIST"} 1`,
		`apiserver_request_duration_seconds_count{resource="configmaps",verb="POST"} 2`,
		`apiserver_open_watches 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "etcd_") {
		t.Error("/metrics serves etcd's metrics: the registry is not the Server's own")
	}

	if code, body := scrape(t, e.httpClient(t, ""), e.host); code != http.StatusUnauthorized {
		t.Errorf("scrape without a certificate: %d %s", code, body)
	}
	if code, body := scrape(t, e.httpClient(t, "jane"), e.host); code != http.StatusForbidden || !strings.Contains(body, `cannot get path \"/metrics\"`) {
		t.Errorf("scrape by a user outside system:masters: %d %s", code, body)
	}
	// A made-up path does not become a label value.
	resp, err := admin.Get(e.host + "/api/v1/madeup")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, body = scrape(t, admin, e.host)
	if strings.Contains(body, "madeup") {
		t.Error("an unknown resource became a label value")
	}
	if !strings.Contains(body, `apiserver_request_total{code="404",resource="",verb="GET"}`) {
		t.Error("the 404 was not counted")
	}
}

func TestMetricsDisabled(t *testing.T) {
	e := startServer(t)
	srv, err := New(Options{Store: e.srv.store, DisableMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	if srv.metrics != nil || srv.handler() != http.Handler(srv) {
		t.Error("DisableMetrics still wraps the Server")
	}
}

package controllers

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestManagerHealthAndMetrics(t *testing.T) {
	cfg := NewConfig()
	cfg.Kubeconfig = "unused"
	m, err := NewManagerForConfig(cfg, &rest.Config{Host: "https://127.0.0.1:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Errorf("/readyz before start: %d, want 503", code)
	}
	m.ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when running: %d", code)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "kforge_controller_manager_leader 0") {
		t.Errorf("/metrics lacks the leader gauge:\n%s", body)
	}
}

package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAPIServerCommandReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	doc := `apiVersion: kforge.dev/v1alpha1
kind: APIServerConfig
bindAddress: 0.0.0.0
etcd:
  endpoints: [http://198.18.0.11:2379]
serviceCIDR: 10.96.0.1/16
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"apiserver", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"bad.yaml", "bindAddress", "tls.certFile", "tls.keyFile", "tls.clientCAFile",
		"etcd.endpoints[0]", "etcd.caFile", "etcd.certFile", "etcd.keyFile", "serviceCIDR", "(9 problems)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}

	if err := os.WriteFile(path, []byte(doc+"insecurePort: 8080\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"apiserver", "--config", path})
	if err == nil || !strings.Contains(err.Error(), "field insecurePort not found") {
		t.Errorf("unknown field: %v", err)
	}

	err = Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"apiserver", "--config", filepath.Join(dir, "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestLocalUpCommandRejectsBadPort(t *testing.T) {
	var out, errOut bytes.Buffer
	dir := filepath.Join(t.TempDir(), "local")
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"local", "up", "--dir", dir, "--port", "70000"})
	if err == nil || !strings.Contains(err.Error(), "--port 70000") {
		t.Errorf("bad port: %v", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a folder was created for a bad port")
	}
}

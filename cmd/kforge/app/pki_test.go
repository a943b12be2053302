package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"kforge.dev/kforge/pki"
)

const labCluster = `apiVersion: kforge.dev/v1alpha1
kind: Cluster
metadata: {name: lab}
spec:
  ssh: {identityFile: ./ssh/id_ed25519}
  loadBalancer: {address: 198.18.0.10, port: 6443, host: lb}
  hosts:
  - {name: lb, address: 198.18.0.10, role: loadbalancer}
  - {name: m1, address: 198.18.0.11, role: master}
  - {name: w1, address: 198.18.0.21, role: worker}
  network: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.16.0/20}
  pki: {certValidity: 8760h}
`

// labFile writes a one-master, one-worker cluster file (and the identity
// file validation checks) into a temp dir and returns its path.
func labFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ssh", "id_ed25519"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(p, []byte(labCluster), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, args ...string) (string, string) {
	t.Helper()
	out, errOut, err := run(t, args...)
	if err != nil {
		t.Fatalf("kforge %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut)
	}
	return out, errOut
}

func TestPKIInitCommand(t *testing.T) {
	f := labFile(t)
	out, errOut := mustRun(t, "pki", "init", "-f", f)
	if !strings.Contains(out, "created") || !strings.Contains(out, filepath.Join(filepath.Dir(f), "pki")) {
		t.Errorf("summary:\n%s", out)
	}
	if !strings.Contains(errOut, "created  m1/apiserver") {
		t.Errorf("progress on stderr:\n%s", errOut)
	}
	out, _ = mustRun(t, "pki", "init", "-f", f)
	if !strings.Contains(out, "0 created") || !strings.Contains(out, "0 reissued") {
		t.Errorf("second run summary:\n%s", out)
	}

	other := filepath.Join(t.TempDir(), "other")
	mustRun(t, "pki", "init", "-f", f, "--dir", other)
	if _, err := os.Stat(filepath.Join(other, "ca", "cluster-ca.crt")); err != nil {
		t.Errorf("--dir: %v", err)
	}
}

func TestKubeconfigCommand(t *testing.T) {
	f := labFile(t)
	_, _, err := run(t, "kubeconfig", "-f", f)
	if !errors.Is(err, pki.ErrNoPKI) || !strings.Contains(err.Error(), "kforge pki init") {
		t.Errorf("before init: %v", err)
	}
	mustRun(t, "pki", "init", "-f", f)
	for _, tt := range []struct{ user, server, authInfo string }{
		{"", "https://198.18.0.10:6443", "kubernetes-admin"},
		{"scheduler", "https://198.18.0.10:6443", "system:kube-scheduler"},
		{"dns", "https://127.0.0.1:6444", "system:kforge:dns"}, // worker roles use the agent's local LB
		{"agent:w1", "https://127.0.0.1:6444", "system:node:w1"},
		{"w1", "https://127.0.0.1:6444", "system:node:w1"},
	} {
		args := []string{"kubeconfig", "-f", f}
		if tt.user != "" {
			args = append(args, "--user", tt.user)
		}
		out, _ := mustRun(t, args...)
		cfg, err := clientcmd.Load([]byte(out))
		if err != nil {
			t.Fatalf("%s: output does not parse: %v", tt.user, err)
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		if ctx == nil || cfg.Clusters[ctx.Cluster].Server != tt.server || ctx.AuthInfo != tt.authInfo {
			t.Errorf("%s: context %+v", tt.user, ctx)
		}
		ai := cfg.AuthInfos[ctx.AuthInfo]
		if len(ai.ClientCertificateData) == 0 || len(ai.ClientKeyData) == 0 || len(cfg.Clusters[ctx.Cluster].CertificateAuthorityData) == 0 {
			t.Errorf("%s: certificates not embedded", tt.user)
		}
	}
	if _, _, err := run(t, "kubeconfig", "-f", f, "--user", "m1"); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("unknown user: %v", err)
	}
}

func TestCertStatusCommand(t *testing.T) {
	f := labFile(t)
	if _, _, err := run(t, "cert", "status", "-f", f); err == nil || !strings.Contains(err.Error(), "--local") {
		t.Errorf("without --local: %v", err)
	}
	if _, _, err := run(t, "cert", "status", "-f", f, "--local"); !errors.Is(err, pki.ErrNoPKI) {
		t.Errorf("before init: %v", err)
	}
	mustRun(t, "pki", "init", "-f", f)

	out, _ := mustRun(t, "cert", "status", "-f", f, "--local")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if h := strings.Fields(lines[0]); strings.Join(h, " ") != "NAME HOST PURPOSE NOT-AFTER DAYS-LEFT" {
		t.Errorf("header %q", lines[0])
	}
	// 2 CAs, 6 shared clients, 5 for the master, 2 for the worker.
	if len(lines) != 1+2+6+5+2 {
		t.Errorf("%d rows:\n%s", len(lines)-1, out)
	}
	if !strings.HasPrefix(lines[1], "cluster-ca ") || !strings.Contains(lines[len(lines)-1], "agent-server") {
		t.Errorf("order:\n%s", out)
	}
	if !strings.Contains(out, " 364\n") {
		t.Errorf("no 364 days left for 1y certs:\n%s", out)
	}

	out, _ = mustRun(t, "cert", "status", "-f", f, "--local", "--output", "json")
	var rows []pki.CertStatus
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if len(rows) != 15 || rows[0].Name != "cluster-ca" || rows[0].NotAfter.Before(time.Now().Add(9*365*24*time.Hour)) {
		t.Errorf("json rows: %+v", rows[:1])
	}
	var raw []map[string]any
	_ = json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"name", "host", "purpose", "notAfter", "daysLeft"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("json row lacks %q", k)
		}
	}

	// Exit code 1 when something expires within --warn; 0 otherwise.
	for _, tt := range []struct {
		warn string
		code int
	}{{"30d", 0}, {"364d", 0}, {"400d", 1}, {"9000h", 1}, {"720h", 0}} {
		_, _, err := run(t, "cert", "status", "-f", f, "--local", "--warn", tt.warn)
		code := 0
		var ee *ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		} else if err != nil {
			t.Fatalf("--warn %s: %v", tt.warn, err)
		}
		if code != tt.code {
			t.Errorf("--warn %s: exit %d, want %d (%v)", tt.warn, code, tt.code, err)
		}
	}
	if _, _, err := run(t, "cert", "status", "-f", f, "--local", "--warn", "soon"); err == nil || !strings.Contains(err.Error(), "--warn") {
		t.Errorf("bad --warn: %v", err)
	}

	// --local=DIR reads another directory.
	other := filepath.Join(t.TempDir(), "other")
	mustRun(t, "pki", "init", "-f", f, "--dir", other)
	if err := os.Remove(filepath.Join(other, "hosts", "w1", "agent-server.crt")); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "cert", "status", "-f", f, "--local="+other)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || !strings.Contains(out, "missing") {
		t.Errorf("missing cert in --local=DIR: %v\n%s", err, out)
	}
	if _, _, err := run(t, "cert", "status", "-f", f, "--local", other); err == nil || !strings.Contains(err.Error(), "--local=") {
		t.Errorf("--local DIR without '=': %v", err)
	}
}

func TestParseDays(t *testing.T) {
	for in, want := range map[string]time.Duration{"30d": 720 * time.Hour, "0d": 0, "1h30m": 90 * time.Minute, "400d": 9600 * time.Hour} {
		if got, err := parseDays(in); err != nil || got != want {
			t.Errorf("parseDays(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "3x", "1.5d"} {
		if _, err := parseDays(in); err == nil {
			t.Errorf("parseDays(%q) accepted", in)
		}
	}
}

// Commands that never connect work before the SSH key exists; the ones
// that connect, and validate without --offline, refuse before any effect.
func TestSSHMaterialOnlyForConnectingCommands(t *testing.T) {
	p := labFile(t)
	if err := os.Remove(filepath.Join(filepath.Dir(p), "ssh", "id_ed25519")); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "pki", "init", "-f", p)
	mustRun(t, "kubeconfig", "-f", p)
	mustRun(t, "cert", "status", "-f", p, "--local")
	mustRun(t, "validate", "--offline", "-f", p)
	for _, args := range [][]string{{"validate"}, {"up", "--dry-run"}, {"status"}, {"reset", "--yes"}} {
		_, _, err := run(t, append(args, "-f", p)...)
		if err == nil || !strings.Contains(err.Error(), "spec.ssh.identityFile: identity file") {
			t.Errorf("%s: want the missing identity file named, got %v", strings.Join(args, " "), err)
		}
	}
}

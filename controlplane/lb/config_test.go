package lb

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigExample(t *testing.T) {
	c, err := LoadConfig("testdata/lb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	if c.HealthCheck.CAFile != filepath.Join(dir, "pki/ca.crt") {
		t.Errorf("caFile not resolved against the file: %s", c.HealthCheck.CAFile)
	}
	want := []string{"198.18.0.11:6443", "198.18.0.12:6443", "198.18.0.13:6443"}
	if !reflect.DeepEqual(c.Backends, want) {
		t.Errorf("backends %v", c.Backends)
	}
	if c.HealthCheck.Timeout != 800*time.Millisecond || c.ShutdownGracePeriod != 5*time.Second {
		t.Errorf("durations: %s %s", c.HealthCheck.Timeout, c.ShutdownGracePeriod)
	}
}

func TestNewConfigDefaults(t *testing.T) {
	c := NewConfig()
	if c.ListenAddress != "0.0.0.0:6443" || c.MetricsAddress != DefaultMetricsAddress || c.Balance != BalanceLeastConnections {
		t.Errorf("defaults: %+v", c)
	}
	h := c.HealthCheck
	if h.Path != "/readyz" || h.Period != time.Second || h.Timeout != 800*time.Millisecond || h.UnhealthyThreshold != 2 || h.HealthyThreshold != 1 {
		t.Errorf("health check defaults: %+v", h)
	}
	// The defaults take a failed backend out within 3 s.
	if worst := time.Duration(h.UnhealthyThreshold)*h.Period + h.Timeout; worst > 3*time.Second {
		t.Errorf("worst-case removal %s > 3s", worst)
	}
	var ce *ConfigError
	if err := c.Validate(); !errors.As(err, &ce) {
		t.Fatalf("Validate = %v, want the missing backends and CA", err)
	}
	wantProbs := []string{"backends: ", "healthCheck.caFile: "}
	if len(ce.Problems) != len(wantProbs) {
		t.Fatalf("problems %q, want %q", ce.Problems, wantProbs)
	}
	for i, p := range ce.Problems {
		if !strings.HasPrefix(p, wantProbs[i]) {
			t.Errorf("problem %q, want prefix %q", p, wantProbs[i])
		}
	}
	c.Backends = []string{"10.0.0.1:6443"}
	c.HealthCheck.CAFile = "/ca.crt"
	if err := c.Validate(); err != nil {
		t.Errorf("defaults plus backends and CA: %v", err)
	}
	c.MetricsAddress = ""
	if err := c.Validate(); err != nil {
		t.Errorf("an empty metricsAddress (disabled) is valid: %v", err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	base, err := os.ReadFile("testdata/lb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// edit replaces one line of the example (matched by its start).
	edit := func(prefix, line string) string {
		var out []string
		found := false
		for _, l := range strings.Split(string(base), "\n") {
			if strings.HasPrefix(l, prefix) {
				l, found = line, true
			}
			out = append(out, l)
		}
		if !found {
			t.Fatalf("no line starts with %q", prefix)
		}
		return strings.Join(out, "\n")
	}
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error, all required
	}{
		{"empty", "", []string{"empty"}},
		{"two documents", string(base) + "---\nkind: x\n", []string{"more than one YAML document"}},
		{"unknown field", string(base) + "frontends: []\n", []string{"field frontends not found"}},
		{"unknown nested field", edit("  path:", "  path: /readyz\n  method: HEAD"), []string{"field method not found"}},
		{"bad duration", edit("dialTimeout:", "dialTimeout: soon"), []string{"decoding"}},
		{"apiVersion", edit("apiVersion:", "apiVersion: v1"), []string{`apiVersion: must be "kforge.dev/v1alpha1"`}},
		{"kind", edit("kind:", "kind: EtcdConfig"), []string{`kind: must be "LoadBalancerConfig"`}},
		{"listen not host:port", edit("listenAddress:", "listenAddress: 6443"), []string{"listenAddress: \"6443\" is not host:port"}},
		{"listen hostname", edit("listenAddress:", "listenAddress: lb.example:6443"), []string{"listenAddress: ", "needs an IP address"}},
		{"listen bad port", edit("listenAddress:", "listenAddress: 0.0.0.0:70000"), []string{"listenAddress: ", "0 to 65535"}},
		{"backend no port", edit("- 198.18.0.12:6443", "- 198.18.0.12"), []string{"backends[1]: ", "not host:port"}},
		{"backend no host", edit("- 198.18.0.12:6443", "- :6443"), []string{"backends[1]: ", "has no host"}},
		{"backend port 0", edit("- 198.18.0.12:6443", "- 198.18.0.12:0"), []string{"backends[1]: ", "needs a real port"}},
		{"duplicate backend", edit("- 198.18.0.13:6443", "- 198.18.0.11:6443"), []string{"backends[2]: 198.18.0.11:6443 is also backends[0]"}},
		{"balance", edit("balance:", "balance: random"), []string{`balance: must be "least-connections" or "round-robin", not "random"`}},
		{"dialTimeout", edit("dialTimeout:", "dialTimeout: 0s"), []string{"dialTimeout: must be positive"}},
		{"grace", edit("shutdownGracePeriod:", "shutdownGracePeriod: -1s"), []string{"shutdownGracePeriod: must not be negative"}},
		{"path", edit("  path:", "  path: readyz"), []string{"healthCheck.path: must start with /"}},
		{"period", edit("  period:", "  period: 0s"), []string{"healthCheck.period: must be positive"}},
		{"timeout", edit("  timeout:", "  timeout: 0s"), []string{"healthCheck.timeout: must be positive"}},
		{"timeout ≥ period", edit("  timeout:", "  timeout: 1s"), []string{"healthCheck.timeout: 1s must be shorter than the period 1s"}},
		{"unhealthyThreshold", edit("  unhealthyThreshold:", "  unhealthyThreshold: 0"), []string{"healthCheck.unhealthyThreshold: must be at least 1"}},
		{"healthyThreshold", edit("  healthyThreshold:", "  healthyThreshold: 0"), []string{"healthCheck.healthyThreshold: must be at least 1"}},
		{"caFile", edit("  caFile:", "  caFile: \"\""), []string{"healthCheck.caFile: is required"}},
		{"cert without key", edit("  caFile:", "  caFile: ca.crt\n  certFile: lb.crt"), []string{"healthCheck.certFile: certFile and keyFile go together"}},
		{"metrics not host:port", edit("metricsAddress:", "metricsAddress: metrics"), []string{"metricsAddress: ", "not host:port"}},
		{"metrics on the proxy port", edit("metricsAddress:", "metricsAddress: 0.0.0.0:6443"), []string{"metricsAddress: 0.0.0.0:6443 is also the listenAddress"}},
		{"several problems listed", "apiVersion: kforge.dev/v1alpha1\nkind: x\nbackends: [a:1]\nbalance: random\ndialTimeout: 0s\nhealthCheck: {caFile: ca.crt}\n", []string{"(3 problems)", "kind:", "balance:", "dialTimeout:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.doc), "/etc/kforge")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseConfigEmptyBackendsList(t *testing.T) {
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: LoadBalancerConfig\nbackends: []\nhealthCheck:\n  caFile: ca.crt\n"
	_, err := ParseConfig([]byte(doc), "/etc/kforge")
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.HasPrefix(ce.Problems[0], "backends: needs at least one") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "lb.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

package lb

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
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
	errs := c.Validate()
	if len(errs) != 2 || errs[0].Field != "backends" || errs[1].Field != "healthCheck.caFile" {
		t.Fatalf("Validate = %v, want the missing backends and CA", errs)
	}
	c.Backends = []string{"10.0.0.1:6443"}
	c.HealthCheck.CAFile = "/ca.crt"
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("defaults plus backends and CA: %v", errs)
	}
	c.MetricsAddress = ""
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("an empty metricsAddress (disabled) is valid: %v", errs)
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
		{"apiVersion", edit("apiVersion:", "apiVersion: v1"), []string{`apiVersion: Unsupported value: "v1": supported values: "kforge.dev/v1alpha1"`}},
		{"kind", edit("kind:", "kind: EtcdConfig"), []string{`kind: Unsupported value: "EtcdConfig": supported values: "LoadBalancerConfig"`}},
		{"listen not host:port", edit("listenAddress:", "listenAddress: 6443"), []string{`listenAddress: Invalid value: "6443": not host:port: address 6443: missing port in address`}},
		{"listen hostname", edit("listenAddress:", "listenAddress: lb.example:6443"), []string{"listenAddress: ", "needs an IP address"}},
		{"listen bad port", edit("listenAddress:", "listenAddress: 0.0.0.0:70000"), []string{"listenAddress: ", "0 to 65535"}},
		{"backend no port", edit("- 198.18.0.12:6443", "- 198.18.0.12"), []string{"backends[1]: ", "not host:port"}},
		{"backend no host", edit("- 198.18.0.12:6443", "- :6443"), []string{"backends[1]: ", "has no host"}},
		{"backend port 0", edit("- 198.18.0.12:6443", "- 198.18.0.12:0"), []string{"backends[1]: ", "needs a real port"}},
		{"duplicate backend", edit("- 198.18.0.13:6443", "- 198.18.0.11:6443"), []string{`backends[2]: Duplicate value: "198.18.0.11:6443"`}},
		{"balance", edit("balance:", "balance: random"), []string{`balance: Unsupported value: "random": supported values: "least-connections", "round-robin"`}},
		{"dialTimeout", edit("dialTimeout:", "dialTimeout: 0s"), []string{`dialTimeout: Invalid value: "0s": must be positive`}},
		{"grace", edit("shutdownGracePeriod:", "shutdownGracePeriod: -1s"), []string{`shutdownGracePeriod: Invalid value: "-1s": must not be negative (0 closes open connections at once)`}},
		{"path", edit("  path:", "  path: readyz"), []string{`healthCheck.path: Invalid value: "readyz": must start with /`}},
		{"period", edit("  period:", "  period: 0s"), []string{`healthCheck.period: Invalid value: "0s": must be positive`}},
		{"timeout", edit("  timeout:", "  timeout: 0s"), []string{`healthCheck.timeout: Invalid value: "0s": must be positive`}},
		{"timeout ≥ period", edit("  timeout:", "  timeout: 1s"), []string{`healthCheck.timeout: Invalid value: "1s": must be shorter than the period (1s)`}},
		{"unhealthyThreshold", edit("  unhealthyThreshold:", "  unhealthyThreshold: 0"), []string{`healthCheck.unhealthyThreshold: Invalid value: 0: must be at least 1`}},
		{"healthyThreshold", edit("  healthyThreshold:", "  healthyThreshold: 0"), []string{`healthCheck.healthyThreshold: Invalid value: 0: must be at least 1`}},
		{"caFile", edit("  caFile:", "  caFile: \"\""), []string{`healthCheck.caFile: Required value: it verifies the backends' serving certificates`}},
		{"cert without key", edit("  caFile:", "  caFile: ca.crt\n  certFile: lb.crt"), []string{`healthCheck.keyFile: Required value: certFile and keyFile go together`}},
		{"metrics not host:port", edit("metricsAddress:", "metricsAddress: metrics"), []string{"metricsAddress: ", "not host:port"}},
		{"metrics on the proxy port", edit("metricsAddress:", "metricsAddress: 0.0.0.0:6443"), []string{`metricsAddress: Invalid value: "0.0.0.0:6443": is also the listenAddress`}},
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
	if !errors.As(err, &ce) || len(ce.Errs) != 1 || ce.Errs[0].Error() != "backends: Required value: needs at least one host:port" {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "lb.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

// The installer builds a Config as a struct, marshals it and validates
// the document with ParseConfig: that must give the same Config back.
func TestConfigRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"defaults, backends and CA", func(c *Config) {}},
		{"every field", func(c *Config) {
			c.ListenAddress = "198.18.0.10:6443"
			c.Backends = []string{"198.18.0.11:6443", "198.18.0.12:6443", "m3.lab:6443"}
			c.Balance = BalanceRoundRobin
			c.DialTimeout, c.ShutdownGracePeriod = 2*time.Second, 0
			c.HealthCheck = HealthCheck{Path: "/livez", Period: 3 * time.Second, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2,
				CAFile: "/etc/kforge/pki/ca.crt", CertFile: "/etc/kforge/pki/lb.crt", KeyFile: "/etc/kforge/pki/lb.key", ServerName: "kubernetes"}
			c.MetricsAddress = ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := NewConfig()
			want.Backends = []string{"198.18.0.11:6443"}
			want.HealthCheck.CAFile = "/etc/kforge/pki/ca.crt"
			tc.edit(want)
			data, err := roleconfig.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseConfig(data, "/elsewhere")
			if err != nil {
				t.Fatalf("%v in:\n%s", err, data)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip changed\n%+v\ninto\n%+v\nthrough:\n%s", want, got, data)
			}
		})
	}
}

package apiserver

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

func TestLoadConfigExample(t *testing.T) {
	c, err := LoadConfig("testdata/apiserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	for got, want := range map[string]string{
		c.TLS.CertFile:                  "pki/apiserver.crt",
		c.TLS.ClientCAFile:              "pki/cluster-ca.crt",
		c.Etcd.KeyFile:                  "pki/apiserver-etcd-client.key",
		c.ServiceAccount.PublicKeyFile:  "pki/sa.pub",
		c.Encryption.ProviderConfigFile: "pki/encryption.yaml",
	} {
		if got != filepath.Join(dir, want) {
			t.Errorf("%s not resolved against the file's folder: %s", want, got)
		}
	}
	if len(c.Etcd.Endpoints) != 3 || c.Etcd.DialTimeout != 5*time.Second || c.ServiceCIDR != "198.18.16.0/20" || !c.Metrics.Enabled || c.EventTTL != time.Hour {
		t.Errorf("decoded %+v", c)
	}
}

func TestNewConfigDefaults(t *testing.T) {
	c := NewConfig()
	if c.BindAddress != "0.0.0.0:6443" || c.ServiceCIDR != DefaultServiceCIDR || !c.Metrics.Enabled ||
		!reflect.DeepEqual(c.Etcd.Endpoints, []string{DefaultEtcdEndpoint}) || c.Etcd.DialTimeout != DefaultEtcdDialTimeout {
		t.Errorf("defaults: %+v", c)
	}
	errs := c.Validate()
	if len(errs) == 0 {
		t.Fatal("Validate found nothing, want the missing TLS files")
	}
	for _, e := range errs {
		if !strings.HasPrefix(e.Field, "tls.") && !strings.HasPrefix(e.Field, "etcd.") {
			t.Errorf("default config has a problem besides TLS files: %s", e)
		}
	}
	c.TLS = ServingTLS{CertFile: "a", KeyFile: "b", ClientCAFile: "c"}
	c.Etcd.CAFile, c.Etcd.CertFile, c.Etcd.KeyFile = "d", "e", "f"
	if err := c.Validate(); len(err) > 0 {
		t.Errorf("defaults plus TLS: %v", err)
	}
}

func TestParseConfigDefaultsFillGaps(t *testing.T) {
	doc := `apiVersion: kforge.dev/v1alpha1
kind: APIServerConfig
tls: {certFile: a.crt, keyFile: a.key, clientCAFile: ca.crt}
etcd: {caFile: e.crt, certFile: c.crt, keyFile: c.key}
`
	c, err := ParseConfig([]byte(doc), "/etc/kforge")
	if err != nil {
		t.Fatal(err)
	}
	if c.BindAddress != DefaultBindAddress || c.Etcd.Endpoints[0] != DefaultEtcdEndpoint || !c.Metrics.Enabled || c.TLS.CertFile != "/etc/kforge/a.crt" {
		t.Errorf("%+v", c)
	}
	if c.Limits != NewLimits() {
		t.Errorf("limits: %+v, want the defaults", c.Limits)
	}
	c, err = ParseConfig([]byte(doc+"limits: {maxMutatingRequestsInFlight: 50}\n"), "/etc/kforge")
	if err != nil || c.Limits.MaxMutatingRequestsInFlight != 50 || c.Limits.MaxRequestsInFlight != DefaultMaxRequestsInFlight {
		t.Errorf("one limit set: %v %+v", err, c.Limits)
	}
	c, err = ParseConfig([]byte(doc+"metrics: {enabled: false}\n"), "/etc/kforge")
	if err != nil || c.Metrics.Enabled {
		t.Errorf("metrics.enabled false: %v %+v", err, c.Metrics)
	}
}

func TestParseConfigErrors(t *testing.T) {
	base, err := os.ReadFile("testdata/apiserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
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
		want []string
	}{
		{"empty", "", []string{"empty"}},
		{"unknown field", string(base) + "insecurePort: 8080\n", []string{"field insecurePort not found"}},
		{"unknown nested field", edit("  dialTimeout:", "  dialTimeout: 5s\n  keepalive: 1s"), []string{"field keepalive not found"}},
		{"two documents", string(base) + "---\nkind: x\n", []string{"more than one YAML document"}},
		{"bad duration", edit("  dialTimeout:", "  dialTimeout: soon"), []string{"decoding"}},
		{"wrong apiVersion", edit("apiVersion:", "apiVersion: v1"), []string{`apiVersion: Unsupported value: "v1": supported values: "kforge.dev/v1alpha1"`}},
		{"wrong kind", edit("kind:", "kind: EtcdConfig"), []string{`kind: Unsupported value: "EtcdConfig": supported values: "APIServerConfig"`}},
		{"bind no port", edit("bindAddress:", "bindAddress: 0.0.0.0"), []string{"bindAddress", "not host:port"}},
		{"bind host name", edit("bindAddress:", "bindAddress: m1.lab:6443"), []string{"bindAddress", "must be an IP address"}},
		{"bind bad port", edit("bindAddress:", "bindAddress: 0.0.0.0:70000"), []string{"bindAddress", "not a TCP port"}},
		{"bind empty", edit("bindAddress:", "bindAddress: ''"), []string{`bindAddress: Required value: host:port`}},
		{"advertise unspecified", edit("bindAddress:", "bindAddress: 0.0.0.0:6443\nadvertiseAddress: 0.0.0.0:6443"), []string{"advertiseAddress", "other hosts can reach"}},
		{"advertise host name", edit("bindAddress:", "bindAddress: 0.0.0.0:6443\nadvertiseAddress: m1:6443"), []string{"advertiseAddress"}},
		{"no cert", edit("  certFile: pki/apiserver.crt", "  certFile: ''"), []string{`tls.certFile: Required value: the API is HTTPS only`}},
		{"no key", edit("  keyFile: pki/apiserver.key", "  keyFile: ''"), []string{`tls.keyFile: Required value: the API is HTTPS only`}},
		{"no client CA", edit("  clientCAFile:", "  clientCAFile: ''"), []string{`tls.clientCAFile: Required value: users are client certificates signed by the cluster CA`}},
		{"no endpoints", edit("  endpoints:", "  endpoints: []"), []string{`etcd.endpoints: Required value: needs at least one https:// URL`}},
		{"http endpoint", edit("  endpoints:", "  endpoints: [http://198.18.0.11:2379]"), []string{"etcd.endpoints[0]", "must use https"}},
		{"endpoint without port", edit("  endpoints:", "  endpoints: [https://198.18.0.11]"), []string{"etcd.endpoints[0]", "needs host:port"}},
		{"endpoint with path", edit("  endpoints:", "  endpoints: [https://198.18.0.11:2379/v3]"), []string{"etcd.endpoints[0]", "https://host:port only"}},
		{"duplicate endpoint", edit("  endpoints:", "  endpoints: [https://a:2379, https://a:2379]"), []string{"etcd.endpoints[1]", `etcd.endpoints[1]: Duplicate value: "https://a:2379"`}},
		{"no etcd CA", edit("  caFile:", "  caFile: ''"), []string{`etcd.caFile: Required value: etcd uses mutual TLS`}},
		{"no etcd cert", edit("  certFile: pki/apiserver-etcd", "  certFile: ''"), []string{`etcd.certFile: Required value: etcd uses mutual TLS`}},
		{"no etcd key", edit("  keyFile: pki/apiserver-etcd", "  keyFile: ''"), []string{`etcd.keyFile: Required value: etcd uses mutual TLS`}},
		{"dial timeout", edit("  dialTimeout:", "  dialTimeout: 0s"), []string{`etcd.dialTimeout: Invalid value: "0s": must be positive`}},
		{"no service CIDR", edit("serviceCIDR:", "serviceCIDR: ''"), []string{`serviceCIDR: Required value`}},
		{"bad service CIDR", edit("serviceCIDR:", "serviceCIDR: 10.96.0.0"), []string{"serviceCIDR", "not a CIDR"}},
		{"host bits", edit("serviceCIDR:", "serviceCIDR: 10.96.0.1/16"), []string{"host bits set", "10.96.0.0/16"}},
		{"too big", edit("serviceCIDR:", "serviceCIDR: 10.0.0.0/8"), []string{"serviceCIDR", "/12 to /30"}},
		{"too small", edit("serviceCIDR:", "serviceCIDR: 10.96.0.0/31"), []string{"serviceCIDR", "/12 to /30"}},
		{"half a key pair", edit("  publicKeyFile:", "  publicKeyFile: ''"), []string{`serviceAccount.publicKeyFile: Required value: keyFile and publicKeyFile go together: set both or neither`}},
		{"negative in-flight", edit("  maxRequestsInFlight:", "  maxRequestsInFlight: -1"), []string{"limits.maxRequestsInFlight: Invalid value: -1: must not be negative"}},
		{"request timeout under a second", edit("  requestTimeout:", "  requestTimeout: 10ms"), []string{`limits.requestTimeout: Invalid value: "10ms": must be at least 1s`}},
		{"http2 streams", edit("  http2MaxStreamsPerConnection:", "  http2MaxStreamsPerConnection: -3"), []string{"limits.http2MaxStreamsPerConnection"}},
		{"per-user watches above the total", edit("  maxWatchesPerUser:", "  maxWatchesPerUser: 30000"), []string{"limits.maxWatchesPerUser", "more than maxWatches"}},
		{"unknown limit", edit("  idleTimeout:", "  idleTimeout: 90s\n  maxBananas: 3"), []string{"field maxBananas not found"}},
		{"event TTL", edit("eventTTL:", "eventTTL: 0s"), []string{`eventTTL: Invalid value: "0s": must be at least 1s`}},
		{"file and inline", edit("  providerConfigFile:", "  providerConfigFile: e.yaml\n  resources: [{resources: [secrets], providers: [{identity: {}}]}]"),
			[]string{"encryption.resources: Forbidden: providerConfigFile and resources exclude each other"}},
		{"unserved resource", edit("  providerConfigFile:", "  resources: [{resources: [widgets], providers: [{identity: {}}]}]"),
			[]string{`encryption.resources[0].resources[0]: Invalid value: "widgets": not a resource this apiserver serves`}},
		{"short key", edit("  providerConfigFile:", "  resources: [{resources: [secrets], providers: [{aesgcm: {keys: [{name: k, secret: c2hvcnQ=}]}}]}]"),
			[]string{"encryption.resources[0].providers[0].aesgcm.keys[0].secret: Invalid value: is 5 bytes; want 16, 24, 32 bytes"}},
		{"unknown provider", edit("  providerConfigFile:", "  resources: [{resources: [secrets], providers: [{rot13: {}}]}]"), []string{"field rot13 not found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.doc), "/etc/kforge")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	c := &Config{Etcd: Etcd{Endpoints: []string{"http://x:1"}}, ServiceCIDR: "nope", ServiceAccount: ServiceAccount{KeyFile: "k"}}
	ce := &ConfigError{Component: "apiserver", Errs: c.Validate()}
	for _, field := range []string{"apiVersion", "kind", "bindAddress", "tls.certFile", "tls.keyFile", "tls.clientCAFile",
		"etcd.endpoints[0]", "etcd.caFile", "etcd.certFile", "etcd.keyFile", "etcd.dialTimeout", "serviceCIDR", "serviceAccount", "eventTTL"} {
		found := false
		for _, e := range ce.Errs {
			if e.Field == field || strings.HasPrefix(e.Field, field+".") {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem reported for %s in:\n%v", field, ce)
		}
	}
	if !strings.HasPrefix(ce.Error(), "invalid apiserver config (14 problems):") {
		t.Errorf("summary: %s", strings.SplitN(ce.Error(), "\n", 2)[0])
	}
}

func TestValidateWithListenerSkipsBindAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := NewConfig()
	c.BindAddress = ""
	c.Listener = l
	for _, e := range c.Validate() {
		if e.Field == "bindAddress" {
			t.Errorf("bindAddress checked despite a listener: %v", e)
		}
	}
}

// The installer builds a Config as a struct, marshals it and validates
// the document with ParseConfig: that must give the same Config back.
func TestConfigRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"defaults and TLS", func(c *Config) {}},
		{"every field", func(c *Config) {
			c.BindAddress, c.AdvertiseAddress = "198.18.0.11:6443", "198.18.0.11:6443"
			c.Etcd.Endpoints = []string{"https://198.18.0.11:2379", "https://198.18.0.12:2379"}
			c.Etcd.DialTimeout = 3 * time.Second
			c.ServiceCIDR = "10.32.0.0/20"
			c.ServiceAccount = ServiceAccount{KeyFile: "/etc/kforge/pki/sa.key", PublicKeyFile: "/etc/kforge/pki/sa.pub"}
			c.Metrics.Enabled = false
			c.EventTTL = 2 * time.Hour
			c.Encryption.ProviderConfigFile = "/etc/kforge/pki/encryption.yaml"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := NewConfig()
			want.TLS = ServingTLS{CertFile: "/etc/kforge/pki/apiserver.crt", KeyFile: "/etc/kforge/pki/apiserver.key", ClientCAFile: "/etc/kforge/pki/ca.crt"}
			want.Etcd.CAFile, want.Etcd.CertFile, want.Etcd.KeyFile = "/etc/kforge/pki/etcd-ca.crt", "/etc/kforge/pki/etcd-client.crt", "/etc/kforge/pki/etcd-client.key"
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

package etcd

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

func TestLoadConfigExample(t *testing.T) {
	c, err := LoadConfig("testdata/etcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	if c.TLS.TrustedCAFile != filepath.Join(dir, "pki/etcd/ca.crt") {
		t.Errorf("trustedCAFile not resolved against the file: %s", c.TLS.TrustedCAFile)
	}
	if c.ElectionTimeout != time.Second || c.Compaction.MinRetention != 5*time.Minute {
		t.Errorf("durations: %s %s", c.ElectionTimeout, c.Compaction.MinRetention)
	}
	if got := c.advertisePeerURLs(); !reflect.DeepEqual(got, []string{"https://198.18.0.11:2380"}) {
		t.Errorf("advertise peer URLs default to listen: %v", got)
	}
	if len(c.ListenClientURLs) != 2 {
		t.Errorf("listenClientURLs %v", c.ListenClientURLs)
	}
	if _, err := c.embedConfig(newZapLogger(testLogger(t), nil)); err != nil {
		t.Errorf("embedConfig: %v", err)
	}
}

func TestNewConfigNeedsOnlyTLS(t *testing.T) {
	c := NewConfig()
	errs := c.Validate()
	if len(errs) == 0 {
		t.Fatal("Validate found nothing, want the missing TLS files")
	}
	for _, e := range errs {
		if !strings.HasPrefix(e.Field, "tls.") {
			t.Errorf("default config has a problem besides TLS: %s", e)
		}
	}
	c.TLS = TLS{CertFile: "a", KeyFile: "b", PeerCertFile: "c", PeerKeyFile: "d", TrustedCAFile: "e"}
	if err := c.Validate(); len(err) > 0 {
		t.Errorf("defaults plus TLS: %v", err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	base, err := os.ReadFile("testdata/etcd.yaml")
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
		{"unknown field", string(base) + "snapshotCount: 5\n", []string{"field snapshotCount not found"}},
		{"unknown nested field", edit("  interval: 1m", "  interval: 1m\n  physical: true"), []string{"field physical not found"}},
		{"two documents", string(base) + "---\nname: x\n", []string{"more than one YAML document"}},
		{"bad duration", edit("electionTimeout:", "electionTimeout: soon"), []string{"decoding"}},
		{"wrong kind", edit("kind:", "kind: Cluster"), []string{`kind: Unsupported value: "Cluster": supported values: "EtcdConfig"`}},
		{"no name", edit("name:", "name: ''"), []string{"name: Required value", "does not name this member"}},
		{"bad name", edit("name:", "name: 'm 1'"), []string{"not a valid member name"}},
		{"http peer URL", edit("listenPeerURLs:", "listenPeerURLs: [http://198.18.0.11:2380]"), []string{"listenPeerURLs[0]", "must use https"}},
		{"listen on a host name", edit("listenPeerURLs:", "listenPeerURLs: [https://m1.lab:2380]"), []string{"needs an IP address"}},
		{"no port", edit("listenClientURLs:", "listenClientURLs: [https://198.18.0.11]"), []string{"listenClientURLs[0]", "host:port"}},
		{"state", edit("initialClusterState:", "initialClusterState: joining"), []string{`initialClusterState: Unsupported value: "joining": supported values: "new", "existing"`}},
		{"cluster syntax", edit("initialCluster:", "initialCluster: m1"), []string{`"m1" is not name=peerURL`}},
		{"member missing", edit("initialCluster:", "initialCluster: m2=https://198.18.0.12:2380,m3=https://198.18.0.13:2380"), []string{`does not name this member "m1"`}},
		{"own URL not advertised", edit("initialCluster:", "initialCluster: m1=https://198.18.0.99:2380"), []string{"not one of its advertised peer URLs"}},
		{"duplicate URL", edit("initialCluster:", "initialCluster: m1=https://198.18.0.11:2380,m2=https://198.18.0.11:2380"), []string{"used by both m1 and m2"}},
		{"missing TLS", edit("tls:", "tlsx:"), []string{"field tlsx not found"}},
		{"metrics address", edit("metricsAddress:", "metricsAddress: localhost"), []string{"metricsAddress", "not host:port"}},
		{"election vs heartbeat", edit("electionTimeout:", "electionTimeout: 300ms"), []string{"at least 5 × heartbeatInterval"}},
		{"ratio", edit("  maxInUseRatio:", "  maxInUseRatio: 1.5"), []string{"defrag.maxInUseRatio"}},
		{"negative revisions", edit("  minRevisions:", "  minRevisions: -1"), []string{"compaction.minRevisions"}},
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
	c := NewConfig()
	c.APIVersion = ""
	c.Name = ""
	c.DataDir = ""
	c.ListenPeerURLs = nil
	c.InitialClusterState = "maybe"
	c.MetricsAddress = ""
	c.HeartbeatInterval = 0
	c.Defrag.MaxInUseRatio = 0
	errs := c.Validate()
	for _, field := range []string{"apiVersion", "name", "dataDir", "listenPeerURLs", "initialClusterState", "initialCluster", "tls.certFile", "tls.trustedCAFile", "metricsAddress", "heartbeatInterval", "defrag.maxInUseRatio"} {
		found := false
		for _, e := range errs {
			if e.Field == field {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem reported for %s in:\n%v", field, errs)
		}
	}
}

// The installer builds a Config as a struct, marshals it and validates
// the document with ParseConfig: that must give the same Config back.
func TestConfigRoundTrip(t *testing.T) {
	tls := TLS{CertFile: "/etc/kforge/pki/etcd-server.crt", KeyFile: "/etc/kforge/pki/etcd-server.key",
		PeerCertFile: "/etc/kforge/pki/etcd-peer.crt", PeerKeyFile: "/etc/kforge/pki/etcd-peer.key", TrustedCAFile: "/etc/kforge/pki/etcd-ca.crt"}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"defaults and TLS", func(c *Config) {}},
		{"every field", func(c *Config) {
			c.Name, c.DataDir = "m2", "/data/etcd"
			c.ListenPeerURLs = []string{"https://0.0.0.0:2380"}
			c.AdvertisePeerURLs = []string{"https://198.18.0.12:2380"}
			c.ListenClientURLs = []string{"https://198.18.0.12:2379", "https://127.0.0.1:2379"}
			c.AdvertiseClientURLs = []string{"https://198.18.0.12:2379"}
			c.InitialCluster = "m1=https://198.18.0.11:2380,m2=https://198.18.0.12:2380"
			c.InitialClusterState, c.InitialClusterToken = ClusterStateExisting, "lab"
			c.MetricsAddress = "198.18.0.12:2381"
			c.HeartbeatInterval, c.ElectionTimeout = 250*time.Millisecond, 2500*time.Millisecond
			c.QuotaBackendBytes = 2 << 30
			c.Compaction = Compaction{Interval: 0, MinRetention: time.Hour, MinRevisions: 0}
			c.Defrag = Defrag{Interval: 0, MinDBSize: 1, MaxInUseRatio: 0.25}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := NewConfig()
			want.TLS = tls
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

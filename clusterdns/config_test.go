package clusterdns

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const head = "apiVersion: kforge.dev/v1alpha1\nkind: DNSConfig\n"

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(head+"kubeconfig: dns.kubeconfig\nnodeName: w1\nlistenAddress: 198.18.0.21:53\n"), "/etc/kforge")
	if err != nil {
		t.Fatal(err)
	}
	if c.Kubeconfig != filepath.Join("/etc/kforge", "dns.kubeconfig") || c.Upstream.ResolvConf != "/etc/resolv.conf" {
		t.Errorf("paths %q %q", c.Kubeconfig, c.Upstream.ResolvConf)
	}
	if c.ClusterDomain != "cluster.local" || c.TTL != 5*time.Second || c.Service.Name != "kube-dns" ||
		c.Service.Namespace != "kube-system" || !c.Service.Register || c.Upstream.Timeout != 2*time.Second ||
		c.Cache.Size != 10000 || c.HealthAddress != "127.0.0.1:9153" {
		t.Errorf("defaults %+v", c)
	}
	if a, ok := c.advertise(); !ok || a.String() != "198.18.0.21" {
		t.Errorf("advertise %v %v", a, ok)
	}
}

func TestParseConfigRejects(t *testing.T) {
	base := head + "kubeconfig: k\nnodeName: w1\nlistenAddress: 127.0.0.1:53\n"
	for _, tc := range []struct{ doc, want string }{
		{head + "nodeName: w1\nlistenAddress: 127.0.0.1:53\n", "kubeconfig"},
		{head + "kubeconfig: k\nlistenAddress: 127.0.0.1:53\n", "nodeName"},
		{head + "kubeconfig: k\nnodeName: W_1\nlistenAddress: 127.0.0.1:53\n", "nodeName"},
		{head + "kubeconfig: k\nnodeName: w1\n", "advertiseAddress"}, // :53 and nothing to advertise
		{base + "advertiseAddress: nowhere\n", "advertiseAddress"},
		{base + "listenAddress: x\n", "listenAddress"},
		{base + "clusterDomain: \"\"\n", "clusterDomain"},
		{base + "clusterDomain: Bad_Domain\n", "clusterDomain"},
		{base + "ttl: 0s\n", "ttl"},
		{base + "service: {name: \"\"}\n", "service.name"},
		{base + "service: {clusterIP: x}\n", "service.clusterIP"},
		{base + "service: {resyncPeriod: 1ms, register: true}\n", "service.resyncPeriod"},
		{base + "upstream: {resolvConf: \"\"}\n", "upstream.resolvConf"},
		{base + "upstream: {servers: [\"a.b\"]}\n", "upstream.servers[0]"},
		{base + "upstream: {timeout: 1m}\n", "upstream.timeout"},
		{base + "cache: {size: -1}\n", "cache.size"},
		{base + "healthAddress: nowhere\n", "healthAddress"},
		{base + "lameDuck: 2m\n", "lameDuck"},
		{base + "bogus: 1\n", "bogus"},
		{"apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\nkubeconfig: k\nnodeName: w\nlistenAddress: 127.0.0.1:53\n", "kind"},
	} {
		_, err := ParseConfig([]byte(tc.doc), "/x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one naming %s", tc.doc, err, tc.want)
		}
	}
	// Listening on every address is fine with an advertise address, or
	// without registration.
	c := NewConfig()
	c.Kubeconfig, c.NodeName = "k", "w1"
	c.AdvertiseAddress = "198.18.0.21"
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("advertise: %v", errs)
	}
	c.AdvertiseAddress, c.Service.Register = "", false
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("no registration: %v", errs)
	}
}

// The installer marshals a Config and the role parses it back unchanged.
func TestConfigRoundTrip(t *testing.T) {
	c := NewConfig()
	c.Kubeconfig, c.NodeName, c.ListenAddress = "/etc/kforge/pki/dns.kubeconfig", "w1", "198.18.0.21:53"
	c.Service.ClusterIP = "198.18.16.10"
	c.Upstream.Servers = []string{"198.18.0.1"}
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(data, "/")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, back) {
		t.Errorf("round trip:\n%+v\n%+v", c, back)
	}
}

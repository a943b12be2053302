package ingress

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const head = "apiVersion: kforge.dev/v1alpha1\nkind: IngressConfig\n"

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(head+"kubeconfig: ingress.kubeconfig\nnodeName: w1\n"), "/etc/kforge")
	if err != nil {
		t.Fatal(err)
	}
	if c.Kubeconfig != filepath.Join("/etc/kforge", "ingress.kubeconfig") {
		t.Errorf("kubeconfig %q", c.Kubeconfig)
	}
	if c.HTTPAddress != ":80" || c.HTTPSAddress != ":443" || c.HealthAddress != "127.0.0.1:10254" ||
		c.Class.Name != "kforge" || c.Class.Controller != "kforge.dev/ingress" || !c.Class.Create ||
		c.Client.MaxHeaderBytes != 32<<10 || c.Upstream.MaxIdlePerEndpoint != 1024 || c.Upstream.Timeout != time.Minute ||
		!c.AccessLog {
		t.Errorf("defaults %+v", c)
	}
}

func TestParseConfigRejects(t *testing.T) {
	base := head + "kubeconfig: k\nnodeName: w1\n"
	for _, tc := range []struct{ doc, want string }{
		{head + "nodeName: w1\n", "kubeconfig"},
		{head + "kubeconfig: k\n", "nodeName"},
		{base + "httpAddress: x\n", "httpAddress"},
		{base + "httpsAddress: 1.2.3:443\n", "httpsAddress"},
		{base + "healthAddress: nowhere\n", "healthAddress"},
		{base + "statusAddresses: [\"not an address\"]\n", "statusAddresses[0]"},
		{base + "class: {name: \"\"}\n", "class.name"},
		{base + "class: {controller: \"\"}\n", "class.controller"},
		{base + "client: {readHeaderTimeout: 0s}\n", "client.readHeaderTimeout"},
		{base + "client: {maxHeaderBytes: 10}\n", "client.maxHeaderBytes"},
		{base + "client: {maxBodyBytes: -1}\n", "client.maxBodyBytes"},
		{base + "upstream: {connectTimeout: 0s}\n", "upstream.connectTimeout"},
		{base + "upstream: {maxIdlePerEndpoint: 0}\n", "upstream.maxIdlePerEndpoint"},
		{base + "upstream: {maxRetries: 11}\n", "upstream.maxRetries"},
		{base + "shutdownGrace: 1h\n", "shutdownGrace"},
		{base + "bogus: 1\n", "bogus"},
	} {
		_, err := ParseConfig([]byte(tc.doc), "/x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one naming %s", tc.doc, err, tc.want)
		}
	}
	// An empty HTTPS address turns TLS off; a name is a valid status
	// address.
	c := NewConfig()
	c.Kubeconfig, c.NodeName, c.HTTPSAddress = "k", "w1", ""
	c.StatusAddresses = []string{"198.18.0.21", "ingress.example.com"}
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("valid config: %v", errs)
	}
}

// The installer marshals a Config and the role parses it back unchanged.
func TestConfigRoundTrip(t *testing.T) {
	c := NewConfig()
	c.Kubeconfig, c.NodeName = "/etc/kforge/pki/ingress.kubeconfig", "w1"
	c.StatusAddresses = []string{"198.18.0.21"}
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

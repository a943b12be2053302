package serviceproxy

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigRoundTripAndDefaults(t *testing.T) {
	c := NewConfig()
	c.Kubeconfig = "/etc/kforge/pki/proxy.kubeconfig"
	c.NodeName = "w1"
	c.NodePortAddresses = []string{"198.18.0.21"}
	c.ClusterCIDR = "198.19.0.0/16"
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseConfig(data, "/")
	if err != nil {
		t.Fatal(err)
	}
	if got.HealthAddress != "127.0.0.1:10256" || got.SyncPeriod != time.Hour || got.MinSyncInterval != 100*time.Millisecond ||
		got.NodeName != "w1" || got.ClusterCIDR != "198.19.0.0/16" {
		t.Errorf("round trip: %+v", got)
	}
}

func TestConfigListsEveryProblem(t *testing.T) {
	doc := `apiVersion: kforge.dev/v1alpha1
kind: ProxyConfig
kubeconfig: k
nodePortAddresses: [x, 198.18.0.21]
clusterCIDR: fd00::/64
syncPeriod: 1s
minSyncInterval: 2s
`
	_, err := ParseConfig([]byte(doc), "/")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"nodeName", "nodePortAddresses[0]", "clusterCIDR", "minSyncInterval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s: %v", want, err)
		}
	}
	if _, err := ParseConfig([]byte("apiVersion: kforge.dev/v1alpha1\nkind: ProxyConfig\nnodeName: w\nkubeconfig: k\nbogus: 1\n"), "/"); err == nil {
		t.Error("an unknown field was accepted")
	}
}

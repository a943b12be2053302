package nodeagent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigExampleLoads(t *testing.T) {
	c, err := LoadConfig("testdata/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("testdata/agent.kubeconfig")
	if c.Kubeconfig != abs || c.NodeName != "worker-1" || c.NodeAddress != "198.18.0.21" ||
		c.Containerd.Namespace != "k8s.io" || c.PodCIDRSource != PodCIDRFromNode || c.LeaseRenewInterval != 10*time.Second ||
		c.Reserved["memory"] != "256Mi" || c.ClusterDNS != "198.18.16.10" {
		t.Fatalf("config %+v", c)
	}
	// The example shows the defaults: it must match NewConfig's.
	d := NewConfig()
	if c.Containerd != d.Containerd || c.CNI.ConfDir != d.CNI.ConfDir || c.RootDir != d.RootDir || c.RunDir != d.RunDir ||
		c.PodLogDir != d.PodLogDir || c.ImageDir != d.ImageDir || c.HealthAddress != d.HealthAddress || c.MaxPods != d.MaxPods ||
		c.LeaseDuration != d.LeaseDuration || c.StatusReportInterval != d.StatusReportInterval || c.ClusterDomain != d.ClusterDomain ||
		c.Server.Address != d.Server.Address || c.ContainerLogMaxSize != d.ContainerLogMaxSize || c.ContainerLogMaxFiles != d.ContainerLogMaxFiles {
		t.Errorf("the example's values differ from the defaults:\n%+v\n%+v", c, d)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, _ := os.ReadFile("testdata/agent.yaml")
	if !strings.Contains(string(readme), string(example)) {
		t.Error("the README's example config differs from testdata/agent.yaml")
	}
}

func TestConfigListsEveryProblem(t *testing.T) {
	doc := `apiVersion: kforge.dev/v1alpha1
kind: AgentConfig
nodeAddress: not-an-ip
containerd: {socket: ""}
cni: {bridge: a-bridge-name-too-long}
podCIDRSource: static
podCIDR: 198.19.7.0/33
clusterDNS: dns
reserved: {cpu: lots, gpu: "1"}
rootDir: relative
healthAddress: nowhere
server: {certFile: agent.crt, address: nowhere}
containerLogMaxSize: huge
containerLogMaxFiles: 0
leaseDuration: 5s
leaseRenewInterval: 10s
`
	_, err := ParseConfig([]byte(doc), "/x")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"kubeconfig", "nodeAddress", "containerd.socket", "cni.bridge", "podCIDR:", "clusterDNS",
		"reserved.cpu", "reserved.gpu", "rootDir", "healthAddress", "leaseRenewInterval",
		"server: Invalid value", "server.address", "containerLogMaxSize", "containerLogMaxFiles"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	if _, err := ParseConfig([]byte("kind: AgentConfig\nnodeAdress: 1.2.3.4\n"), "/x"); err == nil {
		t.Error("an unknown field was accepted")
	}
	if _, err := ParseConfig([]byte("apiVersion: kforge.dev/v1alpha1\nkind: AgentConfig\nkubeconfig: k\nnodeAddress: 198.18.0.21\npodCIDR: 198.19.0.0/24\n"), "/x"); err == nil ||
		!strings.Contains(err.Error(), "podCIDR") {
		t.Errorf("a podCIDR with podCIDRSource node: %v", err)
	}
}

func TestAPIServerProxyConfig(t *testing.T) {
	base := "apiVersion: kforge.dev/v1alpha1\nkind: AgentConfig\nkubeconfig: k\nnodeAddress: 198.18.0.21\n"
	c, err := ParseConfig([]byte(base), "/x")
	if err != nil || len(c.APIServerProxy.Backends) != 0 {
		t.Fatalf("no proxy by default: %+v %v", c.APIServerProxy, err)
	}
	c, err = ParseConfig([]byte(base+"apiServerProxy: {backends: [198.18.0.11:6443, 198.18.0.12:6443], caFile: ca.crt}\n"), "/x")
	if err != nil {
		t.Fatal(err)
	}
	lc := c.APIServerProxy.lbConfig()
	if lc.ListenAddress != DefaultAPIServerProxyAddress || lc.HealthCheck.CAFile != "/x/ca.crt" || len(lc.Backends) != 2 || lc.MetricsAddress != "" {
		t.Errorf("balancer config %+v", lc)
	}
	for doc, want := range map[string]string{
		base + "apiServerProxy: {backends: [198.18.0.11:6443]}\n":                                   "apiServerProxy.healthCheck.caFile",
		base + "apiServerProxy: {backends: [nohost], caFile: ca.crt}\n":                             "apiServerProxy.backends",
		base + "apiServerProxy: {caFile: ca.crt}\n":                                                 "apiServerProxy.backends",
		base + "apiServerProxy: {backends: [198.18.0.11:6443], caFile: ca.crt, listenAddress: x}\n": "apiServerProxy.listenAddress",
	} {
		if _, err := ParseConfig([]byte(doc), "/x"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error naming %s, got %v", doc, want, err)
		}
	}
}

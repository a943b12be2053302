package controllers

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

func TestConfigExampleLoadsWithDefaults(t *testing.T) {
	c, err := LoadConfig("testdata/controller-manager.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("testdata/controller-manager.kubeconfig")
	if c.Kubeconfig != abs || !c.LeaderElection.Enabled || c.LeaderElection.LeaseDuration != 15*time.Second ||
		c.Workers != 2 || c.MetricsAddress != DefaultMetricsAddress || !c.Enabled(NameGarbageCollector) {
		t.Fatalf("config %+v", c)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, _ := os.ReadFile("testdata/controller-manager.yaml")
	if !strings.Contains(string(readme), string(example)) {
		t.Error("the README's example config differs from testdata/controller-manager.yaml")
	}
}

func TestConfigListsEveryProblem(t *testing.T) {
	doc := `apiVersion: kforge.dev/v1alpha1
kind: ControllerManagerConfig
leaderElection: {enabled: true, leaseName: "", namespace: kube-system, leaseDuration: 5s, renewDeadline: 10s, retryPeriod: 2s}
controllers: [deployment, no-such-controller]
clusterCIDR: 198.19.0.0/33
workers: 0
metricsAddress: nowhere
`
	_, err := ParseConfig([]byte(doc), "/x")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"kubeconfig", "leaseName", "leaseDuration", "no-such-controller", "clusterCIDR", "workers", "metricsAddress"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	if _, err := ParseConfig([]byte("kind: ControllerManagerConfig\nworkerz: 1\n"), "/x"); err == nil {
		t.Error("an unknown field was accepted")
	}
}

// The installer builds a Config as a struct, marshals it and validates
// the document with ParseConfig: that must give the same Config back.
func TestConfigRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"defaults and kubeconfig", func(c *Config) {}},
		{"every field", func(c *Config) {
			c.LeaderElection = LeaderElection{Enabled: true, LeaseName: "l", Namespace: "ns", LeaseDuration: 30 * time.Second,
				RenewDeadline: 20 * time.Second, RetryPeriod: 4 * time.Second, Identity: "m1"}
			c.Controllers = []string{NameEndpoints, NameGarbageCollector}
			c.Workers, c.Resync, c.MetricsAddress = 5, 0, ""
		}},
		{"leader election off", func(c *Config) { c.LeaderElection = LeaderElection{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := NewConfig()
			want.Kubeconfig = "/etc/kforge/controller-manager.kubeconfig"
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

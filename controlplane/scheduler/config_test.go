package scheduler

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

func TestParseConfigDefaultsAndPaths(t *testing.T) {
	c, err := ParseConfig([]byte("apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\nkubeconfig: scheduler.kubeconfig\n"), "/etc/kforge")
	if err != nil {
		t.Fatal(err)
	}
	if c.Kubeconfig != filepath.Join("/etc/kforge", "scheduler.kubeconfig") {
		t.Errorf("kubeconfig %q", c.Kubeconfig)
	}
	le := c.LeaderElection
	if !le.Enabled || le.LeaseName != "kforge-scheduler" || le.Namespace != "kube-system" ||
		le.LeaseDuration != 15*time.Second || le.RenewDeadline != 10*time.Second || le.RetryPeriod != 2*time.Second {
		t.Errorf("leader election defaults %+v", le)
	}
	if c.SchedulerName != "default-scheduler" || c.HealthAddress != "127.0.0.1:10259" {
		t.Errorf("defaults %+v", c)
	}
}

func TestParseConfigRejects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\n", "kubeconfig"},
		{"apiVersion: kforge.dev/v1alpha1\nkind: LoadBalancerConfig\nkubeconfig: k\n", "kind"},
		{"apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\nkubeconfig: k\nbogus: 1\n", "bogus"},
		{"apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\nkubeconfig: k\nhealthAddress: nowhere\n", "healthAddress"},
		{"apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\nkubeconfig: k\nleaderElection: {leaseDuration: 5s}\n", "leaseDuration"},
		{"apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\nkubeconfig: k\nschedulerName: \"\"\n", "schedulerName"},
	} {
		_, err := ParseConfig([]byte(tc.doc), "/x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one naming %s", tc.doc, err, tc.want)
		}
	}
	// Leader election off needs none of its fields.
	c := NewConfig()
	c.Kubeconfig = "k"
	c.LeaderElection = LeaderElection{}
	if err := c.Validate(); len(err) > 0 {
		t.Errorf("leader election off: %v", err)
	}
	c.Kind = "x"
	if errs := c.Validate(); len(errs) != 1 || errs[0].Field != "kind" {
		t.Errorf("wrong kind: %v", errs)
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
			c.SchedulerName, c.HealthAddress = "other-scheduler", ""
			c.LeaderElection = LeaderElection{Enabled: true, LeaseName: "l", Namespace: "ns", LeaseDuration: 30 * time.Second,
				RenewDeadline: 20 * time.Second, RetryPeriod: 4 * time.Second, Identity: "m1"}
		}},
		{"leader election off", func(c *Config) { c.LeaderElection = LeaderElection{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := NewConfig()
			want.Kubeconfig = "/etc/kforge/scheduler.kubeconfig"
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

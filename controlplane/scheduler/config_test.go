package scheduler

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if err := c.Validate(); err != nil {
		t.Errorf("leader election off: %v", err)
	}
	c.Kind = "x"
	var ce *ConfigError
	if err := c.Validate(); !errors.As(err, &ce) {
		t.Errorf("not a *ConfigError: %v", err)
	}
}

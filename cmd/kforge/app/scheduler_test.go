package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSchedulerCommandRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "scheduler.yaml")
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: SchedulerConfig\nhealthAddress: nowhere\nleaderElection:\n  renewDeadline: 20s\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"scheduler", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"kubeconfig", "healthAddress", "leaderElection.leaseDuration"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	err = Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"scheduler", "--config", filepath.Join(dir, "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestSchedulerCommandDefaultConfigPath(t *testing.T) {
	cmd := newSchedulerCommand(Streams{}, &globalFlags{})
	if got := cmd.Flags().Lookup("config").DefValue; got != "/etc/kforge/scheduler.yaml" {
		t.Errorf("--config default %q", got)
	}
}

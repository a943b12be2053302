package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLBCommandRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lb.yaml")
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: LoadBalancerConfig\nlistenAddress: 127.0.0.1:0\nbalance: random\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"lb", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"backends", "balance", "healthCheck.caFile"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	err = Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"lb", "--config", filepath.Join(dir, "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

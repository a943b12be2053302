package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentCommandRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: AgentConfig\nnodeAddress: nowhere\nhealthAddress: nowhere\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"agent", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"kubeconfig", "nodeAddress", "healthAddress"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	cmd := newAgentCommand(Streams{}, &globalFlags{})
	if got := cmd.Flags().Lookup("config").DefValue; got != "/etc/kforge/agent.yaml" {
		t.Errorf("--config default %q", got)
	}
}

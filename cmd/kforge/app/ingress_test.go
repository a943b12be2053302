package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIngressCommandRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ingress.yaml")
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: IngressConfig\nhttpAddress: nowhere\nupstream:\n  maxRetries: 99\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"ingress", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"kubeconfig", "nodeName", "httpAddress", "upstream.maxRetries"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
}

func TestIngressCommandDefaultConfigPath(t *testing.T) {
	cmd := newIngressCommand(Streams{}, &globalFlags{})
	if got := cmd.Flags().Lookup("config").DefValue; got != "/etc/kforge/ingress.yaml" {
		t.Errorf("--config default %q", got)
	}
}

package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDNSCommandRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dns.yaml")
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: DNSConfig\nlistenAddress: 127.0.0.1:53\nupstream:\n  timeout: 1h\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"dns", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"kubeconfig", "nodeName", "upstream.timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
}

func TestDNSCommandDefaultConfigPath(t *testing.T) {
	cmd := newDNSCommand(Streams{}, &globalFlags{})
	if got := cmd.Flags().Lookup("config").DefValue; got != "/etc/kforge/dns.yaml" {
		t.Errorf("--config default %q", got)
	}
}

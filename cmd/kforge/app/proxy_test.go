package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProxyCommandRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: ProxyConfig\nclusterCIDR: nope\nnodePortAddresses: [fd00::1]\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"proxy", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"kubeconfig", "nodeName", "clusterCIDR", "nodePortAddresses[0]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	if cmd := newProxyCommand(Streams{}, &globalFlags{}); cmd.Flags().Lookup("config").DefValue != "/etc/kforge/proxy.yaml" {
		t.Errorf("--config default %q", cmd.Flags().Lookup("config").DefValue)
	}
}

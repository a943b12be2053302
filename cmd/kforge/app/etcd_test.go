package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEtcdCommandRejectsBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etcd.yaml")
	doc := "apiVersion: kforge.dev/v1alpha1\nkind: EtcdConfig\nname: m1\ndataDir: data\ninitialClusterState: maybe\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"etcd", "--config", path})
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	for _, want := range []string{"initialClusterState", "tls.certFile", "tls.trustedCAFile"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Error("a data dir was created for an invalid config")
	}

	err = Run(t.Context(), Streams{Out: &out, ErrOut: &errOut}, []string{"etcd", "--config", filepath.Join(dir, "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

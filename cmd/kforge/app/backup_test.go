package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBackupAndRestoreRefuseBeforeConnecting(t *testing.T) {
	f := labFile(t)
	archive := filepath.Join(t.TempDir(), "b.tar.gz")
	if err := os.WriteFile(archive, []byte("not a backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "-f", f}, "-o FILE is required"},
		{[]string{"backup", "-f", f, "-o", archive, "--output", "yaml"}, "--output must be text or json"},
		{[]string{"backup", "-f", f, "-o", filepath.Join(t.TempDir(), "no", "b.tar.gz")}, "is not a folder"},
		{[]string{"restore", "-f", f}, "accepts 1 arg"},
		{[]string{"restore", "-f", f, filepath.Join(t.TempDir(), "none.tar.gz")}, "no such file"},
		// No terminal to ask on.
		{[]string{"restore", "-f", f, archive}, "pass --yes"},
		{[]string{"restore", "-f", f, archive, "--yes"}, "not a gzip file"},
		{[]string{"restore", "-f", f, archive, "--dry-run"}, "not a gzip file"},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestEtcdRestoreNeedsItsFlags(t *testing.T) {
	_, _, err := run(t, "etcd", "restore", "--config", filepath.Join(t.TempDir(), "etcd.yaml"))
	if err == nil || !strings.Contains(err.Error(), `required flag(s) "cluster-token", "snapshot" not set`) {
		t.Errorf("err %v", err)
	}
}

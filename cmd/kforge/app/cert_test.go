package app

import (
	"strings"
	"testing"
)

func TestCertRotateRefusesBeforeConnecting(t *testing.T) {
	f := labFile(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ca"}, "rotating the CAs is not implemented"},
		{[]string{"--warn", "10d"}, "--warn applies with --expiring"},
		{[]string{"--expiring", "--warn", "soon"}, "--warn"},
		{[]string{"--output", "yaml"}, "--output must be text or json"},
		// No PKI yet: the plan stops it before any host is contacted.
		{nil, "not issued yet"},
	} {
		_, _, err := run(t, append([]string{"cert", "rotate", "-f", f}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cert rotate %v: err %v, want one containing %q", tc.args, err, tc.want)
		}
	}
	// With a PKI, --hosts must name hosts of the cluster.
	mustRun(t, "pki", "init", "-f", f)
	_, _, err := run(t, "cert", "rotate", "-f", f, "--hosts", "nosuch")
	if err == nil || !strings.Contains(err.Error(), `unknown host "nosuch"`) {
		t.Errorf("--hosts nosuch: %v", err)
	}
}

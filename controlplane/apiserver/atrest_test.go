package apiserver

import (
	"strings"
	"testing"

	"kforge.dev/kforge/controlplane/apiserver/encryption"
)

func TestEncryptionOptions(t *testing.T) {
	entry := func(names ...string) encryption.ResourceConfig {
		e := secretboxEntry("k", 1)
		e.Resources = names
		return e
	}
	for _, tc := range []struct {
		name    string
		entries []encryption.ResourceConfig
		want    int    // storage options (key prefixes transformed)
		err     string // substring of the error, if any
	}{
		{"none", nil, 0, ""},
		{"secrets", []encryption.ResourceConfig{entry("secrets")}, 1, ""},
		// Both Event versions share one stored prefix.
		{"events twice", []encryption.ResourceConfig{entry("events", "events.events.k8s.io")}, 1, ""},
		{"apps wildcard", []encryption.ResourceConfig{entry("*.apps")}, 5, ""}, // deployments, replicasets, daemonsets, statefulsets, controllerrevisions
		{"typo", []encryption.ResourceConfig{entry("secret")}, 0, `"secret" is not a resource this apiserver serves`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := encryptionOptions(tc.entries, DefaultResources())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(opts) != tc.want {
				t.Fatalf("%d options, %v; want %d", len(opts), err, tc.want)
			}
		})
	}
}

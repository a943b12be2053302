package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kforge.dev/kforge/api/v1alpha1"
)

func TestWriteClusterFile(t *testing.T) {
	for _, size := range []struct{ m, w int }{{3, 3}, {1, 0}, {2, 1}, {5, 7}} {
		dir := t.TempDir()
		// v1alpha1.Load checks that the identity file exists.
		if err := os.MkdirAll(filepath.Join(dir, sshDirName), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, sshDirName, identityName), []byte("key"), 0o600); err != nil {
			t.Fatal(err)
		}
		hosts, err := Plan(size.m, size.w)
		if err != nil {
			t.Fatal(err)
		}
		p, err := writeClusterFile(dir, hosts)
		if err != nil {
			t.Fatalf("%d masters, %d workers: %v", size.m, size.w, err)
		}
		c, err := v1alpha1.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(c.Masters()); got != size.m {
			t.Errorf("masters = %d, want %d", got, size.m)
		}
		if got := len(c.Workers()); got != size.w {
			t.Errorf("workers = %d, want %d", got, size.w)
		}
		if c.Spec.Network.PodCIDR != "198.19.0.0/16" || c.Spec.Network.ServiceCIDR != "198.18.16.0/20" {
			t.Errorf("network = %+v", c.Spec.Network)
		}
		lb := c.Spec.LoadBalancer
		if lb.Address != "198.18.0.10" || lb.Port != 6443 || lb.Host != "lb" {
			t.Errorf("loadBalancer = %+v", lb)
		}
		if want := filepath.Join(dir, "ssh", "id_ed25519"); c.Spec.SSH.IdentityFile != want {
			t.Errorf("identityFile = %q, want %q", c.Spec.SSH.IdentityFile, want)
		}
		if want := filepath.Join(dir, "ssh", "known_hosts"); c.Spec.SSH.KnownHosts != want {
			t.Errorf("knownHosts = %q, want %q", c.Spec.SSH.KnownHosts, want)
		}
		if c.APIServerURL() != "https://198.18.0.10:6443" {
			t.Errorf("API URL = %s", c.APIServerURL())
		}
		data, _ := os.ReadFile(p)
		if strings.Contains(string(data), dir) {
			t.Errorf("cluster.yaml holds absolute paths; want them relative to its folder:\n%s", data)
		}
	}
}

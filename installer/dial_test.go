package installer

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kforge.dev/kforge/api/v1alpha1"
)

// tunnelHost is a fakeHost that records the dials carried through it.
type tunnelHost struct {
	fakeHost
	dials []string
}

func (h *tunnelHost) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	h.dials = append(h.dials, addr)
	return nil, errors.New("tunnelled through " + h.name)
}

func loadSpec(t *testing.T, spec string) *v1alpha1.Cluster {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"id", "known_hosts"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := v1alpha1.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tunnelHosts(c *v1alpha1.Cluster) (map[string]*tunnelHost, []Host) {
	byName := map[string]*tunnelHost{}
	var hosts []Host
	for _, h := range c.Spec.Hosts {
		th := &tunnelHost{fakeHost: fakeHost{name: h.Name, role: h.Role}}
		byName[h.Name] = th
		hosts = append(hosts, th)
	}
	return byName, hosts
}

// Behind a bastion every host's daemons are reached through the host's own
// SSH connection, and an external LB through the first master's.
func TestDialerTunnelsHostsBehindABastion(t *testing.T) {
	c := loadSpec(t, `apiVersion: kforge.dev/v1alpha1
kind: Cluster
metadata: {name: b}
spec:
  ssh: {user: root, identityFile: ./id, knownHosts: ./known_hosts, bastion: jump@203.0.113.1:22}
  loadBalancer: {address: 198.18.0.100, port: 6443}
  network: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.16.0/20}
  hosts:
  - {name: w1, address: 198.18.0.21, role: worker}
  - {name: m1, address: 198.18.0.11, role: master}
  - {name: m2, address: 198.18.0.12, role: master}
  - {name: m3, address: 198.18.0.13, role: master}
`)
	byName, hosts := tunnelHosts(c)
	d := NewDialer(c, hosts)
	if !d.Tunnels() {
		t.Fatal("a cluster behind a bastion is dialled directly")
	}
	for addr, via := range map[string]string{
		"198.18.0.12:2379":  "m2",
		"198.18.0.11:6443":  "m1",
		"198.18.0.21:10250": "w1",
		"198.18.0.100:6443": "m1", // the external LB: through the first master
	} {
		_, err := d.DialContext(context.Background(), "tcp", addr)
		if err == nil || err.Error() != "tunnelled through "+via {
			t.Errorf("dial %s: %v; want it through %s", addr, err, via)
		}
	}
	if got := strings.Join(byName["m1"].dials, ","); got != "198.18.0.11:6443,198.18.0.100:6443" && got != "198.18.0.100:6443,198.18.0.11:6443" {
		t.Errorf("m1 carried %q", got)
	}
}

// Without a bastion every address is dialled directly.
func TestDialerDirectWithoutABastion(t *testing.T) {
	c := loadSpec(t, simSpec)
	byName, hosts := tunnelHosts(c)
	d := NewDialer(c, hosts)
	if d.Tunnels() {
		t.Fatal("a cluster without a bastion is tunnelled")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("direct dial: %v", err)
	}
	conn.Close()
	for name, h := range byName {
		if len(h.dials) > 0 {
			t.Errorf("%s carried %v", name, h.dials)
		}
	}
}

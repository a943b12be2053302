package v1alpha1

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadLabDefaultsAndPaths(t *testing.T) {
	c, err := Load("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	s := c.Spec
	checks := []struct{ name, got, want string }{
		{"ssh.user", s.SSH.User, "root"},
		{"identityFile", s.SSH.IdentityFile, filepath.Join(dir, "ssh/id_ed25519")},
		{"knownHosts", s.SSH.KnownHosts, filepath.Join(dir, "ssh/known_hosts")},
		{"pki.dir", s.PKI.Dir, filepath.Join(dir, "pki")},
		{"clusterDomain", s.Network.ClusterDomain, "cluster.local"},
		{"caValidity", s.PKI.CAValidity, "87600h"},
		{"certValidity", s.PKI.CertValidity, "8760h"},
		{"APIServerURL", c.APIServerURL(), "https://198.18.0.10:6443"},
		{"path", c.Path, filepath.Join(dir, "lab.yaml")},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if s.SSH.Port != 22 || s.LoadBalancer.Port != 6443 {
		t.Errorf("ports: ssh %d lb %d", s.SSH.Port, s.LoadBalancer.Port)
	}
	if n := len(c.Masters()); n != 3 {
		t.Errorf("masters = %d", n)
	}
	if n := len(c.Workers()); n != 3 {
		t.Errorf("workers = %d", n)
	}
	w1 := c.HostSSH(*c.Host("w1"))
	if w1.User != "kforge" || w1.SudoPasswordEnv != "SUDO_PW" || w1.Port != 22 || w1.IdentityFile != s.SSH.IdentityFile {
		t.Errorf("w1 effective ssh = %+v", w1)
	}
	if ip, err := c.KubernetesServiceIP(); err != nil || ip.String() != "198.18.16.1" {
		t.Errorf("KubernetesServiceIP = %v, %v", ip, err)
	}
	if c.CertValidity().Hours() != 8760 {
		t.Errorf("CertValidity = %v", c.CertValidity())
	}
}

// base is a valid spec; each case replaces one line of it (or appends) to
// make exactly the problem under test.
const base = `apiVersion: kforge.dev/v1alpha1
kind: Cluster
metadata: {name: lab}
spec:
  ssh: {identityFile: ./id}
  loadBalancer: {address: 10.0.0.10, host: lb}
  hosts:
  - {name: lb, address: 10.0.0.10, role: loadbalancer}
  - {name: m1, address: 10.0.0.11, role: master}
  - {name: m2, address: 10.0.0.12, role: master}
  - {name: m3, address: 10.0.0.13, role: master}
  - {name: w1, address: 10.0.0.21, role: worker}
  network: {podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/12}
`

func parseIn(t *testing.T, doc string) (*Cluster, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "id"), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]byte(doc), dir)
	if err != nil {
		return nil, err
	}
	return c, c.CheckSSHFiles()
}

func TestBaseIsValid(t *testing.T) {
	if _, err := parseIn(t, base); err != nil {
		t.Fatal(err)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name     string
		old, new string // replace old with new in base
		field    string // the field the error must name
		line     int    // its line, 0 to skip the check
		msgPart  string
	}{
		{"duplicate name", "{name: m2, address: 10.0.0.12", "{name: m1, address: 10.0.0.12", "spec.hosts[2].name", 10, "duplicate host name"},
		{"duplicate address", "{name: m2, address: 10.0.0.12", "{name: m2, address: 10.0.0.11", "spec.hosts[2].address", 10, "duplicate address"},
		{"unknown role", "{name: w1, address: 10.0.0.21, role: worker}", "{name: w1, address: 10.0.0.21, role: wrker}", "spec.hosts[4].role", 12, "unknown role"},
		{"missing role", "{name: w1, address: 10.0.0.21, role: worker}", "{name: w1, address: 10.0.0.21}", "spec.hosts[4].role", 0, "required"},
		{"bad address", "address: 10.0.0.21", "address: 10.0.0.321", "spec.hosts[4].address", 12, "not an IP"},
		{"bad host name", "{name: w1,", "{name: W_1,", "spec.hosts[4].name", 12, "not a valid host name"},
		{"invalid pod CIDR", "podCIDR: 10.244.0.0/16", "podCIDR: 10.244.0.0/33", "spec.network.podCIDR", 13, "not a CIDR"},
		{"host bits set", "serviceCIDR: 10.96.0.0/12", "serviceCIDR: 10.96.0.1/12", "spec.network.serviceCIDR", 13, "host bits"},
		{"overlapping CIDRs", "serviceCIDR: 10.96.0.0/12", "serviceCIDR: 10.244.128.0/20", "spec.network.serviceCIDR", 13, "overlaps"},
		{"host inside pod CIDR", "address: 10.0.0.21", "address: 10.244.0.5", "spec.hosts[4].address", 12, "inside spec.network.podCIDR"},
		{"missing pod CIDR", "podCIDR: 10.244.0.0/16, ", "", "spec.network.podCIDR", 0, "required"},
		{"no master", "role: master}\n  - {name: m2, address: 10.0.0.12, role: master}\n  - {name: m3, address: 10.0.0.13, role: master}", "role: worker}\n  - {name: m2, address: 10.0.0.12, role: worker}\n  - {name: m3, address: 10.0.0.13, role: worker}", "spec.hosts", 7, "no host has role master"},
		{"even masters", "{name: w1, address: 10.0.0.21, role: worker}", "{name: w1, address: 10.0.0.21, role: master}", "spec.hosts", 7, "even number"},
		{"no load balancer", "  loadBalancer: {address: 10.0.0.10, host: lb}\n  hosts:\n  - {name: lb, address: 10.0.0.10, role: loadbalancer}\n", "  hosts:\n", "spec.loadBalancer", 0, "required with more than one master"},
		{"lb host unknown", "host: lb}", "host: lbx}", "spec.loadBalancer.host", 6, "names no host"},
		{"lb host wrong role", "host: lb}", "host: w1}", "spec.loadBalancer.host", 6, "not loadbalancer"},
		{"lb address differs", "loadBalancer: {address: 10.0.0.10", "loadBalancer: {address: 10.0.0.9", "spec.loadBalancer.address", 6, "differs"},
		{"missing identity file", "identityFile: ./id}", "identityFile: ./nope}", "spec.ssh.identityFile", 5, "no such file"},
		{"bad ssh port", "ssh: {identityFile: ./id}", "ssh: {identityFile: ./id, port: 70000}", "spec.ssh.port", 5, "not a TCP port"},
		{"bad validity", "network: {", "pki: {certValidity: 1year}\n  network: {", "spec.pki.certValidity", 13, "not a duration"},
		{"cert outlives CA", "network: {", "pki: {caValidity: 100h, certValidity: 200h}\n  network: {", "spec.pki.certValidity", 13, "longer than"},
		{"bad cluster domain", "serviceCIDR: 10.96.0.0/12}", "serviceCIDR: 10.96.0.0/12, clusterDomain: Bad_Domain}", "spec.network.clusterDomain", 13, "not a valid DNS domain"},
		{"wrong kind", "kind: Cluster", "kind: Clusters", "kind", 2, "must be"},
		{"wrong apiVersion", "apiVersion: kforge.dev/v1alpha1", "apiVersion: v1", "apiVersion", 1, "must be"},
		{"missing name", "metadata: {name: lab}", "metadata: {}", "metadata.name", 3, "required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.old) {
				t.Fatalf("test bug: %q not in base", tc.old)
			}
			_, err := parseIn(t, strings.Replace(base, tc.old, tc.new, 1))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want a ValidationError, got %v", err)
			}
			for _, fe := range ve.Errors {
				if fe.Field == tc.field && strings.Contains(fe.Detail, tc.msgPart) {
					if tc.line != 0 && ve.Line(fe) != tc.line {
						t.Errorf("%s reported at line %d, want %d", fe.Field, ve.Line(fe), tc.line)
					}
					return
				}
			}
			t.Errorf("no error for field %s containing %q; got:\n%v", tc.field, tc.msgPart, err)
		})
	}
}

func TestEvenMastersAllowed(t *testing.T) {
	doc := strings.Replace(base, "{name: w1, address: 10.0.0.21, role: worker}", "{name: w1, address: 10.0.0.21, role: master}", 1) + "  allowEvenMasters: true\n"
	if _, err := parseIn(t, doc); err != nil {
		t.Fatal(err)
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	doc := strings.NewReplacer(
		"{name: m2, address: 10.0.0.12", "{name: m1, address: 10.0.0.11",
		"role: worker}", "role: wrker}",
		"serviceCIDR: 10.96.0.0/12", "serviceCIDR: 10.244.0.0/24",
	).Replace(base)
	_, err := parseIn(t, doc)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	want := []string{"spec.hosts[2].name", "spec.hosts[2].address", "spec.hosts[4].role", "spec.network.serviceCIDR"}
	for _, f := range want {
		found := false
		for _, fe := range ve.Errors {
			found = found || fe.Field == f
		}
		if !found {
			t.Errorf("missing error for %s in:\n%v", f, err)
		}
	}
	// Sorted by line.
	for i := 1; i < len(ve.Errors); i++ {
		if a, b := ve.Line(ve.Errors[i-1]), ve.Line(ve.Errors[i]); b != 0 && a > b {
			t.Errorf("errors out of line order: %v", err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"unknown field", strings.Replace(base, "network: {", "netwrk: {}\n  network: {", 1), "field netwrk not found"},
		{"unknown host field", strings.Replace(base, "role: worker}", "role: worker, zone: a}", 1), "field zone not found"},
		{"empty", "", "empty"},
		{"two documents", base + "---\n" + base, "more than one YAML document"},
		{"not yaml", "spec: [", "decoding"},
		{"wrong type", strings.Replace(base, "ssh: {identityFile: ./id}", "ssh: {identityFile: ./id, port: twenty}", 1), "line 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIn(t, tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestHostOverrideIdentityFile(t *testing.T) {
	doc := strings.Replace(base, "{name: w1, address: 10.0.0.21, role: worker}", "{name: w1, address: 10.0.0.21, role: worker, ssh: {identityFile: ./other, port: 2222}}", 1)
	_, err := parseIn(t, doc)
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "spec.hosts[4].ssh.identityFile" {
		t.Fatalf("want one error on spec.hosts[4].ssh.identityFile, got %v", err)
	}
}

func TestExternalLoadBalancerAndSingleMaster(t *testing.T) {
	single := `apiVersion: kforge.dev/v1alpha1
kind: Cluster
metadata: {name: one}
spec:
  hosts:
  - {name: m1, address: 127.0.0.1, role: master}
  network: {podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/12}
`
	c, err := parseIn(t, single)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.APIServerURL(); got != "https://127.0.0.1:6443" {
		t.Errorf("APIServerURL = %s", got)
	}
	ext := strings.Replace(base, "  - {name: lb, address: 10.0.0.10, role: loadbalancer}\n", "", 1)
	ext = strings.Replace(ext, "{address: 10.0.0.10, host: lb}", "{address: 10.0.0.10, port: 443}", 1)
	c, err = parseIn(t, ext)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.APIServerURL(); got != "https://10.0.0.10:443" {
		t.Errorf("APIServerURL = %s", got)
	}
}

// Commands that never connect do not need SSH material: Parse accepts a
// spec whose identity file does not exist yet, CheckSSHFiles refuses it.
func TestIdentityFileCheckedOnlyForConnecting(t *testing.T) {
	doc := strings.Replace(base, "identityFile: ./id}", "identityFile: ./not-yet}", 1)
	c, err := Parse([]byte(doc), t.TempDir())
	if err != nil {
		t.Fatalf("Parse needs the identity file: %v", err)
	}
	err = c.CheckSSHFiles()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "spec.ssh.identityFile" || ve.Line(ve.Errors[0]) != 5 {
		t.Fatalf("want one error on spec.ssh.identityFile at line 5, got %v", err)
	}
	if !strings.Contains(err.Error(), "line 5: spec.ssh.identityFile: identity file") {
		t.Errorf("message: %v", err)
	}
}

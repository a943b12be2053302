package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// host is one line of a test cluster's spec.hosts.
type host struct{ name, addr, role string }

func labHosts() []host {
	return []host{
		{"lb", "198.18.0.10", "loadbalancer"},
		{"m1", "198.18.0.11", "master"},
		{"m2", "198.18.0.12", "master"},
		{"m3", "198.18.0.13", "master"},
		{"w1", "198.18.0.21", "worker"},
		{"w2", "198.18.0.22", "worker"},
		{"w3", "198.18.0.23", "worker"},
	}
}

// labSpec is the lab's cluster with these hosts; the PKI lives in dir/pki.
func labSpec(dir string, hosts []host) Spec {
	s := Spec{
		ClusterName:         "lab",
		APIServerURL:        "https://198.18.0.10:6443",
		LoadBalancerAddress: "198.18.0.10",
		KubernetesServiceIP: netip.MustParseAddr("198.18.16.1"),
		ClusterDomain:       "cluster.local",
		Dir:                 filepath.Join(dir, "pki"),
		CAValidity:          87600 * time.Hour,
		CertValidity:        8760 * time.Hour,
	}
	for _, h := range hosts {
		s.Hosts = append(s.Hosts, Host{Name: h.name, Address: h.addr, Role: h.role})
	}
	return s
}

// initLab makes a lab PKI in a temp dir and returns its inventory.
func initLab(t *testing.T) *Inventory {
	t.Helper()
	c := labSpec(t.TempDir(), labHosts())
	inv, err := NewInventory(c, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(context.Background(), inv, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	return inv
}

func mustInit(t *testing.T, c Spec) (*Inventory, *Report) {
	t.Helper()
	inv, err := NewInventory(c, "")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Init(context.Background(), inv, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return inv, rep
}

type fileState struct {
	data []byte
	mode fs.FileMode
}

// snapshot records every file and folder under dir.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fileState{mode: fi.Mode()}
		if !d.IsDir() {
			if st.data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		out[filepath.ToSlash(rel)] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, a, b map[string]fileState) {
	t.Helper()
	for p, x := range a {
		y, ok := b[p]
		switch {
		case !ok:
			t.Errorf("%s disappeared", p)
		case x.mode != y.mode:
			t.Errorf("%s: mode %v became %v", p, x.mode, y.mode)
		case !bytes.Equal(x.data, y.data):
			t.Errorf("%s changed", p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

func readCert(t *testing.T, inv *Inventory, rel string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(inv.Path(rel))
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCertPEM(data)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return c
}

var (
	srv  = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	cli  = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

// want is what one issued certificate must be, written out by hand from
// the documented inventory rather than derived from the inventory code.
type want struct {
	file string
	ca   string
	cn   string
	org  []string
	dns  []string
	ips  []string
	eku  []x509.ExtKeyUsage
}

func labWants() []want {
	apiDNS := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	apiIPs := []string{"198.18.0.10", "198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.16.1", "127.0.0.1"}
	ws := []want{
		{file: "clients/admin.crt", ca: ClusterCA, cn: "kubernetes-admin", org: []string{"system:masters"}, eku: cli},
		{file: "clients/scheduler.crt", ca: ClusterCA, cn: "system:kube-scheduler", eku: cli},
		{file: "clients/controller-manager.crt", ca: ClusterCA, cn: "system:kube-controller-manager", eku: cli},
		{file: "clients/proxy.crt", ca: ClusterCA, cn: "system:kube-proxy", eku: cli},
		{file: "clients/ingress.crt", ca: ClusterCA, cn: "system:kforge:ingress", eku: cli},
		{file: "clients/dns.crt", ca: ClusterCA, cn: "system:kforge:dns", eku: cli},
	}
	for i, m := range []string{"m1", "m2", "m3"} {
		addr := fmt.Sprintf("198.18.0.1%d", i+1)
		local := []string{m, "localhost"}
		localIPs := []string{addr, "127.0.0.1"}
		ws = append(ws,
			want{file: "hosts/" + m + "/etcd-server.crt", ca: EtcdCA, cn: m, dns: local, ips: localIPs, eku: srv},
			want{file: "hosts/" + m + "/etcd-peer.crt", ca: EtcdCA, cn: m, dns: local, ips: localIPs, eku: both},
			want{file: "hosts/" + m + "/apiserver.crt", ca: ClusterCA, cn: "kube-apiserver", dns: apiDNS, ips: apiIPs, eku: srv},
			want{file: "hosts/" + m + "/apiserver-etcd-client.crt", ca: EtcdCA, cn: "kforge:apiserver-etcd-client", eku: cli},
			want{file: "hosts/" + m + "/apiserver-kubelet-client.crt", ca: ClusterCA, cn: "kforge:apiserver-kubelet-client", eku: cli},
		)
	}
	for i, w := range []string{"w1", "w2", "w3"} {
		addr := fmt.Sprintf("198.18.0.2%d", i+1)
		ws = append(ws,
			want{file: "hosts/" + w + "/agent-client.crt", ca: ClusterCA, cn: "system:node:" + w, org: []string{"system:nodes"}, eku: cli},
			want{file: "hosts/" + w + "/agent-server.crt", ca: ClusterCA, cn: w, dns: []string{w}, ips: []string{addr}, eku: srv},
		)
	}
	return ws
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestInitIssuesExactCertificates(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	roots := map[string]*x509.CertPool{}
	for _, ca := range []string{ClusterCA, EtcdCA} {
		c := readCert(t, inv, "ca/"+ca+".crt")
		if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
			t.Errorf("%s: IsCA=%v MaxPathLen=%d zero=%v, want a CA with path length 0", ca, c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
		}
		if d := c.NotAfter.Sub(c.NotBefore); d < 87600*time.Hour || d > 87601*time.Hour {
			t.Errorf("%s: validity %v, want 87600h", ca, d)
		}
		roots[ca] = x509.NewCertPool()
		roots[ca].AddCert(c)
	}
	ws := labWants()
	leaves := 0
	for _, c := range inv.Certs {
		if !c.IsCA {
			leaves++
		}
	}
	if leaves != len(ws) {
		t.Errorf("inventory has %d leaves, want %d", leaves, len(ws))
	}
	for _, w := range ws {
		t.Run(w.file, func(t *testing.T) {
			c := readCert(t, inv, w.file)
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots[w.ca], KeyUsages: w.eku}); err != nil {
				t.Errorf("does not chain to %s for %v: %v", w.ca, w.eku, err)
			}
			other := EtcdCA
			if w.ca == EtcdCA {
				other = ClusterCA
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots[other], KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
				t.Errorf("also chains to %s", other)
			}
			if c.Subject.CommonName != w.cn {
				t.Errorf("CN %q, want %q", c.Subject.CommonName, w.cn)
			}
			if !slices.Equal(c.Subject.Organization, w.org) && len(c.Subject.Organization)+len(w.org) > 0 {
				t.Errorf("O %v, want %v", c.Subject.Organization, w.org)
			}
			if got := sorted(c.DNSNames); !slices.Equal(got, sorted(w.dns)) {
				t.Errorf("DNS SANs %v, want %v", got, sorted(w.dns))
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if got := sorted(ips); !slices.Equal(got, sorted(w.ips)) {
				t.Errorf("IP SANs %v, want %v", got, sorted(w.ips))
			}
			if len(c.URIs)+len(c.EmailAddresses) > 0 {
				t.Errorf("unexpected URI/e-mail SANs %v %v", c.URIs, c.EmailAddresses)
			}
			if !slices.Equal(c.ExtKeyUsage, w.eku) {
				t.Errorf("EKU %v, want %v", c.ExtKeyUsage, w.eku)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage %v, want digital signature only", c.KeyUsage)
			}
			if c.IsCA {
				t.Error("a leaf is a CA")
			}
			if !isP256(c.PublicKey) {
				t.Error("key is not ECDSA P-256")
			}
			if d := c.NotAfter.Sub(c.NotBefore); d < 8760*time.Hour || d > 8761*time.Hour {
				t.Errorf("validity %v, want 8760h", d)
			}
		})
	}
}

func TestInitModesAndLayout(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	snap := snapshot(t, inv.Dir)
	for p, st := range snap {
		switch {
		case st.mode.IsDir():
			if st.mode.Perm() != 0o700 {
				t.Errorf("folder %s is %v, want 0700", p, st.mode.Perm())
			}
		case strings.HasSuffix(p, ".key"), strings.HasSuffix(p, ".kubeconfig"):
			if st.mode.Perm() != 0o600 {
				t.Errorf("%s is %v, want 0600", p, st.mode.Perm())
			}
		case strings.HasPrefix(filepath.Base(p), "."):
			t.Errorf("left-over temporary file %s", p)
		}
	}

	wantFiles := map[string][]string{
		"m1": {"apiserver-etcd-client.crt", "apiserver-etcd-client.key", "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key",
			"apiserver.crt", "apiserver.key", "cluster-ca.crt", "controller-manager.kubeconfig", "etcd-ca.crt",
			"etcd-peer.crt", "etcd-peer.key", "etcd-server.crt", "etcd-server.key", "sa.key", "sa.pub", "scheduler.kubeconfig"},
		"w1": {"agent-client.crt", "agent-client.key", "agent-server.crt", "agent-server.key", "agent.kubeconfig",
			"cluster-ca.crt", "dns.kubeconfig", "ingress.kubeconfig", "proxy.kubeconfig"},
		"lb": {"cluster-ca.crt"},
	}
	for h, want := range wantFiles {
		entries, err := os.ReadDir(inv.Path("hosts/" + h))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Errorf("hosts/%s holds %v, want %v", h, got, want)
		}
		var listed []string
		for _, f := range inv.FilesFor(h) {
			listed = append(listed, filepath.Base(f.Path))
		}
		if !slices.Equal(sorted(listed), want) {
			t.Errorf("inventory lists %v for %s, want %v", sorted(listed), h, want)
		}
	}

	// No host folder holds a CA key; a worker's folder holds no key but
	// its own.
	secret := map[string]string{} // key PEM -> where it belongs
	for _, c := range inv.Certs {
		data, err := os.ReadFile(inv.Path(c.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		secret[strings.TrimSpace(string(data))] = c.ID()
	}
	for p, st := range snap {
		h := hostOfPath(p)
		if h == "" || st.mode.IsDir() {
			continue
		}
		for key, id := range secret {
			if !bytes.Contains(st.data, []byte(key)) {
				continue
			}
			owner, _, perHost := strings.Cut(id, "/")
			switch {
			case id == ClusterCA || id == EtcdCA:
				t.Errorf("%s holds the %s key", p, id)
			case perHost && owner != h:
				t.Errorf("%s holds %s's key", p, id)
			}
		}
	}
}

func TestInitTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	before := snapshot(t, inv.Dir)
	var progress bytes.Buffer
	rep, err := Init(context.Background(), inv, InitOptions{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, before, snapshot(t, inv.Dir))
	if rep.Changed() {
		t.Errorf("second Init reports changes:\n%s", progress.String())
	}
	for _, it := range rep.Items {
		if it.Action != Kept {
			t.Errorf("%s: %s, want kept", it.ID, it.Action)
		}
	}
	if n := len(rep.Items); n == 0 {
		t.Error("empty report")
	}
}

// actions maps item ID to action for the certificate items of a report.
func actions(rep *Report) map[string]Item {
	out := map[string]Item{}
	for _, it := range rep.Items {
		out[it.ID] = it
	}
	return out
}

func TestInitReissuesOnlyWhatChanged(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		change   func([]host) []host
		reissued []string // cert IDs
		created  []string // cert IDs
	}{
		{
			name: "two masters added",
			change: func(hs []host) []host {
				return append(hs, host{"m4", "198.18.0.14", "master"}, host{"m5", "198.18.0.15", "master"})
			},
			reissued: []string{"m1/apiserver", "m2/apiserver", "m3/apiserver"},
			created: []string{"m4/etcd-server", "m4/etcd-peer", "m4/apiserver", "m4/apiserver-etcd-client", "m4/apiserver-kubelet-client",
				"m5/etcd-server", "m5/etcd-peer", "m5/apiserver", "m5/apiserver-etcd-client", "m5/apiserver-kubelet-client"},
		},
		{
			name: "worker address changed",
			change: func(hs []host) []host {
				hs[4].addr = "198.18.0.31"
				return hs
			},
			reissued: []string{"w1/agent-server"},
		},
		{
			name: "worker added",
			change: func(hs []host) []host {
				return append(hs, host{"w4", "198.18.0.24", "worker"})
			},
			created: []string{"w4/agent-client", "w4/agent-server"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, _ = mustInit(t, labSpec(dir, labHosts()))
			before := snapshot(t, filepath.Join(dir, "pki"))
			inv, rep := mustInit(t, labSpec(dir, tt.change(labHosts())))
			acts := actions(rep)
			for _, c := range inv.Certs {
				want := Kept
				switch {
				case slices.Contains(tt.reissued, c.ID()):
					want = Reissued
				case slices.Contains(tt.created, c.ID()):
					want = Created
				}
				if got := acts[c.ID()]; got.Action != want {
					t.Errorf("%s: %s (%s), want %s", c.ID(), got.Action, got.Reason, want)
				} else if want == Reissued && got.Reason == "" {
					t.Errorf("%s: reissued without a reason", c.ID())
				}
				if want == Kept {
					for _, f := range []string{c.CertFile, c.KeyFile} {
						if !bytes.Equal(before[f].data, mustRead(t, inv.Path(f))) {
							t.Errorf("%s changed though %s was kept", f, c.ID())
						}
					}
				}
			}
			if acts["sa"].Action != Kept {
				t.Errorf("service-account key: %s", acts["sa"].Action)
			}
			// The shared kubeconfigs point at the same LB with the same
			// certs: untouched.
			for _, kc := range []string{"kubeconfigs/admin.kubeconfig", "kubeconfigs/proxy.kubeconfig"} {
				if acts[kc].Action != Kept {
					t.Errorf("%s: %s, want kept", kc, acts[kc].Action)
				}
			}
			// And a third run is quiet again.
			_, rep = mustInit(t, labSpec(dir, tt.change(labHosts())))
			if rep.Changed() {
				t.Error("third Init changed something")
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReissueReasons(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mustInit(t, labSpec(dir, labHosts()))
	hs := labHosts()
	hs = append(hs, host{"m4", "198.18.0.14", "master"}, host{"m5", "198.18.0.15", "master"})
	_, rep := mustInit(t, labSpec(dir, hs))
	got := actions(rep)["m1/apiserver"].Reason
	if !strings.Contains(got, "adds 198.18.0.14, 198.18.0.15") {
		t.Errorf("reason %q does not name the new addresses", got)
	}
}

func writeExpiredCA(t *testing.T, inv *Inventory, name string) {
	t.Helper()
	spec := *inv.Cert(name)
	spec.Validity = time.Hour
	p, err := newCAWithBackdate(&spec, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePair(inv, &spec, p); err != nil {
		t.Fatal(err)
	}
}

func TestInitRefusesBrokenDir(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		breakDir func(t *testing.T, inv *Inventory)
		file     string // the file the error must name
		msg      string
	}{
		{"CA cert without key", func(t *testing.T, inv *Inventory) { rm(t, inv, "ca/cluster-ca.key") }, "ca/cluster-ca.crt", "key"},
		{"CA key without cert", func(t *testing.T, inv *Inventory) { rm(t, inv, "ca/etcd-ca.crt") }, "ca/etcd-ca.key", "certificate"},
		{"leaf key without cert", func(t *testing.T, inv *Inventory) { rm(t, inv, "hosts/w2/agent-server.crt") }, "hosts/w2/agent-server.key", "certificate"},
		{"key does not match cert", func(t *testing.T, inv *Inventory) {
			cp(t, inv, "hosts/m2/etcd-peer.key", "hosts/m1/etcd-server.key")
		}, "hosts/m1/etcd-server.key", "does not match"},
		{"CA key does not match", func(t *testing.T, inv *Inventory) {
			cp(t, inv, "ca/etcd-ca.key", "ca/cluster-ca.key")
		}, "ca/cluster-ca.key", "does not match"},
		{"unparsable cert", func(t *testing.T, inv *Inventory) {
			write(t, inv, "hosts/m3/apiserver.crt", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", 0o644)
		}, "hosts/m3/apiserver.crt", "parsing certificate"},
		{"not PEM at all", func(t *testing.T, inv *Inventory) { write(t, inv, "ca/cluster-ca.crt", "hello\n", 0o644) }, "ca/cluster-ca.crt", "no PEM"},
		{"unparsable key", func(t *testing.T, inv *Inventory) {
			write(t, inv, "clients/admin.key", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", 0o600)
		}, "clients/admin.key", "private key"},
		{"expired CA", func(t *testing.T, inv *Inventory) { writeExpiredCA(t, inv, EtcdCA) }, "ca/etcd-ca.crt", "expired"},
		{"CA gone, leaves left", func(t *testing.T, inv *Inventory) {
			rm(t, inv, "ca/cluster-ca.key")
			rm(t, inv, "ca/cluster-ca.crt")
		}, "ca/cluster-ca.crt", "missing"},
		{"sa.pub gone", func(t *testing.T, inv *Inventory) { rm(t, inv, "ca/sa.pub") }, "ca/sa.key", "public key"},
		{"sa key gone, copies left", func(t *testing.T, inv *Inventory) {
			rm(t, inv, "ca/sa.key")
			rm(t, inv, "ca/sa.pub")
		}, "ca/sa.key", "hosts/m1/sa.key"},
		{"key readable by others", func(t *testing.T, inv *Inventory) {
			if err := os.Chmod(inv.Path("hosts/w3/agent-client.key"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "hosts/w3/agent-client.key", "0600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := initLab(t)
			tt.breakDir(t, inv)
			before := snapshot(t, inv.Dir)
			_, err := Init(context.Background(), inv, InitOptions{})
			if err == nil {
				t.Fatal("Init accepted a broken PKI directory")
			}
			var be *BrokenError
			if !errors.As(err, &be) || len(be.Errs) == 0 || be.Errs[0].Field != inv.Path(tt.file) {
				t.Errorf("error does not name %s as the file: %v", tt.file, err)
			}
			if !strings.Contains(err.Error(), inv.Path(tt.file)) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not name %s and say %q", err, tt.file, tt.msg)
			}
			sameSnapshot(t, before, snapshot(t, inv.Dir))
		})
	}
}

func rm(t *testing.T, inv *Inventory, rel string) {
	t.Helper()
	if err := os.Remove(inv.Path(rel)); err != nil {
		t.Fatal(err)
	}
}

func cp(t *testing.T, inv *Inventory, from, to string) {
	t.Helper()
	if err := os.WriteFile(inv.Path(to), mustRead(t, inv.Path(from)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, inv *Inventory, rel, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(inv.Path(rel), []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func TestInitReissuesExpiredLeafAndForeignLeaf(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	// A leaf signed by the other CA is reissued (the CA stays).
	spec := *inv.Cert("m1/etcd-server")
	spec.CA = ClusterCA
	caCert, err := loadPair(inv.Path("ca/cluster-ca.crt"), inv.Path("ca/cluster-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := issue(&spec, caCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePair(inv, &spec, p); err != nil {
		t.Fatal(err)
	}
	// Two years later every leaf has expired; the CAs have not.
	later := func() time.Time { return time.Now().Add(2 * 8760 * time.Hour) }
	rep, err := Init(context.Background(), inv, InitOptions{Now: later})
	if err != nil {
		t.Fatal(err)
	}
	acts := actions(rep)
	if it := acts["m1/etcd-server"]; it.Action != Reissued || !strings.Contains(it.Reason, "not signed by the current etcd-ca") {
		t.Errorf("m1/etcd-server: %s %q", it.Action, it.Reason)
	}
	if it := acts["admin"]; it.Action != Reissued || !strings.Contains(it.Reason, "expired") {
		t.Errorf("admin: %s %q", it.Action, it.Reason)
	}
	if it := acts[ClusterCA]; it.Action != Kept {
		t.Errorf("cluster CA: %s", it.Action)
	}
}

func TestInitDirOverrideAndCancel(t *testing.T) {
	t.Parallel()
	c := labSpec(t.TempDir(), labHosts())
	other := filepath.Join(t.TempDir(), "elsewhere")
	inv, err := NewInventory(c, other)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Init(ctx, inv, InitOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Init: %v", err)
	}
	if _, err := Init(context.Background(), inv, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(other, "ca", "cluster-ca.crt")); err != nil {
		t.Errorf("--dir not honoured: %v", err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("spec.pki.dir was written though overridden: %v", err)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	now := time.Now()
	sts, err := Status(inv, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != len(inv.Certs) {
		t.Fatalf("%d rows, want %d", len(sts), len(inv.Certs))
	}
	byID := map[string]CertStatus{}
	for _, s := range sts {
		id := s.Name
		if s.Host != "" && !slices.Contains([]string{"all", "masters", "workers", "operator"}, s.Host) {
			id = s.Host + "/" + s.Name
		}
		byID[id] = s
	}
	if s := byID[ClusterCA]; s.Host != "all" || s.DaysLeft < 3649 || s.DaysLeft > 3650 {
		t.Errorf("cluster CA row %+v", s)
	}
	if s := byID["scheduler"]; s.Host != "masters" || s.DaysLeft != 364 {
		t.Errorf("scheduler row %+v", s)
	}
	if s := byID["admin"]; s.Host != "operator" {
		t.Errorf("admin row %+v", s)
	}
	if s := byID["w2/agent-server"]; s.ExpiresWithin(now, 30*24*time.Hour) || !s.ExpiresWithin(now, 400*24*time.Hour) {
		t.Errorf("w2/agent-server expiry window wrong: %+v", s)
	}

	rm(t, inv, "hosts/w2/agent-server.crt")
	sts, err = Status(inv, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == "agent-server" && s.Host == "w2" && !s.Missing {
			t.Error("missing cert not reported")
		}
	}

	c := labSpec(t.TempDir(), labHosts())
	empty, _ := NewInventory(c, "")
	if _, err := Status(empty, now); !errors.Is(err, ErrNoPKI) {
		t.Errorf("Status on no PKI: %v", err)
	}
}

// hostOfPath returns the host whose folder holds rel, or "".
func hostOfPath(rel string) string {
	if rest, ok := strings.CutPrefix(rel, hostsDir+"/"); ok {
		if h, _, ok := strings.Cut(rest, "/"); ok {
			return h
		}
	}
	return ""
}

func TestInitListsEveryProblem(t *testing.T) {
	inv := initLab(t)
	write(t, inv, "ca/cluster-ca.crt", "hello\n", 0o644)
	if err := os.Chmod(inv.Path("hosts/w3/agent-client.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Init(context.Background(), inv, InitOptions{})
	var be *BrokenError
	if !errors.As(err, &be) {
		t.Fatalf("not a *BrokenError: %v", err)
	}
	var fields []string
	for _, fe := range be.Errs {
		fields = append(fields, fe.Field)
	}
	want := []string{inv.Path("ca/cluster-ca.crt"), inv.Path("hosts/w3/agent-client.key")}
	if !slices.Equal(fields, want) {
		t.Errorf("fields %q, want %q", fields, want)
	}
	if !strings.HasPrefix(err.Error(), "the PKI directory "+inv.Dir+" has 2 problems (nothing was changed):\n  - "+want[0]+": Invalid value: ") {
		t.Errorf("message:\n%s", err)
	}
}

package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// serials reads every certificate's serial from the directory.
func serials(t *testing.T, inv *Inventory) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range inv.Certs {
		crt, err := parseCertPEM(mustRead(t, inv.Path(c.CertFile)))
		if err != nil {
			t.Fatal(err)
		}
		out[c.ID()] = crt.SerialNumber.String()
	}
	return out
}

// verifyChain checks a leaf file against its CA file.
func verifyChain(t *testing.T, inv *Inventory, c *Cert) {
	t.Helper()
	leaf, err := parseCertPEM(mustRead(t, inv.Path(c.CertFile)))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := parseCertPEM(mustRead(t, inv.Path(inv.Cert(c.CA).CertFile)))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("%s does not chain to %s: %v", c.ID(), c.CA, err)
	}
	if _, err := loadPair(inv.Path(c.CertFile), inv.Path(c.KeyFile)); err != nil {
		t.Errorf("%s: %v", c.ID(), err)
	}
}

// kubeconfigSerial is the serial of the client certificate a kubeconfig embeds.
func kubeconfigSerial(t *testing.T, path string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		crt, err := parseCertPEM(ai.ClientCertificateData)
		if err != nil {
			t.Fatal(err)
		}
		return crt.SerialNumber.String()
	}
	t.Fatalf("%s has no user", path)
	return ""
}

func TestReissueEveryLeaf(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	before := snapshot(t, inv.Dir)
	old := serials(t, inv)

	got, err := Reissue(context.Background(), inv, ReissueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := serials(t, inv)
	var leaves int
	for i := range inv.Certs {
		c := &inv.Certs[i]
		if c.IsCA {
			for _, f := range []string{c.CertFile, c.KeyFile} {
				if !bytes.Equal(before[f].data, mustRead(t, inv.Path(f))) {
					t.Errorf("CA file %s changed", f)
				}
			}
			continue
		}
		leaves++
		if now[c.ID()] == old[c.ID()] {
			t.Errorf("%s kept serial %s", c.ID(), old[c.ID()])
		}
		if bytes.Equal(before[c.KeyFile].data, mustRead(t, inv.Path(c.KeyFile))) {
			t.Errorf("%s kept its key", c.ID())
		}
		verifyChain(t, inv, c)
	}
	if len(got) != leaves {
		t.Errorf("Reissue reported %d leaves, want %d", len(got), leaves)
	}
	for _, r := range got {
		if r.OldSerial != old[r.ID] || r.NewSerial != now[r.ID] || r.NewNotAfter.IsZero() || r.OldNotAfter.IsZero() {
			t.Errorf("%s: reported %+v, files say %s -> %s", r.ID, r, old[r.ID], now[r.ID])
		}
	}
	for _, f := range []string{inv.ServiceAccountKey, inv.ServiceAccountPub} {
		if !bytes.Equal(before[f].data, mustRead(t, inv.Path(f))) {
			t.Errorf("%s changed", f)
		}
	}
	// Kubeconfigs embed the new client certificates; host copies follow.
	if s := kubeconfigSerial(t, inv.Path("kubeconfigs/admin.kubeconfig")); s != now["admin"] {
		t.Errorf("admin.kubeconfig embeds serial %s, want %s", s, now["admin"])
	}
	if s := kubeconfigSerial(t, inv.Path("hosts/w2/agent.kubeconfig")); s != now["w2/agent-client"] {
		t.Errorf("w2's agent.kubeconfig embeds serial %s, want %s", s, now["w2/agent-client"])
	}
	if !bytes.Equal(mustRead(t, inv.Path("hosts/m3/scheduler.kubeconfig")), mustRead(t, inv.Path("kubeconfigs/scheduler.kubeconfig"))) {
		t.Error("m3's scheduler.kubeconfig is not the new one")
	}
	// Init afterwards has nothing to do.
	rep, err := Init(context.Background(), inv, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Changed() {
		t.Error("Init after Reissue changed something")
	}
}

func TestReissueHostsOnly(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	before := snapshot(t, inv.Dir)
	old := serials(t, inv)
	got, err := Reissue(context.Background(), inv, ReissueOptions{Hosts: []string{"w1", "m2"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	want := []string{"m2/etcd-server", "m2/etcd-peer", "m2/apiserver", "m2/apiserver-etcd-client", "m2/apiserver-kubelet-client",
		"w1/agent-client", "w1/agent-server"}
	if !slices.Equal(ids, want) {
		t.Errorf("reissued %v, want %v", ids, want)
	}
	now := serials(t, inv)
	for _, c := range inv.Certs {
		changed := now[c.ID()] != old[c.ID()]
		if changed != slices.Contains(want, c.ID()) {
			t.Errorf("%s: serial changed %v", c.ID(), changed)
		}
	}
	// Only the two hosts' own files and w1's kubeconfig changed.
	for p, st := range before {
		if st.data == nil {
			continue
		}
		changed := !bytes.Equal(st.data, mustRead(t, inv.Path(p)))
		wantChanged := strings.HasPrefix(p, "hosts/m2/") && !strings.Contains(p, "ca.crt") && !strings.Contains(p, "sa.") && !strings.Contains(p, ".kubeconfig") ||
			strings.HasPrefix(p, "hosts/w1/agent")
		if changed != wantChanged {
			t.Errorf("%s: changed %v, want %v", p, changed, wantChanged)
		}
	}
}

func TestReissueExpiringOnly(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	// Give w3's agent API certificate an hour left.
	spec := *inv.Cert("w3/agent-server")
	spec.Validity = time.Hour
	ca, err := loadPair(inv.Path("ca/cluster-ca.crt"), inv.Path("ca/cluster-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := issue(&spec, ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePair(inv, &spec, p); err != nil {
		t.Fatal(err)
	}
	old := serials(t, inv)

	plan, err := Reissue(context.Background(), inv, ReissueOptions{ExpiringWithin: 30 * 24 * time.Hour, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0].ID != "w3/agent-server" || plan[0].NewSerial != "" || plan[0].OldSerial != old["w3/agent-server"] {
		t.Fatalf("dry-run plan %+v, want only w3/agent-server without a new serial", plan)
	}
	if now := serials(t, inv); !equalMaps(now, old) {
		t.Error("the dry run changed serials")
	}

	got, err := Reissue(context.Background(), inv, ReissueOptions{ExpiringWithin: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "w3/agent-server" {
		t.Fatalf("reissued %+v, want only w3/agent-server", got)
	}
	if d := time.Until(got[0].NewNotAfter); d < 300*24*time.Hour {
		t.Errorf("the new certificate lasts %s, want the spec's year", d)
	}
	now := serials(t, inv)
	for id := range old {
		if (now[id] != old[id]) != (id == "w3/agent-server") {
			t.Errorf("%s: %s -> %s", id, old[id], now[id])
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestReissueRefusesAnIncompleteOrUnknown(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	if _, err := Reissue(context.Background(), inv, ReissueOptions{Hosts: []string{"w9"}}); err == nil || !strings.Contains(err.Error(), `unknown host "w9"`) {
		t.Errorf("unknown host: %v", err)
	}
	before := snapshot(t, inv.Dir)
	if err := os.Remove(inv.Path("hosts/w2/agent-server.crt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(inv.Path("hosts/w2/agent-server.key")); err != nil {
		t.Fatal(err)
	}
	_, err := Reissue(context.Background(), inv, ReissueOptions{})
	if !errors.Is(err, ErrNoPKI) || !strings.Contains(err.Error(), "w2/agent-server") {
		t.Errorf("incomplete PKI: %v", err)
	}
	delete(before, "hosts/w2/agent-server.crt")
	delete(before, "hosts/w2/agent-server.key")
	sameSnapshot(t, before, snapshot(t, inv.Dir))
}

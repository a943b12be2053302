package installer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/pki"
)

// rotateProber is simProber that also reads served certificates: a
// daemon serves what the host's PKI folder holds, as a reloading daemon
// does once the files arrive.
type rotateProber struct {
	simProber
	s   *sim
	inv *pki.Inventory
}

func (p *rotateProber) ServedCertificate(_ context.Context, addr string) (*x509.Certificate, error) {
	host, port, _ := net.SplitHostPort(addr)
	name := map[string]string{"2379": "etcd-server", "6443": "apiserver", "10250": "agent-server"}[port]
	for _, h := range p.s.hosts {
		if h.addr != host {
			continue
		}
		h.mu.Lock()
		data := h.contents["/etc/kforge/pki/"+name+".crt"]
		h.mu.Unlock()
		b, _ := pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%s serves nothing", addr)
		}
		p.log.add("served " + addr)
		return x509.ParseCertificate(b.Bytes)
	}
	return nil, fmt.Errorf("no host at %s", addr)
}

func (s *sim) rotate(dry bool, hosts []string) (*RotateResult, string) {
	s.t.Helper()
	var hs []Host
	for _, h := range s.hosts {
		h.reset()
		hs = append(hs, h)
	}
	s.log.mu.Lock()
	s.log.lines = nil
	s.log.mu.Unlock()
	var out bytes.Buffer
	res, err := RotateCerts(context.Background(), RotateOptions{Hosts: hosts, Up: UpOptions{
		Cluster: s.c, DryRun: dry, Binary: s.exe, Out: &out, ErrOut: io.Discard, Hosts: hs, Reporter: &recorder{},
		NewProber: func(_ *v1alpha1.Cluster, inv *pki.Inventory) (Prober, error) {
			return &rotateProber{simProber: simProber{log: s.log}, s: s, inv: inv}, nil
		},
	}})
	if err != nil {
		s.t.Fatalf("rotate: %v\n%s", err, out.String())
	}
	return res, out.String()
}

// restarts lists "host unit" for every restart in the log.
func (s *sim) restarts() []string {
	var out []string
	for _, l := range s.log.all() {
		if f := strings.Fields(l); len(f) == 3 && f[1] == "restart" {
			out = append(out, f[0]+" "+strings.TrimSuffix(strings.TrimPrefix(f[2], "kforge-"), ".service"))
		}
	}
	slices.Sort(out)
	return out
}

func TestRotateRestartsOnlyWhatCannotReload(t *testing.T) {
	s := newSim(t)
	s.up(false)
	inv, err := pki.NewInventory(PKISpec(s.c), "")
	if err != nil {
		t.Fatal(err)
	}
	before, err := pki.Status(inv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := os.ReadFile(AdminKubeconfigPath(s.c.Path))
	if err != nil {
		t.Fatal(err)
	}

	// The dry run plans every leaf and changes nothing, here or there.
	plan, out := s.rotate(true, nil)
	if len(plan.Certs) != len(before)-2 {
		t.Errorf("plan has %d certificates, want every leaf (%d)", len(plan.Certs), len(before)-2)
	}
	for _, h := range s.hosts {
		if c := h.changes(); len(c) != 0 {
			t.Errorf("dry run changed %s: %v", h.name, c)
		}
	}
	if r := s.restarts(); len(r) != 0 {
		t.Errorf("dry run restarted %v", r)
	}
	if !strings.Contains(out, "m2: upload /etc/kforge/pki/apiserver.crt") {
		t.Errorf("dry run output does not show the uploads:\n%s", out)
	}
	mid, _ := pki.Status(inv, time.Now())
	for i := range mid {
		if mid[i].NotAfter != before[i].NotAfter {
			t.Errorf("dry run changed %s", mid[i].ID)
		}
	}

	res, _ := s.rotate(false, nil)
	if len(res.Certs) != len(before)-2 {
		t.Errorf("rotated %d certificates, want %d", len(res.Certs), len(before)-2)
	}
	for _, c := range res.Certs {
		if c.NewSerial == "" || c.NewSerial == c.OldSerial {
			t.Errorf("%s: serial %s -> %q", c.ID, c.OldSerial, c.NewSerial)
		}
	}
	// etcd, the apiservers, the lb and the agent API reload; the clients
	// whose kubeconfig changed restart.
	want := []string{"m1 controller-manager", "m1 scheduler", "m2 controller-manager", "m2 scheduler",
		"m3 controller-manager", "m3 scheduler", "w1 agent", "w1 dns", "w1 ingress", "w1 proxy"}
	if got := s.restarts(); !slices.Equal(got, want) {
		t.Errorf("restarts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var served []string
	for _, l := range s.log.all() {
		if strings.HasPrefix(l, "served ") {
			served = append(served, strings.TrimPrefix(l, "served "))
		}
	}
	for _, addr := range []string{"198.18.0.11:2379", "198.18.0.12:6443", "198.18.0.21:10250"} {
		if !slices.Contains(served, addr) {
			t.Errorf("the new certificate at %s was not checked (checked %v)", addr, served)
		}
	}
	if now, _ := os.ReadFile(AdminKubeconfigPath(s.c.Path)); bytes.Equal(now, admin) {
		t.Error("the admin kubeconfig beside cluster.yaml was not rewritten")
	}
	recs, err := ReadJournal(JournalPath(s.c.Path))
	if err != nil {
		t.Fatal(err)
	}
	if last := LastRun(recs); last == nil || !last.OK {
		t.Errorf("journal: last run %+v", last)
	}
	var cmds []string
	for _, r := range recs {
		if r.Kind == JournalRunStart {
			cmds = append(cmds, r.Command)
		}
	}
	if len(cmds) == 0 || cmds[len(cmds)-1] != "cert rotate" {
		t.Errorf("journal run-start commands %q, want the last to be cert rotate", cmds)
	}
	// And up afterwards has nothing to do.
	if res, _, _ := s.up(false); len(res.Changes) != 0 {
		t.Errorf("up after the rotation changed %v", res.Changes)
	}
}

func TestRotateOneHost(t *testing.T) {
	s := newSim(t)
	s.up(false)
	res, _ := s.rotate(false, []string{"m2"})
	var ids []string
	for _, c := range res.Certs {
		ids = append(ids, c.ID)
	}
	if want := []string{"m2/etcd-server", "m2/etcd-peer", "m2/apiserver", "m2/apiserver-etcd-client", "m2/apiserver-kubelet-client"}; !slices.Equal(ids, want) {
		t.Errorf("rotated %v, want %v", ids, want)
	}
	if r := s.restarts(); len(r) != 0 {
		t.Errorf("rotating m2's certificates restarted %v; all of them reload", r)
	}
	for _, h := range s.hosts {
		if h.name != "m2" && len(h.changes()) != 0 {
			t.Errorf("%s changed: %v", h.name, h.changes())
		}
	}
}

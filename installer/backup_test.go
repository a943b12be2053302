package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/controlplane/etcd"
	"kforge.dev/kforge/pki"
)

// startPlainEtcd starts a one-member etcd without TLS on loopback and
// returns its client URL.
func startPlainEtcd(t *testing.T) string {
	t.Helper()
	var urls []url.URL
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, url.URL{Scheme: "http", Host: l.Addr().String()})
		l.Close()
	}
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = urls[:1], urls[:1]
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = urls[1:], urls[1:]
	cfg.InitialCluster = cfg.Name + "=" + urls[1].String()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready in 30s")
	}
	return urls[0].String()
}

func plainClient(endpoint string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
}

// backupFixture is a sim cluster whose PKI folder has a few files, and
// an etcd holding keys, which every master's address reaches except
// those in down.
type backupFixture struct {
	s        *sim
	endpoint string
	down     []string
}

func newBackupFixture(t *testing.T) *backupFixture {
	s := newSim(t)
	s.up(false) // installed and running, with its PKI
	f := &backupFixture{s: s, endpoint: startPlainEtcd(t)}
	cli, err := plainClient(f.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i := range 20 {
		if _, err := cli.Put(t.Context(), fmt.Sprintf("/registry/configmaps/default/cm-%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *backupFixture) backup(t *testing.T, out string, noPKI bool) (*BackupResult, *recorder, string, error) {
	t.Helper()
	var stdout bytes.Buffer
	rec := &recorder{}
	res, err := Backup(t.Context(), BackupOptions{
		Cluster: f.s.c, Output: out, NoPKI: noPKI, Out: &stdout, ErrOut: io.Discard, Version: "v-test", Reporter: rec,
		EtcdClient: func(ctx context.Context, address string) (*clientv3.Client, error) {
			for _, m := range f.s.c.Masters() {
				if m.Address == address && slices.Contains(f.down, m.Name) {
					return nil, errors.New("connection refused")
				}
			}
			return plainClient(f.endpoint)
		},
	})
	return res, rec, stdout.String(), err
}

// archiveEntries lists a tar.gz's entries with their modes.
func archiveEntries(t *testing.T, path string) map[string]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]int64{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h.Mode
	}
}

func TestBackupWritesAVerifiedArchive(t *testing.T) {
	f := newBackupFixture(t)
	f.down = []string{"m2"}
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	res, rec, stdout, err := f.backup(t, out, false)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != res.Size {
		t.Fatalf("archive: %v %v (result size %d)", fi, err, res.Size)
	}
	entries := archiveEntries(t, out)
	inv, err := pki.NewInventory(PKISpec(f.s.c), "")
	if err != nil {
		t.Fatal(err)
	}
	caKey := "pki/" + inv.Cert(pki.ClusterCA).KeyFile
	for _, want := range []string{"manifest.json", "cluster.yaml", "snapshot.db", caKey, "pki/" + pki.EncryptionConfigFile, "pki/" + inv.Cert("m1/etcd-server").KeyFile} {
		if _, ok := entries[want]; !ok {
			t.Errorf("the archive lacks %s: %v", want, entries)
		}
	}
	if entries[caKey] != 0o600 {
		t.Errorf("%s mode %o in the archive", caKey, entries[caKey])
	}
	if !strings.Contains(stdout, "CA PRIVATE KEYS") {
		t.Errorf("the summary does not warn of the CA keys: %s", stdout)
	}
	// m2 failing does not stop it; the member chosen is healthy.
	var failed []string
	for _, e := range rec.events {
		if e.Status == StatusFailed && e.Host != "" {
			failed = append(failed, e.Host)
		}
	}
	if !slices.Equal(failed, []string{"m2"}) || res.Manifest.Member == "m2" || res.Manifest.Member == "" {
		t.Errorf("failed hosts %v, member %q", failed, res.Manifest.Member)
	}

	b, err := ReadBackup(out, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest
	if m.Cluster != "sim" || m.KforgeVersion != "v-test" || !m.PKI || m.Revision < 21 || m.Snapshot.TotalKeys != 20 || len(m.Members) != 1 || m.Time.IsZero() {
		t.Errorf("manifest: %+v", m)
	}
	localEnc, _ := os.ReadFile(filepath.Join(f.s.c.Spec.PKI.Dir, pki.EncryptionConfigFile))
	if !bytes.Equal(b.CAFiles[pki.EncryptionConfigFile], localEnc) || len(localEnc) == 0 || len(b.ClusterYAML) == 0 || len(b.CAFiles) < 3 {
		t.Errorf("CA files %v, cluster.yaml %d bytes", b.CAFiles, len(b.ClusterYAML))
	}
	info, err := etcd.VerifySnapshot(b.Snapshot)
	if err != nil || info.SHA256 != m.Snapshot.SHA256 {
		t.Errorf("the extracted snapshot: %v %v", info, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".kforge-backup-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// --no-pki: no pki/ entries, and the note about the encryption key.
	out2 := filepath.Join(t.TempDir(), "data.tar.gz")
	if _, _, stdout, err = f.backup(t, out2, true); err != nil {
		t.Fatal(err)
	}
	for name := range archiveEntries(t, out2) {
		if strings.HasPrefix(name, "pki") {
			t.Errorf("a --no-pki archive has %s", name)
		}
	}
	if !strings.Contains(stdout, "encryption.yaml") {
		t.Errorf("the --no-pki summary: %s", stdout)
	}
}

func TestBackupWithNoHealthyMemberWritesNothing(t *testing.T) {
	f := newBackupFixture(t)
	f.down = []string{"m1", "m2", "m3"}
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	if _, _, _, err := f.backup(t, out, false); err == nil || !strings.Contains(err.Error(), "no etcd member is healthy") {
		t.Fatalf("err = %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

// TestRestoreOrder restores onto the simulated cluster: nothing changes
// before the preflight, the clients stop before the apiservers and those
// before etcd, every member is rebuilt before any etcd starts, and the
// daemons start again in up's order.
func TestRestoreOrder(t *testing.T) {
	f := newBackupFixture(t)
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	if _, _, _, err := f.backup(t, out, false); err != nil {
		t.Fatal(err)
	}
	s := f.s
	restore := func(c *v1alpha1.Cluster, force, dry bool) (*RestoreResult, string, error) {
		var hs []Host
		for _, h := range s.hosts {
			h.reset()
			hs = append(hs, h)
		}
		s.log.mu.Lock()
		s.log.lines = nil
		s.log.mu.Unlock()
		var stdout bytes.Buffer
		res, err := Restore(t.Context(), RestoreOptions{File: out, Force: force,
			Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
			Up: UpOptions{Cluster: c, DryRun: dry, Binary: s.exe, Out: &stdout, ErrOut: io.Discard, Hosts: hs, Reporter: &recorder{},
				NewProber: func(*v1alpha1.Cluster, *pki.Inventory) (Prober, error) { return &simProber{log: s.log}, nil }}})
		return res, stdout.String(), err
	}

	other := *s.c
	other.Metadata.Name = "other"
	if _, _, err := restore(&other, false, false); err == nil || !strings.Contains(err.Error(), `cluster "sim"`) {
		t.Fatalf("a backup of another cluster: %v", err)
	}
	for _, h := range s.hosts {
		if c := h.changes(); len(c) > 0 {
			t.Errorf("%s changed after a refused restore: %v", h.name, c)
		}
	}

	if _, stdout, err := restore(s.c, false, true); err != nil || !strings.Contains(stdout, "Dry run: would restore") {
		t.Fatalf("dry run: %v\n%s", err, stdout)
	}
	for _, h := range s.hosts {
		if c := h.changes(); len(c) > 0 {
			t.Errorf("%s changed in a dry run: %v", h.name, c)
		}
	}

	res, stdout, err := restore(s.c, false, false)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, stdout)
	}
	if !slices.Equal(res.Restored, []string{"m1", "m2", "m3"}) || res.MovedAside["m1"] != "/var/lib/kforge/etcd.before-restore-20260102T030405Z" {
		t.Errorf("restored %v, moved aside %v", res.Restored, res.MovedAside)
	}
	if !strings.Contains(stdout, "Restored etcd revision") || !strings.Contains(stdout, "etcd.before-restore-20260102T030405Z") {
		t.Errorf("summary: %s", stdout)
	}
	lines := s.log.all()
	idx := func(pred func(string) bool) []int {
		var out []int
		for i, l := range lines {
			if pred(l) {
				out = append(out, i)
			}
		}
		return out
	}
	has := func(sub string) func(string) bool { return func(l string) bool { return strings.Contains(l, sub) } }
	stopClients := idx(func(l string) bool { return strings.Contains(l, " stop ") && strings.Contains(l, "kforge-agent") })
	stopCM := idx(has("stop kforge-scheduler.service kforge-controller-manager.service"))
	stopAPI := idx(has("stop kforge-apiserver.service"))
	stopEtcd := idx(has("stop kforge-etcd.service"))
	restored := idx(has(" etcd restore"))
	startEtcd := idx(has("restart kforge-etcd.service"))
	startAPI := idx(has("restart kforge-apiserver.service"))
	startAgent := idx(has("restart kforge-agent.service"))
	if len(stopClients) != 1 || len(stopCM) != 3 || len(stopAPI) != 3 || len(stopEtcd) != 3 || len(restored) != 3 || len(startEtcd) != 3 || len(startAPI) != 3 || len(startAgent) != 1 {
		t.Fatalf("counts: clients %v cm %v api %v etcd %v restored %v etcd starts %v api starts %v agent starts %v\n%s",
			stopClients, stopCM, stopAPI, stopEtcd, restored, startEtcd, startAPI, startAgent, strings.Join(lines, "\n"))
	}
	before := func(a, b []int, what string) {
		if slices.Max(a) > slices.Min(b) {
			t.Errorf("%s out of order:\n%s", what, strings.Join(lines, "\n"))
		}
	}
	before(append(stopClients, stopCM...), stopAPI, "clients before apiservers")
	before(stopAPI, stopEtcd, "apiservers before etcd")
	before(stopEtcd, restored, "etcd stopped everywhere before any restore")
	before(restored, startEtcd, "every member rebuilt before etcd starts")
	before(startEtcd, startAPI, "etcd before the apiservers")
	before(startAPI, startAgent, "apiservers before the agents")
	for _, m := range []string{"m1", "m2", "m3"} {
		h := s.host(m)
		if !slices.Contains(h.uploads, "/var/lib/kforge/restore/snapshot-20260102T030405Z.db") {
			t.Errorf("%s uploads: %v", m, h.uploads)
		}
		if !slices.ContainsFunc(h.writes, func(w string) bool {
			return strings.Contains(w, "--cluster-token kforge-sim-restore-20260102T030405Z") && strings.HasSuffix(w, "&& rm -f /var/lib/kforge/restore/snapshot-20260102T030405Z.db")
		}) {
			t.Errorf("%s has no restore command with the new token: %v", m, h.writes)
		}
	}
	if w := s.host("w1").uploads; slices.ContainsFunc(w, func(p string) bool { return strings.Contains(p, "snapshot") }) {
		t.Errorf("a worker got the snapshot: %v", w)
	}
}

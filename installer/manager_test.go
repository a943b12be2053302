package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kforge.dev/kforge/installer/ssh"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// recorder is a Reporter that keeps events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) Report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) phaseEvents() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Host == "" {
			out = append(out, e.Phase+":"+e.Status)
		}
	}
	return out
}

type testPhase struct {
	id      string
	log     *[]string
	mu      *sync.Mutex
	skip    bool
	err     error
	onRun   func(ctx context.Context) error
	didDry  bool
	runHits int
}

func (p *testPhase) ID() string    { return p.id }
func (p *testPhase) Title() string { return "Phase " + p.id }
func (p *testPhase) Run(ctx context.Context) error {
	p.mu.Lock()
	*p.log = append(*p.log, p.id)
	p.runHits++
	p.mu.Unlock()
	if p.onRun != nil {
		return p.onRun(ctx)
	}
	return p.err
}

type skippable struct{ *testPhase }

func (s skippable) ShouldRun() (bool, string) { return !s.skip, "nothing to do" }

type dryRunnable struct{ *testPhase }

func (d dryRunnable) DryRun(context.Context) error { d.didDry = true; return nil }

func newEnv(hosts []Host, dry bool) (*Env, *recorder) {
	rec := &recorder{}
	return &Env{Hosts: hosts, Gate: NewGate(dry), Reporter: rec, Facts: &FactsStore{}}, rec
}

func TestManagerOrderAndShouldRun(t *testing.T) {
	var log []string
	var mu sync.Mutex
	mk := func(id string) *testPhase { return &testPhase{id: id, log: &log, mu: &mu} }
	b := mk("b")
	b.skip = true
	env, rec := newEnv(nil, false)
	m := &Manager{Env: env, Phases: []Phase{mk("a"), skippable{b}, skippable{mk("c")}, mk("d")}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(log, ","); got != "a,c,d" {
		t.Errorf("ran %s; want a,c,d", got)
	}
	want := "a:start,a:ok,b:skipped,c:start,c:ok,d:start,d:ok"
	if got := strings.Join(rec.phaseEvents(), ","); got != want {
		t.Errorf("events %s; want %s", got, want)
	}
}

func TestManagerStopsAtFailure(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &testPhase{id: "a", log: &log, mu: &mu, err: errors.New("boom")}
	b := &testPhase{id: "b", log: &log, mu: &mu}
	env, rec := newEnv(nil, false)
	err := (&Manager{Env: env, Phases: []Phase{a, b}}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Phase a: boom") || b.runHits != 0 {
		t.Errorf("err %v, b ran %d times", err, b.runHits)
	}
	if got := strings.Join(rec.phaseEvents(), ","); got != "a:start,a:failed" {
		t.Errorf("events %s", got)
	}
}

func TestManagerCancelBetweenPhases(t *testing.T) {
	var log []string
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	a := &testPhase{id: "a", log: &log, mu: &mu, onRun: func(context.Context) error { cancel(); return nil }}
	b := &testPhase{id: "b", log: &log, mu: &mu}
	env, _ := newEnv(nil, false)
	err := (&Manager{Env: env, Phases: []Phase{a, b}}).Run(ctx)
	if !errors.Is(err, context.Canceled) || b.runHits != 0 || !strings.Contains(err.Error(), `before "Phase b"`) {
		t.Errorf("err %v, b ran %d times", err, b.runHits)
	}
}

func TestManagerDryRunnerUsedInDryRun(t *testing.T) {
	var log []string
	var mu sync.Mutex
	p := &testPhase{id: "a", log: &log, mu: &mu}
	env, _ := newEnv(nil, true)
	d := dryRunnable{p}
	if err := (&Manager{Env: env, Phases: []Phase{d}}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.runHits != 0 {
		t.Error("Run called in a dry run of a DryRunner")
	}
}

func TestParallelEachBound(t *testing.T) {
	var active, peak atomic.Int32
	items := make([]int, 40)
	err := ParallelEach(context.Background(), 4, items, func(context.Context, int) error {
		n := active.Add(1)
		defer active.Add(-1)
		for {
			m := peak.Load()
			if n <= m || peak.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	if err != nil || peak.Load() > 4 || peak.Load() < 2 {
		t.Errorf("err %v, peak %d; want 2..4", err, peak.Load())
	}
}

func TestParallelEachCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Int32
	err := ParallelEach(ctx, 1, make([]int, 10), func(context.Context, int) error {
		if ran.Add(1) == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || ran.Load() > 3 {
		t.Errorf("err %v after %d ran", err, ran.Load())
	}
}

func fakeHosts(n int, sha string) []Host {
	var active, peak atomic.Int32
	var hs []Host
	for i := range n {
		role := []string{"master", "worker", "loadbalancer"}[i%3]
		hs = append(hs, &fakeHost{name: fmt.Sprintf("h%d", i), role: role, respond: labResponder(role, sha), delay: 2 * time.Millisecond, active: &active, maxActive: &peak})
	}
	return hs
}

func testBinary(t *testing.T) (BinaryInfo, ssh.File) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, f, err := LoadBinary(exe)
	if err != nil {
		t.Fatal(err)
	}
	return bin, f
}

func installPhases(env *Env, bin BinaryInfo, f ssh.File) []Phase {
	return []Phase{&FactsPhase{Env: env}, &PreflightPhase{Env: env, Binary: bin}, &UploadBinaryPhase{Env: env, Binary: bin, File: f}}
}

func TestDryRunWritesNothing(t *testing.T) {
	bin, f := testBinary(t)
	hosts := fakeHosts(7, "")
	env, rec := newEnv(hosts, true)
	if err := (&Manager{Env: env, Phases: installPhases(env, bin, f)}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if n := h.(*fakeHost).changes(); n != 0 {
			t.Errorf("%s: %d writes in a dry run", h.Name(), n)
		}
	}
	if ch := env.Gate.Changes(); len(ch) != 7 || ch[0].Kind != "upload" || ch[0].Target != BinaryPath {
		t.Errorf("recorded changes %v; want 7 uploads", ch)
	}
	for _, e := range rec.events {
		if !e.DryRun {
			t.Fatalf("event without dryRun: %+v", e)
		}
	}
}

func TestInstallThenNoOpRerun(t *testing.T) {
	bin, f := testBinary(t)
	hosts := fakeHosts(7, "")
	env, _ := newEnv(hosts, false)
	env.Parallel = 3
	if err := (&Manager{Env: env, Phases: installPhases(env, bin, f)}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		fh := h.(*fakeHost)
		// The binary, then its stamp.
		if len(fh.uploads) != 1 || len(fh.writes) != 1 || !strings.Contains(fh.writes[0], BinaryStampPath) {
			t.Errorf("%s: uploads %v writes %v", fh.name, fh.uploads, fh.writes)
		}
	}
	if peak := hosts[0].(*fakeHost).maxActive.Load(); peak > 3 {
		t.Errorf("%d hosts at once; bound is 3", peak)
	}
	// Re-run with facts saying every host has the binary: the upload phase is skipped.
	hosts2 := fakeHosts(7, bin.SHA256)
	env2, rec := newEnv(hosts2, false)
	if err := (&Manager{Env: env2, Phases: installPhases(env2, bin, f)}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rec.phaseEvents(), ","); !strings.HasSuffix(got, "upload-binary:skipped") {
		t.Errorf("events %s; want the upload skipped", got)
	}
	for _, h := range hosts2 {
		if n := h.(*fakeHost).changes(); n != 0 {
			t.Errorf("%s: %d changes on a no-op re-run", h.Name(), n)
		}
	}
}

func TestHostErrorsNameTheHost(t *testing.T) {
	hosts := fakeHosts(3, "")
	hosts[1].(*fakeHost).respond = func(string) (string, error) { return "", errors.New("connection reset") }
	env, rec := newEnv(hosts, false)
	p := &FactsPhase{Env: env}
	err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "host h1: connection reset") {
		t.Fatalf("err = %v", err)
	}
	var failed []string
	for _, e := range rec.events {
		if e.Status == StatusFailed {
			failed = append(failed, e.Host)
		}
	}
	if strings.Join(failed, ",") != "h1" {
		t.Errorf("failed hosts %v; want only h1 (the others still run)", failed)
	}
	if env.Facts.Get("h0") == nil || env.Facts.Get("h2") == nil {
		t.Error("the other hosts' facts are missing")
	}
}

func TestJournalRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := JournalPath(filepath.Join(dir, "cluster.yaml"))
	if filepath.Base(path) != "cluster.journal.jsonl" {
		t.Errorf("journal path %s", path)
	}
	for run, hosts := range map[string][]string{"r1": {"m1"}} {
		j, err := OpenJournal(path, run)
		if err != nil {
			t.Fatal(err)
		}
		_ = j.Record(JournalRecord{Kind: JournalRunStart, OK: true, Version: "v1"})
		for _, h := range hosts {
			_ = j.Record(JournalRecord{Kind: JournalStep, Phase: "facts", Host: h, OK: true})
		}
		j.Close()
	}
	// A second run: facts on m1 and m2, upload failed on m2.
	j, _ := OpenJournal(path, "r2")
	_ = j.Record(JournalRecord{Kind: JournalRunStart, OK: true})
	_ = j.Record(JournalRecord{Kind: JournalStep, Phase: "facts", Host: "m1", OK: true, DurationMS: 12})
	_ = j.Record(JournalRecord{Kind: JournalStep, Phase: "facts", Host: "m2", OK: true})
	_ = j.Record(JournalRecord{Kind: JournalStep, Phase: "upload-binary", Host: "m2", OK: false, Error: "host m2: boom"})
	j.Close()
	// A torn last line, as after a crash mid-write.
	fh, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	fh.WriteString(`{"time":"2026-`)
	fh.Close()

	recs, err := ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 6 || recs[0].Run != "r1" || recs[0].Version != "v1" || recs[3].DurationMS != 12 || recs[5].Error != "host m2: boom" {
		t.Errorf("records %+v", recs)
	}
	last := LastRun(recs)
	if last == nil || last.Run != "r2" || last.Ended || len(last.Failed) != 1 || last.Failed[0] != "upload-binary on m2" {
		t.Errorf("LastRun = %+v", last)
	}
	if first := LastRun(recs[:2]); first == nil || first.Run != "r1" || first.Ended || len(first.Failed) != 0 || first.Version != "v1" {
		t.Errorf("LastRun of the first run = %+v", first)
	}
	if recs, err := ReadJournal(filepath.Join(dir, "none")); err != nil || recs != nil {
		t.Errorf("missing journal: %v %v", recs, err)
	}
}

func TestJSONEvents(t *testing.T) {
	var buf bytes.Buffer
	r := NewJSONReporter(&buf)
	env := &Env{Hosts: fakeHosts(2, ""), Gate: NewGate(false), Reporter: r, Facts: &FactsStore{}}
	if err := (&Manager{Env: env, Phases: []Phase{&FactsPhase{Env: env}}}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 6 { // phase start, 2×(host start, ok), phase ok
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Phase != "facts" || e.Time.IsZero() {
			t.Errorf("line %q: %+v %v", l, e, err)
		}
	}
	var last Event
	_ = json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if last.Status != StatusOK || last.Host != "" {
		t.Errorf("last event %+v", last)
	}
}

func TestTextReporter(t *testing.T) {
	var buf bytes.Buffer
	r := NewTextReporter(&buf, false)
	r.Report(Event{Phase: "p", Title: "Do it", Status: StatusStart})
	r.Report(Event{Phase: "p", Title: "Do it", Host: "m1", Status: StatusStart})
	r.Report(Event{Phase: "p", Title: "Do it", Host: "m1", Status: StatusOK, Message: "fine", DurationMS: 1500})
	r.Report(Event{Phase: "p", Title: "Do it", Host: "m2", Status: StatusFailed, Error: "host m2: bad\nthing", DurationMS: 3})
	r.Report(Event{Phase: "p", Title: "Do it", Status: StatusFailed, DurationMS: 1600})
	r.Close()
	want := "• Do it\n ✓ m1     fine (1.5s)\n ✗ m2     host m2: bad thing (3ms)\n✗ Do it (1.6s)\n"
	if buf.String() != want {
		t.Errorf("got\n%q\nwant\n%q", buf.String(), want)
	}
}

func TestCheck(t *testing.T) {
	good := func() *Facts {
		return &Facts{OS: "debian", OSVersion: "12", Machine: "x86_64", Arch: "amd64", Systemd: true, CgroupFS: "cgroup2fs",
			CgroupControllers: []string{"cpu", "memory", "pids"}, DiskFree: map[string]uint64{"/usr/local/bin": 10 << 30, "/var/lib": 10 << 30}}
	}
	worker := &Probe{Listening: map[int]bool{22: true}, Have: map[string]string{"containerd": "/usr/bin/containerd", "runc": "/usr/sbin/runc"},
		CNI: map[string][]string{"/usr/lib/cni": {"bridge", "host-local", "loopback", "portmap"}}}
	bin := BinaryInfo{Size: 50 << 20, Arch: "amd64"}
	for _, tc := range []struct {
		name  string
		role  string
		facts func(*Facts)
		probe *Probe
		want  string // substring of a problem; "" means none
	}{
		{"ok master", "master", nil, &Probe{Listening: map[int]bool{22: true}}, ""},
		{"ok worker", "worker", nil, worker, ""},
		{"centos", "master", func(f *Facts) { f.OS = "centos" }, &Probe{}, `OS "centos" is not supported`},
		{"arm host, amd64 binary", "master", func(f *Facts) { f.Machine, f.Arch = "aarch64", "arm64" }, &Probe{}, "pass --binary"},
		{"s390x", "master", func(f *Facts) { f.Machine, f.Arch = "s390x", "" }, &Probe{}, "s390x is not supported"},
		{"no systemd", "lb", func(f *Facts) { f.Systemd = false }, &Probe{}, "systemd"},
		{"clock ahead", "master", func(f *Facts) { f.ClockSkew = 2500 * time.Millisecond }, &Probe{}, "clock differs"},
		{"clock behind", "master", func(f *Facts) { f.ClockSkew = -3 * time.Second }, &Probe{}, "clock differs"},
		{"etcd port taken", "master", nil, &Probe{Listening: map[int]bool{2379: true}}, "2379 already in use"},
		{"lb port taken", "loadbalancer", nil, &Probe{Listening: map[int]bool{6443: true}}, "6443 already in use"},
		{"lb 6443 taken", "loadbalancer", nil, &Probe{Listening: map[int]bool{6443: true}}, "6443 already in use"},
		{"small disk", "master", func(f *Facts) { f.DiskFree["/var/lib"] = 1 << 30 }, &Probe{}, "free in /var/lib"},
		{"no room for binary", "worker", func(f *Facts) { f.DiskFree["/usr/local/bin"] = 60 << 20 }, worker, "/usr/local/bin"},
		{"no runc", "worker", nil, &Probe{Have: map[string]string{"containerd": "x"}, CNI: worker.CNI}, "runc is not installed"},
		{"no CNI", "worker", nil, &Probe{Have: worker.Have}, "CNI plugin(s) bridge, host-local, loopback, portmap"},
		{"cgroup v1 worker", "worker", func(f *Facts) { f.CgroupFS = "tmpfs" }, worker, "cgroup v2 is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := good()
			if tc.facts != nil {
				tc.facts(f)
			}
			r := Check(tc.role, f, tc.probe, bin)
			got := strings.Join(r.Problems, "; ")
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("problems %q; want %q", got, tc.want)
			}
		})
	}
	f := good()
	f.CgroupControllers = []string{"memory", "pids"}
	if r := Check("worker", f, worker, bin); len(r.Problems) != 0 || !strings.Contains(strings.Join(r.Warnings, ""), "cpu") {
		t.Errorf("no cpu controller: %+v; want only a warning", r)
	}
}

func TestParseFactsAndProbe(t *testing.T) {
	f, err := parseFacts(labResponderOut())
	if err != nil {
		t.Fatal(err)
	}
	if f.Arch != "amd64" || !f.Systemd || f.DiskFree["/var/lib"] != 10<<30 || len(f.CgroupControllers) != 5 || f.KforgeSHA256 != "abc" {
		t.Errorf("facts %+v", f)
	}
	if _, err := parseFacts("garbage"); err == nil {
		t.Error("garbage facts accepted")
	}
	p, err := parseProbe("listen 00000000:0016\nlisten 0100007F:0951\nlisten 00000000000000000000000000000000:01BB\nhave runc /usr/sbin/runc\ncni /opt/cni/bin bridge\n")
	if err != nil || !p.Listening[22] || !p.Listening[2385] || !p.Listening[443] || p.Have["runc"] == "" || len(p.CNI["/opt/cni/bin"]) != 1 {
		t.Errorf("probe %+v %v", p, err)
	}
}

func labResponderOut() string {
	out, _ := labResponder("master", "abc")(". /etc/os-release")
	return out
}

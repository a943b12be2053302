package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/installer/ssh"
)

func stepIDs(steps []step) string {
	var ids []string
	for _, s := range steps {
		ids = append(ids, s.id)
	}
	return strings.Join(ids, ",")
}

func TestUpSteps(t *testing.T) {
	cache := t.TempDir()
	for _, tt := range []struct {
		masters, workers int
		want             string
	}{
		{3, 3, "base,claim,bridge,files,start,wait,image"},
		{1, 0, "base,claim,bridge,files,start,wait"}, // no workers, no image to import
	} {
		hosts, err := Plan(tt.masters, tt.workers)
		if err != nil {
			t.Fatal(err)
		}
		u := &upRun{o: UpOptions{Options: Options{Dir: "/tmp/x", Bridge: DefaultBridge}, CacheDir: cache}, hosts: hosts, recipe: DefaultRecipe()}
		steps := u.steps()
		if got := stepIDs(steps); got != tt.want {
			t.Errorf("%d masters, %d workers: steps %s; want %s", tt.masters, tt.workers, got, tt.want)
		}
		if want := fmt.Sprintf("Starting %d hosts", len(hosts)); steps[4].title != want {
			t.Errorf("start step %q; want %q", steps[4].title, want)
		}
		// The e2e test waits for this title before killing a lab up mid-boot.
		if !strings.HasPrefix(steps[5].title, "Waiting for sshd") {
			t.Errorf("wait step %q", steps[5].title)
		}
	}
}

func TestBaseStepTitle(t *testing.T) {
	cache := t.TempDir()
	r := DefaultRecipe()
	if got := baseStepTitle(cache, r); !strings.HasPrefix(got, "Building the base image "+r.Hash()) || !strings.Contains(got, "once") {
		t.Errorf("title without a cache: %q", got)
	}
	img := baseImageOf(cache, r)
	if err := os.MkdirAll(img.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := baseStepTitle(cache, r); !strings.HasPrefix(got, "Building") {
		t.Errorf("a base without its completion marker counts as cached: %q", got)
	}
	if err := os.WriteFile(filepath.Join(img.Dir, baseComplete), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := baseStepTitle(cache, r); got != "Base image "+r.Hash()+" (cached)" {
		t.Errorf("title with a cache: %q", got)
	}
}

// newTestRun claims a lab folder and writes its files as Up does, without
// root: nothing is mounted, booted or networked.
func newTestRun(t *testing.T, masters, workers int) *upRun {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lab")
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	hosts, err := Plan(masters, workers)
	if err != nil {
		t.Fatal(err)
	}
	u := &upRun{
		o:     UpOptions{Options: Options{Dir: dir, Bridge: DefaultBridge}},
		hosts: hosts, base: baseImage{RootFS: rootfs},
		secrets: map[string]hostSecrets{}, states: map[string]string{},
	}
	if err := u.claim(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.st.Cgroups = nil // leave the machine's cgroups alone
	if err := u.save(); err != nil {
		t.Fatal(err)
	}
	if err := u.writeFiles(context.Background()); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestClaimAndFiles(t *testing.T) {
	u := newTestRun(t, 1, 1)
	dir := u.o.Dir
	if !u.createdDir {
		t.Error("claim did not note that it made DIR")
	}
	// A second claim on the same DIR is refused.
	again := &upRun{o: u.o, hosts: u.hosts}
	if err := again.claim(context.Background()); err == nil || !strings.Contains(err.Error(), "already holds a lab") {
		t.Errorf("second claim: %v", err)
	}
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{
		{stateFile, 0o600},
		{"ssh/id_ed25519", 0o600},
		{"ssh/id_ed25519.pub", 0o644},
		{"ssh/sudo-password", 0o600},
		{"ssh/known_hosts", 0o644},
		{"images/busybox.tar", 0o644},
		{"cluster.yaml", 0o644},
	} {
		st, err := os.Stat(filepath.Join(dir, f.name))
		if err != nil {
			t.Errorf("%s: %v", f.name, err)
			continue
		}
		if st.Mode().Perm() != f.mode {
			t.Errorf("%s: mode %v; want %v", f.name, st.Mode().Perm(), f.mode)
		}
	}
	kh, _ := os.ReadFile(filepath.Join(dir, "ssh", "known_hosts"))
	for _, h := range u.hosts {
		if !strings.Contains(string(kh), h.Address.String()+" ssh-ed25519 ") {
			t.Errorf("known_hosts lacks %s", h.Name)
		}
		if u.secrets[h.Name].machineID == "" {
			t.Errorf("no machine-id for %s", h.Name)
		}
	}
	st, err := loadState(dir)
	if err != nil || st == nil || len(st.Hosts) != 3 || st.Ready {
		t.Fatalf("state %+v, %v", st, err)
	}
}

func TestHosts(t *testing.T) {
	u := newTestRun(t, 1, 1)
	hosts, err := Hosts(u.o.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hosts {
		got = append(got, h.Name()+" "+h.Role()+" "+h.Address())
	}
	want := []string{"lb " + v1alpha1.RoleLoadBalancer + " 198.18.0.10", "m1 " + v1alpha1.RoleMaster + " 198.18.0.11", "w1 " + v1alpha1.RoleWorker + " 198.18.0.21"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("hosts %v; want %v", got, want)
	}
	if _, err := Hosts(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no lab in") {
		t.Errorf("Hosts of an empty folder: %v", err)
	}
}

func TestSSHConfig(t *testing.T) {
	u := newTestRun(t, 1, 0)
	dir := u.o.Dir
	hk := hostKeys(dir)
	cfg := sshConfig(dir, u.hosts[1], "", hk, nil)
	if cfg.Name != "m1" || cfg.Address != "198.18.0.11" || cfg.Port != 22 || cfg.User != "root" {
		t.Errorf("config %+v", cfg)
	}
	if cfg.IdentityFile != filepath.Join(dir, "ssh", "id_ed25519") || cfg.HostKeys.File != filepath.Join(dir, "ssh", "known_hosts") || cfg.HostKeys.AcceptNew {
		t.Errorf("identity %s, known_hosts %+v", cfg.IdentityFile, cfg.HostKeys)
	}
	want, _ := os.ReadFile(filepath.Join(dir, "ssh", "sudo-password"))
	cfg = sshConfig(dir, u.hosts[1], SudoUser, hk, nil)
	pw, err := cfg.SudoPassword(context.Background())
	if err != nil || pw+"\n" != string(want) || cfg.User != SudoUser {
		t.Errorf("sudo password %q, %v; user %s", pw, err, cfg.User)
	}
}

func TestTeardownRemovesWhatUpWrote(t *testing.T) {
	u := newTestRun(t, 1, 1)
	dir := u.o.Dir
	if err := os.MkdirAll(filepath.Join(dir, "hosts", "m1", "upper"), 0o755); err != nil {
		t.Fatal(err)
	}
	rep := &recorder{}
	if err := teardown(context.Background(), u.o.Options, rep, u.st, time.Second, "Lab up failed: "); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("left in DIR: %v", names)
	}
	if got, want := fmt.Sprint(rep.lines()), "[start stop ok stop start remove ok remove]"; got != want {
		t.Errorf("events %s; want %s", got, want)
	}
	if !strings.HasPrefix(rep.events[0].Title, "Lab up failed: ") {
		t.Errorf("first title %q", rep.events[0].Title)
	}
}

func TestFailedUnits(t *testing.T) {
	out := "systemd-remount-fs.service loaded failed failed Remount Root and Kernel File Systems\nb.service loaded failed failed B\n\n"
	if got := failedUnits(out); fmt.Sprint(got) != "[b.service systemd-remount-fs.service]" {
		t.Errorf("failedUnits = %v", got)
	}
}

// fakeHost answers Connect and Run from scripts.
type fakeHost struct {
	mu       sync.Mutex
	connects int
	connect  func(n int) error // n counts from 1
	run      map[string]string
	closed   int
}

func (f *fakeHost) Name() string    { return "m1" }
func (f *fakeHost) Role() string    { return v1alpha1.RoleMaster }
func (f *fakeHost) Address() string { return "198.18.0.11" }
func (f *fakeHost) Connect(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connects++
	return f.connect(f.connects)
}
func (f *fakeHost) Run(_ context.Context, cmd string) (string, error) {
	out, ok := f.run[cmd]
	if !ok {
		return "", fmt.Errorf("unexpected command %q", cmd)
	}
	if strings.TrimSpace(out) != "running" {
		return out, errors.New("exit status 1")
	}
	return out, nil
}
func (f *fakeHost) Stat(context.Context, string) (ssh.RemoteFile, error) {
	return ssh.RemoteFile{}, errors.New("not here")
}
func (f *fakeHost) Write(ctx context.Context, cmd string) (string, error) { return f.Run(ctx, cmd) }
func (f *fakeHost) Upload(context.Context, ssh.Upload) (bool, error) {
	return false, errors.New("not here")
}
func (f *fakeHost) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

var _ installer.Host = (*fakeHost)(nil)

// self is a PID and start time that stay alive for the test: this process.
func self(t *testing.T) (int, uint64) {
	t.Helper()
	_, start, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return os.Getpid(), start
}

func TestWaitHostRetriesUntilBooted(t *testing.T) {
	pid, start := self(t)
	h := &fakeHost{
		connect: func(n int) error {
			if n < 3 {
				return errors.New("connection refused")
			}
			return nil
		},
		run: map[string]string{
			"systemctl is-system-running --wait":     "degraded\n",
			"systemctl --failed --no-legend --plain": "z.service loaded failed failed Z\na.service loaded failed failed A\n",
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	state, failed, err := waitHost(ctx, h, pid, start, pathsOf(t.TempDir(), "m1"))
	if err != nil || state != "degraded" || fmt.Sprint(failed) != "[a.service z.service]" {
		t.Fatalf("waitHost = %q, %v, %v", state, failed, err)
	}
	if h.connects != 3 || h.closed != 1 {
		t.Errorf("%d connects, %d closes; want 3 and 1", h.connects, h.closed)
	}
}

func TestWaitHostGivesUp(t *testing.T) {
	pid, start := self(t)
	hostKeyErr := &ssh.ChangedHostKeyError{Host: "198.18.0.11:22", Presented: "ssh-ed25519 SHA256:x", File: "known_hosts"}
	for _, tt := range []struct {
		name    string
		connect func(int) error
		pid     int
		timeout time.Duration
		want    string
	}{
		{"wrong host key", func(int) error { return hostKeyErr }, pid, 10 * time.Second, "HOST KEY CHANGED"},
		{"nspawn gone", func(int) error { return nil }, 0, 10 * time.Second, "systemd-nspawn exited"},
		{"timeout", func(int) error { return errors.New("no route to host") }, pid, 600 * time.Millisecond, "not up in time (last: no route to host)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &fakeHost{connect: tt.connect}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			began := time.Now()
			_, _, err := waitHost(ctx, h, tt.pid, start, pathsOf(t.TempDir(), "m1"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want %q", err, tt.want)
			}
			if tt.timeout > time.Second && time.Since(began) > 2*time.Second {
				t.Errorf("gave up only after %s", time.Since(began))
			}
		})
	}
}

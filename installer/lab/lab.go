package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"kforge.dev/kforge/api/v1alpha1"
)

// Options are shared by every lab command.
type Options struct {
	// Dir holds the lab's files (DefaultDir when empty).
	Dir string
	// Bridge is the bridge name (DefaultBridge when empty); it must start
	// with "kforge".
	Bridge string
	// Out receives results, ErrOut progress.
	Out, ErrOut io.Writer
	Log         *slog.Logger
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = abs
	if o.Bridge == "" {
		o.Bridge = DefaultBridge
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ErrOut == nil {
		o.ErrOut = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return validBridgeName(o.Bridge)
}

// UpOptions configure Up.
type UpOptions struct {
	Options
	Masters, Workers int
	// CacheDir holds base images (DefaultCacheDir when empty).
	CacheDir string
	// BootTimeout bounds the wait for every host to be up (default 2m).
	BootTimeout time.Duration
}

// step prints a progress line with ✓ or ✗ and the time the step took.
func step(w io.Writer, title string, fn func() error) error {
	fmt.Fprintf(w, " • %s ...\n", title)
	start := time.Now()
	err := fn()
	mark := "✓"
	if err != nil {
		mark = "✗"
	}
	fmt.Fprintf(w, " %s %s (%s)\n", mark, title, time.Since(start).Round(10*time.Millisecond))
	return err
}

// Up creates and boots a lab. It returns once every host answers SSH and
// systemd reports running (or degraded, with the failed units printed).
// On failure it removes everything it made.
func Up(ctx context.Context, o UpOptions) (err error) {
	start := time.Now()
	if err := o.defaults(); err != nil {
		return err
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 2 * time.Minute
	}
	// Everything that can be checked without side effects comes first.
	hosts, err := Plan(o.Masters, o.Workers)
	if err != nil {
		return err
	}
	if err := requireRoot(); err != nil {
		return err
	}
	if err := checkDirFree(o.Dir); err != nil {
		return err
	}
	if err := ensureTools(ctx, o.Log, toolsRun); err != nil {
		return err
	}
	if err := checkBridgeFree(o.Bridge); err != nil {
		return err
	}
	for _, h := range hosts {
		if linkExists(vethName(h.Name)) {
			return fmt.Errorf("network interface %s (the veth systemd-nspawn makes for host %s) already exists; is another lab or container running?", vethName(h.Name), h.Name)
		}
	}
	var base baseImage
	if err := step(o.ErrOut, "Base image", func() error {
		base, err = ensureBase(ctx, o.Log, func(s string) { fmt.Fprintf(o.ErrOut, "   %s\n", s) }, o.CacheDir, DefaultRecipe())
		return err
	}); err != nil {
		return err
	}
	baseDone := time.Now()

	// From here on things are made; the state file records each before it
	// is made, and a failure undoes them all.
	createdDir := false
	if _, err := os.Stat(o.Dir); errors.Is(err, os.ErrNotExist) {
		createdDir = true
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	claim, err := os.OpenFile(statePath(o.Dir), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if createdDir {
			os.Remove(o.Dir)
		}
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already holds a lab (another `kforge lab up` is running?)", o.Dir)
		}
		return err
	}
	claim.Close()
	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	st := &State{Kind: stateKind, ID: hex.EncodeToString(idb), Created: time.Now().UTC(), Bridge: o.Bridge, Base: base.RootFS}
	st.Cgroups = labCgroupDirs(st.ID)
	for _, h := range hosts {
		st.Hosts = append(st.Hosts, HostState{HostSpec: h})
	}
	var stMu sync.Mutex
	save := func() error {
		stMu.Lock()
		defer stMu.Unlock()
		return st.save(o.Dir)
	}
	defer func() {
		if err == nil {
			return
		}
		fmt.Fprintf(o.ErrOut, " ✗ lab up failed; removing what it made\n")
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := teardown(cctx, o.Options, st); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up after the failed lab up: %w", derr))
		}
		if createdDir {
			os.Remove(o.Dir)
		}
	}()
	if err := save(); err != nil {
		return err
	}

	if err := step(o.ErrOut, "Bridge "+o.Bridge+" "+BridgeAddr.String()+"/24", func() error {
		st.BridgeCreated = true
		if err := save(); err != nil {
			return err
		}
		return createBridge(ctx, o.Bridge, st.ID)
	}); err != nil {
		return err
	}

	var keys labKeys
	secrets := map[string]hostSecrets{}
	var imagesDir string
	if err := step(o.ErrOut, "Keys, known_hosts, cluster.yaml and the busybox image", func() error {
		if keys.client, err = newKeyPair("kforge-lab"); err != nil {
			return err
		}
		if keys.sudoPassword, err = randomPassword(20); err != nil {
			return err
		}
		if err := writeClientFiles(o.Dir, keys); err != nil {
			return err
		}
		pubs := map[string]ssh.PublicKey{}
		for _, h := range hosts {
			hk, err := newKeyPair("root@" + h.Name)
			if err != nil {
				return err
			}
			mid := make([]byte, 16)
			if _, err := rand.Read(mid); err != nil {
				return err
			}
			secrets[h.Name] = hostSecrets{hostKey: hk, machineID: hex.EncodeToString(mid), clientKey: keys.client.authorizedLine("kforge-lab"), sudoPasswd: keys.sudoPassword}
			pubs[h.Name] = hk.public
		}
		if err := writeFileAtomic(filepath.Join(o.Dir, sshDirName, knownHostsName), knownHostsFile(hosts, pubs), 0o644); err != nil {
			return err
		}
		img, err := writeBusyboxArchive(o.Dir, base.RootFS)
		if err != nil {
			return err
		}
		imagesDir = filepath.Dir(img)
		_, err = writeClusterFile(o.Dir, hosts)
		return err
	}); err != nil {
		return err
	}

	if err := step(o.ErrOut, fmt.Sprintf("Starting %d hosts", len(hosts)), func() error {
		return forEach(hosts, func(h HostSpec) error {
			p := pathsOf(o.Dir, h.Name)
			stMu.Lock()
			st.host(h.Name).Mounted = true
			stMu.Unlock()
			if err := save(); err != nil {
				return err
			}
			if err := mountHost(p, base.RootFS); err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
			if err := customiseHost(ctx, p, h, secrets[h.Name]); err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
			procs, err := makeHostCgroups(st.Cgroups, h.Name)
			if err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
			pid, ps, err := startHost(p, nspawnArgs(p, h, o.Bridge, imagesDir), procs)
			stMu.Lock()
			st.host(h.Name).PID, st.host(h.Name).StartTime = pid, ps
			stMu.Unlock()
			if serr := save(); serr != nil && err == nil {
				err = serr
			}
			if err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
			return nil
		})
	}); err != nil {
		return err
	}

	bootCtx, cancel := context.WithTimeout(ctx, o.BootTimeout)
	defer cancel()
	var degraded []string
	var degMu sync.Mutex
	states := map[string]string{}
	if err := step(o.ErrOut, "Waiting for sshd and systemd on every host", func() error {
		cfg, err := ClientConfig(o.Dir, "root")
		if err != nil {
			return err
		}
		return forEach(hosts, func(h HostSpec) error {
			hs := st.host(h.Name)
			state, failed, err := waitHost(bootCtx, cfg, h, hs.PID, hs.StartTime, pathsOf(o.Dir, h.Name))
			if err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
			degMu.Lock()
			defer degMu.Unlock()
			states[h.Name] = state
			if state == "degraded" {
				degraded = append(degraded, fmt.Sprintf("%s is degraded; failed units:\n%s", h.Name, failed))
			}
			return nil
		})
	}); err != nil {
		return err
	}
	sort.Strings(degraded)
	for _, d := range degraded {
		fmt.Fprintf(o.ErrOut, "   ! %s\n", d)
	}

	var workers []HostSpec
	for _, h := range hosts {
		if h.Role == v1alpha1.RoleWorker {
			workers = append(workers, h)
		}
	}
	if len(workers) > 0 {
		if err := step(o.ErrOut, "Importing "+BusyboxRef+" into the workers' containerd", func() error {
			cfg, err := ClientConfig(o.Dir, "root")
			if err != nil {
				return err
			}
			return forEach(workers, func(h HostSpec) error {
				c, err := dialSSH(bootCtx, net.JoinHostPort(h.Address.String(), "22"), cfg)
				if err != nil {
					return fmt.Errorf("host %s: %w", h.Name, err)
				}
				defer c.Close()
				if _, err := runSSH(bootCtx, c, "ctr -n k8s.io images import "+guestImagesDir+"/busybox.tar", nil); err != nil {
					return fmt.Errorf("host %s: %w", h.Name, err)
				}
				return nil
			})
		}); err != nil {
			return err
		}
	}

	st.Ready = true
	if err := save(); err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(o.ErrOut, "Lab up: %d hosts in %s (%s after the base image was ready).\n", len(hosts), elapsed.Round(10*time.Millisecond), time.Since(baseDone).Round(10*time.Millisecond))
	writeHostTable(o.Out, statusRows(st, states))
	fmt.Fprintf(o.Out, "\ncluster file: %s\nssh:          kforge lab ssh --dir %s m1\n", filepath.Join(o.Dir, "cluster.yaml"), o.Dir)
	return nil
}

// checkDirFree refuses a DIR that already holds a lab (running or not) or
// a cluster.yaml the lab did not write.
func checkDirFree(dir string) error {
	st, err := loadState(dir)
	if err != nil {
		return fmt.Errorf("%s holds something that is not a kforge lab: %w", dir, err)
	}
	if st != nil {
		running := 0
		for _, h := range st.Hosts {
			if alive(h.PID, h.StartTime) {
				running++
			}
		}
		if running > 0 {
			return fmt.Errorf("a lab is already running in %s (%d of %d hosts up); use it, or `kforge lab down --dir %s` first", dir, running, len(st.Hosts), dir)
		}
		return fmt.Errorf("%s holds a lab that is not running (left by an interrupted `lab up`?); run `kforge lab down --dir %s` first", dir, dir)
	}
	for _, name := range []string{"cluster.yaml", "hosts", sshDirName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%s already holds %s but no lab state (%s): it belongs to another lab or cluster; choose another --dir", dir, name, stateFile)
		}
	}
	return nil
}

// forEach runs fn for every host in parallel and joins the errors.
func forEach(hosts []HostSpec, fn func(HostSpec) error) error {
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(h)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitHost waits until the host's sshd answers (with its known key) and
// systemd has finished booting; it returns "running" or "degraded" and,
// when degraded, the failed units.
func waitHost(ctx context.Context, cfg *ssh.ClientConfig, h HostSpec, pid int, start uint64, p hostPaths) (state, failed string, err error) {
	addr := net.JoinHostPort(h.Address.String(), "22")
	var last error
	for {
		if !alive(pid, start) {
			return "", "", fmt.Errorf("systemd-nspawn exited; console:\n%s", consoleTail(p))
		}
		c, err := dialSSH(ctx, addr, cfg)
		if err == nil {
			out, rerr := runSSH(ctx, c, "systemctl is-system-running --wait", nil)
			state = strings.TrimSpace(out)
			switch state {
			case "running":
				c.Close()
				return state, "", nil
			case "degraded":
				failed, _ = runSSH(ctx, c, "systemctl --failed --no-legend --plain", nil)
				c.Close()
				return state, strings.TrimSpace(failed), nil
			}
			c.Close()
			last = fmt.Errorf("systemd is %q: %v", state, rerr)
		} else {
			var kerr *knownhosts.KeyError
			if errors.As(err, &kerr) {
				return "", "", err
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("not up in time (last: %v); console:\n%s", last, consoleTail(p))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// DownOptions configure Down.
type DownOptions struct {
	Options
	// StopTimeout bounds the clean poweroff before SIGKILL (default 20s).
	StopTimeout time.Duration
}

// Down stops every host (clean poweroff, then SIGKILL after StopTimeout),
// unmounts the overlays, removes the veths and the bridge, and deletes the
// files Up wrote. It is idempotent and works after an interrupted Up.
func Down(ctx context.Context, o DownOptions) error {
	if err := o.defaults(); err != nil {
		return err
	}
	if err := requireRoot(); err != nil {
		return err
	}
	st, err := loadState(o.Dir)
	if err != nil {
		return err
	}
	if st == nil {
		if _, err := os.Stat(filepath.Join(o.Dir, "hosts")); err == nil {
			return fmt.Errorf("%s has hosts/ but no %s; not touching it", o.Dir, stateFile)
		}
		fmt.Fprintf(o.ErrOut, "No lab in %s; nothing to do.\n", o.Dir)
		return nil
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 20 * time.Second
	}
	start := time.Now()
	if err := teardownTimeout(ctx, o.Options, st, o.StopTimeout); err != nil {
		return err
	}
	os.Remove(o.Dir) // only if empty
	fmt.Fprintf(o.ErrOut, "Lab in %s is down (%s).\n", o.Dir, time.Since(start).Round(10*time.Millisecond))
	return nil
}

func teardown(ctx context.Context, o Options, st *State) error {
	return teardownTimeout(ctx, o, st, 20*time.Second)
}

// teardownTimeout undoes everything st records, in reverse order of Up.
func teardownTimeout(ctx context.Context, o Options, st *State, stopTimeout time.Duration) error {
	var errs []error
	if err := step(o.ErrOut, "Stopping hosts", func() error { return stopHosts(st, stopTimeout) }); err != nil {
		errs = append(errs, err)
	}
	if err := step(o.ErrOut, "Removing overlays, links and files", func() error {
		var errs []error
		if err := unmountAll(filepath.Join(o.Dir, "hosts")); err != nil {
			errs = append(errs, err)
		}
		for _, h := range st.Hosts {
			if err := deleteVeth(ctx, vethName(h.Name), st.Bridge); err != nil {
				errs = append(errs, err)
			}
		}
		if st.BridgeCreated {
			if err := deleteBridge(ctx, st.Bridge, st.ID); err != nil {
				errs = append(errs, err)
			}
		}
		for _, cg := range st.Cgroups {
			if err := removeCgroupTree(cg); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		for _, name := range []string{"hosts", "images", sshDirName, "cluster.yaml"} {
			if err := removeTree(filepath.Join(o.Dir, name)); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			if err := os.Remove(statePath(o.Dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopHosts asks every running host to power off (SIGTERM to
// systemd-nspawn makes it send SIGRTMIN+3 to the guest's systemd, an
// orderly shutdown), waits up to timeout, then SIGKILLs the guest's init
// (which ends its whole PID namespace) and nspawn.
func stopHosts(st *State, timeout time.Duration) error {
	type proc struct {
		name       string
		pid        int
		start      uint64
		init       int
		initStart  uint64
		terminated bool
	}
	var ps []*proc
	for _, h := range st.Hosts {
		if !alive(h.PID, h.StartTime) {
			continue
		}
		p := &proc{name: h.Name, pid: h.PID, start: h.StartTime}
		if ch := children(h.PID); len(ch) > 0 {
			p.init = ch[0]
			_, p.initStart, _ = procStat(p.init)
		}
		ps = append(ps, p)
		_ = syscall.Kill(p.pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(timeout)
	resend := time.Now().Add(2 * time.Second)
	for {
		left := 0
		for _, p := range ps {
			if alive(p.pid, p.start) || alive(p.init, p.initStart) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		// A guest still booting may miss the first request (systemd
		// installs its signal handlers early, but not at once): ask again.
		if time.Now().After(resend) {
			for _, p := range ps {
				if alive(p.pid, p.start) {
					_ = syscall.Kill(p.pid, syscall.SIGTERM)
				}
			}
			resend = time.Now().Add(2 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var stuck []string
	for _, p := range ps {
		if alive(p.init, p.initStart) {
			_ = syscall.Kill(p.init, syscall.SIGKILL)
		}
		if alive(p.pid, p.start) {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	kdeadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(kdeadline) {
		stuck = stuck[:0]
		for _, p := range ps {
			if alive(p.pid, p.start) || alive(p.init, p.initStart) {
				stuck = append(stuck, p.name)
			}
		}
		if len(stuck) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("hosts still running after SIGKILL: %s", strings.Join(stuck, ", "))
}

// HostStatus is one line of Status.
type HostStatus struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Address string `json:"address"`
	PID     int    `json:"pid,omitempty"`
	// State is "stopped", "unreachable", or what systemctl
	// is-system-running says (running, degraded, starting, ...).
	State string `json:"state"`
	// MemoryKB is the PSS of the host's processes (0 when unknown).
	MemoryKB int64 `json:"memoryKB,omitempty"`
}

// Status reports every host of the lab in o.Dir and prints a table.
func Status(ctx context.Context, o Options) ([]HostStatus, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	st, err := loadState(o.Dir)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("no lab in %s (no %s); start one with `kforge lab up --dir %s`", o.Dir, stateFile, o.Dir)
	}
	var cfg *ssh.ClientConfig
	if os.Geteuid() == 0 || canRead(filepath.Join(o.Dir, sshDirName, identityName)) {
		cfg, _ = ClientConfig(o.Dir, "root")
	}
	states := make(map[string]string, len(st.Hosts))
	var mu sync.Mutex
	specs := make([]HostSpec, len(st.Hosts))
	for i, h := range st.Hosts {
		specs[i] = h.HostSpec
	}
	_ = forEach(specs, func(h HostSpec) error {
		hs := st.host(h.Name)
		s := "stopped"
		if alive(hs.PID, hs.StartTime) {
			s = probeHost(ctx, cfg, h)
		}
		mu.Lock()
		states[h.Name] = s
		mu.Unlock()
		return nil
	})
	rows := statusRows(st, states)
	if len(st.Cgroups) > 0 {
		for i := range rows {
			if rows[i].State != "stopped" {
				rows[i].MemoryKB = cgroupPSS(filepath.Join(st.Cgroups[0], rows[i].Name))
			}
		}
	}
	writeHostTable(o.Out, rows)
	return rows, nil
}

func canRead(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func probeHost(ctx context.Context, cfg *ssh.ClientConfig, h HostSpec) string {
	if cfg == nil {
		return "running (no key to look inside)"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := dialSSH(ctx, net.JoinHostPort(h.Address.String(), "22"), cfg)
	if err != nil {
		return "unreachable"
	}
	defer c.Close()
	out, _ := runSSH(ctx, c, "systemctl is-system-running", nil)
	if s := strings.TrimSpace(out); s != "" {
		return s
	}
	return "unknown"
}

func statusRows(st *State, states map[string]string) []HostStatus {
	var rows []HostStatus
	for _, h := range st.Hosts {
		s := states[h.Name]
		if s == "" {
			s = "running"
			if !alive(h.PID, h.StartTime) {
				s = "stopped"
			}
		}
		rows = append(rows, HostStatus{Name: h.Name, Role: h.Role, Address: h.Address.String(), PID: h.PID, State: s})
	}
	return rows
}

func writeHostTable(w io.Writer, rows []HostStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var total int64
	for _, r := range rows {
		total += r.MemoryKB
	}
	if total > 0 {
		fmt.Fprintln(tw, "NAME\tROLE\tADDRESS\tPID\tSTATE\tMEMORY (PSS)")
	} else {
		fmt.Fprintln(tw, "NAME\tROLE\tADDRESS\tPID\tSTATE")
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s", r.Name, r.Role, r.Address, r.PID, r.State)
		if total > 0 {
			fmt.Fprintf(tw, "\t%.0f MiB", float64(r.MemoryKB)/1024)
		}
		fmt.Fprintln(tw)
	}
	if total > 0 {
		fmt.Fprintf(tw, "total\t\t\t\t\t%.0f MiB\n", float64(total)/1024)
	}
	tw.Flush()
}

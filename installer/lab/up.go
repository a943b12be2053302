package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/wait"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/internal/atomicfile"
	"kforge.dev/kforge/internal/busyboximage"
)

// UpOptions configure Up.
type UpOptions struct {
	Options
	Masters, Workers int
	// CacheDir holds base images (DefaultCacheDir when empty).
	CacheDir string
	// BootTimeout bounds the wait for every host to be up, and the image
	// import after it (default 2m).
	BootTimeout time.Duration
}

// Up creates and boots a lab. It returns once every host answers SSH and
// systemd reports running (or degraded, with the failed units reported).
// On failure it removes everything it made.
//
// Everything that can be checked without side effects is checked first;
// then Up runs its steps in order (see upRun.steps), recording every
// resource in DIR/lab.json before making it.
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
	hosts, err := Plan(o.Masters, o.Workers)
	if err != nil {
		return err
	}
	if err := checkUp(ctx, o, hosts); err != nil {
		return err
	}
	rep, done := o.reporter()
	defer done()
	u := &upRun{o: o, rep: rep, hosts: hosts, recipe: DefaultRecipe(), secrets: map[string]hostSecrets{}, states: map[string]string{}}
	defer func() {
		if err != nil {
			err = u.undo(ctx, err)
		}
	}()
	if err := runSteps(ctx, rep, u.steps()); err != nil {
		return err
	}
	u.st.Ready = true
	if err := u.save(); err != nil {
		return err
	}
	done()
	fmt.Fprintf(o.ErrOut, "Lab up: %d hosts in %s (%s after the base image was ready).\n", len(hosts), time.Since(start).Round(10*time.Millisecond), time.Since(u.baseDone).Round(10*time.Millisecond))
	writeHostTable(o.Out, statusRows(u.st, u.states))
	fmt.Fprintf(o.Out, "\ncluster file: %s\nssh:          kforge lab ssh --dir %s m1\n", filepath.Join(o.Dir, "cluster.yaml"), o.Dir)
	return nil
}

// checkUp refuses, before anything is made, what would make Up fail half
// way: no root, a DIR in use, missing tools, a bridge or veth name taken.
func checkUp(ctx context.Context, o UpOptions, hosts []HostSpec) error {
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
	return nil
}

// upRun is one Up: what its steps share.
type upRun struct {
	o      UpOptions
	rep    installer.Reporter
	hosts  []HostSpec
	recipe Recipe

	base     baseImage
	baseDone time.Time
	// createdDir: Up made DIR, so undoing removes it (when empty).
	createdDir bool

	mu sync.Mutex // guards st's hosts while hosts start in parallel
	// st is nil until DIR is claimed; from then on a failure undoes
	// everything it records.
	st *State

	secrets   map[string]hostSecrets
	imagesDir string
	// bootDeadline bounds the wait for the hosts and the image import.
	bootDeadline time.Time
	// states is each host's systemd state once it is up.
	states map[string]string
}

// steps is Up's pipeline, in order.
func (u *upRun) steps() []step {
	start := step{id: "start", title: fmt.Sprintf("Starting %d hosts", len(u.hosts))}
	start.run = func(ctx context.Context) error { return eachHost(ctx, u.rep, start, u.hosts, u.startHost) }
	wait := step{id: "wait", title: "Waiting for sshd and systemd on every host"}
	wait.run = func(ctx context.Context) error { return u.waitHosts(ctx, wait) }
	steps := []step{
		{id: "base", title: baseStepTitle(u.o.CacheDir, u.recipe), run: u.ensureBase},
		{id: "claim", title: "Lab state " + statePath(u.o.Dir), run: u.claim},
		{id: "bridge", title: "Bridge " + u.o.Bridge + " " + BridgeAddr.String() + "/24", run: u.makeBridge},
		{id: "files", title: "Keys, known_hosts, cluster.yaml and the busybox image", run: u.writeFiles},
		start,
		wait,
	}
	if len(u.workers()) > 0 {
		imp := step{id: "image", title: "Importing " + busyboximage.Ref + " into the workers' containerd"}
		imp.run = func(ctx context.Context) error { return u.importImage(ctx, imp) }
		steps = append(steps, imp)
	}
	return steps
}

func (u *upRun) workers() []HostSpec {
	var out []HostSpec
	for _, h := range u.hosts {
		if h.Role == v1alpha1.RoleWorker {
			out = append(out, h)
		}
	}
	return out
}

func (u *upRun) save() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st.save(u.o.Dir)
}

// setHost changes host name's state and saves it.
func (u *upRun) setHost(name string, fn func(*HostState)) error {
	u.mu.Lock()
	fn(u.st.host(name))
	u.mu.Unlock()
	return u.save()
}

func (u *upRun) ensureBase(ctx context.Context) error {
	b, err := ensureBase(ctx, u.o.Log, u.o.CacheDir, u.recipe)
	if err != nil {
		return err
	}
	u.base, u.baseDone = b, time.Now()
	return nil
}

// claim creates DIR/lab.json exclusively (so two Ups on one DIR cannot
// both proceed) and writes the initial state into it.
func (u *upRun) claim(context.Context) error {
	if _, err := os.Stat(u.o.Dir); errors.Is(err, os.ErrNotExist) {
		u.createdDir = true
	}
	if err := os.MkdirAll(u.o.Dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(statePath(u.o.Dir), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if u.createdDir {
			os.Remove(u.o.Dir)
		}
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already holds a lab (another `kforge lab up` is running?)", u.o.Dir)
		}
		return err
	}
	f.Close()
	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	st := &State{Kind: stateKind, ID: hex.EncodeToString(idb), Created: time.Now().UTC(), Bridge: u.o.Bridge, Base: u.base.RootFS}
	st.Cgroups = labCgroupDirs(st.ID)
	for _, h := range u.hosts {
		st.Hosts = append(st.Hosts, HostState{HostSpec: h})
	}
	u.st = st
	return u.save()
}

func (u *upRun) makeBridge(ctx context.Context) error {
	u.st.BridgeCreated = true
	if err := u.save(); err != nil {
		return err
	}
	return createBridge(ctx, u.o.Bridge, u.st.ID)
}

// writeFiles makes the lab's keys (the client key, one host key per
// host), the sudo password, known_hosts, the busybox archive and
// cluster.yaml.
func (u *upRun) writeFiles(context.Context) error {
	client, err := newKeyPair("kforge-lab")
	if err != nil {
		return err
	}
	sudoPassword, err := randomPassword(20)
	if err != nil {
		return err
	}
	if err := writeClientFiles(u.o.Dir, labKeys{client: client, sudoPassword: sudoPassword}); err != nil {
		return err
	}
	pubs := map[string]gossh.PublicKey{}
	for _, h := range u.hosts {
		hk, err := newKeyPair("root@" + h.Name)
		if err != nil {
			return err
		}
		mid := make([]byte, 16)
		if _, err := rand.Read(mid); err != nil {
			return err
		}
		u.secrets[h.Name] = hostSecrets{hostKey: hk, machineID: hex.EncodeToString(mid), clientKey: client.authorizedLine("kforge-lab"), sudoPasswd: sudoPassword}
		pubs[h.Name] = hk.public
	}
	if err := atomicfile.Write(filepath.Join(u.o.Dir, sshDirName, knownHostsName), knownHostsFile(u.hosts, pubs), 0o644); err != nil {
		return err
	}
	img, err := busyboximage.WriteArchive(u.o.Dir, u.base.RootFS)
	if err != nil {
		return err
	}
	u.imagesDir = filepath.Dir(img)
	_, err = writeClusterFile(u.o.Dir, u.hosts)
	return err
}

// startHost mounts the host's overlay, writes its identity into it and
// starts its systemd-nspawn in the lab's cgroups.
func (u *upRun) startHost(ctx context.Context, h HostSpec) (string, error) {
	p := pathsOf(u.o.Dir, h.Name)
	if err := u.setHost(h.Name, func(hs *HostState) { hs.Mounted = true }); err != nil {
		return "", err
	}
	if err := mountHost(p, u.base.RootFS); err != nil {
		return "", err
	}
	if err := customiseHost(ctx, p, h, u.secrets[h.Name]); err != nil {
		return "", err
	}
	procs, err := makeHostCgroups(u.st.Cgroups, h.Name)
	if err != nil {
		return "", err
	}
	pid, ps, err := startHost(p, nspawnArgs(p, h, u.o.Bridge, u.imagesDir), procs)
	if serr := u.setHost(h.Name, func(hs *HostState) { hs.PID, hs.StartTime = pid, ps }); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s, pid %d", h.Address, pid), nil
}

// waitHosts waits until every host's sshd answers with its known key and
// systemd has finished booting. A degraded host is not a failure: its ✓
// line names the failed units.
func (u *upRun) waitHosts(ctx context.Context, s step) error {
	u.bootDeadline = time.Now().Add(u.o.BootTimeout)
	ctx, cancel := context.WithDeadline(ctx, u.bootDeadline)
	defer cancel()
	hk := hostKeys(u.o.Dir)
	var mu sync.Mutex
	return eachHost(ctx, u.rep, s, u.hosts, func(ctx context.Context, h HostSpec) (string, error) {
		u.mu.Lock()
		hs := *u.st.host(h.Name)
		u.mu.Unlock()
		cfg := sshConfig(u.o.Dir, h, "root", hk, u.o.Log)
		// One attempt per poll: the poll is the retry loop.
		cfg.ConnectAttempts, cfg.DialTimeout = 1, 5*time.Second
		state, failed, err := waitHost(ctx, newHost(h, cfg), hs.PID, hs.StartTime, pathsOf(u.o.Dir, h.Name))
		if err != nil {
			return "", err
		}
		mu.Lock()
		u.states[h.Name] = state
		mu.Unlock()
		if state == "degraded" {
			return "degraded; failed units: " + strings.Join(failed, ", "), nil
		}
		return state, nil
	})
}

// waitHost polls the host until its sshd answers (with its known key)
// and systemd has finished booting; it returns "running" or "degraded"
// and, when degraded, the failed units. It gives up at once when nspawn
// exits or the host key is wrong, and when ctx ends.
func waitHost(ctx context.Context, h installer.Host, pid int, start uint64, p hostPaths) (state string, failed []string, err error) {
	var last error
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if !alive(pid, start) {
			return false, fmt.Errorf("systemd-nspawn exited; console:\n%s", consoleTail(p))
		}
		if err := h.Connect(ctx); err != nil {
			if ssh.IsHostKeyError(err) {
				return false, err
			}
			last = err
			return false, nil
		}
		defer h.Close()
		// --wait returns once booting is over; it exits non-zero when
		// the state is not "running", so only its output counts.
		out, rerr := h.Run(ctx, "systemctl is-system-running --wait")
		switch state = strings.TrimSpace(out); state {
		case "running":
			return true, nil
		case "degraded":
			out, _ := h.Run(ctx, "systemctl --failed --no-legend --plain")
			failed = failedUnits(out)
			return true, nil
		}
		last = fmt.Errorf("systemd is %q: %v", state, rerr)
		return false, nil
	})
	if err != nil && wait.Interrupted(err) {
		return "", nil, fmt.Errorf("not up in time (last: %v); console:\n%s", last, consoleTail(p))
	}
	return state, failed, err
}

// failedUnits picks the unit names out of `systemctl --failed --no-legend
// --plain`.
func failedUnits(out string) []string {
	var units []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			units = append(units, f[0])
		}
	}
	sort.Strings(units)
	return units
}

// importImage imports the busybox archive into every worker's containerd.
func (u *upRun) importImage(ctx context.Context, s step) error {
	ctx, cancel := context.WithDeadline(ctx, u.bootDeadline)
	defer cancel()
	hk := hostKeys(u.o.Dir)
	return eachHost(ctx, u.rep, s, u.workers(), func(ctx context.Context, h HostSpec) (string, error) {
		host := newHost(h, sshConfig(u.o.Dir, h, "root", hk, u.o.Log))
		if err := host.Connect(ctx); err != nil {
			return "", err
		}
		defer host.Close()
		// Write, not Run: the import changes the host (the lab has no dry run).
		if _, err := host.Write(ctx, "ctr -n k8s.io images import "+guestImagesDir+"/busybox.tar"); err != nil {
			return "", err
		}
		return "", nil
	})
}

// undo removes what a failed Up made, as `lab down` would, and returns
// err joined with any failure of that.
func (u *upRun) undo(ctx context.Context, err error) error {
	if u.st == nil {
		return err // nothing was made
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if derr := teardown(cctx, u.o.Options, u.rep, u.st, defaultStopTimeout, "Lab up failed: "); derr != nil {
		err = errors.Join(err, fmt.Errorf("cleaning up after the failed lab up: %w", derr))
	}
	if u.createdDir {
		os.Remove(u.o.Dir)
	}
	return err
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

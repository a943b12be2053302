package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"kforge.dev/kforge/installer"
)

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
		o.StopTimeout = defaultStopTimeout
	}
	start := time.Now()
	rep, done := o.reporter()
	err = teardown(ctx, o.Options, rep, st, o.StopTimeout, "")
	done()
	if err != nil {
		return err
	}
	os.Remove(o.Dir) // only if empty
	fmt.Fprintf(o.ErrOut, "Lab in %s is down (%s).\n", o.Dir, time.Since(start).Round(10*time.Millisecond))
	return nil
}

// defaultStopTimeout bounds a clean poweroff of the hosts.
const defaultStopTimeout = 20 * time.Second

// teardown undoes everything st records, in reverse order of Up, as two
// reported steps; prefix (may be empty) leads the first step's title. It
// runs both steps even when the first fails.
func teardown(ctx context.Context, o Options, rep installer.Reporter, st *State, stopTimeout time.Duration, prefix string) error {
	steps := []step{
		{id: "stop", title: prefix + "Stopping hosts", run: func(context.Context) error { return stopHosts(st, stopTimeout) }},
		{id: "remove", title: "Removing overlays, links and files", run: func(ctx context.Context) error { return removeAll(ctx, o.Dir, st) }},
	}
	var errs []error
	for _, s := range steps {
		if err := runStep(ctx, rep, s); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeAll unmounts the overlays, deletes the veths, the bridge and the
// cgroups, and then — only when all of that worked — the files in DIR.
func removeAll(ctx context.Context, dir string, st *State) error {
	var errs []error
	if err := unmountAll(filepath.Join(dir, "hosts")); err != nil {
		errs = append(errs, err)
	}
	for _, h := range st.Hosts {
		if err := deleteVeth(ctx, vethName(h.Name), st.Bridge, st.ID); err != nil {
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
		if err := removeTree(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(statePath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopHosts asks every running host to power off (SIGTERM to
// systemd-nspawn makes it send SIGRTMIN+3 to the guest's systemd, an
// orderly shutdown), waits up to timeout, then SIGKILLs the guest's init
// (which ends its whole PID namespace) and nspawn.
func stopHosts(st *State, timeout time.Duration) error {
	type proc struct {
		name      string
		pid       int
		start     uint64
		init      int
		initStart uint64
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
	running := func() []string {
		var names []string
		for _, p := range ps {
			if alive(p.pid, p.start) || alive(p.init, p.initStart) {
				names = append(names, p.name)
			}
		}
		return names
	}
	// Not the caller's context: once asked to stop, hosts are waited for
	// (and killed) even when the command is interrupted.
	ctx := context.Background()
	resend := time.Now().Add(2 * time.Second)
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		if len(running()) == 0 {
			return true, nil
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
		return false, nil
	})
	if err == nil {
		return nil
	}
	for _, p := range ps {
		if alive(p.init, p.initStart) {
			_ = syscall.Kill(p.init, syscall.SIGKILL)
		}
		if alive(p.pid, p.start) {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	var stuck []string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		stuck = running()
		return len(stuck) == 0, nil
	})
	if err == nil {
		return nil
	}
	return fmt.Errorf("hosts still running after SIGKILL: %s", strings.Join(stuck, ", "))
}

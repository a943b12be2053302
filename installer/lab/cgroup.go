package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Per-host cgroups. systemd-nspawn --keep-unit puts the container into
// "payload" (and itself into "supervisor") below the cgroup it was started
// in. Started side by side from one process, every host would share the
// same payload cgroup, and their systemds would trip over each other's
// units (seen as "Failed to attach to cgroup …: No such file or
// directory", status 219/CGROUP, at boot). So each nspawn starts in a
// cgroup of its own, in every hierarchy nspawn uses: the unified one and,
// on a hybrid machine, the named systemd one.

// cgroupHierarchies returns the mount points of the hierarchies to use.
func cgroupHierarchies() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"} // pure cgroup v2
	}
	var out []string
	for _, h := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err == nil {
			out = append(out, h)
		}
	}
	return out
}

// labCgroupDirs are the lab's own cgroup folders, one per hierarchy.
func labCgroupDirs(id string) []string {
	var out []string
	for _, h := range cgroupHierarchies() {
		out = append(out, filepath.Join(h, "kforge-lab-"+id))
	}
	return out
}

// makeHostCgroups creates LABDIR/NAME in every hierarchy and returns the
// cgroup.procs files a process writes its PID to.
func makeHostCgroups(labDirs []string, name string) ([]string, error) {
	var procs []string
	for _, d := range labDirs {
		hd := filepath.Join(d, name)
		if err := os.MkdirAll(hd, 0o755); err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", hd, err)
		}
		procs = append(procs, filepath.Join(hd, "cgroup.procs"))
	}
	return procs, nil
}

// removeCgroupTree removes a cgroup folder and every cgroup below it,
// deepest first (rmdir is how cgroups are deleted; they must be empty).
func removeCgroupTree(dir string) error {
	if !strings.HasPrefix(dir, "/sys/fs/cgroup/") {
		return fmt.Errorf("refusing to remove %s: not a cgroup", dir)
	}
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	var errs []error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupPSS sums the proportional set size (kB) of every process in a
// cgroup folder and below: what a host's processes use, with shared pages
// split among their users.
func cgroupPSS(dir string) (kb int64) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, pid := range strings.Fields(string(data)) {
			kb += pssOf(pid)
		}
		return nil
	})
	return kb
}

func pssOf(pid string) int64 {
	data, err := os.ReadFile("/proc/" + pid + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			var n int64
			fmt.Sscan(f[1], &n)
			return n
		}
	}
	return 0
}

package installer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
)

// Preflight limits.
const (
	MaxClockSkew = 2 * time.Second
	// Free space in /var/lib: etcd data on masters, images on workers.
	MinStateFreeMaster = 2 << 30
	MinStateFreeWorker = 1 << 30
	MinStateFreeOther  = 256 << 20
	// Room beside the binary beyond its own size (the temp file of an
	// atomic upload holds a second copy).
	binaryHeadroom = 64 << 20
)

// SupportedOS are the os-release IDs kforge installs onto.
var SupportedOS = []string{"debian", "ubuntu"}

// RequiredCNIPlugins are the CNI plugins the agent uses.
var RequiredCNIPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// PortsFor are the TCP ports a host of this role (master, worker,
// loadbalancer) needs free: those of every daemon role it may run.
func PortsFor(hostRole string) []int { return portsOf(hostRole) }

// probeScript prints what preflight needs beyond the facts; it only reads.
var probeScript = `cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == "0A" {print "listen", $2}'
for c in containerd runc; do p=$(command -v $c 2>/dev/null) && echo "have $c $p"; done
for d in /opt/cni/bin /usr/lib/cni; do [ -d "$d" ] && echo "cni $d" $(ls "$d"); done
for u in ` + roleUnits(false) + `; do [ "$(systemctl is-active $u 2>/dev/null)" = active ] && echo "active $u"; done
true
`

// roleUnits lists every role's unit, in start order or reversed.
func roleUnits(reverse bool) string {
	var units []string
	for _, r := range Roles {
		units = append(units, r.Unit())
	}
	if reverse {
		slices.Reverse(units)
	}
	return strings.Join(units, " ")
}

// Probe is what probeScript found.
type Probe struct {
	Listening map[int]bool
	Have      map[string]string // command -> path
	CNI       map[string][]string
	// Active are kforge's own units that are running (kforge-etcd.service, ...).
	Active map[string]bool
}

func parseProbe(out string) (*Probe, error) {
	p := &Probe{Listening: map[int]bool{}, Have: map[string]string{}, CNI: map[string][]string{}, Active: map[string]bool{}}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "listen":
			if len(f) != 2 {
				return nil, fmt.Errorf("unexpected probe line %q", line)
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			port, err := strconv.ParseUint(hexPort, 16, 16)
			if !ok || err != nil {
				return nil, fmt.Errorf("unexpected probe line %q", line)
			}
			p.Listening[int(port)] = true
		case "have":
			if len(f) == 3 {
				p.Have[f[1]] = f[2]
			}
		case "active":
			if len(f) == 2 {
				p.Active[f[1]] = true
			}
		case "cni":
			if len(f) >= 2 {
				p.CNI[f[1]] = f[2:]
			}
		}
	}
	return p, nil
}

// BinaryInfo is the kforge binary to push.
type BinaryInfo struct {
	Path   string
	Size   int64
	SHA256 string
	// Arch is the binary's GOARCH, read from its ELF header.
	Arch string
}

// CheckResult is one host's preflight verdict.
type CheckResult struct {
	Problems []string
	Warnings []string
	// Info summarises what passed.
	Info string
}

// Check judges one host. Pure: everything it needs is in its arguments.
func Check(role string, f *Facts, p *Probe, bin BinaryInfo) CheckResult {
	var r CheckResult
	bad := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }
	if !slices.Contains(SupportedOS, f.OS) {
		bad("OS %q is not supported (supported: %s)", f.OS, strings.Join(SupportedOS, ", "))
	}
	switch {
	case f.Arch == "":
		bad("architecture %s is not supported (amd64, arm64)", f.Machine)
	case bin.Arch != "" && f.Arch != bin.Arch:
		bad("the host is %s but the kforge binary is %s: pass --binary with a %s build", f.Arch, bin.Arch, f.Arch)
	}
	if !f.Systemd {
		bad("systemd is not the init system (PID 1), and kforge runs its daemons as systemd units")
	}
	if skew := f.ClockSkew; skew > MaxClockSkew || skew < -MaxClockSkew {
		bad("clock differs from this machine's by %s (limit %s): certificates and etcd need synchronised clocks; start NTP (systemd-timesyncd or chrony)", skew.Round(time.Millisecond), MaxClockSkew)
	}
	if free, ok := f.DiskFree["/usr/local/bin"]; ok && free < uint64(bin.Size+binaryHeadroom) {
		bad("%s free in /usr/local/bin, need %s for the binary", humanBytes(int64(free)), humanBytes(bin.Size+binaryHeadroom))
	}
	need := uint64(MinStateFreeOther)
	switch role {
	case v1alpha1.RoleMaster:
		need = MinStateFreeMaster
	case v1alpha1.RoleWorker:
		need = MinStateFreeWorker
	}
	if free, ok := f.DiskFree[StateDir]; ok && free < need {
		bad("%s free in %s, need %s on a %s", humanBytes(int64(free)), StateDir, humanBytes(int64(need)), role)
	}
	var busy, ours []string
	for _, port := range PortsFor(role) {
		if !p.Listening[port] {
			continue
		}
		if u := portOwner(role, port); u != "" && p.Active[u] {
			ours = append(ours, strconv.Itoa(port))
			continue
		}
		busy = append(busy, strconv.Itoa(port))
	}
	if len(busy) > 0 {
		bad("TCP port(s) %s already in use (a %s needs %s free)", strings.Join(busy, ", "), role, joinInts(PortsFor(role)))
	}
	if f.CgroupFS != "cgroup2fs" {
		if role == v1alpha1.RoleWorker {
			bad("cgroup v2 is required on workers (/sys/fs/cgroup is %q)", f.CgroupFS)
		} else {
			r.Warnings = append(r.Warnings, "no cgroup v2")
		}
	} else {
		var missing []string
		for _, c := range []string{"cpu", "memory", "pids"} {
			if !slices.Contains(f.CgroupControllers, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 && role == v1alpha1.RoleWorker {
			r.Warnings = append(r.Warnings, "cgroup controller(s) "+strings.Join(missing, ", ")+" missing: those limits will not be enforced")
		}
	}
	if role == v1alpha1.RoleWorker {
		for _, c := range []string{"containerd", "runc"} {
			if p.Have[c] == "" {
				bad("%s is not installed (Debian: apt-get install containerd runc)", c)
			}
		}
		var missing []string
		for _, plugin := range RequiredCNIPlugins {
			found := false
			for _, names := range p.CNI {
				found = found || slices.Contains(names, plugin)
			}
			if !found {
				missing = append(missing, plugin)
			}
		}
		if len(missing) > 0 {
			bad("CNI plugin(s) %s not found in /opt/cni/bin or /usr/lib/cni (Debian: apt-get install containernetworking-plugins)", strings.Join(missing, ", "))
		}
	}
	ports := "ports " + joinInts(PortsFor(role)) + " free"
	if len(ours) > 0 {
		ports = "ports " + joinInts(PortsFor(role)) + " free or kforge's own (" + strings.Join(ours, ", ") + ")"
	}
	info := []string{f.OS + " " + f.OSVersion + " " + f.Arch, "systemd", ports}
	if f.CgroupFS == "cgroup2fs" {
		ctl := strings.Join(f.CgroupControllers, " ")
		if ctl == "" {
			ctl = "no controllers delegated"
		}
		info = append(info, "cgroup v2 ("+ctl+")")
	}
	if role == v1alpha1.RoleWorker {
		info = append(info, "containerd, runc, CNI")
	}
	info = append(info, fmt.Sprintf("clock %+dms", f.ClockSkew.Milliseconds()))
	r.Info = strings.Join(info, ", ")
	return r
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// PreflightPhase checks that every host can take its role.
type PreflightPhase struct {
	Env    *Env
	Binary BinaryInfo
}

func (p *PreflightPhase) ID() string    { return "preflight" }
func (p *PreflightPhase) Title() string { return "Preflight checks" }

func (p *PreflightPhase) Run(ctx context.Context) error {
	return p.Env.Each(ctx, p, p.Env.Hosts, func(ctx context.Context, h Host) (string, error) {
		f := p.Env.Facts.Get(h.Name())
		if f == nil {
			return "", errors.New("no facts gathered")
		}
		out, err := h.Run(ctx, probeScript)
		if err != nil {
			return "", err
		}
		pr, err := parseProbe(out)
		if err != nil {
			return "", err
		}
		r := Check(h.Role(), f, pr, p.Binary)
		if len(r.Problems) > 0 {
			return "", fmt.Errorf("preflight failed: %s", strings.Join(r.Problems, "; "))
		}
		msg := r.Info
		if len(r.Warnings) > 0 {
			msg += "; warning: " + strings.Join(r.Warnings, "; ")
		}
		return msg, nil
	})
}

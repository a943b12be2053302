package installer

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Facts are what the facts phase learns about a host.
type Facts struct {
	Hostname  string `json:"hostname"`
	OS        string `json:"os"` // os-release ID: debian, ubuntu, ...
	OSVersion string `json:"osVersion"`
	OSPretty  string `json:"osPretty,omitempty"`
	// Machine is `uname -m`; Arch is its Go name (amd64, arm64), empty when unknown.
	Machine string `json:"machine"`
	Arch    string `json:"arch"`
	Kernel  string `json:"kernel"`
	// Systemd is true when PID 1 is systemd and the host booted with it.
	Systemd bool `json:"systemd"`
	// CgroupFS is the type of /sys/fs/cgroup (cgroup2fs for cgroup v2).
	CgroupFS          string   `json:"cgroupFS"`
	CgroupControllers []string `json:"cgroupControllers"`
	// DiskFree is the free bytes of the filesystem holding each path.
	DiskFree map[string]uint64 `json:"diskFree"`
	// KforgeSHA256 is the sha256 of /usr/local/bin/kforge, empty when
	// absent. It comes from the stamp (BinaryStampPath) when the stamp
	// still describes the file (size, inode, mtime and ctime), else from
	// hashing it; KforgeUnstamped says it had to be hashed.
	KforgeSHA256    string `json:"kforgeSHA256,omitempty"`
	KforgeUnstamped bool   `json:"kforgeUnstamped,omitempty"`
	// Decoders are the decompressors the host has (zstd, gzip), which the
	// binary upload may use on the wire.
	Decoders []string `json:"decoders,omitempty"`
	// ClockSkew is the host's clock minus this machine's, measured at the
	// midpoint of a round trip of RTT.
	ClockSkew time.Duration `json:"clockSkew"`
	RTT       time.Duration `json:"rtt"`
}

// FactsStore holds the facts of every host. Safe for concurrent use.
type FactsStore struct {
	mu sync.Mutex
	m  map[string]*Facts
}

// Get returns the facts of a host, or nil.
func (s *FactsStore) Get(host string) *Facts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[host]
}

func (s *FactsStore) set(host string, f *Facts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*Facts{}
	}
	s.m[host] = f
}

// Paths whose free space preflight checks.
const (
	BinaryPath = "/usr/local/bin/kforge"
	StateDir   = "/var/lib"
)

// BinaryStampPath records the sha256 of BinaryPath, written after a
// verified upload: its first line is the sha256, its second the file's
// "size inode mtime ctime" (stat -c '%s %i %Y %Z'). Any rewrite, rename
// or chmod of the binary changes the ctime or the inode, so a stamp whose
// second line still matches describes the file, and the facts phase reads
// it instead of hashing 100 MiB on every run.
const BinaryStampPath = "/var/lib/kforge/binary.sha256"

// binaryStampKey is the shell command printing the stamp's second line.
const binaryStampKey = "stat -c '%s %i %Y %Z' " + BinaryPath

// factsScript prints key=value lines; it only reads.
const factsScript = `. /etc/os-release 2>/dev/null
echo "os=${ID:-unknown}"
echo "os_version=${VERSION_ID:-}"
echo "os_pretty=${PRETTY_NAME:-}"
echo "machine=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
echo "pid1=$(cat /proc/1/comm)"
if [ -d /run/systemd/system ]; then echo systemd_booted=1; else echo systemd_booted=0; fi
echo "cgroupfs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
echo "cgroup_controllers=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
for d in /usr/local/bin /var/lib; do
  p=$d; while [ ! -e "$p" ]; do p=$(dirname "$p"); done
  echo "disk_free_kb $d $(df -Pk "$p" | awk 'NR==2 {print $4}')"
done
if [ -f /usr/local/bin/kforge ]; then
  if [ -f ` + BinaryStampPath + ` ] && [ "$(sed -n 2p ` + BinaryStampPath + `)" = "$(` + binaryStampKey + `)" ]; then
    echo "kforge_sha256=$(sed -n 1p ` + BinaryStampPath + `)"
  else
    echo "kforge_sha256=$(sha256sum /usr/local/bin/kforge | cut -d' ' -f1)"
    echo kforge_unstamped=1
  fi
fi
for d in zstd gzip; do if command -v $d >/dev/null 2>&1; then echo "decoder=$d"; fi; done
`

// parseFacts reads factsScript's output.
func parseFacts(out string) (*Facts, error) {
	f := &Facts{DiskFree: map[string]uint64{}}
	pid1, booted := "", false
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "disk_free_kb "); ok {
			fs := strings.Fields(rest)
			if len(fs) != 2 {
				return nil, fmt.Errorf("unexpected facts line %q", line)
			}
			kb, err := strconv.ParseUint(fs[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("unexpected facts line %q", line)
			}
			f.DiskFree[fs[0]] = kb * 1024
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "os":
			f.OS = v
		case "os_version":
			f.OSVersion = v
		case "os_pretty":
			f.OSPretty = v
		case "machine":
			f.Machine, f.Arch = v, goArch(v)
		case "kernel":
			f.Kernel = v
		case "hostname":
			f.Hostname = v
		case "pid1":
			pid1 = v
		case "systemd_booted":
			booted = v == "1"
		case "cgroupfs":
			f.CgroupFS = v
		case "cgroup_controllers":
			f.CgroupControllers = strings.Fields(v)
		case "kforge_sha256":
			f.KforgeSHA256 = v
		case "kforge_unstamped":
			f.KforgeUnstamped = v == "1"
		case "decoder":
			f.Decoders = append(f.Decoders, v)
		}
	}
	f.Systemd = pid1 == "systemd" && booted
	if f.Machine == "" || f.Kernel == "" {
		return nil, fmt.Errorf("unexpected facts output: %q", out)
	}
	return f, nil
}

// goArch maps `uname -m` to GOARCH.
func goArch(machine string) string {
	switch machine {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	}
	return ""
}

// measureClock reads the host's clock and compares it with ours at the
// midpoint of the round trip.
func measureClock(ctx context.Context, h Host, now func() time.Time) (skew, rtt time.Duration, err error) {
	t0 := now()
	out, err := h.Run(ctx, "date +%s%N")
	t1 := now()
	if err != nil {
		return 0, 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("unexpected output of date: %q", out)
	}
	rtt = t1.Sub(t0)
	mid := t0.Add(rtt / 2)
	return time.Unix(0, ns).Sub(mid), rtt, nil
}

// FactsPhase connects to every host and gathers its facts.
type FactsPhase struct{ Env *Env }

func (p *FactsPhase) ID() string    { return "facts" }
func (p *FactsPhase) Title() string { return "Connect and gather facts" }

func (p *FactsPhase) Run(ctx context.Context) error {
	return p.Env.Each(ctx, p, p.Env.Hosts, func(ctx context.Context, h Host) (string, error) {
		if err := h.Connect(ctx); err != nil {
			return "", err
		}
		out, err := h.Run(ctx, factsScript)
		if err != nil {
			return "", err
		}
		f, err := parseFacts(out)
		if err != nil {
			return "", err
		}
		if f.ClockSkew, f.RTT, err = measureClock(ctx, h, p.Env.now); err != nil {
			return "", err
		}
		p.Env.Facts.set(h.Name(), f)
		return f.summary(), nil
	})
}

func (f *Facts) summary() string {
	osName := f.OS + " " + f.OSVersion
	var disks []string
	keys := make([]string, 0, len(f.DiskFree))
	for k := range f.DiskFree {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		disks = append(disks, k+" "+humanBytes(int64(f.DiskFree[k]))+" free")
	}
	sd := "systemd"
	if !f.Systemd {
		sd = "no systemd"
	}
	return fmt.Sprintf("%s, %s %s, kernel %s, %s, %s, clock %+dms", f.Hostname, osName, f.Machine, f.Kernel, sd, strings.Join(disks, ", "), f.ClockSkew.Milliseconds())
}

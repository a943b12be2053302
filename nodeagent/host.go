package nodeagent

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Eviction thresholds the pressure conditions use: upstream's hard
// eviction defaults (memory.available<100Mi, nodefs.available<10%) and a
// PID table 90 % full.
const (
	memoryPressureBytes = 100 << 20
	diskPressureRatio   = 0.10
	pidPressureRatio    = 0.90
)

// hostFacts are what the node reports about its machine.
type hostFacts struct {
	machineID, bootID, kernel, osImage string
	cpus                               int
	memTotal, memAvailable             int64 // bytes
	diskTotal, diskAvailable           int64 // bytes, of the filesystem holding the root dir
	pids, pidMax                       int64
}

// readHost reads the machine's facts; missing sources leave zero values.
func readHost(rootDir string) hostFacts {
	h := hostFacts{cpus: goruntime.NumCPU()}
	h.machineID = readTrim("/etc/machine-id")
	h.bootID = readTrim("/proc/sys/kernel/random/boot_id")
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.kernel = unix.ByteSliceToString(u.Release[:])
	}
	h.osImage = osPrettyName(readTrim("/etc/os-release"))
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		m := parseMeminfo(data)
		h.memTotal, h.memAvailable = m["MemTotal"], m["MemAvailable"]
	}
	dir := rootDir
	for dir != "/" {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		h.diskTotal = int64(st.Blocks) * st.Bsize
		h.diskAvailable = int64(st.Bavail) * st.Bsize
	}
	if f := strings.Fields(readTrim("/proc/loadavg")); len(f) >= 4 {
		if _, total, ok := strings.Cut(f[3], "/"); ok {
			h.pids, _ = strconv.ParseInt(total, 10, 64)
		}
	}
	h.pidMax, _ = strconv.ParseInt(readTrim("/proc/sys/kernel/pid_max"), 10, 64)
	return h
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func osPrettyName(osRelease string) string {
	for _, line := range strings.Split(osRelease, "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return "Linux"
}

// parseMeminfo returns /proc/meminfo's values in bytes.
func parseMeminfo(data []byte) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		out[k] = n
	}
	return out
}

// capacity is the node's capacity from its facts.
func (h hostFacts) capacity(maxPods int) corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(h.cpus), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(h.memTotal, resource.BinarySI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(h.diskTotal, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(int64(maxPods), resource.DecimalSI),
	}
}

// allocatable is capacity minus the reservation, never below zero.
func allocatable(capacity corev1.ResourceList, reserved map[string]string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for name, q := range capacity {
		a := q.DeepCopy()
		if r, ok := reserved[string(name)]; ok {
			if rq, err := resource.ParseQuantity(r); err == nil {
				a.Sub(rq)
			}
		}
		if a.Sign() < 0 {
			a = *resource.NewQuantity(0, q.Format)
		}
		out[name] = a
	}
	return out
}

// cgroupControllers lists the controllers this host's cgroups can use:
// cgroup v2's cgroup.controllers, else the v1 hierarchies in
// /proc/cgroups that are mounted and enabled.
func cgroupControllers() map[string]bool {
	out := map[string]bool{}
	if data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		for _, c := range strings.Fields(string(data)) {
			out[c] = true
		}
		return out
	}
	data, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[1] != "0" && f[3] == "1" {
			out[f[0]] = true
		}
	}
	return out
}

package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"kforge.dev/kforge/api/v1alpha1"
)

// Paths of a host's files under DIR/hosts/NAME.
type hostPaths struct {
	dir, upper, work, root, containerd, console string
}

func pathsOf(dir, name string) hostPaths {
	d := filepath.Join(dir, "hosts", name)
	return hostPaths{
		dir:        d,
		upper:      filepath.Join(d, "upper"),
		work:       filepath.Join(d, "work"),
		root:       filepath.Join(d, "root"),
		containerd: filepath.Join(d, "containerd"),
		console:    filepath.Join(d, "console.log"),
	}
}

// guestImagesDir is where workers see DIR/images (read-only).
const guestImagesDir = "/run/kforge-lab/images"

// hostSecrets are what one host gets that no other host has.
type hostSecrets struct {
	hostKey    keyPair
	machineID  string
	clientKey  string // authorized_keys line
	sudoPasswd string
}

// mountHost mounts the host's overlay: the shared base read-only below, a
// writable layer of its own above.
func mountHost(p hostPaths, baseRoot string) error {
	for _, d := range []string{p.upper, p.work, p.root, p.containerd} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=" + baseRoot + ",upperdir=" + p.upper + ",workdir=" + p.work
	if err := unix.Mount("overlay", p.root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting the overlay at %s: %w", p.root, err)
	}
	return nil
}

// customiseHost writes the host's identity into its writable layer:
// hostname, machine-id, SSH host key, static address, authorized keys,
// the sudo user's password.
func customiseHost(ctx context.Context, p hostPaths, h HostSpec, s hostSecrets) error {
	r := func(rel string) string { return filepath.Join(p.root, rel) }
	network := fmt.Sprintf(`# Written by kforge lab: sorts before 80-container-host0.network, so
# networkd gives host0 this static address instead of DHCP.
[Match]
Name=host0

[Network]
Address=%s/%d
LinkLocalAddressing=no
IPv6AcceptRA=no

[Route]
Destination=%s
Gateway=%s
`, h.Address, HostNet.Bits(), LabNet, BridgeAddr)
	hosts := "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + h.Address.String() + " " + h.Name + "\n"
	files := []struct {
		path string
		data string
		mode os.FileMode
	}{
		{"etc/hostname", h.Name + "\n", 0o644},
		{"etc/hosts", hosts, 0o644},
		{"etc/machine-id", s.machineID + "\n", 0o444},
		{"etc/ssh/ssh_host_ed25519_key", string(s.hostKey.private), 0o600},
		{"etc/ssh/ssh_host_ed25519_key.pub", s.hostKey.authorizedLine("root@" + h.Name), 0o644},
		{"etc/systemd/network/10-kforge-lab.network", network, 0o644},
		{"root/.ssh/authorized_keys", s.clientKey, 0o600},
		{"home/" + SudoUser + "/.ssh/authorized_keys", s.clientKey, 0o600},
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(r(f.path)), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(r(f.path), []byte(f.data), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(r(f.path), f.mode); err != nil {
			return err
		}
	}
	home := r("home/" + SudoUser)
	for _, q := range []string{home + "/.ssh", home + "/.ssh/authorized_keys"} {
		if err := os.Lchown(q, sudoUID, sudoUID); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, "chroot", p.root, "chpasswd")
	cmd.Stdin = strings.NewReader(SudoUser + ":" + s.sudoPasswd + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("setting the %s password: %w: %s", SudoUser, err, out)
	}
	return nil
}

// nspawnArgs is the systemd-nspawn command line of one host: no machined
// or D-Bus on the machine, so --register=no --keep-unit; all capabilities
// for containerd and nftables inside.
func nspawnArgs(p hostPaths, h HostSpec, bridge, imagesDir string) []string {
	args := []string{
		"--quiet", "--boot",
		"--register=no", "--keep-unit",
		"--capability=all",
		"--network-bridge=" + bridge,
		"--machine=" + h.Name,
		"--directory=" + p.root,
		// containerd's overlayfs snapshotter cannot stack on the host's
		// overlay root, so its state lives on the machine's file system.
		"--bind=" + p.containerd + ":/var/lib/containerd",
		"--resolv-conf=off", "--timezone=off", "--link-journal=no",
		"--console=read-only",
	}
	if h.Role == v1alpha1.RoleWorker {
		args = append(args, "--bind-ro="+imagesDir+":"+guestImagesDir)
	}
	return args
}

// nspawnEnv: a unified cgroup hierarchy inside, and no seccomp filter
// (runc needs keyctl).
var nspawnEnv = []string{"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1", "SYSTEMD_SECCOMP=0"}

// startHost starts systemd-nspawn detached (own session, console to
// console.log) in the cgroups whose cgroup.procs files are given, and
// returns its PID and start time. It does not wait. A shell joins the
// cgroups and then execs nspawn, so nspawn starts inside them and the PID
// stays the same.
func startHost(p hostPaths, args []string, cgroupProcs []string) (pid int, start uint64, err error) {
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return 0, 0, err
	}
	logf, err := os.OpenFile(p.console, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, 0, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, 0, err
	}
	defer devnull.Close()
	script := ""
	for _, cp := range cgroupProcs {
		script += "echo $$ > '" + cp + "' && "
	}
	script += `exec "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "kforge-lab-host", nspawn}, args...)...)
	cmd.Env = append(os.Environ(), nspawnEnv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("starting systemd-nspawn: %w", err)
	}
	pid = cmd.Process.Pid
	_, start, err = procStat(pid)
	// Not waited for: it outlives this process, and init reaps it.
	_ = cmd.Process.Release()
	if err != nil {
		return pid, 0, fmt.Errorf("systemd-nspawn exited at once; see %s", p.console)
	}
	return pid, start, nil
}

// consoleTail returns the end of a host's console log for error messages.
func consoleTail(p hostPaths) string {
	data, err := os.ReadFile(p.console)
	if err != nil {
		return ""
	}
	return lastLines(string(data), 10)
}

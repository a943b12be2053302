package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// labState is the part of DIR/lab.json the tests read.
type labState struct {
	Bridge string `json:"bridge"`
	Hosts  []struct {
		Name    string `json:"name"`
		Role    string `json:"role"`
		Address string `json:"address"`
		PID     int    `json:"pid"`
	} `json:"hosts"`
}

// kforge runs the binary and returns stdout, stderr and the error.
func kforge(t *testing.T, bin string, env []string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	t.Logf("kforge %s: err=%v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errOut.String())
	return out.String(), errOut.String(), err
}

func binary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("KFORGE_BINARY"); b != "" {
		return b
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(t.TempDir(), "kforge")
	cmd := exec.Command("go", "build", "-o", b, "./cmd/kforge")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building kforge: %v\n%s", err, out)
	}
	return b
}

func readState(t *testing.T, dir string) labState {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s labState
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func sshConfig(t *testing.T, dir, user, knownHostsFile string) *ssh.ClientConfig {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(dir, "ssh", "id_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "ssh", "id_ed25519"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(knownHostsFile)
	if err != nil {
		t.Fatal(err)
	}
	return &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb, Timeout: 10 * time.Second}
}

func sshRun(t *testing.T, c *ssh.Client, cmd, stdin string) (string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := &syncBuffer{} // stdout and stderr are copied by two goroutines
	s.Stdout, s.Stderr = out, out
	if stdin != "" {
		s.Stdin = strings.NewReader(stdin)
	}
	err = s.Run(cmd)
	return out.String(), err
}

// labResources lists what a lab leaves on the machine: live PIDs, links
// and mounts under dir.
func labResources(t *testing.T, dir string, st labState) []string {
	t.Helper()
	var left []string
	for _, h := range st.Hosts {
		if h.PID <= 0 {
			continue
		}
		data, err := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/stat")
		if err == nil {
			f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
			if f[0] != "Z" {
				left = append(left, fmt.Sprintf("process %d (%s)", h.PID, h.Name))
			}
		}
		if _, err := os.Stat("/sys/class/net/vb-" + h.Name); err == nil {
			left = append(left, "link vb-"+h.Name)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + st.Bridge); err == nil {
		left = append(left, "bridge "+st.Bridge)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			left = append(left, "mount "+f[4])
		}
	}
	// nspawn processes of any lab dir, found by their command line.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, []byte("--directory="+dir)) {
			left = append(left, "process "+p)
		}
	}
	return left
}

func TestLab(t *testing.T) {
	if os.Getenv("KFORGE_E2E") != "1" {
		t.Skip("end-to-end test; set KFORGE_E2E=1 (make test-e2e does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root")
	}
	bin := binary(t)
	work := t.TempDir()
	dir := filepath.Join(work, "lab")

	t.Run("bad input", func(t *testing.T) {
		// Not root: run a world-readable copy of the binary as nobody.
		pub, err := os.MkdirTemp("", "kforge-e2e-bin-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(pub)
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		nb := filepath.Join(pub, "kforge")
		if err := os.WriteFile(nb, data, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(pub, 0o755)
		cmd := exec.Command(nb, "lab", "up", "--dir", filepath.Join(pub, "lab"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "needs root") {
			t.Errorf("lab up as nobody: err=%v, output %q; want a 'needs root' error", err, out)
		}

		// nspawn missing (and no apt-get to install it).
		_, stderr, err := kforge(t, bin, []string{"PATH=/nonexistent"}, "lab", "up", "--dir", dir)
		if err == nil || !strings.Contains(stderr, "systemd-nspawn") || !strings.Contains(stderr, "systemd-container") {
			t.Errorf("without nspawn on PATH: err=%v; want an error naming systemd-nspawn and its package", err)
		}

		// The bridge name taken by something else (a bridge without the lab's alias).
		if out, err := exec.Command("ip", "link", "add", "kforge0", "type", "bridge").CombinedOutput(); err != nil {
			t.Fatalf("making a foreign kforge0: %v %s", err, out)
		}
		_, stderr, err = kforge(t, bin, nil, "lab", "up", "--dir", dir)
		_ = exec.Command("ip", "link", "del", "kforge0").Run()
		if err == nil || !strings.Contains(stderr, "not made by a kforge lab") {
			t.Errorf("with a foreign kforge0: err=%v; want a clear error", err)
		}

		// A DIR that holds another cluster's files.
		other := filepath.Join(work, "other")
		_ = os.MkdirAll(other, 0o755)
		if err := os.WriteFile(filepath.Join(other, "cluster.yaml"), []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, err = kforge(t, bin, nil, "lab", "up", "--dir", other)
		if err == nil || !strings.Contains(stderr, "belongs to another lab or cluster") {
			t.Errorf("DIR with a foreign cluster.yaml: err=%v; want a clear error", err)
		}
		if b, _ := os.ReadFile(filepath.Join(other, "cluster.yaml")); string(b) != "mine\n" {
			t.Error("the foreign cluster.yaml was changed")
		}

		// Nothing half-made anywhere.
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s exists after failed ups", dir)
		}
		if _, err := os.Stat("/sys/class/net/kforge0"); err == nil {
			t.Error("kforge0 left behind")
		}
	})

	start := time.Now()
	_, stderr, err := kforge(t, bin, nil, "lab", "up", "--dir", dir)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up took %s", time.Since(start))
	st := readState(t, dir)
	defer func() {
		// Whatever happened above, leave nothing running.
		if _, err := os.Stat(filepath.Join(dir, "lab.json")); err == nil {
			kforge(t, bin, nil, "lab", "down", "--dir", dir)
		}
	}()
	if !strings.Contains(stderr, "Lab up:") {
		t.Errorf("lab up did not print its time")
	}
	if len(st.Hosts) != 7 {
		t.Fatalf("want 7 hosts, got %d", len(st.Hosts))
	}

	t.Run("second up refused", func(t *testing.T) {
		_, stderr, err := kforge(t, bin, nil, "lab", "up", "--dir", dir)
		if err == nil || !strings.Contains(stderr, "already running") {
			t.Errorf("second up on the same DIR: err=%v", err)
		}
		_, stderr, err = kforge(t, bin, nil, "lab", "up", "--dir", filepath.Join(work, "lab2"))
		if err == nil || !strings.Contains(stderr, "belongs to another kforge lab") {
			t.Errorf("second lab on the same bridge: err=%v", err)
		}
		if _, err := os.Stat(filepath.Join(work, "lab2")); err == nil {
			t.Error("the refused up left its DIR behind")
		}
	})

	t.Run("cluster.yaml", func(t *testing.T) {
		out, _, err := kforge(t, bin, nil, "validate", "-f", filepath.Join(dir, "cluster.yaml"))
		if err != nil || !strings.Contains(out, "3 masters, 3 workers") {
			t.Errorf("validate: %v %q", err, out)
		}
	})

	known := filepath.Join(dir, "ssh", "known_hosts")
	t.Run("ssh strict into every host", func(t *testing.T) {
		cfg := sshConfig(t, dir, "root", known)
		for _, h := range st.Hosts {
			c, err := ssh.Dial("tcp", net.JoinHostPort(h.Address, "22"), cfg)
			if err != nil {
				t.Errorf("%s: %v", h.Name, err)
				continue
			}
			out, err := sshRun(t, c, "hostname; systemctl is-system-running; cat /etc/machine-id", "")
			c.Close()
			lines := strings.Fields(out)
			if len(lines) < 2 || lines[0] != h.Name || (lines[1] != "running" && lines[1] != "degraded") {
				t.Errorf("%s: hostname/systemd = %q (%v)", h.Name, out, err)
			}
		}
	})

	t.Run("wrong host key refused", func(t *testing.T) {
		// A known_hosts that maps m1's address to w1's key.
		var m1, w1 string
		for _, h := range st.Hosts {
			switch h.Name {
			case "m1":
				m1 = h.Address
			case "w1":
				w1 = h.Address
			}
		}
		data, _ := os.ReadFile(known)
		var w1Key string
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == w1 {
				w1Key = f[1] + " " + f[2]
			}
		}
		bad := filepath.Join(work, "bad_known_hosts")
		if err := os.WriteFile(bad, []byte(m1+" "+w1Key+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ssh.Dial("tcp", net.JoinHostPort(m1, "22"), sshConfig(t, dir, "root", bad))
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) || len(ke.Want) == 0 {
			t.Errorf("dial with a wrong host key: %v; want a knownhosts key mismatch", err)
		}
	})

	t.Run("busybox container on a worker", func(t *testing.T) {
		out, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "w1", "--",
			"ctr", "-n", "k8s.io", "run", "--rm", "--cpu-shares", "0", "docker.io/library/busybox:local", "t1", "echo", "hello-from-busybox")
		if err != nil || !strings.Contains(out, "hello-from-busybox") {
			t.Errorf("ctr run: %v, output %q", err, out)
		}
		out, _, err = kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "w3", "ctr", "-n", "k8s.io", "images", "ls", "-q")
		if err != nil || !strings.Contains(out, "docker.io/library/busybox:local") {
			t.Errorf("image not on w3: %v %q", err, out)
		}
	})

	t.Run("sudo needs the password", func(t *testing.T) {
		pw, err := os.ReadFile(filepath.Join(dir, "ssh", "sudo-password"))
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(filepath.Join(dir, "ssh", "sudo-password")); st.Mode().Perm() != 0o600 {
			t.Errorf("sudo-password mode %v", st.Mode().Perm())
		}
		cfg := sshConfig(t, dir, "kforge", known)
		c, err := ssh.Dial("tcp", net.JoinHostPort(st.Hosts[1].Address, "22"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if out, err := sshRun(t, c, "id -un; sudo -n true", ""); err == nil || !strings.HasPrefix(out, "kforge") {
			t.Errorf("sudo without a password worked (or wrong user): %q", out)
		}
		if out, err := sshRun(t, c, "sudo -S -p '' true", "wrong-password\n"); err == nil {
			t.Errorf("sudo with a wrong password worked: %q", out)
		}
		out, err := sshRun(t, c, "sudo -S -p '' id -u", string(pw))
		if err != nil || strings.TrimSpace(out) != "0" {
			t.Errorf("sudo with the password: %v %q", err, out)
		}
	})

	t.Run("status", func(t *testing.T) {
		out, _, err := kforge(t, bin, nil, "lab", "status", "--dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range st.Hosts {
			if !strings.Contains(out, h.Name) || !strings.Contains(out, h.Address) {
				t.Errorf("status lacks %s", h.Name)
			}
		}
		if strings.Contains(out, "stopped") || strings.Contains(out, "unreachable") {
			t.Errorf("status shows a host down:\n%s", out)
		}
	})

	t.Run("down leaves nothing", func(t *testing.T) {
		if _, _, err := kforge(t, bin, nil, "lab", "down", "--dir", dir); err != nil {
			t.Fatal(err)
		}
		if left := labResources(t, dir, st); len(left) > 0 {
			t.Errorf("left after down: %v", left)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s still exists", dir)
		}
		if _, _, err := kforge(t, bin, nil, "lab", "down", "--dir", dir); err != nil {
			t.Errorf("second down: %v", err)
		}
	})

	t.Run("down after a crashed up", func(t *testing.T) {
		crashed := filepath.Join(work, "crashed")
		cmd := exec.Command(bin, "lab", "up", "--dir", crashed, "--masters", "1", "--workers", "1")
		errOut := &syncBuffer{}
		cmd.Stderr = errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it once the hosts are starting, mid-boot.
		deadline := time.Now().Add(2 * time.Minute)
		for !strings.Contains(errOut.String(), "Waiting for sshd") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Logf("crashed up:\n%s", errOut.String())
		cst := readState(t, crashed)
		if _, _, err := kforge(t, bin, nil, "lab", "up", "--dir", crashed); err == nil {
			t.Error("up over a crashed lab was not refused")
		}
		if _, _, err := kforge(t, bin, nil, "lab", "down", "--dir", crashed); err != nil {
			t.Fatal(err)
		}
		if left := labResources(t, crashed, cst); len(left) > 0 {
			t.Errorf("left after down: %v", left)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

package installer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"kforge.dev/kforge/installer/ssh"
)

// fakeHost answers commands from a table and records every write.
type fakeHost struct {
	name, role string
	// respond returns the output for a read command.
	respond func(cmd string) (string, error)
	files   map[string]ssh.RemoteFile
	delay   time.Duration

	mu      sync.Mutex
	writes  []string
	reads   []string
	uploads []string

	active, maxActive *atomic.Int32 // shared across hosts, for the parallelism bound
}

var _ Host = (*fakeHost)(nil)

func (h *fakeHost) Name() string                  { return h.name }
func (h *fakeHost) Role() string                  { return h.role }
func (h *fakeHost) Address() string               { return "198.18.0.99" }
func (h *fakeHost) Connect(context.Context) error { return nil }
func (h *fakeHost) Close() error                  { return nil }

func (h *fakeHost) enter(ctx context.Context) error {
	if h.active != nil {
		n := h.active.Add(1)
		for {
			m := h.maxActive.Load()
			if n <= m || h.maxActive.CompareAndSwap(m, n) {
				break
			}
		}
	}
	select {
	case <-time.After(h.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *fakeHost) leave() {
	if h.active != nil {
		h.active.Add(-1)
	}
}

func (h *fakeHost) Run(ctx context.Context, cmd string) (string, error) {
	defer h.leave()
	if err := h.enter(ctx); err != nil {
		return "", err
	}
	h.mu.Lock()
	h.reads = append(h.reads, cmd)
	h.mu.Unlock()
	if h.respond == nil {
		return "", nil
	}
	return h.respond(cmd)
}

func (h *fakeHost) Stat(_ context.Context, p string) (ssh.RemoteFile, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.files[p], nil
}

func (h *fakeHost) Write(_ context.Context, cmd string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writes = append(h.writes, cmd)
	return "", nil
}

func (h *fakeHost) Upload(_ context.Context, u ssh.Upload) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.files[u.Remote]
	if cur.Exists && cur.SHA256 == u.File.SHA256 && cur.Mode == u.Mode.Perm() && cur.Owner == u.Owner {
		return false, nil
	}
	if h.files == nil {
		h.files = map[string]ssh.RemoteFile{}
	}
	h.files[u.Remote] = ssh.RemoteFile{Exists: true, SHA256: u.File.SHA256, Mode: u.Mode.Perm(), Owner: u.Owner}
	h.uploads = append(h.uploads, u.Remote)
	return true, nil
}

func (h *fakeHost) changes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.writes) + len(h.uploads)
}

// lab-like answers for the facts and probe scripts.
func labResponder(role string, kforgeSHA string) func(string) (string, error) {
	return func(cmd string) (string, error) {
		switch {
		case strings.HasPrefix(cmd, ". /etc/os-release"):
			out := "os=debian\nos_version=12\nmachine=x86_64\nkernel=6.1.0\nhostname=h\npid1=systemd\nsystemd_booted=1\n" +
				"cgroupfs=cgroup2fs\ncgroup_controllers=cpuset cpu io memory pids\n" +
				"disk_free_kb /usr/local/bin 10485760\ndisk_free_kb /var/lib 10485760\n"
			if kforgeSHA != "" {
				out += "kforge_sha256=" + kforgeSHA + "\n"
			}
			return out, nil
		case strings.HasPrefix(cmd, "date "):
			return strings.TrimSpace(itoa(time.Now().UnixNano())) + "\n", nil
		case strings.HasPrefix(cmd, "cat /proc/net/tcp"):
			out := "listen 00000000:0016\n"
			if role == "worker" {
				out += "have containerd /usr/bin/containerd\nhave runc /usr/sbin/runc\ncni /usr/lib/cni bridge host-local loopback portmap\n"
			}
			return out, nil
		}
		return "", errors.New("unexpected command " + cmd)
	}
}

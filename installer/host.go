package installer

import (
	"context"
	"io"
	"io/fs"
	"net"
	"sync"

	"kforge.dev/kforge/installer/ssh"
)

// Host is one machine the installer works on: the SSH implementation
// (SSHHost) and a fake in tests.
//
// Phases read through Run and Stat directly. They never call Write or
// Upload themselves: every change goes through the Gate, which records
// it instead in a dry run.
type Host interface {
	// Name, Role and Address are the host's entry in cluster.yaml.
	Name() string
	Role() string
	Address() string
	// Connect opens the connection every later call reuses. Calling it
	// again after success does nothing.
	Connect(ctx context.Context) error
	// Run runs a shell command that changes nothing, as root, and returns
	// its stdout. A non-zero exit is an error naming the host, the
	// command, the exit code and the tail of stderr.
	Run(ctx context.Context, cmd string) (string, error)
	// Stat describes a remote file (sha256, mode, owner) without changing it.
	Stat(ctx context.Context, path string) (ssh.RemoteFile, error)
	// Write runs a shell command that changes the host, as root. Only the
	// Gate calls it.
	Write(ctx context.Context, cmd string) (string, error)
	// Upload places a file atomically with its mode and owner; it reports
	// false and does nothing when the remote file already matches. Only
	// the Gate calls it.
	Upload(ctx context.Context, u ssh.Upload) (changed bool, err error)
	// Close ends the connection.
	Close() error
}

// SSHHost is a Host reached through installer/ssh.
type SSHHost struct {
	name, role, address string
	cfg                 ssh.Config
	client              *ssh.Client
}

var _ Host = (*SSHHost)(nil)

// NewSSHHost returns a Host that connects with cfg on Connect.
func NewSSHHost(name, role, address string, cfg ssh.Config) *SSHHost {
	return &SSHHost{name: name, role: role, address: address, cfg: cfg}
}

func (h *SSHHost) Name() string    { return h.name }
func (h *SSHHost) Role() string    { return h.role }
func (h *SSHHost) Address() string { return h.address }

// Connect dials the host once.
func (h *SSHHost) Connect(ctx context.Context) error {
	if h.client != nil {
		return nil
	}
	c, err := ssh.Dial(ctx, h.cfg)
	if err != nil {
		return err
	}
	h.client = c
	return nil
}

func (h *SSHHost) conn() (*ssh.Client, error) {
	if h.client == nil {
		return nil, &notConnectedError{host: h.name}
	}
	return h.client, nil
}

func (h *SSHHost) Run(ctx context.Context, cmd string) (string, error) {
	c, err := h.conn()
	if err != nil {
		return "", err
	}
	out, err := c.Run(ctx, cmd, ssh.RunOptions{Sudo: true})
	return string(out), err
}

func (h *SSHHost) Write(ctx context.Context, cmd string) (string, error) { return h.Run(ctx, cmd) }

func (h *SSHHost) Stat(ctx context.Context, p string) (ssh.RemoteFile, error) {
	c, err := h.conn()
	if err != nil {
		return ssh.RemoteFile{}, err
	}
	return c.Stat(ctx, p)
}

func (h *SSHHost) Upload(ctx context.Context, u ssh.Upload) (bool, error) {
	c, err := h.conn()
	if err != nil {
		return false, err
	}
	return c.Upload(ctx, u)
}

// Stream runs cmd as root with its stdout and stderr going to the writers
// as they flow, until it ends or ctx does; a non-zero exit is an error
// naming the host, the command and the tail of stderr.
func (h *SSHHost) Stream(ctx context.Context, cmd string, stdout, stderr io.Writer) error {
	c, err := h.conn()
	if err != nil {
		return err
	}
	tail := &tailBuffer{max: 2048}
	code, err := c.Stream(ctx, cmd, ssh.StreamOptions{Stdout: stdout, Stderr: io.MultiWriter(stderr, tail), Sudo: true})
	if err != nil {
		return err
	}
	if code != 0 {
		return &ssh.CommandError{Host: h.name, Command: cmd, ExitCode: code, Stderr: tail.String()}
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// DialContext connects to addr from the host, through its SSH connection.
func (h *SSHHost) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := h.conn()
	if err != nil {
		return nil, err
	}
	return c.DialContext(ctx, network, addr)
}

func (h *SSHHost) Close() error {
	if h.client == nil {
		return nil
	}
	return h.client.Close()
}

type notConnectedError struct{ host string }

func (e *notConnectedError) Error() string { return "host " + e.host + ": not connected" }

// modeString formats a file mode the way chmod takes it.
func modeString(m fs.FileMode) string {
	const digits = "01234567"
	p := m.Perm()
	return string([]byte{'0', digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

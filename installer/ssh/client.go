package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Defaults for Config fields left zero.
const (
	DefaultPort              = 22
	DefaultDialTimeout       = 10 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultConnectAttempts   = 4
	DefaultConnectBackoff    = 250 * time.Millisecond
	// keepAliveMisses unanswered keep-alives close the connection.
	keepAliveMisses = 3
)

// Config says how to reach and log in to one host.
type Config struct {
	// Name names the host in errors and logs.
	Name    string
	Address string
	Port    int
	User    string
	// IdentityFile is a private key; empty means the ssh-agent at SSH_AUTH_SOCK.
	IdentityFile string
	// HostKeys checks the host's key (and the bastion's). Required.
	HostKeys *HostKeys
	// Bastion is an optional jump host, "[user@]host[:port]"; user and
	// port default to User and 22. It is logged in to with the same
	// identity and checked against the same HostKeys.
	Bastion string
	// SudoPassword returns the sudo password of a non-root User whose sudo
	// asks for one. Called at most once per Client, and only then.
	SudoPassword func(ctx context.Context) (string, error)

	DialTimeout       time.Duration
	KeepAliveInterval time.Duration
	// ConnectAttempts and ConnectBackoff retry the connect (never a
	// command): the backoff doubles after each failed attempt. Host key
	// and authentication failures are not retried.
	ConnectAttempts int
	ConnectBackoff  time.Duration

	Log *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.User == "" {
		c.User = "root"
	}
	if c.Name == "" {
		c.Name = c.Address
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if c.ConnectAttempts == 0 {
		c.ConnectAttempts = DefaultConnectAttempts
	}
	if c.ConnectBackoff == 0 {
		c.ConnectBackoff = DefaultConnectBackoff
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Addr is host:port of the host.
func (c *Config) Addr() string { return net.JoinHostPort(c.Address, strconv.Itoa(c.Port)) }

// Client is one SSH connection to a host, shared by every command and
// upload. Safe for concurrent use.
type Client struct {
	cfg     Config
	conn    *gossh.Client
	bastion *gossh.Client // owned; nil without a bastion
	agent   io.Closer

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup // keep-alive goroutine

	sftpMu sync.Mutex
	sftp   *sftp.Client

	sudoMu       sync.Mutex
	sudoChecked  bool
	sudoPassword string // empty when sudo needs none
}

// Dial connects and logs in, retrying with backoff on failures that may
// pass (network errors, a host still booting); ctx bounds every attempt.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg.setDefaults()
	if cfg.HostKeys == nil {
		return nil, fmt.Errorf("host %s: no known_hosts configured; kforge never connects without checking host keys", cfg.Name)
	}
	auth, agentConn, err := authMethods(cfg.IdentityFile)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", cfg.Name, err)
	}
	c := &Client{cfg: cfg, agent: agentConn, done: make(chan struct{})}
	backoff := cfg.ConnectBackoff
	for attempt := 1; ; attempt++ {
		err = c.connect(ctx, auth)
		if err == nil {
			break
		}
		if attempt >= cfg.ConnectAttempts || !retryable(err) || ctx.Err() != nil {
			if agentConn != nil {
				agentConn.Close()
			}
			if ctx.Err() != nil && !IsHostKeyError(err) {
				err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return nil, fmt.Errorf("host %s: connecting to %s as %s: %w", cfg.Name, cfg.Addr(), cfg.User, err)
		}
		cfg.Log.Info("connect failed, retrying", "host", cfg.Name, "attempt", attempt, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	c.wg.Add(1)
	go c.keepAlive()
	return c, nil
}

// retryable reports whether a connect error may pass on its own.
func retryable(err error) bool {
	if IsHostKeyError(err) {
		return false
	}
	s := err.Error()
	return !strings.Contains(s, "unable to authenticate") && !strings.Contains(s, "no supported methods remain")
}

func authMethods(identityFile string) ([]gossh.AuthMethod, io.Closer, error) {
	if identityFile != "" {
		pem, err := os.ReadFile(identityFile)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the identity file: %w", err)
		}
		signer, err := gossh.ParsePrivateKey(pem)
		if err != nil {
			var pp *gossh.PassphraseMissingError
			if errors.As(err, &pp) {
				return nil, nil, fmt.Errorf("identity file %s is protected by a passphrase: load it into ssh-agent and leave spec.ssh.identityFile empty", identityFile)
			}
			return nil, nil, fmt.Errorf("identity file %s: %w", identityFile, err)
		}
		return []gossh.AuthMethod{gossh.PublicKeys(signer)}, nil, nil
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, nil, errors.New("no identity file (spec.ssh.identityFile) and no ssh-agent (SSH_AUTH_SOCK is empty)")
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh-agent at SSH_AUTH_SOCK: %w", err)
	}
	return []gossh.AuthMethod{gossh.PublicKeysCallback(agent.NewClient(conn).Signers)}, conn, nil
}

func (c *Client) clientConfig(user, addr string, auth []gossh.AuthMethod) (*gossh.ClientConfig, error) {
	algos, err := c.cfg.HostKeys.algorithms(addr)
	if err != nil {
		return nil, err
	}
	return &gossh.ClientConfig{
		User:              user,
		Auth:              auth,
		HostKeyCallback:   c.cfg.HostKeys.Callback(addr),
		HostKeyAlgorithms: algos,
		Timeout:           c.cfg.DialTimeout,
	}, nil
}

// connect makes one attempt: TCP (directly or through the bastion), then
// the SSH handshake, both bounded by the dial timeout and ctx.
func (c *Client) connect(ctx context.Context, auth []gossh.AuthMethod) error {
	addr := c.cfg.Addr()
	var raw net.Conn
	if c.cfg.Bastion != "" {
		if c.bastion == nil {
			user, baddr := parseBastion(c.cfg.Bastion, c.cfg.User)
			bcfg, err := c.clientConfig(user, baddr, auth)
			if err != nil {
				return err
			}
			conn, err := c.handshake(ctx, nil, baddr, bcfg)
			if err != nil {
				return fmt.Errorf("bastion %s: %w", baddr, err)
			}
			c.bastion = conn
		}
		dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		defer cancel()
		conn, err := c.bastion.DialContext(dctx, "tcp", addr)
		if err != nil {
			// The bastion connection may be the broken part: start over next time.
			c.bastion.Close()
			c.bastion = nil
			return fmt.Errorf("through bastion %s: %w", c.cfg.Bastion, err)
		}
		raw = conn
	}
	cfg, err := c.clientConfig(c.cfg.User, addr, auth)
	if err != nil {
		return err
	}
	conn, err := c.handshake(ctx, raw, addr, cfg)
	if err != nil {
		return err
	}
	c.conn = conn
	return nil
}

func (c *Client) handshake(ctx context.Context, raw net.Conn, addr string, cfg *gossh.ClientConfig) (*gossh.Client, error) {
	if raw == nil {
		d := net.Dialer{Timeout: c.cfg.DialTimeout, KeepAlive: c.cfg.KeepAliveInterval}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		raw = conn
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	_ = raw.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	sc, chans, reqs, err := gossh.NewClientConn(raw, addr, cfg)
	if err != nil {
		raw.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return gossh.NewClient(sc, chans, reqs), nil
}

func parseBastion(s, defUser string) (user, addr string) {
	user = defUser
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		user, s = s[:i], s[i+1:]
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		s = net.JoinHostPort(strings.Trim(s, "[]"), strconv.Itoa(DefaultPort))
	}
	return user, s
}

// keepAlive sends a keep-alive request every interval and closes the
// connection after keepAliveMisses failures in a row, so a dead host
// fails the next command instead of hanging it.
func (c *Client) keepAlive() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.KeepAliveInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		var err error
		select {
		case <-c.done:
			return
		case err = <-reply:
		case <-time.After(c.cfg.KeepAliveInterval):
			err = errors.New("keep-alive timed out")
		}
		if err == nil {
			misses = 0
			continue
		}
		misses++
		c.cfg.Log.Warn("keep-alive failed", "host", c.cfg.Name, "misses", misses, "err", err)
		if misses >= keepAliveMisses {
			c.conn.Close()
			return
		}
	}
}

// Name is the host's name.
func (c *Client) Name() string { return c.cfg.Name }

// DialContext opens a TCP connection from the host to addr, carried by the
// SSH connection (a direct-tcpip channel): how this machine reaches what
// listens on a host it sees only through a bastion.
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := c.conn.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: dialing %s through SSH: %w", c.cfg.Name, addr, err)
	}
	return conn, nil
}

// User is the login user.
func (c *Client) User() string { return c.cfg.User }

// Close closes the SFTP client, the connection and the bastion connection,
// and waits for the keep-alive goroutine.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.done)
		c.sftpMu.Lock()
		if c.sftp != nil {
			c.sftp.Close()
		}
		c.sftpMu.Unlock()
		err = c.conn.Close()
		if c.bastion != nil {
			c.bastion.Close()
		}
		if c.agent != nil {
			c.agent.Close()
		}
		c.wg.Wait()
	})
	return err
}

// RunOptions modify one command.
type RunOptions struct {
	// Sudo runs the command as root: through sudo when the login user is
	// not root.
	Sudo bool
	// Stdin feeds the command's standard input.
	Stdin io.Reader
}

// Run runs a shell command in its own session and returns its stdout. A
// failure is a *CommandError. Cancelling ctx kills the command.
func (c *Client) Run(ctx context.Context, cmd string, opts RunOptions) ([]byte, error) {
	remote, stdin := cmd, opts.Stdin
	password := ""
	if opts.Sudo && c.cfg.User != "root" {
		pw, err := c.sudo(ctx)
		if err != nil {
			return nil, err
		}
		password = pw
		remote, stdin = sudoCommand(cmd, pw, stdin)
	}
	stdout, stderr, code, err := c.exec(ctx, remote, stdin)
	if err != nil || code != 0 {
		return stdout, &CommandError{
			Host: c.cfg.Name, Command: cmd, ExitCode: code,
			Stderr: tail(redact(string(stderr), password), stderrTailBytes), Err: err,
		}
	}
	return stdout, nil
}

// sudoCommand wraps cmd for sudo. With a password it is fed on stdin
// (-S, empty prompt) ahead of the command's own input; -k ignores cached
// credentials so sudo always reads it and never passes it on to cmd.
func sudoCommand(cmd, password string, stdin io.Reader) (string, io.Reader) {
	if password == "" {
		return "sudo -n -- sh -c " + ShellQuote(cmd), stdin
	}
	in := io.Reader(strings.NewReader(password + "\n"))
	if stdin != nil {
		in = io.MultiReader(in, stdin)
	}
	return "sudo -k -S -p '' -- sh -c " + ShellQuote(cmd), in
}

// sudo finds out once whether sudo needs a password for this user, gets it
// and checks it. Returns the password, or "" when none is needed.
func (c *Client) sudo(ctx context.Context) (string, error) {
	c.sudoMu.Lock()
	defer c.sudoMu.Unlock()
	if c.sudoChecked {
		return c.sudoPassword, nil
	}
	// -k: cached credentials do not count, only NOPASSWD does.
	_, _, code, err := c.exec(ctx, "sudo -k -n true", nil)
	if err != nil {
		return "", &CommandError{Host: c.cfg.Name, Command: "sudo -k -n true", ExitCode: -1, Err: err}
	}
	if code == 0 {
		c.sudoChecked = true
		return "", nil
	}
	if c.cfg.SudoPassword == nil {
		return "", fmt.Errorf("host %s: user %s needs a password for sudo and none is configured (set spec.ssh.sudoPasswordEnv)", c.cfg.Name, c.cfg.User)
	}
	pw, err := c.cfg.SudoPassword(ctx)
	if err != nil {
		return "", fmt.Errorf("host %s: sudo password for %s: %w", c.cfg.Name, c.cfg.User, err)
	}
	if pw == "" {
		return "", fmt.Errorf("host %s: user %s needs a password for sudo and the one given is empty", c.cfg.Name, c.cfg.User)
	}
	remote, in := sudoCommand("true", pw, nil)
	_, stderr, code, err := c.exec(ctx, remote, in)
	if err != nil || code != 0 {
		return "", &CommandError{Host: c.cfg.Name, Command: "sudo true (checking the sudo password)", ExitCode: code,
			Stderr: tail(redact(string(stderr), pw), stderrTailBytes), Err: errors.New("sudo refused the password")}
	}
	c.sudoChecked, c.sudoPassword = true, pw
	return pw, nil
}

// exec runs one command in a new session. code is the exit status, or -1
// with err when there is none.
func (c *Client) exec(ctx context.Context, cmd string, stdin io.Reader) (stdout, stderr []byte, code int, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, -1, err
	}
	s, err := c.conn.NewSession()
	if err != nil {
		return nil, nil, -1, fmt.Errorf("opening a session: %w", err)
	}
	defer s.Close()
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &lockedBuffer{b: &errOut}, stdin
	if err := s.Start(cmd); err != nil {
		return nil, nil, -1, fmt.Errorf("starting: %w", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = s.Signal(gossh.SIGKILL)
		s.Close()
		// A server that ignores the signal may keep the session open; do
		// not wait for it for long (Close of the Client ends it anyway).
		select {
		case <-waited:
		case <-time.After(time.Second):
		}
		return out.Bytes(), errOut.Bytes(), -1, ctx.Err()
	}
	var ee *gossh.ExitError
	switch {
	case err == nil:
		return out.Bytes(), errOut.Bytes(), 0, nil
	case errors.As(err, &ee) && ee.Signal() == "":
		return out.Bytes(), errOut.Bytes(), ee.ExitStatus(), nil
	default:
		return out.Bytes(), errOut.Bytes(), -1, err
	}
}

// lockedBuffer is only written by the session's copy goroutine and read
// after Wait; the lock keeps the race detector's view simple.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

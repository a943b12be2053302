package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ClientConfig is the SSH client configuration for a lab in dir: the lab
// key, and strict host key checking against DIR/ssh/known_hosts (an
// unknown or changed host key is refused). Only ed25519 host keys are
// negotiated, the only kind the hosts have.
func ClientConfig(dir, user string) (*ssh.ClientConfig, error) {
	sd := filepath.Join(dir, sshDirName)
	keyPEM, err := os.ReadFile(filepath.Join(sd, identityName))
	if err != nil {
		return nil, fmt.Errorf("lab SSH key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("lab SSH key: %w", err)
	}
	hostKeys, err := knownhosts.New(filepath.Join(sd, knownHostsName))
	if err != nil {
		return nil, fmt.Errorf("lab known_hosts: %w", err)
	}
	if user == "" {
		user = "root"
	}
	return &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   hostKeys,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           5 * time.Second,
	}, nil
}

// dialSSH connects and authenticates, giving up when ctx ends.
func dialSSH(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(cfg.Timeout))
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// runSSH runs one command in a new session and returns its stdout; a
// non-zero exit is an error that carries the command and its output.
func runSSH(ctx context.Context, c *ssh.Client, cmd string, stdin io.Reader) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errOut, stdin
	if err := s.Run(cmd); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return out.String(), fmt.Errorf("%q: %w: %s", cmd, err, strings.TrimSpace(errOut.String()+" "+out.String()))
	}
	return out.String(), nil
}

// exitCode extracts the remote exit status from a session error.
func exitCode(err error) (int, bool) {
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), true
	}
	return 0, false
}

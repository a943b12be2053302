package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// SSHOptions configure SSH.
type SSHOptions struct {
	Options
	Host string
	// User is root unless set (SudoUser logs in as the non-root user).
	User string
	// Command runs instead of a login shell; its words are joined by
	// spaces, as ssh(1) does.
	Command []string
	In      io.Reader
}

// SSH runs a command or an interactive shell on a lab host with the lab's
// key and strict host key checking, and returns the remote exit status.
// A shell gets a PTY when In is a terminal.
func SSH(ctx context.Context, o SSHOptions) (int, error) {
	if err := o.defaults(); err != nil {
		return 0, err
	}
	st, err := loadState(o.Dir)
	if err != nil {
		return 0, err
	}
	if st == nil {
		return 0, fmt.Errorf("no lab in %s; start one with `kforge lab up --dir %s`", o.Dir, o.Dir)
	}
	h := st.host(o.Host)
	if h == nil {
		var names []string
		for _, x := range st.Hosts {
			names = append(names, x.Name)
		}
		return 0, fmt.Errorf("no host %q in the lab (hosts: %s)", o.Host, strings.Join(names, ", "))
	}
	cfg, err := ClientConfig(o.Dir, o.User)
	if err != nil {
		return 0, err
	}
	c, err := dialSSH(ctx, net.JoinHostPort(h.Address.String(), "22"), cfg)
	if err != nil {
		return 0, fmt.Errorf("ssh %s@%s (%s): %w", cfg.User, h.Name, h.Address, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return 0, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	s.Stdout, s.Stderr = o.Out, o.ErrOut

	in := o.In
	if in == nil {
		in = os.Stdin
	}
	f, isFile := in.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	if tty && len(o.Command) == 0 {
		w, hgt, err := term.GetSize(int(f.Fd()))
		if err != nil {
			w, hgt = 80, 24
		}
		t := os.Getenv("TERM")
		if t == "" {
			t = "xterm"
		}
		if err := s.RequestPty(t, hgt, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			return 0, fmt.Errorf("requesting a terminal: %w", err)
		}
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return 0, err
		}
		defer term.Restore(int(f.Fd()), old) //nolint:errcheck // best effort on exit
	}
	s.Stdin = in
	if len(o.Command) == 0 {
		err = s.Shell()
		if err == nil {
			err = s.Wait()
		}
	} else {
		err = s.Run(strings.Join(o.Command, " "))
	}
	if err == nil {
		return 0, nil
	}
	if code, ok := exitCode(err); ok {
		return code, nil
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return 0, err
}

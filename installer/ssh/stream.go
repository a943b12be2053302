package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TerminalSize is a terminal's size in characters.
type TerminalSize struct {
	Width, Height int
}

// Terminal asks for a PTY on the host, as ssh(1) does for an interactive
// shell. Putting the local terminal into raw mode is the caller's part.
type Terminal struct {
	// Term is the terminal type ($TERM); "xterm" when empty.
	Term string
	Size TerminalSize
	// Resize, when not nil, carries the local terminal's new sizes; the
	// caller closes it when done (or leaves it, once Stream returned).
	Resize <-chan TerminalSize
}

// StreamOptions connect a remote command or shell to local streams.
type StreamOptions struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Terminal requests a PTY; nil runs without one (stdout and stderr
	// stay apart).
	Terminal *Terminal
	// Sudo runs cmd as root (through sudo when the login user is not
	// root; a password goes ahead of Stdin, as with Run).
	Sudo bool
}

// Stream runs cmd as the login user — or a login shell when cmd is empty
// — with its input and output connected to opts' streams as they flow,
// and returns the remote exit status (128+N for a command killed by
// signal N, as shells report it). A non-zero status is not an error, so
// it can be passed on; err is set only when there is no status: the
// session failed or ctx ended (which kills the command).
//
// It is for people at a terminal and for commands whose output is the
// point; the installer's own commands use Run.
func (c *Client) Stream(ctx context.Context, cmd string, opts StreamOptions) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	stdin := opts.Stdin
	if opts.Sudo && cmd != "" && c.cfg.User != "root" {
		pw, err := c.sudo(ctx)
		if err != nil {
			return -1, err
		}
		cmd, stdin = sudoCommand(cmd, pw, stdin)
	}
	s, err := c.conn.NewSession()
	if err != nil {
		return -1, fmt.Errorf("host %s: opening a session: %w", c.cfg.Name, err)
	}
	defer s.Close()
	s.Stdin, s.Stdout, s.Stderr = stdin, opts.Stdout, opts.Stderr
	if s.Stdout == nil {
		s.Stdout = io.Discard
	}
	if s.Stderr == nil {
		s.Stderr = io.Discard
	}
	if t := opts.Terminal; t != nil {
		term := t.Term
		if term == "" {
			term = "xterm"
		}
		size := t.Size
		if size.Width <= 0 || size.Height <= 0 {
			size = TerminalSize{Width: 80, Height: 24}
		}
		if err := s.RequestPty(term, size.Height, size.Width, gossh.TerminalModes{gossh.ECHO: 1}); err != nil {
			return -1, fmt.Errorf("host %s: requesting a terminal: %w", c.cfg.Name, err)
		}
	}
	if cmd == "" {
		err = s.Shell()
	} else {
		err = s.Start(cmd)
	}
	if err != nil {
		return -1, fmt.Errorf("host %s: starting %s: %w", c.cfg.Name, describe(cmd), err)
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	if t := opts.Terminal; t != nil && t.Resize != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case sz, ok := <-t.Resize:
					if !ok {
						return
					}
					_ = s.WindowChange(sz.Height, sz.Width)
				}
			}
		}()
	}

	waited := make(chan error, 1)
	go func() { waited <- s.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = s.Signal(gossh.SIGKILL)
		s.Close()
		select {
		case <-waited:
		case <-time.After(time.Second):
		}
		return -1, ctx.Err()
	}
	var ee *gossh.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitStatus(), nil
	default:
		return -1, fmt.Errorf("host %s: %s: %w", c.cfg.Name, describe(cmd), err)
	}
}

func describe(cmd string) string {
	if cmd == "" {
		return "the login shell"
	}
	return fmt.Sprintf("command %q", cmd)
}

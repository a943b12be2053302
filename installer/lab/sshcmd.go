package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"kforge.dev/kforge/installer/ssh"
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

// SSH runs a command or an interactive shell on a lab host through
// installer/ssh, with the lab's key and strict host key checking, and
// returns the remote exit status. A shell gets a PTY when In is a
// terminal, which is put into raw mode meanwhile and whose size changes
// are passed on.
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
	c, err := ssh.Dial(ctx, sshConfig(o.Dir, h.HostSpec, o.User, hostKeys(o.Dir), o.Log))
	if err != nil {
		return 0, err
	}
	defer c.Close()

	in := o.In
	if in == nil {
		in = os.Stdin
	}
	so := ssh.StreamOptions{Stdin: in, Stdout: o.Out, Stderr: o.ErrOut}
	if f, ok := in.(*os.File); ok && len(o.Command) == 0 && term.IsTerminal(int(f.Fd())) {
		t, restore, err := localTerminal(f)
		if err != nil {
			return 0, err
		}
		defer restore()
		so.Terminal = t
	}
	code, err := c.Stream(ctx, strings.Join(o.Command, " "), so)
	if err != nil {
		return 0, err
	}
	return code, nil
}

// localTerminal puts the terminal f into raw mode and describes it for a
// remote PTY, passing on its size changes (SIGWINCH). restore undoes both.
func localTerminal(f *os.File) (*ssh.Terminal, func(), error) {
	fd := int(f.Fd())
	size := func() ssh.TerminalSize {
		w, h, err := term.GetSize(fd)
		if err != nil {
			return ssh.TerminalSize{Width: 80, Height: 24}
		}
		return ssh.TerminalSize{Width: w, Height: h}
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("terminal raw mode: %w", err)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	resize := make(chan ssh.TerminalSize, 1)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-winch:
				select {
				case resize <- size():
				case <-done:
					return
				}
			}
		}
	}()
	restore := func() {
		signal.Stop(winch)
		close(done)
		<-stopped
		_ = term.Restore(fd, old)
	}
	return &ssh.Terminal{Term: os.Getenv("TERM"), Size: size(), Resize: resize}, restore, nil
}

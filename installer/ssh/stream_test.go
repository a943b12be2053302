package ssh

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestStreamCommand(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	var out, errOut bytes.Buffer
	code, err := c.Stream(context.Background(), "cat; echo oops >&2; exit 3", StreamOptions{
		Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &errOut,
	})
	if err != nil || code != 3 {
		t.Fatalf("Stream = %d, %v; want 3, nil", code, err)
	}
	if out.String() != "hello\n" || errOut.String() != "oops\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
	}
	if p := e.srv.ptyRequests(); len(p) != 0 {
		t.Errorf("a PTY was requested without Terminal: %v", p)
	}
}

func TestStreamSignalledCommand(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	code, err := c.Stream(context.Background(), "kill -TERM $$", StreamOptions{})
	if err != nil || code != 128+15 {
		t.Fatalf("Stream = %d, %v; want 143, nil", code, err)
	}
}

func TestStreamShellWithTerminal(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	in, inW := io.Pipe()
	resize := make(chan TerminalSize)
	var out bytes.Buffer
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, err := c.Stream(context.Background(), "", StreamOptions{
			Stdin: in, Stdout: &out,
			Terminal: &Terminal{Term: "vt100", Size: TerminalSize{Width: 100, Height: 30}, Resize: resize},
		})
		res <- result{code, err}
	}()
	resize <- TerminalSize{Width: 120, Height: 40}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.srv.windowChanges()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The test server's shell sends its status once its input ends too.
	if _, err := io.WriteString(inW, "echo from-shell\nexit 4\n"); err != nil {
		t.Fatal(err)
	}
	inW.Close()
	r := <-res
	if r.err != nil || r.code != 4 {
		t.Fatalf("Stream = %d, %v; want 4, nil", r.code, r.err)
	}
	if out.String() != "from-shell\n" {
		t.Errorf("stdout %q", out.String())
	}
	if p := e.srv.ptyRequests(); len(p) != 1 || p[0] != "vt100 100x30" {
		t.Errorf("pty requests %v; want [vt100 100x30]", p)
	}
	if w := e.srv.windowChanges(); len(w) != 1 || w[0] != "120x40" {
		t.Errorf("window changes %v; want [120x40]", w)
	}
}

func TestStreamCancelKills(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	code, err := c.Stream(ctx, "sleep 30", StreamOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
		t.Fatalf("Stream = %d, %v; want -1 and the context's error", code, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %s", d)
	}
}

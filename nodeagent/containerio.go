package nodeagent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"kforge.dev/kforge/nodeagent/podlogs"
)

// Labels recording how a container's stdio was opened, so a restarted
// agent reopens it the same way.
const (
	labelStdin     = "io.kforge.stdin"    // "true" or "once"
	labelTTY       = "io.kforge.tty"      // "true"
	labelLogPath   = "io.kforge.log-path" // the CRI log file
	ioCloseTimeout = 5 * time.Second
)

// containerIO is a container's stdio as the agent holds it: containerd
// hands the task's stdout and stderr to the agent through FIFOs (in
// fifoDir), and the agent writes them to the container's CRI log file and
// to every attached client. A container whose spec has stdin: true gets
// a stdin FIFO too, fed by attached clients; with stdinOnce it is closed
// when the first attached client's input ends, as upstream.
type containerIO struct {
	id        string
	log       *podlogs.Writer
	stdout    *podlogs.StreamWriter
	stderr    *podlogs.StreamWriter
	tty       bool
	stdinOnce bool
	stdinR    *io.PipeReader // nil without stdin
	stdinW    *io.PipeWriter
	tio       cio.IO // the task's IO, set by register

	mu       sync.Mutex
	attached map[*attachment]struct{}
	stdinEnd bool // stdin was closed (stdinOnce)
	done     chan struct{}
}

// attachment is one attached client's output.
type attachment struct{ stdout, stderr io.Writer }

// newContainerIO opens the log file of a container and the pipes of its
// stdio.
func (r *runtime) newContainerIO(id, logPath string, stdin, stdinOnce, tty bool) (*containerIO, error) {
	lw, err := podlogs.NewWriter(logPath, r.logMaxBytes, r.logMaxFiles)
	if err != nil {
		return nil, err
	}
	c := &containerIO{id: id, log: lw, stdout: lw.Stream(podlogs.Stdout), stderr: lw.Stream(podlogs.Stderr),
		tty: tty, stdinOnce: stdinOnce, attached: map[*attachment]struct{}{}, done: make(chan struct{})}
	if stdin {
		c.stdinR, c.stdinW = io.Pipe()
	}
	return c, nil
}

// streams are the cio options that connect a task to c.
func (c *containerIO) streams(fifoDir string) []cio.Opt {
	var in io.Reader
	if c.stdinR != nil {
		in = c.stdinR
	}
	opts := []cio.Opt{cio.WithStreams(in, fanout{c, false}, fanout{c, true}), cio.WithFIFODir(fifoDir)}
	if c.tty {
		opts = append(opts, cio.WithTerminal)
	}
	return opts
}

// fanout is one output stream of a container: the log file, then every
// attached client. A client whose write fails is detached.
type fanout struct {
	c      *containerIO
	stderr bool
}

func (f fanout) Write(p []byte) (int, error) {
	if f.stderr {
		_, _ = f.c.stderr.Write(p)
	} else {
		_, _ = f.c.stdout.Write(p)
	}
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	for a := range f.c.attached {
		w := a.stdout
		if f.stderr {
			w = a.stderr
		}
		if w == nil {
			continue
		}
		if _, err := w.Write(p); err != nil {
			delete(f.c.attached, a)
		}
	}
	return len(p), nil
}

// finish flushes and closes the log once the task's output ended.
func (c *containerIO) finish() {
	_ = c.stdout.Close()
	_ = c.stderr.Close()
	_ = c.log.Close()
	if c.stdinW != nil {
		_ = c.stdinW.Close()
		_ = c.stdinR.Close()
	}
	close(c.done)
}

// register starts copying a task's output (its IO just created or
// reattached) for container id; when the output ends the log is closed
// and, unless the agent is shutting down, the FIFOs removed.
func (r *runtime) register(cid string, c *containerIO, tio cio.IO) {
	c.tio = tio
	r.ioMu.Lock()
	r.ios[cid] = c
	r.ioMu.Unlock()
	r.ioWG.Go(func() {
		tio.Wait()
		c.finish()
		r.ioMu.Lock()
		if r.ios[cid] == c {
			delete(r.ios, cid)
		}
		closing := r.closing
		r.ioMu.Unlock()
		if !closing {
			_ = tio.Close()
		}
	})
}

// containerIOFor returns the IO the agent holds for a container, or nil.
func (r *runtime) containerIOFor(cid string) *containerIO {
	r.ioMu.Lock()
	defer r.ioMu.Unlock()
	return r.ios[cid]
}

// reattach reopens the FIFOs of a running container that the agent holds
// no IO for (it was restarted): output resumes into the same log file.
func (r *runtime) reattach(ctx context.Context, c client.Container, labels map[string]string) {
	if labels[labelLogPath] == "" {
		return
	}
	// One reattach per container at a time: two readers would split its
	// output.
	r.ioMu.Lock()
	if r.closing || r.ios[c.ID()] != nil || r.reattaching[c.ID()] {
		r.ioMu.Unlock()
		return
	}
	r.reattaching[c.ID()] = true
	r.ioMu.Unlock()
	defer func() {
		r.ioMu.Lock()
		delete(r.reattaching, c.ID())
		r.ioMu.Unlock()
	}()
	cio2, err := r.newContainerIO(c.ID(), labels[labelLogPath], labels[labelStdin] != "", labels[labelStdin] == "once", labels[labelTTY] == "true")
	if err != nil {
		r.log.Warn("reopening a container's log", "container", c.ID(), "err", err)
		return
	}
	t, err := c.Task(ctx, cio.NewAttach(cio2.streams(r.fifoDir)...))
	if err != nil || t.IO() == nil {
		_ = cio2.log.Close()
		if err != nil {
			r.log.Warn("reattaching to a container's output", "container", c.ID(), "err", err)
		}
		return
	}
	r.register(c.ID(), cio2, t.IO())
	r.log.Info("reattached to a container's output", "container", c.ID())
}

// closeIO stops copying every container's output without touching the
// containers or their FIFOs (the agent is stopping; a restarted agent
// reattaches) and waits for the copies to end.
func (r *runtime) closeIO() {
	r.ioMu.Lock()
	r.closing = true
	for _, c := range r.ios {
		c.tio.Cancel()
	}
	r.ioMu.Unlock()
	r.ioWG.Wait()
}

// attach connects a client to a running container's stdio until the
// container's output ends, the client's input ends (when it gives one),
// or ctx ends.
func (r *runtime) attach(ctx context.Context, cid string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan termSize) error {
	c := r.containerIOFor(cid)
	if c == nil {
		return errors.New("the container is not running or its output is not held by this agent")
	}
	a := &attachment{stdout: stdout, stderr: stderr}
	if c.tty {
		a.stderr = nil
	}
	c.mu.Lock()
	c.attached[a] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.attached, a)
		c.mu.Unlock()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if resize != nil && c.tty {
		wg.Go(func() { r.resizeLoop(ctx, cid, "", resize) })
	}
	inDone := make(chan struct{})
	if stdin != nil && c.stdinW != nil {
		go func() {
			// Not waited for: it ends when the client's stream closes,
			// which the streaming server does after attach returns.
			defer close(inDone)
			_, _ = io.Copy(c.stdinW, stdin)
			if c.stdinOnce {
				c.mu.Lock()
				first := !c.stdinEnd
				c.stdinEnd = true
				c.mu.Unlock()
				if first {
					_ = c.stdinW.Close()
					r.closeStdin(context.WithoutCancel(ctx), cid, "")
				}
			}
		}()
	} else {
		inDone = nil
	}
	select {
	case <-c.done:
	case <-ctx.Done():
	case <-inDone:
	}
	return nil
}

// closeStdin tells containerd that a process's input ended: the shim
// holds its own end of the stdin FIFO open until asked.
func (r *runtime) closeStdin(ctx context.Context, cid, execID string) {
	ctx, cancel := context.WithTimeout(ctx, ioCloseTimeout)
	defer cancel()
	c, err := r.c.LoadContainer(ctx, cid)
	if err != nil {
		return
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return
	}
	if execID == "" {
		_ = t.CloseIO(ctx, client.WithStdinCloser)
		return
	}
	if p, err := t.LoadProcess(ctx, execID, nil); err == nil {
		_ = p.CloseIO(ctx, client.WithStdinCloser)
	}
}

// termSize is a terminal's size in characters.
type termSize struct{ Width, Height uint16 }

// resizeLoop applies terminal sizes to a container's task (execID empty)
// or an exec'd process until resize closes or ctx ends.
func (r *runtime) resizeLoop(ctx context.Context, cid, execID string, resize <-chan termSize) {
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-resize:
			if !ok {
				return
			}
			if s.Width == 0 || s.Height == 0 {
				continue
			}
			c, err := r.c.LoadContainer(ctx, cid)
			if err != nil {
				continue
			}
			t, err := c.Task(ctx, nil)
			if err != nil {
				continue
			}
			if execID == "" {
				_ = t.Resize(ctx, uint32(s.Width), uint32(s.Height))
			} else if p, err := t.LoadProcess(ctx, execID, nil); err == nil {
				_ = p.Resize(ctx, uint32(s.Width), uint32(s.Height))
			}
		}
	}
}

// logPathFor is a container's CRI log file:
// podLogDir/NS_NAME_UID/CONTAINER/ATTEMPT.log.
func logPathFor(podLogDir, ns, name, uid, container string, attempt int) string {
	return filepath.Join(podLogDir, ns+"_"+name+"_"+uid, container, strconv.Itoa(attempt)+".log")
}

// execExitError is a command that ran and exited non-zero; ExitStatus
// is its code (the streaming server reports it to the client).
type execExitError struct{ code int }

func (e *execExitError) Error() string {
	return "command terminated with exit code " + strconv.Itoa(e.code)
}
func (e *execExitError) String() string  { return e.Error() }
func (e *execExitError) Exited() bool    { return true }
func (e *execExitError) ExitStatus() int { return e.code }

// execStream runs cmd in a running container with the client's streams
// (stdin nil: none) and returns when it exits and its output was copied.
// A client that goes away (ctx ends) kills the process. A non-zero exit
// is an *execExitError.
func (r *runtime) execStream(ctx context.Context, cid string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan termSize) error {
	c, err := r.c.LoadContainer(ctx, cid)
	if err != nil {
		return err
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return err
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = tty
	execID := "exec-" + newContainerID()[:12]
	if err := os.MkdirAll(r.fifoDir, 0o700); err != nil {
		return err
	}
	inDone := make(chan struct{})
	var in io.Reader
	if stdin != nil {
		in = &eofSignal{r: stdin, done: inDone}
	}
	opts := []cio.Opt{cio.WithStreams(in, stdout, stderr), cio.WithFIFODir(r.fifoDir)}
	if tty {
		opts = append(opts, cio.WithTerminal)
	}
	p, err := t.Exec(ctx, execID, &pspec, cio.NewCreator(opts...))
	if err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	defer func() {
		dctx, cancel := context.WithTimeout(bg, ioCloseTimeout)
		defer cancel()
		_, _ = p.Delete(dctx, client.WithProcessKill)
	}()
	exited, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	if stdin != nil {
		wg.Go(func() {
			select {
			case <-inDone:
				cctx, cancel := context.WithTimeout(bg, ioCloseTimeout)
				defer cancel()
				_ = p.CloseIO(cctx, client.WithStdinCloser)
			case <-loopCtx.Done():
			}
		})
	}
	if tty && resize != nil {
		wg.Go(func() { r.resizeLoop(loopCtx, cid, execID, resize) })
	}
	select {
	case st := <-exited:
		code, _, err := st.Result()
		if p.IO() != nil {
			p.IO().Wait()
		}
		if err != nil {
			return err
		}
		if code != 0 {
			return &execExitError{code: int(code)}
		}
		return nil
	case <-ctx.Done():
		kctx, cancel := context.WithTimeout(bg, ioCloseTimeout)
		defer cancel()
		_ = p.Kill(kctx, 9)
		return ctx.Err()
	}
}

// eofSignal closes done when its reader ends.
type eofSignal struct {
	r    io.Reader
	done chan struct{}
	once sync.Once
}

func (e *eofSignal) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(func() { close(e.done) })
	}
	return n, err
}

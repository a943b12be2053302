package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"golang.org/x/sync/singleflight"
)

// Labels on every containerd container the agent makes. They are the
// agent's only record of its containers, so a restarted agent finds
// them again.
const (
	labelPodUID       = "io.kforge.pod.uid"
	labelPodName      = "io.kforge.pod.name"
	labelPodNamespace = "io.kforge.pod.namespace"
	labelContainer    = "io.kforge.container.name"
	labelInit         = "io.kforge.container.init"
	labelAttempt      = "io.kforge.container.attempt"
	labelImageRef     = "io.kforge.image.ref"
	labelImageID      = "io.kforge.image.id"
	labelStartedAt    = "io.kforge.started-at"
	labelFinishedAt   = "io.kforge.finished-at"
	labelExitCode     = "io.kforge.exit-code"
	labelReason       = "io.kforge.reason"
	labelMessage      = "io.kforge.message"
)

// runtime is the agent's side of containerd: images, containers and
// their tasks, all in one containerd namespace.
type runtime struct {
	c           *client.Client
	snapshotter string
	imageDir    string
	registryDir string
	fifoDir     string
	log         *slog.Logger
	// timing, when set, records how long an operation took.
	timing func(op string, start time.Time)

	importMu sync.Mutex
	imported map[string]time.Time // archive path → modification time imported
	pulls    singleflight.Group   // one pull per image at a time

	// Container stdio (containerio.go).
	logMaxBytes int64
	logMaxFiles int
	ioMu        sync.Mutex
	ios         map[string]*containerIO // container ID → its held IO
	reattaching map[string]bool         // containers being reattached
	closing     bool                    // closeIO began: no reattach, FIFOs kept
	ioWG        sync.WaitGroup
}

func newRuntime(cfg *Config, log *slog.Logger) (*runtime, error) {
	c, err := client.New(cfg.Containerd.Socket, client.WithDefaultNamespace(cfg.Containerd.Namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd %s: %w", cfg.Containerd.Socket, err)
	}
	return &runtime{
		c: c, snapshotter: cfg.Containerd.Snapshotter, imageDir: cfg.ImageDir, registryDir: cfg.RegistryConfigDir,
		fifoDir: filepath.Join(cfg.RunDir, "fifo"), log: log, imported: map[string]time.Time{},
		logMaxBytes: cfg.containerLogMaxBytes(), logMaxFiles: cfg.ContainerLogMaxFiles, ios: map[string]*containerIO{},
		reattaching: map[string]bool{},
	}, nil
}

// version is containerd's version, e.g. "1.6.20~ds1".
func (r *runtime) version(ctx context.Context) (string, error) {
	v, err := r.c.Version(ctx)
	if err != nil {
		return "", err
	}
	return v.Version, nil
}

// importArchives imports every *.tar in the image folder not imported
// since it last changed.
func (r *runtime) importArchives(ctx context.Context) error {
	r.importMu.Lock()
	defer r.importMu.Unlock()
	paths, err := filepath.Glob(filepath.Join(r.imageDir, "*.tar"))
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if t, ok := r.imported[p]; ok && t.Equal(fi.ModTime()) {
			continue
		}
		if err := r.importArchive(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		r.imported[p] = fi.ModTime()
	}
	return errors.Join(errs...)
}

func (r *runtime) importArchive(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	imgs, err := r.c.Import(ctx, f)
	if err != nil {
		return fmt.Errorf("importing %s: %w", path, err)
	}
	for _, i := range imgs {
		r.log.Info("imported image", "image", i.Name, "archive", path)
	}
	return nil
}

// listContainers returns the agent's containers, all of them or one
// pod's (podUID set). Stopped tasks are reaped on the way: their exit is
// written to the container's labels and the task deleted, so the record
// survives the shim.
func (r *runtime) listContainers(ctx context.Context, podUID string) ([]*containerRecord, error) {
	filter := `labels."` + labelPodUID + `"`
	if podUID != "" {
		filter += `==` + strconv.Quote(podUID)
	}
	ctrs, err := r.c.Containers(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("containerd: listing containers: %w", err)
	}
	out := make([]*containerRecord, 0, len(ctrs))
	for _, c := range ctrs {
		rec, err := r.record(ctx, c)
		if errdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Attempt < out[j].Attempt })
	return out, nil
}

// containersNamed maps the IDs of the containers of pods called ns/name,
// other than the one with UID keep, to their pod's UID. It reads labels
// only.
func (r *runtime) containersNamed(ctx context.Context, ns, name, keep string) (map[string]string, error) {
	ctrs, err := r.c.Containers(ctx, `labels."`+labelPodNamespace+`"==`+strconv.Quote(ns)+`,labels."`+labelPodName+`"==`+strconv.Quote(name))
	if err != nil {
		return nil, fmt.Errorf("containerd: listing containers: %w", err)
	}
	out := map[string]string{}
	for _, c := range ctrs {
		info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
		if err != nil {
			continue
		}
		if uid := info.Labels[labelPodUID]; uid != keep {
			out[c.ID()] = uid
		}
	}
	return out, nil
}

// record reads one container's labels and task, reaping a stopped task.
func (r *runtime) record(ctx context.Context, c client.Container) (*containerRecord, error) {
	info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return nil, err
	}
	l := info.Labels
	rec := &containerRecord{
		ID: c.ID(), PodUID: l[labelPodUID], PodName: l[labelPodName], PodNamespace: l[labelPodNamespace],
		Name: l[labelContainer], Init: l[labelInit] == "true", Image: l[labelImageRef], ImageID: l[labelImageID],
		CreatedAt: info.CreatedAt, Reason: l[labelReason], Message: l[labelMessage], State: stateCreated,
	}
	rec.Attempt, _ = strconv.Atoi(l[labelAttempt])
	rec.StartedAt = parseTime(l[labelStartedAt])
	if fin := l[labelFinishedAt]; fin != "" {
		rec.State = stateExited
		rec.FinishedAt = parseTime(fin)
		rec.ExitCode, _ = strconv.Atoi(l[labelExitCode])
		return rec, nil
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return rec, nil
	}
	if err != nil {
		return nil, fmt.Errorf("containerd: task of %s: %w", c.ID(), err)
	}
	st, err := t.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("containerd: status of %s: %w", c.ID(), err)
	}
	switch st.Status {
	case client.Running, client.Paused, client.Pausing:
		rec.State = stateRunning
		if rec.StartedAt.IsZero() {
			rec.StartedAt = info.CreatedAt
		}
		r.reattach(ctx, c, l)
		return rec, nil
	case client.Created:
		// Created but never started: the agent stopped between the two.
		// Treat it as a failed start.
		st.ExitStatus, st.ExitTime = 128, time.Now()
		rec.Reason, rec.Message = "StartError", "the task was created but never started"
	}
	rec.State = stateExited
	rec.ExitCode = int(st.ExitStatus)
	rec.FinishedAt = st.ExitTime
	if rec.FinishedAt.IsZero() {
		rec.FinishedAt = time.Now()
	}
	if err := r.markExited(ctx, c, rec); err != nil {
		return nil, err
	}
	if _, err := t.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("containerd: deleting the task of %s: %w", c.ID(), err)
	}
	return rec, nil
}

func (r *runtime) markExited(ctx context.Context, c client.Container, rec *containerRecord) error {
	labels := map[string]string{
		labelFinishedAt: formatTime(rec.FinishedAt),
		labelExitCode:   strconv.Itoa(rec.ExitCode),
	}
	if rec.Reason != "" {
		labels[labelReason] = rec.Reason
	}
	if rec.Message != "" {
		labels[labelMessage] = truncate(rec.Message, 1024)
	}
	if _, err := c.SetLabels(ctx, labels); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("containerd: labelling %s: %w", c.ID(), err)
	}
	return nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// containerSpec is what createAndStart needs beyond the image.
type containerSpec struct {
	id      string
	labels  map[string]string
	specOps []oci.SpecOpts
	logPath string
	// stdin opens the container's stdin to attached clients; stdinOnce
	// closes it when the first client's input ends; tty gives it a
	// terminal.
	stdin, stdinOnce, tty bool
}

// createAndStart creates the container (a fresh snapshot of the image),
// creates its task with its output held by the agent (to the CRI log at
// logPath and attached clients), and starts it. A failure to start leaves
// the container recorded as exited with reason StartError.
func (r *runtime) createAndStart(ctx context.Context, img client.Image, s containerSpec) (*containerRecord, error) {
	if err := os.MkdirAll(filepath.Dir(s.logPath), 0o755); err != nil {
		return nil, fmt.Errorf("log folder: %w", err)
	}
	s.labels[labelLogPath] = s.logPath
	if s.stdin {
		s.labels[labelStdin] = "true"
		if s.stdinOnce {
			s.labels[labelStdin] = "once"
		}
	}
	if s.tty {
		s.labels[labelTTY] = "true"
	}
	cio2, err := r.newContainerIO(s.id, s.logPath, s.stdin, s.stdinOnce, s.tty)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	createStart := time.Now()
	c, err := r.c.NewContainer(ctx, s.id,
		client.WithImage(img),
		client.WithSnapshotter(r.snapshotter),
		client.WithNewSnapshot(s.id, img),
		client.WithContainerLabels(s.labels),
		client.WithNewSpec(s.specOps...),
	)
	if err != nil {
		_ = cio2.log.Close()
		return nil, fmt.Errorf("containerd: creating container: %w", err)
	}
	r.observe(opCreate, createStart)
	if err := os.MkdirAll(r.fifoDir, 0o700); err != nil {
		_ = cio2.log.Close()
		return nil, err
	}
	fail := func(reason string, err error) (*containerRecord, error) {
		now := time.Now()
		rec := &containerRecord{ID: s.id, State: stateExited, ExitCode: 128, Reason: reason, Message: err.Error(),
			StartedAt: now, FinishedAt: now}
		if lerr := r.markExited(ctx, c, rec); lerr != nil {
			return nil, errors.Join(err, lerr)
		}
		return nil, &startError{msg: err.Error()}
	}
	taskStart := time.Now()
	t, err := c.NewTask(ctx, cio.NewCreator(cio2.streams(r.fifoDir)...))
	if err != nil {
		_ = cio2.log.Close()
		return fail("StartError", err)
	}
	r.register(s.id, cio2, t.IO())
	if err := t.Start(ctx); err != nil {
		_, _ = t.Delete(ctx, client.WithProcessKill)
		return fail("StartError", err)
	}
	r.observe(opStart, taskStart)
	if _, err := c.SetLabels(ctx, map[string]string{labelStartedAt: formatTime(time.Now())}); err != nil {
		return nil, fmt.Errorf("containerd: labelling %s: %w", s.id, err)
	}
	return r.record(ctx, c)
}

func (r *runtime) observe(op string, start time.Time) {
	if r.timing != nil {
		r.timing(op, start)
	}
}

// startError is a container the runtime could not start: upstream's
// RunContainerError, with the runtime's message.
type startError struct{ msg string }

func (e *startError) Error() string { return e.msg }

// stop sends SIGTERM to a running container and SIGKILL to all its
// processes after grace; it returns once the task has exited (or was
// not running). The exit is reaped by the next listContainers.
func (r *runtime) stop(ctx context.Context, id string, grace time.Duration) error {
	c, err := r.c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := t.Status(ctx)
	if err != nil {
		return err
	}
	if st.Status == client.Stopped {
		return nil
	}
	exited, err := t.Wait(ctx)
	if err != nil {
		return err
	}
	if grace > 0 {
		if err := t.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("containerd: SIGTERM %s: %w", id, err)
		}
		select {
		case <-exited:
			return nil
		case <-time.After(grace):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := t.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("containerd: SIGKILL %s: %w", id, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("containerd: %s did not exit 10s after SIGKILL", id)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// remove deletes a container (its task first, killed if need be) and its
// snapshot.
func (r *runtime) remove(ctx context.Context, id string) error {
	c, err := r.c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if t, err := c.Task(ctx, nil); err == nil {
		if _, err := t.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("containerd: deleting the task of %s: %w", id, err)
		}
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("containerd: deleting %s: %w", id, err)
	}
	return nil
}

// exec runs cmd in a running container and returns its exit code and
// combined output (cut to 10 KiB), killing it after timeout.
func (r *runtime) exec(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, string, error) {
	c, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		return 0, "", err
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return 0, "", err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return 0, "", err
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = false
	var out limitedBuffer
	execID := "probe-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := os.MkdirAll(r.fifoDir, 0o700); err != nil {
		return 0, "", err
	}
	p, err := t.Exec(ctx, execID, &pspec, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(r.fifoDir)))
	if err != nil {
		return 0, "", err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = p.Delete(dctx, client.WithProcessKill)
	}()
	exited, err := p.Wait(ctx)
	if err != nil {
		return 0, "", err
	}
	if err := p.Start(ctx); err != nil {
		return 0, "", err
	}
	select {
	case st := <-exited:
		code, _, err := st.Result()
		if p.IO() != nil {
			p.IO().Wait()
		}
		return int(code), out.String(), err
	case <-time.After(timeout):
		_ = p.Kill(ctx, syscall.SIGKILL)
		return 0, "", fmt.Errorf("command timed out after %s", timeout)
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
}

// limitedBuffer keeps the first 10 KiB written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 10<<10 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.buf.String())
}

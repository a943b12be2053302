package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// The agent's side of its API (nodeagent/server): the pods of this node
// as the server's Pods interface needs them.
type podsAPI struct{ a *Agent }

var podsResource = schema.GroupResource{Resource: "pods"}

// pod returns a pod of this node from the informer.
func (p podsAPI) pod(ns, name string) (*corev1.Pod, error) {
	pod, err := p.a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && pod.Spec.NodeName != p.a.cfg.NodeName) {
		return nil, apierrors.NewNotFound(podsResource, ns+"/"+name)
	}
	return pod, err
}

// container returns the newest and the previous record of a container of
// a pod (init containers too).
func (p podsAPI) container(ctx context.Context, ns, name, container string) (*corev1.Pod, *containerRecord, *containerRecord, error) {
	pod, err := p.pod(ns, name)
	if err != nil {
		return nil, nil, nil, err
	}
	init := false
	found := false
	for _, c := range pod.Spec.Containers {
		found = found || c.Name == container
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == container && !found {
			found, init = true, true
		}
	}
	if !found {
		return nil, nil, nil, apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", container, name))
	}
	recs, err := p.a.rt.listContainers(ctx, string(pod.UID))
	if err != nil {
		return nil, nil, nil, err
	}
	latest, previous := latestTwo(recs, container, init)
	return pod, latest, previous, nil
}

// running is a container ready for exec or attach.
func (p podsAPI) running(ctx context.Context, ns, name, container string) (*containerRecord, error) {
	_, latest, _, err := p.container(ctx, ns, name, container)
	if err != nil {
		return nil, err
	}
	if latest == nil || latest.State != stateRunning {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("container %s is not running in pod %s/%s", container, ns, name))
	}
	return latest, nil
}

func (p podsAPI) ContainerLog(ctx context.Context, ns, name, container string, previous bool) (string, func() bool, error) {
	pod, latest, prev, err := p.container(ctx, ns, name, container)
	if err != nil {
		return "", nil, err
	}
	rec := latest
	if previous {
		rec = prev
	}
	if rec == nil {
		if previous {
			return "", nil, apierrors.NewBadRequest(fmt.Sprintf("previous terminated container %q in pod %q not found", container, name))
		}
		return "", nil, apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start", container, name))
	}
	path := logPathFor(p.a.cfg.PodLogDir, pod.Namespace, pod.Name, string(pod.UID), container, rec.Attempt)
	id := rec.ID
	live := rec.State == stateRunning
	running := func() bool {
		if !live {
			return false
		}
		// Still running while the agent holds its output.
		return p.a.rt.containerIOFor(id) != nil
	}
	return path, running, nil
}

func toTermSizes(ctx context.Context, in <-chan remotecommand.TerminalSize) (<-chan termSize, func()) {
	if in == nil {
		return nil, func() {}
	}
	out := make(chan termSize)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- termSize{Width: s.Width, Height: s.Height}:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	return out, func() { cancel(); wg.Wait() }
}

func (p podsAPI) Exec(ctx context.Context, ns, name, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	rec, err := p.running(ctx, ns, name, container)
	if err != nil {
		return err
	}
	sizes, stop := toTermSizes(ctx, resize)
	defer stop()
	var o, e io.Writer
	if out != nil {
		o = out
	}
	if errOut != nil {
		e = errOut
	}
	return p.a.rt.execStream(ctx, rec.ID, cmd, in, o, e, tty, sizes)
}

func (p podsAPI) Attach(ctx context.Context, ns, name, container string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	rec, err := p.running(ctx, ns, name, container)
	if err != nil {
		return err
	}
	sizes, stop := toTermSizes(ctx, resize)
	defer stop()
	var o, e io.Writer
	if out != nil {
		o = out
	}
	if errOut != nil {
		e = errOut
	}
	return p.a.rt.attach(ctx, rec.ID, in, o, e, sizes)
}

// PortForward dials 127.0.0.1:port inside the pod's network namespace
// (the node's, with hostNetwork) and copies both ways until either side
// ends.
func (p podsAPI) PortForward(ctx context.Context, ns, name string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	pod, err := p.pod(ns, name)
	if err != nil {
		return err
	}
	sb, err := p.a.loadSandbox(pod.UID)
	if err != nil {
		return fmt.Errorf("pod %s/%s has no sandbox on this node: %w", ns, name, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var conn net.Conn
	dial := func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	}
	if sb.HostNetwork || sb.NetNS == "" {
		err = dial()
	} else {
		// The socket keeps the namespace it was made in.
		err = inNetNS(sb.NetNS, dial)
	}
	if err != nil {
		return fmt.Errorf("port-forward to %s/%s port %d: %w", ns, name, port, err)
	}
	defer conn.Close()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		errc <- err
	}()
	// The pod's side ending ends the forward; the client's side ending
	// only half-closes, so the reply still flows back.
	var first error
	for range 2 {
		select {
		case err := <-errc:
			if first == nil && err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				first = err
			}
		case <-ctx.Done():
			conn.Close()
			stream.Close()
			<-errc
			<-errc
			return nil
		}
	}
	return first
}

// Summary reports what the agent knows without cAdvisor: the node's
// name, start time, memory and filesystem from the host, and each pod
// with its containers' start times. CPU and per-container usage are not
// measured.
func (p podsAPI) Summary(ctx context.Context) (*statsapi.Summary, error) {
	h := readHost(p.a.cfg.RootDir)
	now := metav1.NewTime(time.Now())
	node := statsapi.NodeStats{NodeName: p.a.cfg.NodeName, StartTime: metav1.NewTime(p.a.started)}
	if h.memTotal > 0 {
		avail, used := uint64(h.memAvailable), uint64(h.memTotal-h.memAvailable)
		node.Memory = &statsapi.MemoryStats{Time: now, AvailableBytes: &avail, WorkingSetBytes: &used, UsageBytes: &used}
	}
	if h.diskTotal > 0 {
		cap, avail := uint64(h.diskTotal), uint64(h.diskAvailable)
		used := cap - avail
		node.Fs = &statsapi.FsStats{Time: now, CapacityBytes: &cap, AvailableBytes: &avail, UsedBytes: &used}
	}
	sum := &statsapi.Summary{Node: node, Pods: []statsapi.PodStats{}}
	pods, err := p.a.pods.List(everything)
	if err != nil {
		return nil, err
	}
	for _, pod := range pods {
		ps := statsapi.PodStats{PodRef: statsapi.PodReference{Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID)},
			StartTime: pod.CreationTimestamp}
		if pod.Status.StartTime != nil {
			ps.StartTime = *pod.Status.StartTime
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Running != nil {
				ps.Containers = append(ps.Containers, statsapi.ContainerStats{Name: cs.Name, StartTime: cs.State.Running.StartedAt})
			}
		}
		sum.Pods = append(sum.Pods, ps)
	}
	return sum, nil
}

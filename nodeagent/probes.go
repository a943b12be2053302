package nodeagent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeKind is which of a container's probes a worker runs.
type probeKind int

const (
	probeReadiness probeKind = iota
	probeLiveness
	probeStartup
)

func (k probeKind) String() string {
	return [...]string{"Readiness", "Liveness", "Startup"}[k]
}

// probeState is one probe's current verdict.
type probeState struct {
	ok    bool
	known bool // at least one verdict (a liveness probe passes until it fails)
}

// prober runs the containers' probes, one goroutine per probe, and keeps
// their verdicts. A changed verdict requeues the pod.
type prober struct {
	a  *Agent
	mu sync.Mutex
	// workers by container ID; each entry's cancel stops its goroutines.
	workers map[string]*probeSet
	wg      sync.WaitGroup
}

type probeSet struct {
	podUID types.UID
	cancel context.CancelFunc
	state  [3]probeState
	has    [3]bool
}

func newProber(a *Agent) *prober { return &prober{a: a, workers: map[string]*probeSet{}} }

// ensure starts the probes of a running container once.
func (p *prober) ensure(pod *corev1.Pod, c *corev1.Container, id string, sb *sandbox) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.workers[id]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	set := &probeSet{podUID: pod.UID, cancel: cancel}
	p.workers[id] = set
	key := pod.Namespace + "/" + pod.Name
	for kind, pr := range map[probeKind]*corev1.Probe{probeReadiness: c.ReadinessProbe, probeLiveness: c.LivenessProbe, probeStartup: c.StartupProbe} {
		if pr == nil {
			continue
		}
		set.has[kind] = true
		p.wg.Go(func() { p.run(ctx, set, kind, pr.DeepCopy(), key, id, pod.DeepCopy(), c.DeepCopy(), sb) })
	}
}

// status is a running container's (ready, started) by its probes.
func (p *prober) status(id string, c *corev1.Container) (ready, started bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := p.workers[id]
	started = c.StartupProbe == nil || (set != nil && set.state[probeStartup].ok)
	ready = started && (c.ReadinessProbe == nil || (set != nil && set.state[probeReadiness].ok))
	return ready, started
}

// livenessFailed reports whether the container's liveness probe has
// failed failureThreshold times in a row, or its startup probe gave up.
func (p *prober) livenessFailed(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := p.workers[id]
	if set == nil {
		return false
	}
	for _, k := range []probeKind{probeLiveness, probeStartup} {
		if set.has[k] && set.state[k].known && !set.state[k].ok {
			return true
		}
	}
	return false
}

func (p *prober) removeContainer(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if set, ok := p.workers[id]; ok {
		set.cancel()
		delete(p.workers, id)
	}
}

func (p *prober) removePod(uid types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, set := range p.workers {
		if set.podUID == uid {
			set.cancel()
			delete(p.workers, id)
		}
	}
}

// stopAll stops every probe and waits for the goroutines.
func (p *prober) stopAll() {
	p.mu.Lock()
	for id, set := range p.workers {
		set.cancel()
		delete(p.workers, id)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// run is one probe's loop, with upstream's defaults for unset fields.
func (p *prober) run(ctx context.Context, set *probeSet, kind probeKind, pr *corev1.Probe, key, id string, pod *corev1.Pod, c *corev1.Container, sb *sandbox) {
	period := secondsOr(pr.PeriodSeconds, 10)
	timeout := secondsOr(pr.TimeoutSeconds, 1)
	success := int(max(pr.SuccessThreshold, 1))
	failure := int(pr.FailureThreshold)
	if failure < 1 {
		failure = 3
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	t := time.NewTicker(period)
	defer t.Stop()
	var okRun, failRun int
	for {
		if kind == probeStartup || p.startedOrNoStartup(id, c) {
			ok, msg := p.probe(ctx, pr, timeout, id, c, sb)
			if ctx.Err() != nil {
				return
			}
			if ok {
				okRun, failRun = okRun+1, 0
			} else {
				okRun, failRun = 0, failRun+1
				p.a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "Unhealthy", "ProbeFailed", "%s probe failed: %s", kind, msg)
			}
			var verdict, decided bool
			switch {
			case ok && okRun >= success:
				verdict, decided = true, true
			case !ok && failRun >= failure:
				verdict, decided = false, true
			}
			if decided {
				p.mu.Lock()
				old := set.state[kind]
				set.state[kind] = probeState{ok: verdict, known: true}
				p.mu.Unlock()
				if old.ok != verdict || !old.known {
					p.a.queue.Add(key)
				}
				if kind == probeStartup && verdict {
					return // a startup probe stops once it passed
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *prober) startedOrNoStartup(id string, c *corev1.Container) bool {
	_, started := p.status(id, c)
	return started
}

func secondsOr(s int32, def int) time.Duration {
	if s <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(s) * time.Second
}

// probe runs one check and says whether it passed, and why not.
func (p *prober) probe(ctx context.Context, pr *corev1.Probe, timeout time.Duration, id string, c *corev1.Container, sb *sandbox) (bool, string) {
	switch {
	case pr.Exec != nil:
		code, out, err := p.a.rt.exec(ctx, id, pr.Exec.Command, timeout)
		if err != nil {
			return false, err.Error()
		}
		if code != 0 {
			return false, fmt.Sprintf("command %q exited with %d: %s", strings.Join(pr.Exec.Command, " "), code, out)
		}
		return true, ""
	case pr.HTTPGet != nil:
		return httpProbe(ctx, pr.HTTPGet, timeout, c, sb)
	case pr.TCPSocket != nil:
		port, err := probePort(pr.TCPSocket.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := pr.TCPSocket.Host
		if host == "" {
			host = sb.IP
		}
		conn, err := dialPod(ctx, sb, net.JoinHostPort(host, strconv.Itoa(port)), timeout)
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	case pr.GRPC != nil:
		return false, "gRPC probes are not supported by this agent"
	}
	return false, "the probe has no handler"
}

// probePort resolves a probe's port, by number or by the name of one of
// the container's ports.
func probePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no port named %q in container %s", p.StrVal, c.Name)
}

// dialPod connects to addr from inside the pod's network namespace (from
// the host with hostNetwork), so a probe reaches the pod whatever routes
// the node has.
func dialPod(ctx context.Context, sb *sandbox, addr string, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if sb.HostNetwork || sb.NetNS == "" {
		return d.DialContext(ctx, "tcp", addr)
	}
	var conn net.Conn
	err := inNetNS(sb.NetNS, func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}

// httpProbe is upstream's HTTP check: any status from 200 to 399 passes;
// TLS is not verified.
func httpProbe(ctx context.Context, g *corev1.HTTPGetAction, timeout time.Duration, c *corev1.Container, sb *sandbox) (bool, string) {
	code, err := httpGetPod(ctx, g, timeout, c, sb, "kube-probe/1.37")
	if err != nil {
		return false, err.Error()
	}
	if code >= 200 && code < 400 {
		return true, ""
	}
	return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", code)
}

// httpGetPod sends the GET of a probe or lifecycle hook to the pod (its
// address unless g names a host), from inside its network namespace, and
// returns the status code. Redirects are not followed; TLS is not
// verified, as upstream's probes do not check a pod's certificate.
func httpGetPod(ctx context.Context, g *corev1.HTTPGetAction, timeout time.Duration, c *corev1.Container, sb *sandbox, userAgent string) (int, error) {
	port, err := probePort(g.Port, c)
	if err != nil {
		return 0, err
	}
	host := g.Host
	if host == "" {
		host = sb.IP
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if pu, err := url.Parse(path); err == nil {
		u.Path, u.RawQuery = pu.Path, pu.RawQuery
	}
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as upstream's probes: a pod's certificate is not checked
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialPod(ctx, sb, addr, timeout)
		},
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", userAgent)
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer"
)

// fault is one thing that goes wrong. run injects it, waits, heals it
// (calling faultRun.heal at that moment; a fault that systemd heals calls
// it right after the injection) and checks what must hold meanwhile. It
// heals whatever it broke even when a check or a command fails.
type fault struct {
	name, desc string
	// workload is true when the fault needs the suite's Deployment.
	workload bool
	run      func(ctx context.Context, fr *faultRun) error
}

// faultRun is one fault's run: the env, the load, its result, and the
// moments of injection and heal.
type faultRun struct {
	*env
	result           *Result
	load             *load
	injected, healed time.Time
	extra            map[string]string // writes acknowledged outside the load
	// afterHealthy, when set, checks what must hold once the cluster is
	// healthy again.
	afterHealthy func(ctx context.Context)
}

func (fr *faultRun) heal() { fr.healed = time.Now() }

func (fr *faultRun) note(format string, a ...any) {
	fr.result.Notes = append(fr.result.Notes, fmt.Sprintf(format, a...))
}

func (fr *faultRun) problem(format string, a ...any) {
	fr.result.Problems = append(fr.result.Problems, fmt.Sprintf(format, a...))
}

// healCtx is for the commands that undo a fault: they run even when the
// suite is interrupted.
func healCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// The order is the order of priority: the control plane first.
var faults = []*fault{
	{name: "kill-etcd-leader", desc: "kill -9 of every kforge process on the etcd leader's master; systemd restarts them",
		run: func(ctx context.Context, fr *faultRun) error { return fr.killMaster(ctx, true) }},
	{name: "kill-etcd-follower", desc: "kill -9 of every kforge process on a follower's master; systemd restarts them",
		run: func(ctx context.Context, fr *faultRun) error { return fr.killMaster(ctx, false) }},
	{name: "no-quorum", desc: "two masters' kforge units stopped for 15s, then one back, then the other",
		run: noQuorum},
	{name: "partition-leader", desc: "the etcd leader's master cut off from the other masters (nftables) for 15s",
		run: partition},
	{name: "lb-down", desc: "kforge-lb stopped on the lb host for 15s; workers use their node-local LBs",
		run: lbDown},
	{name: "containerd-restart", desc: "containerd restarted on a worker under running pods", workload: true,
		run: containerdRestart},
	{name: "dns-stop", desc: "one cluster DNS instance stopped for 10s; lookups through the kube-dns Service", workload: true,
		run: dnsStop},
	{name: "agent-kill-rollout", desc: "a worker's agent killed (-9) during a Deployment rollout", workload: true,
		run: agentKillRollout},
	{name: "up-interrupted", desc: "kforge up killed (-9) in its upload, certificate and node-agent phases while it re-uploads a worker's binary, then re-run",
		run: upInterrupted},
}

// killAll kills every kforge unit's processes with SIGKILL; their
// Restart=on-failure brings them back.
const killAll = "systemctl kill --signal=SIGKILL 'kforge-*.service'"

func (fr *faultRun) killMaster(ctx context.Context, leader bool) error {
	l, followers, err := fr.etcdLeader(ctx)
	if err != nil {
		return err
	}
	target := l
	if !leader {
		target = followers[0]
	}
	fr.note("killed the kforge processes on %s (etcd leader before: %s)", target, l)
	restarts := func() (int, error) {
		out, err := fr.sh(ctx, target, "systemctl show -p NRestarts --value kforge-etcd")
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(out))
	}
	before, err := restarts()
	if err != nil {
		return err
	}
	fr.injected = time.Now()
	if _, err := fr.sh(ctx, target, killAll); err != nil {
		return err
	}
	fr.heal()
	fr.afterHealthy = func(ctx context.Context) {
		if after, err := restarts(); err != nil {
			fr.problem("%v", err)
		} else if after <= before {
			fr.problem("systemd did not restart kforge-etcd on %s (NRestarts %d → %d)", target, before, after)
		}
		if nl, _, err := fr.etcdLeader(ctx); err == nil {
			fr.note("etcd leader after: %s", nl)
		}
	}
	return nil
}

// stopAll stops every kforge unit; startAll starts them again.
const (
	stopAll  = "systemctl stop 'kforge-*.service'"
	startAll = "systemctl start kforge-etcd kforge-apiserver kforge-scheduler kforge-controller-manager"
)

func noQuorum(ctx context.Context, fr *faultRun) error {
	_, followers, err := fr.etcdLeader(ctx)
	if err != nil {
		return err
	}
	a, b := followers[0], followers[1]
	fr.note("stopped %s and %s", a, b)
	startedA, startedB := false, false
	defer func() {
		hctx, cancel := healCtx()
		defer cancel()
		if !startedA {
			_, _ = fr.sh(hctx, a, startAll)
		}
		if !startedB {
			_, _ = fr.sh(hctx, b, startAll)
		}
	}()
	fr.injected = time.Now()
	if _, err := fr.sh(ctx, a, stopAll); err != nil {
		return err
	}
	if _, err := fr.sh(ctx, b, stopAll); err != nil {
		return err
	}
	lost := time.Now()
	sleep(ctx, 15*time.Second)
	// No write may be acknowledged without a quorum; the ones in flight
	// when the second master stopped may still have been.
	_, writes, _, _ := fr.load.snapshot()
	acks, fails, timeouts := 0, 0, 0
	for _, w := range writes {
		if w.Start.Before(lost.Add(time.Second)) {
			continue
		}
		switch {
		case w.OK:
			acks++
		case w.Timeout:
			fails++
			timeouts++
		default:
			fails++
		}
	}
	fr.note("without quorum: %d write(s) failed (%d by the client timeout), %d acknowledged", fails, timeouts, acks)
	if acks > 0 {
		fr.problem("%d write(s) acknowledged without an etcd quorum", acks)
	}
	if fails > 0 && timeouts == fails {
		fr.problem("every write without quorum hung until the client timeout instead of failing")
	}
	for _, w := range writes {
		if !w.OK && !w.Start.Before(lost) {
			fr.note("a write without quorum failed with: %s", oneLine(w.Err))
			break
		}
	}
	hctx, cancel := healCtx()
	defer cancel()
	if _, err := fr.sh(hctx, a, startAll); err != nil {
		return err
	}
	startedA = true
	fr.heal()
	// Writes resume with two of three members.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); sleep(ctx, 500*time.Millisecond) {
		_, ws, _, _ := fr.load.snapshot()
		if len(ws) > 0 && ws[len(ws)-1].OK && ws[len(ws)-1].Start.After(fr.healed) {
			break
		}
	}
	if _, err := fr.sh(hctx, b, startAll); err != nil {
		return err
	}
	startedB = true
	return nil
}

// The partition is a table of its own in the master's network namespace
// (its nspawn host), deleted to heal.
const partitionTable = "kforge-chaos"

func partitionRules(peers []string) string {
	set := strings.Join(peers, ", ")
	return fmt.Sprintf(`nft -f - <<'EOF'
table inet %[1]s {
	chain in { type filter hook input priority -10; policy accept; ip saddr { %[2]s } drop; }
	chain out { type filter hook output priority -10; policy accept; ip daddr { %[2]s } drop; }
}
EOF`, partitionTable, set)
}

func partition(ctx context.Context, fr *faultRun) error {
	target, _, err := fr.etcdLeader(ctx)
	if err != nil {
		return err
	}
	var m v1alpha1.Host
	var peers []string
	for _, h := range fr.cluster.Masters() {
		if h.Name == target {
			m = h
		} else {
			peers = append(peers, h.Address)
		}
	}
	fr.note("partitioned %s (the etcd leader) from %s", target, strings.Join(peers, ", "))
	healed := false
	defer func() {
		if !healed {
			hctx, cancel := healCtx()
			defer cancel()
			_, _ = fr.sh(hctx, target, "nft delete table inet "+partitionTable)
		}
	}()
	fr.injected = time.Now()
	if _, err := fr.sh(ctx, target, partitionRules(peers)); err != nil {
		return err
	}
	sleep(ctx, 15*time.Second)

	// What each member says about the leader: at most one leader among
	// the members that have one.
	leaders := map[uint64]bool{}
	var views []string
	for _, h := range fr.cluster.Masters() {
		st, err := fr.prober.EtcdMember(ctx, h.Address)
		switch {
		case st == nil:
			views = append(views, fmt.Sprintf("%s: %v", h.Name, oneLine(err.Error())))
		case st.Leader == 0:
			views = append(views, h.Name+": no leader")
		default:
			leaders[st.Leader] = true
			views = append(views, fmt.Sprintf("%s: leader %x", h.Name, st.Leader))
		}
	}
	fr.note("etcd during the partition: %s", strings.Join(views, "; "))
	if len(leaders) > 1 {
		fr.problem("split brain: the members name %d different leaders", len(leaders))
	}
	// The partitioned master's own apiserver, asked directly.
	direct := fr.direct(m)
	if _, err := direct.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		fr.note("a read through %s's apiserver: %s", target, oneLine(err.Error()))
	} else {
		fr.note("a read through %s's apiserver: answered", target)
	}
	name := fr.result.Fault + "-direct"
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"chaos": fr.result.Fault}}, Data: map[string]string{"seq": "direct"}}
	if _, err := direct.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		fr.note("a write through %s's apiserver: %s", target, oneLine(err.Error()))
	} else {
		fr.note("a write through %s's apiserver was acknowledged (checked afterwards like every acknowledged write)", target)
		fr.extra = map[string]string{name: "direct"}
	}
	// The LB's view of the partitioned backend.
	if up, err := fr.lbBackends(ctx); err != nil {
		fr.note("the lb's backends: %v", err)
	} else if b := v1alpha1.HostPort(m.Address, 6443); up[b] {
		fr.note("the lb still counts %s as up after 15s of partition", b)
	} else {
		fr.note("the lb took %s out", b)
	}

	hctx, cancel := healCtx()
	defer cancel()
	if _, err := fr.sh(hctx, target, "nft delete table inet "+partitionTable); err != nil {
		return err
	}
	healed = true
	fr.heal()
	return nil
}

var backendUp = regexp.MustCompile(`(?m)^kforge_lb_backend_up\{backend="([^"]+)"\} (\S+)$`)

// lbBackends reads the lb's kforge_lb_backend_up series on its loopback.
func (e *env) lbBackends(ctx context.Context) (map[string]bool, error) {
	out, err := e.sh(ctx, e.cluster.Spec.LoadBalancer.Host, "busybox wget -qO- http://"+installer.LBMetricsAddress+"/metrics")
	if err != nil {
		return nil, err
	}
	up := map[string]bool{}
	for _, m := range backendUp.FindAllStringSubmatch(out, -1) {
		up[m[1]] = m[2] == "1"
	}
	if len(up) == 0 {
		return nil, errors.New("no kforge_lb_backend_up series")
	}
	return up, nil
}

func lbDown(ctx context.Context, fr *faultRun) error {
	lbHost := fr.cluster.Spec.LoadBalancer.Host
	masters := fr.cluster.Masters()
	m := fr.direct(masters[len(masters)-1])
	renewed := func() (map[string]time.Time, error) {
		leases, err := m.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		out := map[string]time.Time{}
		for _, l := range leases.Items {
			if l.Spec.RenewTime != nil {
				out[l.Name] = l.Spec.RenewTime.Time
			}
		}
		return out, nil
	}
	before, err := renewed()
	if err != nil {
		return err
	}
	healed := false
	defer func() {
		if !healed {
			hctx, cancel := healCtx()
			defer cancel()
			_, _ = fr.sh(hctx, lbHost, "systemctl start kforge-lb")
		}
	}()
	fr.injected = time.Now()
	if _, err := fr.sh(ctx, lbHost, "systemctl stop kforge-lb"); err != nil {
		return err
	}
	sleep(ctx, 5*time.Second)
	// A worker's node-local LB (127.0.0.1:6444, reached through the
	// worker's SSH connection) with the admin's credentials.
	w := fr.cluster.Workers()[0].Name
	if err := fr.viaNodeLocalLB(ctx, w); err != nil {
		fr.problem("the API through %s's node-local LB with the lb down: %v", w, err)
	} else {
		fr.note("the API answered through %s's node-local LB (127.0.0.1:6444) with the lb down", w)
	}
	sleep(ctx, 10*time.Second)
	after, err := renewed()
	if err != nil {
		return err
	}
	for _, wh := range fr.cluster.Workers() {
		if !after[wh.Name].After(before[wh.Name]) {
			fr.problem("%s's node Lease was not renewed while the lb was down", wh.Name)
		}
	}
	hctx, cancel := healCtx()
	defer cancel()
	if _, err := fr.sh(hctx, lbHost, "systemctl start kforge-lb"); err != nil {
		return err
	}
	healed = true
	fr.heal()
	return nil
}

// viaNodeLocalLB reads and writes through worker's node-local LB.
func (fr *faultRun) viaNodeLocalLB(ctx context.Context, worker string) error {
	h, err := fr.host(ctx, worker)
	if err != nil {
		return err
	}
	defer h.Close()
	t, ok := h.(interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	})
	if !ok {
		return errors.New("cannot tunnel through the host")
	}
	cfg := rest.CopyConfig(fr.rest)
	cfg.Host = "https://127.0.0.1:6444"
	cfg.Dial = func(ctx context.Context, _, addr string) (net.Conn, error) { return t.DialContext(ctx, "tcp", addr) }
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	name := fr.result.Fault + "-via-" + worker
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"chaos": fr.result.Fault}}, Data: map[string]string{"seq": worker}}
	if _, err := c.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return err
	}
	fr.extra = map[string]string{name: worker}
	return nil
}

// The workload of the node faults: a Deployment with one replica per
// worker (spread by topology).
const workloadName = "chaos-app"

func (e *env) ensureWorkload(ctx context.Context) error {
	replicas := int32(len(e.cluster.Workers()))
	labels := map[string]string{"app": workloadName}
	grace := int64(2)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: workloadName},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
					Containers: []corev1.Container{{Name: "app", Image: "docker.io/library/busybox:local",
						Command: []string{"sleep", "1000000"}, ImagePullPolicy: corev1.PullNever}},
				},
			},
		},
	}
	if _, err := e.client.AppsV1().Deployments(namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the workload: %w", err)
	}
	return e.waitRollout(ctx, 3*time.Minute)
}

// waitRollout waits until the workload's Deployment has every replica
// updated and available.
func (e *env) waitRollout(ctx context.Context, within time.Duration) error {
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); sleep(ctx, time.Second) {
		d, err := e.client.AppsV1().Deployments(namespace).Get(ctx, workloadName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			continue
		}
		s := d.Status
		last = fmt.Sprintf("generation %d observed %d, %d updated, %d available of %d", d.Generation, s.ObservedGeneration, s.UpdatedReplicas, s.AvailableReplicas, *d.Spec.Replicas)
		if s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == *d.Spec.Replicas && s.AvailableReplicas == *d.Spec.Replicas && s.Replicas == *d.Spec.Replicas {
			return nil
		}
	}
	return fmt.Errorf("the %s rollout did not complete within %s: %s", workloadName, within, last)
}

// podsOn lists the workload's pods bound to node.
func (e *env) podsOn(ctx context.Context, node string) ([]corev1.Pod, error) {
	list, err := e.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + workloadName, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

func containerdRestart(ctx context.Context, fr *faultRun) error {
	w := fr.cluster.Workers()[0].Name
	before, err := fr.podsOn(ctx, w)
	if err != nil {
		return err
	}
	if len(before) == 0 {
		return fmt.Errorf("no %s pod on %s", workloadName, w)
	}
	fr.injected = time.Now()
	if _, err := fr.sh(ctx, w, "systemctl restart containerd"); err != nil {
		return err
	}
	fr.heal()
	sleep(ctx, 20*time.Second)
	after, err := fr.podsOn(ctx, w)
	if err != nil {
		return err
	}
	tasks, err := fr.sh(ctx, w, "ctr -n k8s.io tasks ls")
	if err != nil {
		return err
	}
	byUID := map[types.UID]corev1.Pod{}
	for _, p := range after {
		byUID[p.UID] = p
	}
	for _, p := range before {
		a, ok := byUID[p.UID]
		if !ok {
			fr.problem("pod %s on %s is gone after the containerd restart", p.Name, w)
			continue
		}
		if len(a.Status.ContainerStatuses) == 0 || len(p.Status.ContainerStatuses) == 0 {
			fr.problem("pod %s has no container status", p.Name)
			continue
		}
		b, c := p.Status.ContainerStatuses[0], a.Status.ContainerStatuses[0]
		if c.RestartCount != b.RestartCount || c.ContainerID != b.ContainerID {
			fr.problem("pod %s's container was restarted (restarts %d → %d, id %s → %s)", p.Name, b.RestartCount, c.RestartCount, b.ContainerID, c.ContainerID)
		}
		if !c.Ready || c.State.Running == nil {
			fr.problem("pod %s's container is not running and ready after the containerd restart", p.Name)
		}
		id := strings.TrimPrefix(c.ContainerID, "containerd://")
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + `\s+\d+\s+RUNNING`).MatchString(tasks) {
			fr.problem("containerd on %s does not list %s's task %s as RUNNING", w, p.Name, id)
		}
	}
	fr.note("%d pod(s) on %s checked", len(before), w)
	return nil
}

// lookup resolves the kubernetes Service through the kube-dns Service
// address from worker's own network namespace.
func (fr *faultRun) lookups(ctx context.Context, worker string, n int) (failed int, last string) {
	ip, _ := fr.cluster.KubernetesServiceIP()
	dns := ip // the 10th address of the service range, as the installer puts it
	for range 9 {
		dns = dns.Next()
	}
	name := "kubernetes.default.svc." + fr.cluster.Spec.Network.ClusterDomain
	for range n {
		out, err := fr.sh(ctx, worker, "busybox timeout 3 busybox nslookup "+name+" "+dns.String())
		if err != nil || !strings.Contains(out, ip.String()) {
			failed++
			last = oneLine(out + " " + fmt.Sprint(err))
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return failed, last
}

func dnsStop(ctx context.Context, fr *faultRun) error {
	ws := fr.cluster.Workers()
	stopped, from := ws[0].Name, ws[len(ws)-1].Name
	if f, last := fr.lookups(ctx, from, 5); f > 0 {
		return fmt.Errorf("%d of 5 lookups from %s failed before the fault: %s", f, from, last)
	}
	healed := false
	defer func() {
		if !healed {
			hctx, cancel := healCtx()
			defer cancel()
			_, _ = fr.sh(hctx, stopped, "systemctl start kforge-dns")
		}
	}()
	fr.injected = time.Now()
	if _, err := fr.sh(ctx, stopped, "systemctl stop kforge-dns"); err != nil {
		return err
	}
	f, last := fr.lookups(ctx, from, 20)
	fr.note("%d of 20 lookups from %s failed with %s's DNS stopped", f, from, stopped)
	if f > 0 {
		fr.problem("lookups failed with one DNS instance stopped (%d of 20): %s", f, last)
	}
	hctx, cancel := healCtx()
	defer cancel()
	if _, err := fr.sh(hctx, stopped, "systemctl start kforge-dns"); err != nil {
		return err
	}
	healed = true
	fr.heal()
	return nil
}

func agentKillRollout(ctx context.Context, fr *faultRun) error {
	ws := fr.cluster.Workers()
	w := ws[len(ws)/2].Name
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"chaos/rollout":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	fr.injected = time.Now()
	if _, err := fr.client.AppsV1().Deployments(namespace).Patch(ctx, workloadName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return err
	}
	sleep(ctx, time.Second)
	if _, err := fr.sh(ctx, w, "systemctl kill --signal=SIGKILL kforge-agent"); err != nil {
		return err
	}
	fr.heal()
	start := time.Now()
	if err := fr.waitRollout(ctx, 3*time.Minute); err != nil {
		fr.problem("%v", err)
	} else {
		fr.note("rollout complete %s after %s's agent was killed", seconds(time.Since(start)), w)
	}
	return nil
}

// upKills are where each interrupted `kforge up` is killed: a moment
// after the progress line of a phase (its title) appears.
var upKills = []struct {
	phase string
	after time.Duration
}{
	{"Upload the kforge binary", 300 * time.Millisecond},
	{"Distribute certificates and kubeconfigs", 300 * time.Millisecond},
	{"node agents", 500 * time.Millisecond},
}

// upInterrupted gives `kforge up` work (a worker without its binary, so
// it uploads it and restarts the worker's daemons), kills it in several
// phases, then runs it to the end: it must converge, the run after that
// must change nothing, and no upload's temporary file may be left.
func upInterrupted(ctx context.Context, fr *faultRun) error {
	ws := fr.cluster.Workers()
	victim := ws[len(ws)-1].Name
	for _, k := range upKills {
		if _, err := fr.sh(ctx, victim, "rm -f /usr/local/bin/kforge"); err != nil {
			return err
		}
		var stderr syncBuffer
		cmd := exec.CommandContext(ctx, fr.bin, "up", "-f", fr.spec, "--binary", fr.bin)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		trigger := "• " + k.phase
		var err error
	wait:
		for deadline := time.Now().Add(3 * time.Minute); ; {
			select {
			case err = <-exited:
				break wait
			case <-time.After(50 * time.Millisecond):
			}
			if strings.Contains(stderr.String(), trigger) || time.Now().After(deadline) {
				sleep(ctx, k.after)
				_ = cmd.Process.Kill()
				err = <-exited
				break
			}
		}
		if !strings.Contains(stderr.String(), trigger) {
			fr.problem("kforge up never reached %q: %v", k.phase, err)
		}
		fr.note("up killed %s into %q (%v), last line: %s", k.after, k.phase, err, lastStep(stderr.String()))
	}
	// The heal is the end of the run that converges: HEALTHY is what
	// remains after kforge up says it is done.
	start := time.Now()
	out, err := exec.CommandContext(ctx, fr.bin, "up", "-f", fr.spec, "--binary", fr.bin).CombinedOutput()
	fr.heal()
	if err != nil {
		fr.problem("kforge up after the interruptions: %v: %s", err, oneLine(string(out[max(0, len(out)-600):])))
		return nil
	}
	fr.note("the converging kforge up took %s", seconds(time.Since(start)))
	fr.afterHealthy = func(ctx context.Context) {
		out, err := exec.CommandContext(ctx, fr.bin, "up", "-f", fr.spec, "--binary", fr.bin).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "(0 change(s))") {
			fr.problem("the run after the converging one was not a no-op: %v: %s", err, oneLine(string(out[max(0, len(out)-600):])))
		}
	}
	for _, h := range fr.cluster.Spec.Hosts {
		left, err := fr.sh(ctx, h.Name, "find /usr/local/bin /etc/kforge /etc/systemd/system -name '.*.kforge-*' 2>/dev/null; true")
		if err != nil {
			return err
		}
		if left = strings.TrimSpace(left); left != "" {
			fr.problem("%s keeps temporary upload files: %s", h.Name, oneLine(left))
		}
	}
	return nil
}

// lastStep is the last phase or host line of kforge up's progress.
func lastStep(stderr string) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return oneLine(l)
		}
	}
	return "(no output yet)"
}

// syncBuffer is a bytes.Buffer for one writer (a command's output) and
// one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

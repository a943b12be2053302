// Command pods measures pod startup on a running lab: it applies an
// N-replica Deployment of the lab's busybox image (readiness probe on an
// HTTP server) and reports, side by side with the anchors, the time from
// apply to all Ready, each pod's startup latency (first seen by a watch →
// first seen Ready, as upstream's pod startup SLI counts it with the image
// present), each worker's agent RSS and CPU while it runs the pods, and
// the mean time of each step of a pod's start in the agents (the agents'
// kforge_agent_pod_operation_duration_seconds, read through the
// apiserver's nodes/NAME/proxy/metrics before and after).
//
//	kforge lab up --dir lab && kforge up -f lab/cluster.yaml
//	go run ./test/bench/pods -lab lab            # about a minute
//
// The anchors: upstream's pod startup SLO (p99 ≤ 5 s) and the goal kforge
// set itself from kubemark (p99 ≤ 2 s). The Deployment is deleted at the
// end; progress goes to stderr, the table to stdout.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

const (
	benchName  = "bench-pods"
	benchNS    = "default"
	image      = "docker.io/library/busybox:local"
	sloP99     = 5 * time.Second
	targetP99  = 2 * time.Second
	clockTicks = 100 // USER_HZ on Linux
)

type options struct {
	lab      string
	replicas int
	timeout  time.Duration
	kforge   string
}

func main() {
	var o options
	flag.StringVar(&o.lab, "lab", "kforge-lab", "the lab folder (cluster.yaml, admin.kubeconfig)")
	flag.IntVar(&o.replicas, "replicas", 30, "replicas of the Deployment")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for every replica to be Ready")
	flag.StringVar(&o.kforge, "kforge", "", "the kforge binary, for `kforge lab ssh` (default: bin/kforge, then PATH)")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// agentSample is one reading of a worker's agent process.
type agentSample struct {
	pid   string
	ticks int64 // utime + stime
	rssKB int64
	at    time.Time
}

func (o options) ssh(ctx context.Context, host, cmd string) (string, error) {
	bin := o.kforge
	if bin == "" {
		bin = "bin/kforge"
		if _, err := os.Stat(bin); err != nil {
			bin = "kforge"
		}
	}
	out, err := exec.CommandContext(ctx, bin, "lab", "ssh", "--dir", o.lab, host, "--", cmd).Output()
	return string(out), err
}

// sampleAgent reads the agent's CPU ticks and RSS from /proc on host.
func (o options) sampleAgent(ctx context.Context, host string) (agentSample, error) {
	out, err := o.ssh(ctx, host, `pid=$(systemctl show -p MainPID --value kforge-agent); echo $pid; cut -d' ' -f14,15 /proc/$pid/stat; grep VmRSS /proc/$pid/status`)
	if err != nil {
		return agentSample{}, fmt.Errorf("%s: reading the agent's /proc: %w", host, err)
	}
	f := strings.Fields(out)
	if len(f) < 5 {
		return agentSample{}, fmt.Errorf("%s: unexpected /proc reading %q", host, out)
	}
	u, _ := strconv.ParseInt(f[1], 10, 64)
	s, _ := strconv.ParseInt(f[2], 10, 64)
	rss, _ := strconv.ParseInt(f[4], 10, 64)
	return agentSample{pid: f[0], ticks: u + s, rssKB: rss, at: time.Now()}, nil
}

func deployment(replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": benchName}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: benchName, Namespace: benchNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{{
						Name: "web", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
						Command: []string{"sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"},
						Ports:   []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func run(ctx context.Context, o options) error {
	kc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(o.lab, "admin.kubeconfig"))
	if err != nil {
		return err
	}
	kc.QPS, kc.Burst = 100, 200
	client, err := kubernetes.NewForConfig(kc)
	if err != nil {
		return err
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var workers []string
	for _, n := range nodes.Items {
		workers = append(workers, n.Name)
	}
	sort.Strings(workers)
	if len(workers) == 0 {
		return errors.New("no Nodes: install the cluster with kforge up first")
	}
	before := map[string]agentSample{}
	for _, w := range workers {
		if before[w], err = o.sampleAgent(ctx, w); err != nil {
			return err
		}
	}
	opsBefore, err := agentOperations(ctx, client, workers)
	if err != nil {
		return err
	}

	// Watch first, so every pod's creation is seen as it happens.
	w, err := client.CoreV1().Pods(benchNS).Watch(ctx, metav1.ListOptions{LabelSelector: "app=" + benchName})
	if err != nil {
		return err
	}
	defer w.Stop()
	var mu sync.Mutex
	created, bound, running, ready := map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
	perNode := map[string]int{}
	allReady := make(chan struct{})
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			now := time.Now()
			mu.Lock()
			if _, seen := created[p.Name]; !seen {
				created[p.Name] = now
			}
			if _, seen := bound[p.Name]; !seen && p.Spec.NodeName != "" {
				bound[p.Name] = now
			}
			if _, seen := running[p.Name]; !seen && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
				running[p.Name] = now
			}
			if _, done := ready[p.Name]; !done && podReady(p) {
				ready[p.Name] = now
				perNode[p.Spec.NodeName]++
				if len(ready) == o.replicas {
					close(allReady)
				}
			}
			mu.Unlock()
		}
	}()

	fmt.Fprintf(os.Stderr, "applying a %d-replica Deployment...\n", o.replicas)
	start := time.Now()
	if _, err := client.AppsV1().Deployments(benchNS).Create(ctx, deployment(int32(o.replicas)), metav1.CreateOptions{}); err != nil {
		return err
	}
	defer func() {
		dctx, c := context.WithTimeout(context.Background(), 30*time.Second)
		defer c()
		err := client.AppsV1().Deployments(benchNS).Delete(dctx, benchName, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)})
		if err != nil && !apierrors.IsNotFound(err) {
			fmt.Fprintln(os.Stderr, "bench: deleting the Deployment:", err)
		}
	}()
	select {
	case <-allReady:
	case <-time.After(o.timeout):
		mu.Lock()
		n := len(ready)
		mu.Unlock()
		return fmt.Errorf("only %d of %d pods Ready after %s", n, o.replicas, o.timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	total := time.Since(start)
	after := map[string]agentSample{}
	for _, w := range workers {
		if after[w], err = o.sampleAgent(ctx, w); err != nil {
			return err
		}
	}
	opsAfter, err := agentOperations(ctx, client, workers)
	if err != nil {
		return err
	}

	mu.Lock()
	var lat, toBound, toRunning, toReady []time.Duration
	for name, r := range ready {
		c, b, ru := created[name], bound[name], running[name]
		lat = append(lat, r.Sub(c))
		if !b.IsZero() && !ru.IsZero() { // each step as the watch saw it
			toBound, toRunning, toReady = append(toBound, b.Sub(c)), append(toRunning, ru.Sub(b)), append(toReady, r.Sub(ru))
		}
	}
	mu.Unlock()
	pct := func(ds []time.Duration, q float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[min(len(ds)-1, int(q*float64(len(ds))))]
	}
	p50, p99 := pct(lat, 0.50), pct(lat, 0.99)

	fmt.Printf("pod startup on the lab: %d replicas of %s over %d workers\n\n", o.replicas, image, len(workers))
	fmt.Printf("%-36s %12s %14s %14s\n", "figure", "kforge", "vs SLO 5s", "vs goal 2s")
	row := func(name string, d time.Duration) {
		fmt.Printf("%-36s %12s %13.2fx %13.2fx\n", name, d.Round(time.Millisecond), d.Seconds()/sloP99.Seconds(), d.Seconds()/targetP99.Seconds())
	}
	row("startup latency p50", p50)
	row("startup latency p99", p99)
	row("startup latency max", lat[len(lat)-1])
	fmt.Printf("%-36s %12s\n", "apply → all Ready", total.Round(time.Millisecond))
	fmt.Println()
	fmt.Printf("%-36s %12s %12s\n", "where the time goes (watch-seen)", "p50", "p99")
	for _, st := range []struct {
		name string
		ds   []time.Duration
	}{{"created → bound (scheduler)", toBound}, {"bound → running (agent)", toRunning}, {"running → Ready (probe)", toReady}} {
		fmt.Printf("%-36s %12s %12s\n", st.name, pct(st.ds, 0.5).Round(time.Millisecond), pct(st.ds, 0.99).Round(time.Millisecond))
	}
	fmt.Println()
	fmt.Printf("%-8s %6s %14s %14s %12s\n", "worker", "pods", "agent RSS", "RSS growth", "agent CPU")
	for _, w := range workers {
		b, a := before[w], after[w]
		cpu := "restarted"
		if a.pid == b.pid {
			cpu = fmt.Sprintf("%.1f%%", 100*float64(a.ticks-b.ticks)/clockTicks/a.at.Sub(b.at).Seconds())
		}
		fmt.Printf("%-8s %6d %11.1f MiB %+11.1f MiB %12s\n", w, perNode[w], float64(a.rssKB)/1024, float64(a.rssKB-b.rssKB)/1024, cpu)
	}
	fmt.Println("\nagent CPU: the agent process's user+system time over apply → all Ready, as a share of one core.")
	fmt.Println()
	fmt.Printf("%-36s %8s %12s %12s\n", "agent steps (all workers)", "count", "mean", "total")
	ops := make([]string, 0, len(opsAfter))
	for op := range opsAfter {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		a, b := opsAfter[op], opsBefore[op]
		n, sum := a.count-b.count, a.sum-b.sum
		if n == 0 {
			continue
		}
		fmt.Printf("%-36s %8d %12s %12s\n", op, n, seconds(sum/float64(n)), seconds(sum))
	}
	fmt.Println("\nagent steps: kforge_agent_pod_operation_duration_seconds over the run; steps of one pod run in sequence, pods in parallel (8 workers per agent).")
	return printWarnings(ctx, client)
}

// printWarnings lists the Warning events of the bench's pods by reason,
// with one message each: why a pod started late (a failed start, a
// restart).
func printWarnings(ctx context.Context, client kubernetes.Interface) error {
	evs, err := client.CoreV1().Events(benchNS).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	count, example := map[string]int{}, map[string]string{}
	for _, e := range evs.Items {
		if !strings.HasPrefix(e.InvolvedObject.Name, benchName+"-") {
			continue
		}
		n := max(e.Count, 1)
		count[e.Reason] += int(n)
		example[e.Reason] = e.Message
	}
	if len(count) == 0 {
		fmt.Println("\nno Warning events for the bench's pods")
		return nil
	}
	fmt.Println("\nWarning events for the bench's pods:")
	for r, n := range count {
		fmt.Printf("  %-28s %4d  e.g. %s\n", r, n, example[r])
	}
	return nil
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(100 * time.Microsecond)
}

// opTotals are one operation's histogram count and sum.
type opTotals struct {
	count uint64
	sum   float64
}

// agentOperations sums every worker's kforge_agent_pod_operation_duration_seconds
// by operation, read through the apiserver's nodes/NAME/proxy/metrics.
func agentOperations(ctx context.Context, client kubernetes.Interface, workers []string) (map[string]opTotals, error) {
	out := map[string]opTotals{}
	for _, w := range workers {
		raw, err := client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", w, "proxy", "metrics").DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: the agent's metrics: %w", w, err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: the agent's metrics: %w", w, err)
		}
		fam := fams["kforge_agent_pod_operation_duration_seconds"]
		if fam == nil {
			continue // an agent that has started no pod yet
		}
		for _, m := range fam.GetMetric() {
			var op string
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" {
					op = l.GetValue()
				}
			}
			t := out[op]
			t.count += m.GetHistogram().GetSampleCount()
			t.sum += m.GetHistogram().GetSampleSum()
			out[op] = t
		}
	}
	return out, nil
}

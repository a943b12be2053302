package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/installer/lab"
	"kforge.dev/kforge/pki"
)

// namespace holds everything the suite creates in the cluster.
const namespace = "chaos"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("lab", "", "the lab's folder (kforge lab up --dir), with a cluster installed by kforge up")
	bin := fs.String("kforge", "bin/kforge", "the kforge binary, for `kforge status`")
	only := fs.String("faults", "", "comma-separated faults to run (default: all, in order); -list names them")
	list := fs.Bool("list", false, "list the faults and exit")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file (- for stdout)")
	timeout := fs.Duration("client-timeout", 5*time.Second, "timeout of each client request")
	healthyWithin := fs.Duration("healthy-timeout", 3*time.Minute, "how long a fault may take to be healthy again")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list {
		for _, f := range faults {
			fmt.Fprintf(stdout, "%-20s %s\n", f.name, f.desc)
		}
		return nil
	}
	selected, err := selectFaults(*only)
	if err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-lab DIR is required")
	}
	// client-go logs every failed request through klog; the results say
	// what failed.
	klog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := newEnv(*dir, *bin, *timeout, *healthyWithin, stderr)
	if err != nil {
		return err
	}
	if err := e.prepare(ctx, selected); err != nil {
		return err
	}
	var results []Result
	for _, f := range selected {
		if ctx.Err() != nil {
			break
		}
		e.log.Info("fault", "name", f.name, "what", f.desc)
		r := e.runFault(ctx, f)
		e.log.Info("fault done", "name", f.name, "ok", r.OK(), "problems", r.Problems)
		results = append(results, r)
	}
	if err := printTable(stdout, results); err != nil {
		return err
	}
	if *jsonOut != "" {
		w := stdout
		if *jsonOut != "-" {
			fh, err := os.Create(*jsonOut)
			if err != nil {
				return err
			}
			defer fh.Close()
			w = fh
		}
		if err := writeJSON(w, results); err != nil {
			return err
		}
	}
	bad := 0
	for _, r := range results {
		if !r.OK() {
			bad++
		}
	}
	switch {
	case ctx.Err() != nil:
		return errors.New("interrupted")
	case bad > 0:
		return fmt.Errorf("%d of %d fault(s) failed their checks", bad, len(results))
	}
	return nil
}

func selectFaults(only string) ([]*fault, error) {
	if only == "" {
		return faults, nil
	}
	var out []*fault
	for _, name := range strings.Split(only, ",") {
		i := slices.IndexFunc(faults, func(f *fault) bool { return f.name == strings.TrimSpace(name) })
		if i < 0 {
			return nil, fmt.Errorf("no fault %q (-list names them)", name)
		}
		out = append(out, faults[i])
	}
	return out, nil
}

// env is the lab and the cluster on it, as the faults reach them.
type env struct {
	dir, bin, spec string
	cluster        *v1alpha1.Cluster
	prober         *installer.NetProber
	// rest is the admin's config through the load balancer.
	rest          *rest.Config
	client        kubernetes.Interface
	healthyWithin time.Duration
	log           *slog.Logger
}

func newEnv(dir, bin string, timeout, healthyWithin time.Duration, logOut io.Writer) (*env, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	spec := filepath.Join(dir, "cluster.yaml")
	c, err := v1alpha1.Load(spec)
	if err != nil {
		return nil, err
	}
	inv, err := pki.NewInventory(installer.PKISpec(c), "")
	if err != nil {
		return nil, err
	}
	pr, err := installer.NewNetProber(c, inv, nil)
	if err != nil {
		return nil, fmt.Errorf("has kforge up run on the lab? %w", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		return nil, err
	}
	cfg.Timeout, cfg.QPS, cfg.Burst = timeout, 200, 400
	cfg.UserAgent = "kforge-chaos"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return &env{dir: dir, bin: bin, spec: spec, cluster: c, prober: pr, rest: cfg, client: client, healthyWithin: healthyWithin, log: log}, nil
}

// direct is a client of one master's apiserver, not through the LB.
func (e *env) direct(m v1alpha1.Host) kubernetes.Interface {
	cfg := rest.CopyConfig(e.rest)
	cfg.Host = "https://" + v1alpha1.HostPort(m.Address, 6443)
	return kubernetes.NewForConfigOrDie(cfg)
}

// sh runs a shell command as root on a lab host over a connection of its
// own (a host that was cut off or restarted is reached afresh).
func (e *env) sh(ctx context.Context, host, cmd string) (string, error) {
	h, err := e.host(ctx, host)
	if err != nil {
		return "", err
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return h.Write(ctx, cmd)
}

// host is lab host name, connected; the caller closes it.
func (e *env) host(ctx context.Context, name string) (installer.Host, error) {
	hosts, err := lab.Hosts(e.dir)
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		if h.Name() == name {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := h.Connect(cctx); err != nil {
				return nil, err
			}
			return h, nil
		}
	}
	return nil, fmt.Errorf("no lab host %s", name)
}

// status runs `kforge status` once: nil when it exits 0, else the
// problems it lists.
func (e *env) status(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, e.bin, "status", "-f", e.spec)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		s := out.String()
		if i := strings.Index(s, "problem(s):"); i >= 0 {
			s = s[i+len("problem(s):"):]
		}
		return fmt.Errorf("%w: %s", err, oneLine(s))
	}
	return nil
}

// waitHealthy polls `kforge status` until it is clean and returns how long
// after since that was; never (and the last problems) when it was not
// within healthyWithin.
func (e *env) waitHealthy(ctx context.Context, since time.Time) (seconds, error) {
	deadline := time.Now().Add(e.healthyWithin)
	for {
		err := e.status(ctx)
		if err == nil {
			return seconds(time.Since(since)), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return never, err
		}
		sleep(ctx, time.Second)
	}
}

// etcdLeader names the master whose etcd member leads, and the others.
func (e *env) etcdLeader(ctx context.Context) (leader string, followers []string, err error) {
	for _, m := range e.cluster.Masters() {
		st, err := e.prober.EtcdMember(ctx, m.Address)
		if err != nil {
			return "", nil, fmt.Errorf("etcd %s: %w", m.Name, err)
		}
		if st.Leader == st.MemberID {
			leader = m.Name
		} else {
			followers = append(followers, m.Name)
		}
	}
	if leader == "" {
		return "", nil, errors.New("no etcd member says it leads")
	}
	return leader, followers, nil
}

// prepare makes the suite's namespace and, when a node fault is selected,
// the workload those faults act on.
func (e *env) prepare(ctx context.Context, selected []*fault) error {
	if _, err := e.waitHealthy(ctx, time.Now()); err != nil {
		return fmt.Errorf("the cluster is not healthy before any fault: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	if slices.ContainsFunc(selected, func(f *fault) bool { return f.workload }) {
		if err := e.ensureWorkload(ctx); err != nil {
			return err
		}
	}
	return nil
}

// runFault runs the load, injects f, waits until the cluster is healthy
// again, and checks that every acknowledged write is readable through the
// LB and through every master's apiserver.
func (e *env) runFault(ctx context.Context, f *fault) Result {
	r := Result{Fault: f.name, Description: f.desc}
	ld := newLoad(e.client, namespace, f.name)
	lctx, stopLoad := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ld.run(lctx) }()
	defer func() { stopLoad(); <-done }()
	sleep(ctx, 3*time.Second) // a baseline before the fault

	fr := &faultRun{env: e, result: &r, load: ld, injected: time.Now()}
	if err := f.run(ctx, fr); err != nil {
		fr.problem("%v", err)
	}
	if fr.healed.IsZero() {
		fr.healed = time.Now()
	}
	healthy, err := e.waitHealthy(ctx, fr.healed)
	r.Healthy = healthy
	if err != nil {
		fr.problem("not healthy %s after the heal: %v", e.healthyWithin, err)
	} else if fr.afterHealthy != nil {
		fr.afterHealthy(ctx)
	}
	sleep(ctx, 2*time.Second) // writes on the healed cluster
	stopLoad()
	<-done
	acked, writes, reads, stale := ld.snapshot()
	for k, v := range fr.extra {
		acked[k] = v
	}
	summarize(&r, writes, reads, fr.injected, fr.healed)
	r.StaleReads = stale
	if stale > 0 {
		fr.note("%d read(s) of an acknowledged write answered NotFound", stale)
	}
	e.verify(ctx, fr, acked)
	return r
}

// verify checks every acknowledged write through the LB and through each
// master's own apiserver, retrying a failing list for a minute.
func (e *env) verify(ctx context.Context, fr *faultRun, acked map[string]string) {
	type via struct {
		name   string
		client kubernetes.Interface
	}
	vias := []via{{"the load balancer", e.client}}
	for _, m := range e.cluster.Masters() {
		vias = append(vias, via{m.Name, e.direct(m)})
	}
	for _, v := range vias {
		var lost []string
		var err error
		for deadline := time.Now().Add(time.Minute); ; {
			if lost, err = missing(ctx, v.client, namespace, fr.result.Fault, acked); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			sleep(ctx, time.Second)
		}
		if err != nil {
			fr.problem("listing the writes through %s: %v", v.name, err)
			continue
		}
		fr.result.Lost = max(fr.result.Lost, len(lost))
		if len(lost) > 0 {
			slices.Sort(lost)
			fr.problem("%d acknowledged write(s) not readable through %s: %s", len(lost), v.name, strings.Join(lost[:min(5, len(lost))], ", "))
		}
	}
}

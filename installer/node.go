package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/internal/atomicfile"
	"kforge.dev/kforge/pki"
)

// NodeReadyWait bounds node add's wait for the new Node to turn Ready.
const NodeReadyWait = 2 * time.Minute

// errMasterNodeOps is what node add and remove say of a master.
var errMasterNodeOps = errors.New("masters cannot be added or removed by kforge node yet (etcd membership, the apiserver certificate's names and the load balancers' backends would change); only workers can")

// NodeAddOptions configure `kforge node add`.
type NodeAddOptions struct {
	// Up carries the output, SSH and binary settings of the converge that
	// installs the host; its Cluster, Hosts and phases are set by NodeAdd.
	Up UpOptions
	// File is cluster.yaml, which NodeAdd edits.
	File string
	// Host is the host to add. Only Name is required when cluster.yaml
	// already has the entry; its other fields must then agree with it
	// when set. A new entry needs Address; Role defaults to worker.
	Host v1alpha1.Host
	// ReadyWait bounds the wait for the Node to be Ready (NodeReadyWait
	// when 0).
	ReadyWait time.Duration
	// Client replaces the API client of the wait (tests).
	Client kubernetes.Interface
}

// NodeAdd adds a worker: the entry goes into cluster.yaml (unless the
// user wrote it there), then the converge of `kforge up` runs on that one
// host — facts and preflight before anything changes (the file is written
// only once they pass), the binary, its PKI (pki init issues only what is
// missing: its own leaves), its files, configs and units, its daemons
// started — and it waits until its Node is Ready. No other host is
// touched, so `kforge up` afterwards has nothing to do. A failed run is
// completed by running it again, or by `kforge up`.
func NodeAdd(ctx context.Context, o NodeAddOptions) (*UpResult, error) {
	if o.File == "" {
		return nil, errors.New("node add: no cluster file")
	}
	data, err := os.ReadFile(o.File)
	if err != nil {
		return nil, fmt.Errorf("reading cluster file: %w", err)
	}
	abs, err := filepath.Abs(o.File)
	if err != nil {
		return nil, err
	}
	cur, err := v1alpha1.Load(o.File)
	if err != nil {
		return nil, err
	}
	want := o.Host
	newData := data
	if h := cur.Host(want.Name); h != nil {
		if err := sameEntry(*h, want); err != nil {
			return nil, fmt.Errorf("%s: host %s is already in the file: %w", o.File, want.Name, err)
		}
		want = *h
	} else {
		if want.Address == "" {
			return nil, fmt.Errorf("%s has no host %s: give its --address to add it", o.File, want.Name)
		}
		if want.Role == "" {
			want.Role = v1alpha1.RoleWorker
		}
	}
	switch want.Role {
	case v1alpha1.RoleWorker:
	case v1alpha1.RoleMaster:
		return nil, fmt.Errorf("node add %s: %w", want.Name, errMasterNodeOps)
	default:
		return nil, fmt.Errorf("node add %s: role %q cannot be added; only workers can", want.Name, want.Role)
	}
	if cur.Host(want.Name) == nil {
		if newData, err = v1alpha1.AddHostEntry(data, want); err != nil {
			return nil, fmt.Errorf("%s: %w", o.File, err)
		}
	}
	c, err := v1alpha1.Parse(newData, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.File, err)
	}
	c.Path = abs
	if err := c.CheckSSHFiles(); err != nil {
		return nil, fmt.Errorf("%s: %w", o.File, err)
	}

	up := o.Up
	up.Cluster = c
	up.Command = "kforge node add " + want.Name
	if up.Hosts == nil {
		all := SSHHosts(c, up.AcceptNewHostKeys, up.PromptPassword, up.Log)
		for _, h := range all {
			if h.Name() == want.Name {
				up.Hosts = append(up.Hosts, h)
			} else {
				_ = h.Close()
			}
		}
	}
	if string(newData) != string(data) {
		up.BeforeChanges = append(up.BeforeChanges, &clusterFilePhase{
			id: "cluster-file", title: "Add " + want.Name + " to " + filepath.Base(abs), path: abs, data: newData})
	}
	up.After = append(up.After, &nodeReadyPhase{cluster: c, name: want.Name, wait: o.ReadyWait, client: o.Client})
	res, err := Up(ctx, up)
	if err == nil && up.DryRun && string(newData) != string(data) && !up.JSON {
		fmt.Fprintf(up.Out, "Would add to %s:\n%s", o.File, addedLines(data, newData))
	}
	return res, err
}

// sameEntry checks that the fields set in want agree with the entry h.
func sameEntry(h, want v1alpha1.Host) error {
	var diffs []string
	if want.Address != "" && want.Address != h.Address {
		diffs = append(diffs, fmt.Sprintf("address %s, not %s", h.Address, want.Address))
	}
	if want.Role != "" && want.Role != h.Role {
		diffs = append(diffs, fmt.Sprintf("role %s, not %s", h.Role, want.Role))
	}
	if want.SSH != nil && want.SSH.User != "" && (h.SSH == nil || h.SSH.User != want.SSH.User) {
		user := ""
		if h.SSH != nil {
			user = h.SSH.User
		}
		diffs = append(diffs, fmt.Sprintf("ssh user %q, not %q", user, want.SSH.User))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("it has %s; drop the flags or edit the entry", strings.Join(diffs, ", "))
	}
	return nil
}

// addedLines are the lines of after that before lacks (an insertion).
func addedLines(before, after []byte) string {
	b, a := strings.SplitAfter(string(before), "\n"), strings.SplitAfter(string(after), "\n")
	i := 0
	for i < len(b) && i < len(a) && a[i] == b[i] {
		i++
	}
	j := 0
	for j < len(b)-i && j < len(a)-i && a[len(a)-1-j] == b[len(b)-1-j] {
		j++
	}
	return strings.Join(a[i:len(a)-j], "")
}

// clusterFilePhase writes the edited cluster.yaml (atomically, keeping
// its mode). A dry run writes nothing.
type clusterFilePhase struct {
	id, title, path string
	data            []byte
}

func (p *clusterFilePhase) ID() string                   { return p.id }
func (p *clusterFilePhase) Title() string                { return p.title }
func (p *clusterFilePhase) DryRun(context.Context) error { return nil }

func (p *clusterFilePhase) Run(context.Context) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(p.path); err == nil {
		mode = fi.Mode().Perm()
	}
	return atomicfile.Write(p.path, p.data, mode)
}

// nodeReadyPhase waits until the Node is registered and Ready, through
// the admin kubeconfig up wrote.
type nodeReadyPhase struct {
	cluster *v1alpha1.Cluster
	name    string
	wait    time.Duration
	client  kubernetes.Interface
}

func (p *nodeReadyPhase) ID() string                   { return "node-ready" }
func (p *nodeReadyPhase) Title() string                { return "Node " + p.name + " registered and Ready" }
func (p *nodeReadyPhase) DryRun(context.Context) error { return nil }

func (p *nodeReadyPhase) Run(ctx context.Context) error {
	client := p.client
	if client == nil {
		var err error
		if client, err = AdminClient(p.cluster); err != nil {
			return err
		}
	}
	wait := p.wait
	if wait <= 0 {
		wait = NodeReadyWait
	}
	return waitFor(ctx, wait, time.Second, func(ctx context.Context) error {
		n, err := client.CoreV1().Nodes().Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s is not Ready: %s %s", p.name, c.Reason, c.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", p.name)
	})
}

// AdminClient is a client of the cluster's API through the load balancer,
// with the admin certificate of the local PKI.
func AdminClient(c *v1alpha1.Cluster) (kubernetes.Interface, error) {
	inv, err := pki.NewInventory(PKISpec(c), c.Spec.PKI.Dir)
	if err != nil {
		return nil, err
	}
	data, err := pki.KubeconfigFor(inv, "admin")
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return nil, err
	}
	rc.Timeout = 20 * time.Second
	return kubernetes.NewForConfig(rc)
}

// NodeRemoveOptions configure `kforge node remove`.
type NodeRemoveOptions struct {
	File string
	Name string
	// Force removes a host that cannot be reached: its pods are deleted
	// without waiting for it, and its reset is skipped with a warning.
	Force  bool
	DryRun bool
	// DrainTimeout bounds the drain (DefaultDrainTimeout when 0).
	DrainTimeout time.Duration
	JSON, TTY    bool
	Out, ErrOut  io.Writer
	// PromptPassword asks for a sudo password on a terminal; nil when
	// there is none.
	PromptPassword func(prompt string) (string, error)
	Version        string
	Log            *slog.Logger
	// Host replaces the host's SSH connection, Client the API client (tests).
	Host   Host
	Client kubernetes.Interface
}

// NodeRemoveResult says what a removal did.
type NodeRemoveResult struct {
	Drain *DrainResult
	// Unreachable is set when the host could not be reached (with Force).
	Unreachable string
	Duration    time.Duration
}

// NodeRemove removes a worker: connect (an unreachable host stops it
// before anything changes, unless Force), cordon, drain through the
// Eviction API, reset the host as `kforge reset` does (its agent stopped,
// the Node cannot come back), delete the Node, then take its entry out of cluster.yaml and its folder out of the PKI.
// Every step is idempotent, so a run that failed half-way is completed by
// running it again; a host no longer in the file has nothing to remove.
func NodeRemove(ctx context.Context, o NodeRemoveOptions) (*NodeRemoveResult, error) {
	start := time.Now()
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	data, err := os.ReadFile(o.File)
	if err != nil {
		return nil, fmt.Errorf("reading cluster file: %w", err)
	}
	c, err := v1alpha1.Load(o.File)
	if err != nil {
		return nil, err
	}
	ch := c.Host(o.Name)
	if ch == nil {
		fmt.Fprintf(o.Out, "%s has no host %s: nothing to remove.\n", o.File, o.Name)
		return &NodeRemoveResult{}, nil
	}
	switch ch.Role {
	case v1alpha1.RoleWorker:
	case v1alpha1.RoleMaster:
		return nil, fmt.Errorf("node remove %s: %w", o.Name, errMasterNodeOps)
	default:
		return nil, fmt.Errorf("node remove %s: a %s host cannot be removed; only workers can", o.Name, ch.Role)
	}
	newData, err := v1alpha1.RemoveHostEntry(data, o.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.File, err)
	}
	if _, err := v1alpha1.Parse(newData, filepath.Dir(c.Path)); err != nil {
		return nil, fmt.Errorf("%s without %s: %w", o.File, o.Name, err)
	}
	inv, err := pki.NewInventory(PKISpec(c), c.Spec.PKI.Dir)
	if err != nil {
		return nil, err
	}
	var pkiFolder string
	if fs := inv.FilesFor(o.Name); len(fs) > 0 {
		pkiFolder = filepath.Join(inv.Dir, filepath.FromSlash(path.Dir(fs[0].Path)))
	}
	h := o.Host
	if h == nil {
		if err := c.CheckSSHFiles(); err != nil {
			return nil, fmt.Errorf("%s: %w", o.File, err)
		}
		for _, sh := range SSHHosts(c, false, o.PromptPassword, o.Log) {
			if sh.Name() == o.Name {
				h = sh
			} else {
				_ = sh.Close()
			}
		}
	}
	defer h.Close()
	client := o.Client
	if client == nil {
		if client, err = AdminClient(c); err != nil {
			return nil, err
		}
	}

	var rep Reporter
	if o.JSON {
		rep = NewJSONReporter(o.Out)
	} else {
		tr := NewTextReporter(o.ErrOut, o.TTY)
		defer tr.Close()
		rep = tr
	}
	gate := NewGate(o.DryRun)
	env := &Env{Hosts: []Host{h}, Gate: gate, Reporter: rep, Facts: &FactsStore{}, Changed: &ChangeSet{}}
	if !o.DryRun {
		run := time.Now().UTC().Format("20060102T150405Z") + "-" + strconv.Itoa(os.Getpid())
		j, err := OpenJournal(JournalPath(c.Path), run)
		if err != nil {
			return nil, err
		}
		defer j.Close()
		env.Journal = j
		if err := j.Record(JournalRecord{Kind: JournalRunStart, Version: o.Version, OK: true}); err != nil {
			return nil, err
		}
	}
	res := &NodeRemoveResult{}
	rm := &nodeRemoval{env: env, o: o, host: h, client: client, res: res}
	step := func(id, title string, run func(context.Context) (string, error)) Phase {
		return &stepPhase{env: env, host: h, id: id, title: title, run: run}
	}
	phases := []Phase{
		step("connect", "Reach "+o.Name+" and the API", rm.connect),
		step("cordon", "Cordon "+o.Name, rm.cordon),
		step("drain", "Drain "+o.Name+" (evict its pods)", rm.drain),
		// The agent registers its Node again when it is deleted under it:
		// the host is reset first.
		step("reset", "Reset "+o.Name+" (units, files, pod state)", rm.reset),
		step("delete-node", "Delete Node "+o.Name, rm.deleteNode),
		&clusterFilePhase{id: "cluster-file", title: "Remove " + o.Name + " from " + filepath.Base(c.Path), path: c.Path, data: newData},
		step("pki-folder", "Remove "+o.Name+"'s PKI folder", func(context.Context) (string, error) {
			if pkiFolder == "" {
				return "", &SkipError{Why: "none"}
			}
			if o.DryRun {
				return "would remove " + pkiFolder, nil
			}
			return "removed " + pkiFolder, os.RemoveAll(pkiFolder)
		}),
	}
	err = (&Manager{Env: env, Phases: phases}).Run(ctx)
	res.Duration = time.Since(start)
	if env.Journal != nil {
		rec := JournalRecord{Kind: JournalRunEnd, OK: err == nil, DurationMS: res.Duration.Milliseconds()}
		if err != nil {
			rec.Error = err.Error()
		}
		_ = env.Journal.Record(rec)
	}
	verb := "done"
	switch {
	case err != nil:
		verb = "failed (run it again to carry on)"
	case o.DryRun:
		verb = "dry run done, nothing was changed"
	}
	summary := fmt.Sprintf("kforge node remove %s %s in %s.", o.Name, verb, formatDuration(res.Duration))
	if res.Unreachable != "" {
		summary += " Warning: " + o.Name + " was unreachable and was not reset (" + res.Unreachable + "); wipe it before reusing it."
	}
	if o.JSON {
		ev := Event{Status: StatusSummary, Message: summary, DurationMS: res.Duration.Milliseconds()}
		if err != nil {
			ev.Error = err.Error()
		}
		env.report(ev)
	} else {
		fmt.Fprintln(o.Out, summary)
	}
	return res, err
}

// stepPhase is a phase on the one host of a node operation: run's
// message goes on the host's ✓ line; a *SkipError reports a skip.
type stepPhase struct {
	env       *Env
	host      Host
	id, title string
	run       func(ctx context.Context) (string, error)
}

func (p *stepPhase) ID() string    { return p.id }
func (p *stepPhase) Title() string { return p.title }

func (p *stepPhase) Run(ctx context.Context) error {
	return p.env.Each(ctx, p, []Host{p.host}, func(ctx context.Context, _ Host) (string, error) { return p.run(ctx) })
}

// nodeRemoval holds the steps of one NodeRemove.
type nodeRemoval struct {
	env    *Env
	o      NodeRemoveOptions
	host   Host
	client kubernetes.Interface
	res    *NodeRemoveResult
}

func (r *nodeRemoval) connect(ctx context.Context) (string, error) {
	if _, err := r.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return "", fmt.Errorf("the API does not answer (nothing was changed): %w", err)
	}
	if err := r.host.Connect(ctx); err != nil {
		if !r.o.Force {
			return "", fmt.Errorf("unreachable, nothing was changed: %w; with --force it is removed anyway (its pods deleted without waiting for it, its reset skipped)", err)
		}
		r.res.Unreachable = oneLine(err.Error())
		return "", &SkipError{Why: "unreachable; going on (--force): its pods are deleted without waiting and it is not reset"}
	}
	return "connected; the API answers", nil
}

func (r *nodeRemoval) cordon(ctx context.Context) (string, error) {
	n, err := r.client.CoreV1().Nodes().Get(ctx, r.o.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", &SkipError{Why: "no Node " + r.o.Name}
	case err != nil:
		return "", err
	case n.Spec.Unschedulable:
		return "", &SkipError{Why: "cordoned already"}
	case r.o.DryRun:
		return "would mark it unschedulable", nil
	}
	if _, err := Cordon(ctx, r.client, r.o.Name); err != nil {
		return "", err
	}
	return "unschedulable", nil
}

func (r *nodeRemoval) drain(ctx context.Context) (string, error) {
	if r.o.DryRun {
		list, err := r.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + r.o.Name})
		if err != nil {
			return "", err
		}
		var evict, keep []string
		for _, p := range list.Items {
			if ignoredPod(&p) != "" {
				keep = append(keep, p.Namespace+"/"+p.Name)
			} else {
				evict = append(evict, p.Namespace+"/"+p.Name)
			}
		}
		return fmt.Sprintf("would evict %d pod(s): %s; would leave %d DaemonSet or mirror pod(s)", len(evict), podNames(evict), len(keep)), nil
	}
	d := &Drainer{Client: r.client, Timeout: r.o.DrainTimeout, Force: r.res.Unreachable != "",
		Progress: func(m string) {
			r.env.report(Event{Phase: "drain", Host: r.o.Name, Status: StatusProgress, Message: m})
		}}
	res, err := d.Drain(ctx, r.o.Name)
	r.res.Drain = res
	if err != nil {
		return "", err
	}
	msg := fmt.Sprintf("%d pod(s) evicted and gone, %d DaemonSet or mirror pod(s) left", len(res.Evicted), len(res.Ignored))
	if res.Refusals > 0 {
		msg += fmt.Sprintf(", %d refusal(s) retried", res.Refusals)
	}
	return msg, nil
}

func (r *nodeRemoval) deleteNode(ctx context.Context) (string, error) {
	if r.o.DryRun {
		return "would delete it", nil
	}
	err := r.client.CoreV1().Nodes().Delete(ctx, r.o.Name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return "", &SkipError{Why: "no Node " + r.o.Name}
	}
	if err != nil {
		return "", err
	}
	return "deleted", nil
}

func (r *nodeRemoval) reset(ctx context.Context) (string, error) {
	if r.res.Unreachable != "" {
		return "", &SkipError{Why: "WARNING: unreachable, not reset; wipe it before reusing it"}
	}
	if _, err := r.env.Gate.Write(ctx, r.host, resetScript, "uninstall"); err != nil {
		return "", err
	}
	if r.o.DryRun {
		return "would stop and remove every kforge unit, file and pod", nil
	}
	return "units, /etc/kforge, /var/lib/kforge, the binary and its pods removed", nil
}

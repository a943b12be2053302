package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/pki"
)

// UpgradeCordonAnnotation marks a Node that kforge upgrade cordoned, so a
// run that stopped half-way uncordons it when it carries on (and leaves
// alone a Node someone else cordoned).
const UpgradeCordonAnnotation = "kforge.dev/upgrade-cordoned"

// UpgradeOptions configure `kforge upgrade`.
type UpgradeOptions struct {
	// Up carries the cluster, the binary (empty: the running one), the
	// output, SSH and dry-run settings; its phases are set by Upgrade.
	Up UpOptions
	// MaxUnavailable is how many workers are drained and upgraded at
	// once (1 when 0).
	MaxUnavailable int
	// DrainTimeout bounds each worker's drain (DefaultDrainTimeout when 0).
	DrainTimeout time.Duration
	// ReadyWait bounds the wait for an upgraded worker's Node to be Ready
	// (NodeReadyWait when 0).
	ReadyWait time.Duration
	// AllowDowngrade lets a binary older than a host's replace it.
	AllowDowngrade bool
	// BinaryVersion is the new binary's version; when empty the binary
	// is run (`kforge version --output json`) to ask it.
	BinaryVersion string
	// Client replaces the API client (tests).
	Client kubernetes.Interface
}

// upgrade is what Upgrade adds to an Up run.
type upgrade struct {
	o       UpgradeOptions
	to      string
	mu      sync.Mutex
	states  map[string]*hostVersion
	done    []string
	current []string
}

// hostVersion is what a host runs before the upgrade.
type hostVersion struct {
	// Version is `kforge version` of the binary on disk; "" when absent.
	Version string
	// Stale are the units whose process runs a binary that was replaced
	// on disk (a run that stopped between the upload and the restart).
	Stale []string
	// Inactive are the host's role units that are not active.
	Inactive []string
}

// Upgrade replaces the kforge binary of every host, and so every role,
// while the cluster serves, in the order the version skew rules want:
// the masters one at a time (on each, the binary, then etcd — its member
// healthy and caught up with the leader — then the apiserver — ready
// itself and through the load balancer — then the controller manager and
// the scheduler), then the load balancer host, then the workers
// MaxUnavailable at a time (cordon, drain through the Eviction API, the
// binary, agent, proxy, dns and ingress restarted and healthy, the Node
// Ready, uncordon). Facts and preflight run before anything changes; a
// host whose binary on disk is newer than the one given is refused
// (unless AllowDowngrade). A host that already runs this binary in every
// unit is skipped, so a run that stopped is completed by running it again.
func Upgrade(ctx context.Context, o UpgradeOptions) (*UpResult, error) {
	to := o.BinaryVersion
	if to == "" {
		path := o.Up.Binary
		if path == "" {
			p, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("finding the running binary (pass --binary): %w", err)
			}
			path = p
		}
		var err error
		if to, err = binaryVersion(ctx, path); err != nil {
			return nil, err
		}
	}
	o.Up.Command = "kforge upgrade"
	o.Up.upgrade = &upgrade{o: o, to: to, states: map[string]*hostVersion{}}
	return Up(ctx, o.Up)
}

// binaryVersion runs the binary at path (the running one when empty) to
// read its version.
func binaryVersion(ctx context.Context, path string) (string, error) {
	if path == "" {
		return "", errors.New("no binary to ask for its version")
	}
	out, err := exec.CommandContext(ctx, path, "version", "--output", "json").Output()
	if err != nil {
		return "", fmt.Errorf("asking %s its version (kforge version --output json): %w", path, err)
	}
	return parseVersionJSON(out)
}

func parseVersionJSON(out []byte) (string, error) {
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Version == "" {
		return "", fmt.Errorf("unexpected output of kforge version: %q", oneLine(string(out)))
	}
	return v.Version, nil
}

// newerThan reports whether version a is newer than b, and whether the
// two could be ordered at all (both semantic versions, "v" optional).
func newerThan(a, b string) (newer, comparable bool) {
	va, err1 := version.ParseSemantic(a)
	vb, err2 := version.ParseSemantic(b)
	if err1 != nil || err2 != nil {
		return false, false
	}
	return vb.LessThan(va), true
}

// phases are an upgrade's phases after facts and preflight.
func (u *upgrade) phases(env *Env, cp *ControlPlane, bin BinaryInfo, up *UploadBinaryPhase) []Phase {
	step := func(id, title string, hosts func() []Host, parallel int, fn func(context.Context, Host) (string, error)) Phase {
		return &upgradeStep{env: env, id: id, title: title, hosts: hosts, parallel: parallel, fn: fn}
	}
	byRole := func(role string) func() []Host {
		return func() []Host {
			var out []Host
			for _, h := range env.HostsWithRole(role) {
				if !slices.Contains(u.current, h.Name()) {
					out = append(out, h)
				}
			}
			return out
		}
	}
	workers := max(1, u.o.MaxUnavailable)
	return []Phase{
		step("versions", "Versions on the hosts (to "+u.to+")", func() []Host { return env.Hosts }, DefaultParallel,
			func(ctx context.Context, h Host) (string, error) { return u.readVersion(ctx, env, h, bin) }),
		&upgradeGate{u: u, env: env},
		&upgradePrepare{cp: cp},
		step("masters", "Masters, one at a time", byRole(v1alpha1.RoleMaster), 1,
			func(ctx context.Context, h Host) (string, error) { return u.upgradeHost(ctx, cp, up, h) }),
		step("loadbalancer", "Load balancer", byRole(v1alpha1.RoleLoadBalancer), 1,
			func(ctx context.Context, h Host) (string, error) { return u.upgradeHost(ctx, cp, up, h) }),
		step("workers", fmt.Sprintf("Workers, %d at a time (cordon, drain, upgrade, Ready, uncordon)", workers), byRole(v1alpha1.RoleWorker), workers,
			func(ctx context.Context, h Host) (string, error) { return u.upgradeWorker(ctx, cp, up, h) }),
		step("uncordon", "Nodes cordoned by an earlier upgrade", func() []Host { return env.HostsWithRole(v1alpha1.RoleWorker) }, DefaultParallel,
			func(ctx context.Context, h Host) (string, error) { return u.uncordonLeftover(ctx, cp, h) }),
	}
}

// upgradeStep runs fn on the hosts its hosts func names when it runs
// (after the versions are known), parallel at once.
type upgradeStep struct {
	env       *Env
	id, title string
	hosts     func() []Host
	parallel  int
	fn        func(context.Context, Host) (string, error)
}

func (p *upgradeStep) ID() string    { return p.id }
func (p *upgradeStep) Title() string { return p.title }

func (p *upgradeStep) ShouldRun() (bool, string) {
	if len(p.hosts()) == 0 {
		return false, "no host to upgrade"
	}
	return true, ""
}

func (p *upgradeStep) Run(ctx context.Context) error {
	env := *p.env
	env.Parallel = p.parallel
	return env.Each(ctx, p, p.hosts(), p.fn)
}

// versionScript prints the version of the binary on disk and, per unit,
// its state and the binary its process runs ("(deleted)" once replaced).
func versionScript(units []string) string {
	return `if [ -x ` + BinaryPath + ` ]; then echo "version=$(` + BinaryPath + ` version --output json 2>/dev/null | tr -d '\n')"; fi
for u in ` + strings.Join(units, " ") + `; do
  pid=$(systemctl show -p MainPID --value $u 2>/dev/null); exe=
  if [ -n "$pid" ] && [ "$pid" != 0 ]; then exe=$(readlink /proc/$pid/exe 2>/dev/null); fi
  echo "unit $u $(systemctl is-active $u 2>/dev/null) $exe"
done
`
}

func parseVersionScript(out string) (*hostVersion, error) {
	hv := &hostVersion{}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "version="); ok {
			v, err := parseVersionJSON([]byte(rest))
			if err != nil {
				return nil, err
			}
			hv.Version = v
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "unit" {
			continue
		}
		switch {
		case f[2] != "active":
			hv.Inactive = append(hv.Inactive, f[1])
		case strings.HasSuffix(line, "(deleted)"):
			hv.Stale = append(hv.Stale, f[1])
		}
	}
	return hv, nil
}

func (u *upgrade) readVersion(ctx context.Context, env *Env, h Host, bin BinaryInfo) (string, error) {
	var units []string
	for _, r := range rolesOn(u.o.Up.Cluster, hostEntry(u.o.Up.Cluster, h)) {
		units = append(units, r.Unit())
	}
	out, err := h.Run(ctx, versionScript(units))
	if err != nil {
		return "", err
	}
	hv, err := parseVersionScript(out)
	if err != nil {
		return "", err
	}
	u.mu.Lock()
	u.states[h.Name()] = hv
	f := env.Facts.Get(h.Name())
	current := f != nil && f.KforgeSHA256 == bin.SHA256 && len(hv.Stale) == 0 && len(hv.Inactive) == 0
	if current {
		u.current = append(u.current, h.Name())
	}
	u.mu.Unlock()
	msg := "kforge " + hv.Version
	switch {
	case hv.Version == "":
		msg = "no kforge binary"
	case current:
		msg += ": runs this binary in every unit, nothing to do"
	case len(hv.Stale) > 0:
		msg += "; still running the replaced binary: " + strings.Join(hv.Stale, ", ")
	}
	if len(hv.Inactive) > 0 {
		msg += "; not active: " + strings.Join(hv.Inactive, ", ")
	}
	return msg, nil
}

// hostEntry is h's entry in cluster.yaml.
func hostEntry(c *v1alpha1.Cluster, h Host) v1alpha1.Host {
	if e := c.Host(h.Name()); e != nil {
		return *e
	}
	return v1alpha1.Host{Name: h.Name(), Role: h.Role(), Address: h.Address()}
}

// upgradeGate refuses the upgrade before anything changes: a host with
// no kforge (install it with kforge up), a host whose binary is newer
// than the one given (unless AllowDowngrade).
type upgradeGate struct {
	u   *upgrade
	env *Env
}

func (p *upgradeGate) ID() string    { return "skew" }
func (p *upgradeGate) Title() string { return "Version skew check" }

func (p *upgradeGate) Run(context.Context) error {
	u := p.u
	var problems, unordered []string
	for _, h := range p.env.Hosts {
		hv := u.states[h.Name()]
		switch {
		case hv == nil:
			problems = append(problems, h.Name()+": its version is unknown")
		case hv.Version == "":
			problems = append(problems, h.Name()+": no kforge installed (run kforge up first)")
		case hv.Version == u.to:
		default:
			newer, ok := newerThan(hv.Version, u.to)
			switch {
			case !ok:
				unordered = append(unordered, h.Name()+" "+hv.Version)
			case newer && !u.o.AllowDowngrade:
				problems = append(problems, fmt.Sprintf("%s runs kforge %s, newer than %s (a downgrade needs --allow-downgrade)", h.Name(), hv.Version, u.to))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New("refused, nothing was changed: " + strings.Join(problems, "; "))
	}
	if len(unordered) > 0 {
		p.env.report(Event{Phase: p.ID(), Status: StatusProgress,
			Message: "not semantic versions, so their order is unknown (going on): " + strings.Join(unordered, ", ") + " → " + u.to})
	}
	return nil
}

// upgradePrepare loads the PKI as it is (nothing is issued) and builds the
// health prober the gates use.
type upgradePrepare struct{ cp *ControlPlane }

func (p *upgradePrepare) ID() string    { return "prepare" }
func (p *upgradePrepare) Title() string { return "Health checks from the local PKI" }

func (p *upgradePrepare) Run(context.Context) error {
	cp := p.cp
	inv, err := pki.NewInventory(PKISpec(cp.Cluster), cp.PKIDir)
	if err != nil {
		return err
	}
	cp.inv = inv
	newProber := cp.NewProber
	if newProber == nil {
		newProber = func(c *v1alpha1.Cluster, inv *pki.Inventory) (Prober, error) {
			return NewNetProber(c, inv, NewDialer(c, cp.Env.Hosts).DialContext)
		}
	}
	cp.prober, err = newProber(cp.Cluster, inv)
	return err
}

// upgradeHost uploads the binary to h and restarts its roles in start
// order, each healthy (and, for etcd, caught up; for the apiserver, ready
// through the load balancer too) before the next.
func (u *upgrade) upgradeHost(ctx context.Context, cp *ControlPlane, up *UploadBinaryPhase, h Host) (string, error) {
	var parts []string
	msg, err := up.upload(ctx, h)
	var skip *SkipError
	switch {
	case errors.As(err, &skip):
		parts = append(parts, "binary "+skip.Why)
	case err != nil:
		return "", err
	default:
		parts = append(parts, msg)
	}
	dry := cp.Env.Gate.DryRun()
	for _, r := range rolesOn(cp.Cluster, hostEntry(cp.Cluster, h)) {
		t0 := time.Now()
		if _, err := cp.Env.Gate.Write(ctx, h, "systemctl restart "+r.Unit(), "restart "+r.Unit()+" on the new binary"); err != nil {
			return "", err
		}
		if dry {
			parts = append(parts, "would restart "+r.Unit())
			continue
		}
		if err := u.gate(ctx, cp, r, h); err != nil {
			return "", fmt.Errorf("%s after its restart: %w (journalctl -u %s on the host, or kforge logs --host %s, says why)", r.Unit(), err, r.Unit(), h.Name())
		}
		parts = append(parts, fmt.Sprintf("%s healthy in %s", r.Name, formatDuration(time.Since(t0))))
	}
	if !dry {
		u.mu.Lock()
		u.done = append(u.done, h.Name())
		u.mu.Unlock()
	}
	return strings.Join(parts, "; "), nil
}

// gate waits until role r on h is healthy; etcd also until the member
// has applied what the leader had committed, the apiserver until the API
// answers through the load balancer.
func (u *upgrade) gate(ctx context.Context, cp *ControlPlane, r *Role, h Host) error {
	if r.Health != nil {
		if err := waitFor(ctx, r.Wait, pollInterval, func(ctx context.Context) error { return r.Health(ctx, cp, h) }); err != nil {
			return err
		}
	}
	switch r {
	case etcdRole:
		cu, ok := cp.prober.(etcdCatchUpChecker)
		if !ok {
			return nil
		}
		var addrs []string
		for _, m := range cp.Cluster.Masters() {
			addrs = append(addrs, m.Address)
		}
		return waitFor(ctx, EtcdWait, pollInterval, func(ctx context.Context) error { return cu.EtcdCaughtUp(ctx, addrs, h.Address()) })
	case apiserverRole:
		lb := cp.Cluster.APIServerURL()
		return waitFor(ctx, APIServerWait, pollInterval, func(ctx context.Context) error { return cp.prober.APIServer(ctx, lb) })
	}
	return nil
}

// etcdCatchUpChecker is a Prober that can tell whether a member caught up
// (NetProber).
type etcdCatchUpChecker interface {
	EtcdCaughtUp(ctx context.Context, addresses []string, address string) error
}

// EtcdCaughtUp returns nil once the member at address has applied every
// entry the leader had committed when it was asked.
func (p *NetProber) EtcdCaughtUp(ctx context.Context, addresses []string, address string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := p.etcdClient(ctx, etcdEndpoints(addresses))
	if err != nil {
		return err
	}
	defer cli.Close()
	ep := EtcdEndpoint(address)
	mine, err := cli.Status(ctx, ep)
	if err != nil {
		return err
	}
	var leaderEP string
	members, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	for _, m := range members.Members {
		if m.ID == mine.Leader && len(m.ClientURLs) > 0 {
			leaderEP = m.ClientURLs[0]
		}
	}
	if leaderEP == "" {
		return errors.New("the member knows no leader")
	}
	leader, err := cli.Status(ctx, leaderEP)
	if err != nil {
		return err
	}
	if leaderEP != ep {
		if mine, err = cli.Status(ctx, ep); err != nil {
			return err
		}
	}
	if mine.RaftAppliedIndex < leader.RaftIndex {
		return fmt.Errorf("member %s applied index %d, the leader's committed %d", address, mine.RaftAppliedIndex, leader.RaftIndex)
	}
	return nil
}

// upgradeWorker cordons h's Node (marking it ours), drains it, upgrades
// the host, waits until the Node is Ready and uncordons it.
func (u *upgrade) upgradeWorker(ctx context.Context, cp *ControlPlane, up *UploadBinaryPhase, h Host) (string, error) {
	client, err := u.client(cp)
	if err != nil {
		return "", err
	}
	name := h.Name()
	dry := cp.Env.Gate.DryRun()
	var parts []string
	if dry {
		list, err := client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name})
		if err != nil {
			return "", err
		}
		n := 0
		for _, p := range list.Items {
			if ignoredPod(&p) == "" {
				n++
			}
		}
		parts = append(parts, fmt.Sprintf("would cordon %s and evict %d pod(s)", name, n))
	} else {
		if err := cordonForUpgrade(ctx, client, name); err != nil {
			return "", err
		}
		d := &Drainer{Client: client, Timeout: u.o.DrainTimeout, Progress: func(m string) {
			cp.Env.report(Event{Phase: "workers", Host: name, Status: StatusProgress, Message: m})
		}}
		res, err := d.Drain(ctx, name)
		if err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("cordoned, %d pod(s) evicted", len(res.Evicted)))
	}
	msg, err := u.upgradeHost(ctx, cp, up, h)
	if err != nil {
		return "", err
	}
	parts = append(parts, msg)
	if dry {
		return strings.Join(parts, "; ") + "; would wait for Ready and uncordon", nil
	}
	wait := u.o.ReadyWait
	if wait <= 0 {
		wait = NodeReadyWait
	}
	if err := waitFor(ctx, wait, time.Second, func(ctx context.Context) error { return nodeReady(ctx, client, name) }); err != nil {
		return "", err
	}
	if _, err := uncordonAfterUpgrade(ctx, client, name); err != nil {
		return "", err
	}
	return strings.Join(append(parts, "Ready, uncordoned"), "; "), nil
}

// uncordonLeftover uncordons a Node an earlier, interrupted upgrade
// cordoned, once its host is current.
func (u *upgrade) uncordonLeftover(ctx context.Context, cp *ControlPlane, h Host) (string, error) {
	if cp.Env.Gate.DryRun() {
		return "", &SkipError{Why: "dry run"}
	}
	client, err := u.client(cp)
	if err != nil {
		return "", err
	}
	changed, err := uncordonAfterUpgrade(ctx, client, h.Name())
	switch {
	case apierrors.IsNotFound(err):
		return "", &SkipError{Why: "no Node " + h.Name()}
	case err != nil:
		return "", err
	case !changed:
		return "", &SkipError{Why: "not cordoned by kforge upgrade"}
	}
	return "uncordoned (an earlier upgrade had cordoned it)", nil
}

func (u *upgrade) client(cp *ControlPlane) (kubernetes.Interface, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.o.Client == nil {
		c, err := AdminClient(cp.Cluster)
		if err != nil {
			return nil, err
		}
		u.o.Client = c
	}
	return u.o.Client, nil
}

func nodeReady(ctx context.Context, client kubernetes.Interface, name string) error {
	n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s is not Ready: %s %s", name, c.Reason, c.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition", name)
}

// cordonForUpgrade marks the Node unschedulable and ours; a Node already
// cordoned by someone else stays theirs (it is not uncordoned after).
func cordonForUpgrade(ctx context.Context, client kubernetes.Interface, name string) error {
	n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Spec.Unschedulable {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{UpgradeCordonAnnotation: "true"}},
		"spec":     map[string]any{"unschedulable": true},
	})
	if _, err := client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("cordoning node %s: %w", name, err)
	}
	return nil
}

// uncordonAfterUpgrade undoes cordonForUpgrade; changed is false when the
// Node does not carry the annotation.
func uncordonAfterUpgrade(ctx context.Context, client kubernetes.Interface, name string) (changed bool, err error) {
	n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	if _, ok := n.Annotations[UpgradeCordonAnnotation]; !ok {
		return false, nil
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{UpgradeCordonAnnotation: nil}},
		"spec":     map[string]any{"unschedulable": nil},
	})
	if _, err := client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return false, fmt.Errorf("uncordoning node %s: %w", name, err)
	}
	return true, nil
}

// upgradeSummary is the last line of an upgrade.
func (u *upgrade) summary(verb string, d time.Duration, hosts int) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return fmt.Sprintf("kforge upgrade %s in %s: %d of %d host(s) upgraded to kforge %s, %d already on it.",
		verb, formatDuration(d), len(u.done), hosts, u.to, len(u.current))
}

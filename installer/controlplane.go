package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/controlplane/apiserver"
	"kforge.dev/kforge/controlplane/controllers"
	"kforge.dev/kforge/controlplane/etcd"
	"kforge.dev/kforge/controlplane/lb"
	"kforge.dev/kforge/controlplane/scheduler"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/pki"
	"kforge.dev/kforge/templates"
)

// How long the installer waits for daemons to become healthy.
const (
	EtcdWait      = 90 * time.Second
	APIServerWait = 60 * time.Second
	LBWait        = 30 * time.Second
	pollInterval  = 250 * time.Millisecond
)

// LBMetricsAddress is where the lb host's metrics listener is rendered:
// loopback only; `kforge status` reads it over SSH.
const LBMetricsAddress = "127.0.0.1:9443"

// ControlPlane is what the control-plane phases share: the spec, the PKI
// (once the PKI phase has run) and the health prober.
type ControlPlane struct {
	Env     *Env
	Cluster *v1alpha1.Cluster
	// PKIDir overrides spec.pki.dir.
	PKIDir string
	// NewProber builds the prober once the PKI exists; NewNetProber when nil.
	NewProber func(c *v1alpha1.Cluster, inv *pki.Inventory) (Prober, error)

	inv    *pki.Inventory
	prober Prober
	// cleanup removes a dry run's temporary PKI copy.
	cleanup func()
}

// Close removes temporary files.
func (cp *ControlPlane) Close() {
	if cp.cleanup != nil {
		cp.cleanup()
	}
}

// Inventory is the PKI inventory, after the PKI phase.
func (cp *ControlPlane) Inventory() *pki.Inventory { return cp.inv }

// lbHost is the host that runs `kforge lb`, or nil for an external LB.
func (cp *ControlPlane) lbHost() Host {
	name := cp.Cluster.Spec.LoadBalancer.Host
	if name == "" {
		return nil
	}
	for _, h := range cp.Env.Hosts {
		if h.Name() == name {
			return h
		}
	}
	return nil
}

// Phases returns the control-plane phases, in order.
func (cp *ControlPlane) Phases() []Phase {
	return []Phase{
		&PKIPhase{cp},
		&DistributePKIPhase{cp},
		&ConfigsPhase{cp},
		&ServicePhase{cp: cp, Role: templates.RoleEtcd},
		&ServicePhase{cp: cp, Role: templates.RoleAPIServer},
		&ServicePhase{cp: cp, Role: templates.RoleLB},
		&WaitAPIPhase{cp},
		// Clients of the API through the load balancer: after it answers.
		&ServicePhase{cp: cp, Role: templates.RoleControllerManager},
		&ServicePhase{cp: cp, Role: templates.RoleScheduler},
		&KubeconfigPhase{cp},
	}
}

// PKIPhase makes the local PKI directory match the spec (pki.Init,
// idempotent). A dry run works on a temporary copy, so it changes nothing
// here either but can still compare every file with the hosts'.
type PKIPhase struct{ cp *ControlPlane }

func (p *PKIPhase) ID() string    { return "pki" }
func (p *PKIPhase) Title() string { return "Certificates and kubeconfigs (locally)" }

func (p *PKIPhase) Run(ctx context.Context) error {
	cp := p.cp
	inv, err := pki.NewInventory(PKISpec(cp.Cluster), cp.PKIDir)
	if err != nil {
		return err
	}
	if cp.Env.Gate.DryRun() {
		tmp, err := os.MkdirTemp("", "kforge-dry-pki-")
		if err != nil {
			return err
		}
		cp.cleanup = func() { _ = os.RemoveAll(tmp) }
		if err := copyTree(inv.Dir, tmp); err != nil {
			return fmt.Errorf("copying the PKI for the dry run: %w", err)
		}
		if inv, err = pki.NewInventory(PKISpec(cp.Cluster), tmp); err != nil {
			return err
		}
	}
	if _, err := pki.Init(ctx, inv, pki.InitOptions{}); err != nil {
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

// copyTree copies a folder (missing is fine), keeping file modes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) && p == src {
			return filepath.SkipAll
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, info.Mode().Perm())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, info.Mode().Perm())
	})
}

// Remote paths of a host's PKI files: /etc/kforge/pki/<base name>.
func pkiRemote(f pki.File) string { return templates.PKIDir + "/" + path.Base(f.Path) }

// DistributePKIPhase copies each host's PKI files (inv.FilesFor: never a
// CA key, never another node's key) to /etc/kforge/pki: keys and
// kubeconfigs 0600, the folder 0700.
type DistributePKIPhase struct{ cp *ControlPlane }

func (p *DistributePKIPhase) ID() string    { return "distribute-pki" }
func (p *DistributePKIPhase) Title() string { return "Distribute certificates and kubeconfigs" }

func (p *DistributePKIPhase) Run(ctx context.Context) error {
	cp := p.cp
	var hosts []Host
	for _, h := range cp.Env.Hosts {
		if len(cp.inv.FilesFor(h.Name())) > 0 {
			hosts = append(hosts, h)
		}
	}
	return cp.Env.Each(ctx, p, hosts, func(ctx context.Context, h Host) (string, error) {
		if err := ensureDirs(ctx, cp.Env, h); err != nil {
			return "", err
		}
		var files []remoteFile
		for _, f := range cp.inv.FilesFor(h.Name()) {
			lf, err := ssh.LocalFile(cp.inv.Path(f.Path))
			if err != nil {
				return "", err
			}
			mode := os.FileMode(0o644)
			if f.Secret {
				mode = 0o600
			}
			files = append(files, remoteFile{Remote: pkiRemote(f), Mode: mode, File: lf})
		}
		changed, err := syncFiles(ctx, cp.Env, h, files)
		if err != nil {
			return "", err
		}
		return filesMessage(cp.Env, len(files), changed)
	})
}

func filesMessage(env *Env, total int, changed []string) (string, error) {
	if len(changed) == 0 {
		return "", &SkipError{Why: fmt.Sprintf("%d file(s) up to date", total)}
	}
	verb := "wrote"
	if env.Gate.DryRun() {
		verb = "would write"
	}
	names := make([]string, len(changed))
	for i, c := range changed {
		names[i] = path.Base(c)
	}
	return fmt.Sprintf("%s %d of %d file(s): %s", verb, len(changed), total, strings.Join(names, ", ")), nil
}

// ensureDirs makes /etc/kforge (0755) and /etc/kforge/pki (0700).
func ensureDirs(ctx context.Context, env *Env, h Host) error {
	out, err := h.Run(ctx, "stat -c %a "+templates.ConfigDir+" "+templates.PKIDir+" 2>/dev/null || true")
	if err != nil {
		return err
	}
	if strings.Fields(out) != nil && strings.Join(strings.Fields(out), " ") == "755 700" {
		return nil
	}
	_, err = env.Gate.Write(ctx, h, fmt.Sprintf("install -d -m 0755 %s && install -d -m 0700 %s", templates.ConfigDir, templates.PKIDir), "the config and PKI folders")
	return err
}

// rolesOf are the roles a host runs in this scope.
func (cp *ControlPlane) rolesOf(h Host) []string {
	switch {
	case h.Role() == v1alpha1.RoleMaster:
		return []string{templates.RoleEtcd, templates.RoleAPIServer, templates.RoleControllerManager, templates.RoleScheduler}
	case h.Role() == v1alpha1.RoleLoadBalancer && h.Name() == cp.Cluster.Spec.LoadBalancer.Host:
		return []string{templates.RoleLB}
	}
	return nil
}

// RenderConfig renders and validates a role's config for a host.
func (cp *ControlPlane) RenderConfig(h Host, role string) ([]byte, error) {
	masters := cp.Cluster.Masters()
	var data []byte
	var err error
	switch role {
	case templates.RoleEtcd:
		var ic []string
		for _, m := range masters {
			ic = append(ic, m.Name+"=https://"+v1alpha1.HostPort(m.Address, 2380))
		}
		data, err = templates.Etcd(templates.EtcdData{
			Name: h.Name(), Address: h.Address(), DataDir: etcdDataDir,
			InitialCluster: strings.Join(ic, ","),
			// etcd reads the initial cluster only to bootstrap: a member
			// with a data dir ignores it, so "new" stays right on re-runs.
			InitialClusterState: etcd.ClusterStateNew,
			Token:               "kforge-" + cp.Cluster.Metadata.Name,
			PKIDir:              templates.PKIDir,
		})
		if err == nil {
			_, err = etcd.ParseConfig(data, "/")
		}
	case templates.RoleAPIServer:
		eps := []string{EtcdEndpoint(h.Address())} // its own member first
		for _, m := range masters {
			if m.Name != h.Name() {
				eps = append(eps, EtcdEndpoint(m.Address))
			}
		}
		data, err = templates.APIServer(templates.APIServerData{
			Name: h.Name(), BindAddress: "0.0.0.0:6443", AdvertiseAddress: v1alpha1.HostPort(h.Address(), 6443), EtcdEndpoints: eps,
			ServiceCIDR: cp.Cluster.Spec.Network.ServiceCIDR, PKIDir: templates.PKIDir,
		})
		if err == nil {
			_, err = apiserver.ParseConfig(data, "/")
		}
	case templates.RoleLB:
		var backends []string
		for _, m := range masters {
			backends = append(backends, v1alpha1.HostPort(m.Address, 6443))
		}
		data, err = templates.LB(templates.LBData{
			Name: h.Name(), ListenAddress: v1alpha1.HostPort("0.0.0.0", cp.Cluster.Spec.LoadBalancer.Port),
			Backends: backends, MetricsAddress: LBMetricsAddress, PKIDir: templates.PKIDir,
		})
		if err == nil {
			_, err = lb.ParseConfig(data, "/")
		}
	case templates.RoleControllerManager:
		data, err = templates.ControllerManager(templates.ClientRoleData{
			Name: h.Name(), MetricsAddress: ControllerManagerMetricsAddress, PKIDir: templates.PKIDir,
		})
		if err == nil {
			_, err = controllers.ParseConfig(data, "/")
		}
	case templates.RoleScheduler:
		data, err = templates.Scheduler(templates.ClientRoleData{
			Name: h.Name(), MetricsAddress: SchedulerHealthAddress, PKIDir: templates.PKIDir,
		})
		if err == nil {
			_, err = scheduler.ParseConfig(data, "/")
		}
	default:
		return nil, fmt.Errorf("no config for role %q", role)
	}
	if err != nil {
		return nil, fmt.Errorf("rendering %s for %s: %w", templates.ConfigPath(role), h.Name(), err)
	}
	return data, nil
}

// ConfigsPhase renders and uploads each host's role configs and systemd
// units; systemd reloads only when a unit changed.
type ConfigsPhase struct{ cp *ControlPlane }

func (p *ConfigsPhase) ID() string    { return "configs" }
func (p *ConfigsPhase) Title() string { return "Role configs and systemd units" }

func (p *ConfigsPhase) Run(ctx context.Context) error {
	cp := p.cp
	var hosts []Host
	for _, h := range cp.Env.Hosts {
		if len(cp.rolesOf(h)) > 0 {
			hosts = append(hosts, h)
		}
	}
	return cp.Env.Each(ctx, p, hosts, func(ctx context.Context, h Host) (string, error) {
		var files []remoteFile
		for _, role := range cp.rolesOf(h) {
			cfg, err := cp.RenderConfig(h, role)
			if err != nil {
				return "", err
			}
			unit, err := templates.Unit(role, templates.UnitData{Binary: templates.BinaryPath, Config: templates.ConfigPath(role)})
			if err != nil {
				return "", err
			}
			files = append(files,
				remoteFile{Remote: templates.ConfigPath(role), Mode: 0o644, File: ssh.BytesFile(cfg), Text: cfg},
				remoteFile{Remote: templates.UnitPath(role), Mode: 0o644, File: ssh.BytesFile(unit), Text: unit})
		}
		changed, err := syncFiles(ctx, cp.Env, h, files)
		if err != nil {
			return "", err
		}
		for _, c := range changed {
			if strings.HasPrefix(c, templates.UnitDir+"/") {
				if _, err := cp.Env.Gate.Write(ctx, h, "systemctl daemon-reload", "a unit changed"); err != nil {
					return "", err
				}
				break
			}
		}
		return filesMessage(cp.Env, len(files), changed)
	})
}

// inputs are the remote files a role's daemon reads at start: when one
// changed in this run, the daemon restarts.
func (cp *ControlPlane) inputs(h Host, role string) []string {
	out := []string{BinaryPath, templates.ConfigPath(role), templates.UnitPath(role)}
	var want []string
	switch role {
	case templates.RoleEtcd:
		want = []string{"etcd-ca.crt", "etcd-server.crt", "etcd-server.key", "etcd-peer.crt", "etcd-peer.key"}
	case templates.RoleAPIServer:
		want = []string{"cluster-ca.crt", "etcd-ca.crt", "apiserver.crt", "apiserver.key",
			"apiserver-etcd-client.crt", "apiserver-etcd-client.key", "sa.key", "sa.pub"}
	case templates.RoleLB:
		want = []string{"cluster-ca.crt"}
	case templates.RoleControllerManager:
		want = []string{"controller-manager.kubeconfig"}
	case templates.RoleScheduler:
		want = []string{"scheduler.kubeconfig"}
	}
	for _, w := range want {
		out = append(out, templates.PKIDir+"/"+w)
	}
	return out
}

// ServicePhase starts or restarts one role's unit where needed and waits
// until it is healthy. Units that are not running start together (etcd
// members must, to form a quorum); running units whose inputs changed
// restart one host at a time, each healthy before the next, so a quorum
// and a serving apiserver remain throughout.
type ServicePhase struct {
	cp   *ControlPlane
	Role string
}

func (p *ServicePhase) ID() string { return p.Role }
func (p *ServicePhase) Title() string {
	switch p.Role {
	case templates.RoleEtcd:
		return "etcd members (quorum and health)"
	case templates.RoleAPIServer:
		return "apiservers (/readyz on each master)"
	case templates.RoleLB:
		return "load balancer (kforge lb)"
	case templates.RoleControllerManager:
		return "controller managers (leader-elected)"
	case templates.RoleScheduler:
		return "schedulers (leader-elected)"
	}
	return p.Role
}

func (p *ServicePhase) hosts() []Host {
	var out []Host
	for _, h := range p.cp.Env.Hosts {
		for _, r := range p.cp.rolesOf(h) {
			if r == p.Role {
				out = append(out, h)
			}
		}
	}
	return out
}

// ShouldRun is false for the lb role when the load balancer is external.
func (p *ServicePhase) ShouldRun() (bool, string) {
	if p.Role == templates.RoleLB && p.cp.lbHost() == nil {
		return false, "the load balancer is external (spec.loadBalancer.host is empty)"
	}
	return true, ""
}

// unitState is `systemctl is-active` and `is-enabled` of a unit.
type unitState struct{ active, enabled string }

func readUnitState(ctx context.Context, h Host, unit string) (unitState, error) {
	out, err := h.Run(ctx, "systemctl is-active "+unit+" || true; systemctl is-enabled "+unit+" 2>/dev/null || true")
	if err != nil {
		return unitState{}, err
	}
	f := strings.Fields(out)
	st := unitState{active: "unknown", enabled: "unknown"}
	if len(f) > 0 {
		st.active = f[0]
	}
	if len(f) > 1 {
		st.enabled = f[1]
	}
	return st, nil
}

func (p *ServicePhase) Run(ctx context.Context) error {
	cp := p.cp
	unit := templates.UnitName(p.Role)
	hosts := p.hosts()
	states := make([]unitState, len(hosts))
	err := ParallelEach(ctx, DefaultParallel, indexes(len(hosts)), func(ctx context.Context, i int) error {
		st, err := readUnitState(ctx, hosts[i], unit)
		states[i] = st
		if err != nil {
			return hostError(hosts[i].Name(), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var start, restart, keep []Host
	why := map[string]string{}
	for i, h := range hosts {
		changed := cp.Env.Changed.Changed(h.Name(), cp.inputs(h, p.Role)...)
		switch {
		case states[i].active != "active":
			start = append(start, h)
			why[h.Name()] = "was " + states[i].active
		case len(changed) > 0:
			restart = append(restart, h)
			names := make([]string, len(changed))
			for j, c := range changed {
				names[j] = path.Base(c)
			}
			why[h.Name()] = "changed: " + strings.Join(names, ", ")
		default:
			keep = append(keep, h)
		}
	}
	// etcd members whose data dir is empty while others have data lost it
	// (a wiped or replaced master): they rejoin as new members, after the
	// others are up.
	var rejoin, withData []Host
	if p.Role == templates.RoleEtcd && len(start) > 0 {
		if withData, err = etcdHostsWithData(ctx, hosts); err != nil {
			return err
		}
		if len(withData) > 0 {
			var rest []Host
			for _, h := range start {
				if slices.Contains(withData, h) {
					rest = append(rest, h)
				} else {
					rejoin = append(rejoin, h)
					why[h.Name()] = "its data dir is empty: rejoining the cluster"
				}
			}
			start = rest
		}
	}
	dry := cp.Env.Gate.DryRun()
	act := func(verb, cmd string) func(ctx context.Context, h Host) (string, error) {
		return func(ctx context.Context, h Host) (string, error) {
			t0 := time.Now()
			if _, err := cp.Env.Gate.Write(ctx, h, cmd, verb+" "+unit+" ("+why[h.Name()]+")"); err != nil {
				return "", err
			}
			if dry {
				return "would " + verb + " " + unit + " (" + why[h.Name()] + ")", nil
			}
			if err := p.wait(ctx, h); err != nil {
				return "", fmt.Errorf("%s after %s: %w (journalctl -u %s on the host says why)", unit, verb, err, unit)
			}
			return fmt.Sprintf("%sed %s (%s), healthy in %s", verb, unit, why[h.Name()], formatDuration(time.Since(t0))), nil
		}
	}
	if len(start) > 0 {
		if err := cp.Env.Each(ctx, p, start, act("start", "systemctl enable --quiet "+unit+" && systemctl restart "+unit)); err != nil {
			return err
		}
	}
	if len(restart) > 0 {
		seq := *cp.Env
		seq.Parallel = 1 // one host at a time: quorum-safe
		if err := seq.Each(ctx, p, restart, act("restart", "systemctl restart "+unit)); err != nil {
			return err
		}
	}
	if len(rejoin) > 0 {
		seq := *cp.Env
		seq.Parallel = 1 // one membership change at a time
		if err := seq.Each(ctx, p, rejoin, func(ctx context.Context, h Host) (string, error) {
			return p.rejoinEtcd(ctx, h, withData, act("start", "systemctl enable --quiet "+unit+" && systemctl restart "+unit))
		}); err != nil {
			return err
		}
	}
	if len(keep) > 0 {
		return cp.Env.Each(ctx, p, keep, func(ctx context.Context, h Host) (string, error) {
			if dry {
				return "", &SkipError{Why: "running, unchanged"}
			}
			if err := p.wait(ctx, h); err != nil {
				return "", fmt.Errorf("%s is running but not healthy: %w", unit, err)
			}
			return "", &SkipError{Why: "running, unchanged, healthy"}
		})
	}
	return nil
}

// etcdDataDir is the etcd role's data dir on a master.
const etcdDataDir = templates.StateDir + "/etcd"

// etcdHostsWithData returns the hosts whose etcd data dir holds a member.
func etcdHostsWithData(ctx context.Context, hosts []Host) ([]Host, error) {
	has := make([]bool, len(hosts))
	err := ParallelEach(ctx, DefaultParallel, indexes(len(hosts)), func(ctx context.Context, i int) error {
		out, err := hosts[i].Run(ctx, "test -d "+etcdDataDir+"/member && echo data || echo empty")
		if err != nil {
			return hostError(hosts[i].Name(), err)
		}
		has[i] = strings.TrimSpace(out) == "data"
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Host
	for i, h := range hosts {
		if has[i] {
			out = append(out, h)
		}
	}
	return out, nil
}

// rejoinEtcd brings back a member whose data dir is empty while the
// members on withData have the cluster: through them it is removed and
// added anew (when the cluster knows it as a member that has run), the
// join marker makes it start as a member of the existing cluster, then
// start starts it and waits until it is healthy.
func (p *ServicePhase) rejoinEtcd(ctx context.Context, h Host, withData []Host, start func(context.Context, Host) (string, error)) (string, error) {
	cp := p.cp
	peerURL := "https://" + v1alpha1.HostPort(h.Address(), 2380)
	change := Change{Host: h.Name(), Kind: "etcd", Target: "member " + h.Name() + " (" + peerURL + ")",
		Detail: "removed and added again: its data dir is empty"}
	replaced := true
	if cp.Env.Gate.DryRun() {
		cp.Env.Gate.record(change)
	} else {
		var via []string
		for _, d := range withData {
			via = append(via, d.Address())
		}
		var err error
		if replaced, err = cp.prober.EtcdRejoin(ctx, via, h.Name(), peerURL); err != nil {
			return "", err
		}
		if replaced {
			cp.Env.Gate.record(change)
		}
	}
	if replaced {
		marker := etcd.JoinMarker(etcdDataDir)
		if _, err := cp.Env.Gate.Write(ctx, h, "install -d -m 0700 "+path.Dir(marker)+" && printf 'existing\\n' > "+marker,
			"mark etcd to join the existing cluster"); err != nil {
			return "", err
		}
	}
	msg, err := start(ctx, h)
	if replaced && err == nil {
		msg = "re-added to the etcd cluster; " + msg
	}
	return msg, err
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// wait waits until the role is healthy on h.
func (p *ServicePhase) wait(ctx context.Context, h Host) error {
	pr := p.cp.prober
	switch p.Role {
	case templates.RoleEtcd:
		return waitFor(ctx, EtcdWait, pollInterval, func(ctx context.Context) error {
			_, err := pr.EtcdMember(ctx, h.Address())
			return err
		})
	case templates.RoleAPIServer:
		return waitFor(ctx, APIServerWait, pollInterval, func(ctx context.Context) error {
			return pr.APIServer(ctx, "https://"+v1alpha1.HostPort(h.Address(), 6443))
		})
	case templates.RoleLB:
		return waitFor(ctx, LBWait, pollInterval, func(ctx context.Context) error {
			return pr.APIServer(ctx, "https://"+v1alpha1.HostPort(h.Address(), p.cp.Cluster.Spec.LoadBalancer.Port))
		})
	case templates.RoleControllerManager, templates.RoleScheduler:
		// Their health endpoints are on the host's loopback: ask over SSH.
		addr := ControllerManagerMetricsAddress
		if p.Role == templates.RoleScheduler {
			addr = SchedulerHealthAddress
		}
		return waitFor(ctx, APIServerWait, pollInterval, func(ctx context.Context) error {
			return loopbackHealthz(ctx, h, addr)
		})
	}
	return nil
}

// WaitAPIPhase waits until the API answers through the load balancer
// address clients use.
type WaitAPIPhase struct{ cp *ControlPlane }

func (p *WaitAPIPhase) ID() string    { return "wait-api" }
func (p *WaitAPIPhase) Title() string { return "The API through the load balancer" }

func (p *WaitAPIPhase) DryRun(context.Context) error { return nil }

func (p *WaitAPIPhase) Run(ctx context.Context) error {
	url := p.cp.Cluster.APIServerURL()
	if err := waitFor(ctx, APIServerWait, pollInterval, func(ctx context.Context) error {
		return p.cp.prober.APIServer(ctx, url)
	}); err != nil {
		return err
	}
	// Our lb must also have every master back in: an apiserver started a
	// moment ago is healthy before the lb's next check says so, and
	// `kforge status` right after up would call it down.
	lbh := p.cp.lbHost()
	if lbh == nil || p.cp.Env.Gate.DryRun() {
		return nil
	}
	return waitFor(ctx, LBWait, pollInterval, func(ctx context.Context) error {
		up, err := lbBackends(ctx, lbh)
		if err != nil {
			return err
		}
		var down []string
		for _, m := range p.cp.Cluster.Masters() {
			if b := v1alpha1.HostPort(m.Address, 6443); !up[b] {
				down = append(down, b)
			}
		}
		if len(down) > 0 {
			return fmt.Errorf("the lb has not taken back %s yet", strings.Join(down, ", "))
		}
		return nil
	})
}

// AdminKubeconfigPath is where `kforge up` writes the admin kubeconfig:
// beside cluster.yaml.
func AdminKubeconfigPath(clusterFile string) string {
	return filepath.Join(filepath.Dir(clusterFile), "admin.kubeconfig")
}

// KubeconfigPhase writes the admin kubeconfig beside cluster.yaml (0600).
type KubeconfigPhase struct{ cp *ControlPlane }

func (p *KubeconfigPhase) ID() string    { return "kubeconfig" }
func (p *KubeconfigPhase) Title() string { return "Admin kubeconfig" }

func (p *KubeconfigPhase) ShouldRun() (bool, string) {
	if p.cp.Cluster.Path == "" {
		return false, "no cluster file to write it beside"
	}
	return true, ""
}

func (p *KubeconfigPhase) DryRun(context.Context) error { return nil }

func (p *KubeconfigPhase) Run(context.Context) error {
	data, err := pki.KubeconfigFor(p.cp.inv, "admin")
	if err != nil {
		return err
	}
	dst := AdminKubeconfigPath(p.cp.Cluster.Path)
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, data) {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().Perm() == 0o600 {
			return nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".admin.kubeconfig-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, bytes.NewReader(data)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// ControllerManagerMetricsAddress is where each master's controller
// manager serves /healthz, /readyz and /metrics (loopback only).
const ControllerManagerMetricsAddress = "127.0.0.1:10257"

// SchedulerHealthAddress is where each master's scheduler serves /healthz,
// /readyz and /metrics (loopback only).
const SchedulerHealthAddress = "127.0.0.1:10259"

// loopbackHealthz asks a daemon's /healthz on the host's loopback through
// SSH, with bash's /dev/tcp (no curl needed on the host).
func loopbackHealthz(ctx context.Context, h Host, addr string) error {
	hostPort := strings.Replace(addr, ":", "/", 1)
	out, err := h.Run(ctx, `bash -c 'exec 3<>/dev/tcp/`+hostPort+` && printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && head -n 1 <&3'`)
	if err != nil {
		return err
	}
	if !strings.Contains(out, " 200 ") {
		return fmt.Errorf("/healthz on %s: %s", addr, strings.TrimSpace(out))
	}
	return nil
}

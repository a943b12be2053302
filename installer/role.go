package installer

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/templates"
)

// Role is one daemon of the cluster, declared once. Everything the
// installer does with daemons reads these declarations: which hosts run
// it, the config and systemd unit it gets, the certificates it reads, the
// ports preflight wants free, its health check, when it starts and how it
// restarts; reset and status too. Adding a daemon is one more Role in a
// role_NAME.go file and the daemon's own package.
type Role struct {
	// Name is the role's command: `kforge NAME --config
	// /etc/kforge/NAME.yaml`, run by the unit kforge-NAME.service.
	Name string
	// Description is the unit's description; Title the install phase's.
	Description, Title string
	// RunsOn reports whether host h of cluster c runs the role.
	RunsOn func(c *v1alpha1.Cluster, h v1alpha1.Host) bool
	// Config builds the role's config for host h as a value of the role's
	// own config type; it is marshalled to YAML and checked by Parse.
	Config func(cp *ControlPlane, h Host) (any, error)
	// Parse is the role's own config loader (its ParseConfig), which the
	// daemon runs on the same file at start.
	Parse func(data []byte) error
	// PKIFiles are the files of /etc/kforge/pki the daemon reads at start:
	// when one changes, it restarts.
	PKIFiles []string
	// ReloadsCerts are those of PKIFiles the running daemon re-reads by
	// itself when they change (certificates it serves or presents,
	// polled or read per handshake): a change to them alone does not
	// restart it.
	ReloadsCerts []string
	// Ports are the TCP ports it listens on, which preflight wants free
	// (or held by this role's running unit).
	Ports []int
	// After are roles whose units start before this one on the same host,
	// or systemd units named in full (containerd.service).
	After []string
	// Health returns nil when the role is healthy on h; up waits up to
	// Wait for it after a start or restart.
	Health func(ctx context.Context, cp *ControlPlane, h Host) error
	Wait   time.Duration
	// Serial roles restart one host at a time, each healthy before the
	// next, so a quorum and a serving apiserver remain; the others restart
	// in batches of a third of their hosts (at least one), so two thirds
	// keep serving.
	Serial bool
	// NeedsAPI roles are clients of the API: they start once the API
	// answers through the load balancer.
	NeedsAPI bool
	// LeaderLease names the Lease in kube-system of a leader-elected role,
	// which status reports.
	LeaderLease string
	// Skip says why the role runs nowhere in this cluster ("" when it runs).
	Skip func(c *v1alpha1.Cluster) string
	// Cleanup, when set, is the role's own cleanup subcommand (`kforge
	// NAME CLEANUP --config /etc/kforge/NAME.yaml`), which reset runs on
	// each host holding the role's config once every unit has stopped and
	// before the files go: what the daemon made outside kforge's folders
	// (containers, network state) is the daemon's to remove.
	Cleanup string
	// RejoinWhenWiped marks etcd: a member whose data dir is empty while
	// the others have data is removed and added anew before it starts.
	RejoinWhenWiped bool
}

// Roles are the daemon roles in start order; reset stops them in reverse.
var Roles = []*Role{etcdRole, apiserverRole, lbRole, controllerManagerRole, schedulerRole, agentRole, proxyRole, dnsRole, ingressRole}

// RoleNamed returns the role with this name, or nil.
func RoleNamed(name string) *Role {
	for _, r := range Roles {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Unit is the role's systemd unit name.
func (r *Role) Unit() string { return templates.UnitName(r.Name) }

// ConfigPath is where the role's config is written on a host.
func (r *Role) ConfigPath() string { return templates.ConfigPath(r.Name) }

// UnitPath is where the role's unit is written on a host.
func (r *Role) UnitPath() string { return templates.UnitPath(r.Name) }

// runsOn reports whether the installer host h runs the role.
func (r *Role) runsOn(c *v1alpha1.Cluster, h Host) bool {
	for _, ch := range c.Spec.Hosts {
		if ch.Name == h.Name() {
			return r.RunsOn(c, ch)
		}
	}
	return false
}

// RenderConfig builds the role's config for h, marshals it and checks it
// with the role's own loader, so a host never gets a file its daemon
// would refuse.
func (r *Role) RenderConfig(cp *ControlPlane, h Host) ([]byte, error) {
	cfg, err := r.Config(cp, h)
	if err != nil {
		return nil, fmt.Errorf("building %s for %s: %w", r.ConfigPath(), h.Name(), err)
	}
	body, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("marshalling %s for %s: %w", r.ConfigPath(), h.Name(), err)
	}
	data := append([]byte("# "+r.ConfigPath()+" on "+h.Name()+", written by kforge up.\n"), body...)
	if err := r.Parse(data); err != nil {
		return nil, fmt.Errorf("rendering %s for %s: %w", r.ConfigPath(), h.Name(), err)
	}
	return data, nil
}

// RenderUnit renders the role's systemd unit.
func (r *Role) RenderUnit() ([]byte, error) {
	var after []string
	for _, a := range r.After {
		if !strings.HasSuffix(a, ".service") {
			a = templates.UnitName(a)
		}
		after = append(after, a)
	}
	return templates.Unit(templates.UnitData{
		Role: r.Name, Description: r.Description, After: after,
		Binary: templates.BinaryPath, Config: r.ConfigPath(),
	})
}

// inputs are the remote files the daemon reads only at start: when one
// changed in this run, the daemon restarts.
func (r *Role) inputs() []string {
	out := []string{BinaryPath, r.ConfigPath(), r.UnitPath()}
	for _, f := range r.PKIFiles {
		if !slices.Contains(r.ReloadsCerts, f) {
			out = append(out, path.Join(templates.PKIDir, f))
		}
	}
	return out
}

// reloads are the remote files the running daemon re-reads by itself.
func (r *Role) reloads() []string {
	var out []string
	for _, f := range r.ReloadsCerts {
		out = append(out, path.Join(templates.PKIDir, f))
	}
	return out
}

// rolesOn are the roles host h runs, in start order.
func rolesOn(c *v1alpha1.Cluster, h v1alpha1.Host) []*Role {
	var out []*Role
	for _, r := range Roles {
		if r.RunsOn(c, h) {
			out = append(out, r)
		}
	}
	return out
}

// onMasters is RunsOn for the roles every master runs.
func onMasters(_ *v1alpha1.Cluster, h v1alpha1.Host) bool { return h.Role == v1alpha1.RoleMaster }

// portsOf are the TCP ports a host of this role (master, worker,
// loadbalancer) needs free, from every role that may run on it.
func portsOf(hostRole string) []int {
	var out []int
	for _, r := range Roles {
		if r.RunsOn(portsCluster, v1alpha1.Host{Name: portsHost, Role: hostRole}) {
			for _, p := range r.Ports {
				if !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// portsCluster and portsHost stand for "a host of this role that runs
// every role it may": a load balancer host named in the spec.
var portsCluster = &v1alpha1.Cluster{Spec: v1alpha1.Spec{LoadBalancer: v1alpha1.LoadBalancer{Host: portsHost}}}

const portsHost = "any"

// portOwner is the unit of the role that listens on port on a host of
// this role, so a re-run accepts the port its own unit holds.
func portOwner(hostRole string, port int) string {
	for _, r := range Roles {
		if r.RunsOn(portsCluster, v1alpha1.Host{Name: portsHost, Role: hostRole}) && slices.Contains(r.Ports, port) {
			return r.Unit()
		}
	}
	return ""
}

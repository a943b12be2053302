package installer

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// ServicePhase starts or restarts one role's unit where needed and waits
// until it is healthy. Units that are not running start together (etcd
// members must, to form a quorum); running units whose inputs changed
// restart one host at a time, each healthy before the next, so a quorum
// and a serving apiserver remain throughout.
type ServicePhase struct {
	cp   *ControlPlane
	Role *Role
}

func (p *ServicePhase) ID() string    { return p.Role.Name }
func (p *ServicePhase) Title() string { return p.Role.Title }

func (p *ServicePhase) hosts() []Host {
	var out []Host
	for _, h := range p.cp.Env.Hosts {
		if p.Role.runsOn(p.cp.Cluster, h) {
			out = append(out, h)
		}
	}
	return out
}

// ShouldRun is false when the role runs nowhere in this cluster (the lb
// with an external load balancer), or on no host of this run (node add
// works on the new host alone).
func (p *ServicePhase) ShouldRun() (bool, string) {
	if p.Role.Skip != nil {
		if why := p.Role.Skip(p.cp.Cluster); why != "" {
			return false, why
		}
	}
	if len(p.hosts()) == 0 {
		return false, "no host of this run runs it"
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
	unit := p.Role.Unit()
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
	reloaded := map[string]string{} // host: reloadable files that changed on a running unit
	for i, h := range hosts {
		changed := cp.Env.Changed.Changed(h.Name(), p.Role.inputs()...)
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
			if rc := cp.Env.Changed.Changed(h.Name(), p.Role.reloads()...); len(rc) > 0 {
				names := make([]string, len(rc))
				for j, c := range rc {
					names[j] = path.Base(c)
				}
				reloaded[h.Name()] = strings.Join(names, ", ")
			}
		}
	}
	// etcd members whose data dir is empty while others have data lost it
	// (a wiped or replaced master): they rejoin as new members, after the
	// others are up.
	var rejoin, withData []Host
	if p.Role.RejoinWhenWiped && len(start) > 0 {
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
		env := *cp.Env
		env.Parallel = restartBatch(p.Role, len(restart))
		if err := env.Each(ctx, p, restart, act("restart", "systemctl restart "+unit)); err != nil {
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
			if rc := reloaded[h.Name()]; rc != "" {
				if dry {
					return "would reload " + rc + " in place (no restart)", nil
				}
				if err := p.wait(ctx, h); err != nil {
					return "", fmt.Errorf("%s is running but not healthy: %w", unit, err)
				}
				return "reloads " + rc + " in place (no restart), healthy", nil
			}
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

// restartBatch is how many hosts of a role restart at once: one for a
// Serial role (quorum-safe), else a third of them, at least one.
func restartBatch(r *Role, n int) int {
	if r.Serial {
		return 1
	}
	return max(1, n/3)
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
	if p.Role.Health == nil {
		return nil
	}
	return waitFor(ctx, p.Role.Wait, pollInterval, func(ctx context.Context) error {
		return p.Role.Health(ctx, p.cp, h)
	})
}

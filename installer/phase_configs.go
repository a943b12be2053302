package installer

import (
	"context"
	"strings"

	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/templates"
)

// rolesOf are the roles host h runs, in start order.
func (cp *ControlPlane) rolesOf(h Host) []*Role {
	for _, ch := range cp.Cluster.Spec.Hosts {
		if ch.Name == h.Name() {
			return rolesOn(cp.Cluster, ch)
		}
	}
	return nil
}

// ConfigsPhase renders and uploads each host's role configs and systemd
// units, for every role the host runs; systemd reloads only when a unit
// changed.
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
		for _, r := range cp.rolesOf(h) {
			cfg, err := r.RenderConfig(cp, h)
			if err != nil {
				return "", err
			}
			unit, err := r.RenderUnit()
			if err != nil {
				return "", err
			}
			files = append(files,
				remoteFile{Remote: r.ConfigPath(), Mode: 0o644, File: ssh.BytesFile(cfg), Text: cfg},
				remoteFile{Remote: r.UnitPath(), Mode: 0o644, File: ssh.BytesFile(unit), Text: unit})
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

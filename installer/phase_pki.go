package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/pki"
	"kforge.dev/kforge/templates"
)

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
	// The key that encrypts Secrets in etcd: made once, kept after.
	if cp.encryptionFile, err = pki.EncryptionKey(inv.Dir); err != nil {
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
		if apiserverRole.runsOn(cp.Cluster, h) {
			lf, err := ssh.LocalFile(cp.encryptionFile)
			if err != nil {
				return "", err
			}
			files = append(files, remoteFile{Remote: pkiPath(encryptionFileName), Mode: 0o600, File: lf})
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

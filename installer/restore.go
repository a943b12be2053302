package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/controlplane/etcd"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/templates"
)

// BackupArchive is what ReadBackup found in an archive.
type BackupArchive struct {
	Manifest BackupManifest
	// Snapshot is the path the snapshot was extracted to.
	Snapshot string
	// ClusterYAML is the cluster.yaml of the backup.
	ClusterYAML []byte
	// CAFiles are the files of the PKI's ca/ folder (CAs, their keys,
	// the service-account key pair, the Secrets encryption config), by
	// path under the PKI directory; empty for a --no-pki backup.
	CAFiles map[string][]byte
}

// ReadBackup reads a backup archive: its manifest (a format this version
// knows), cluster.yaml, the PKI's ca/ folder, and its snapshot, extracted
// into dir as snapshot.db (0600). Other entries are skipped.
func ReadBackup(file, dir string) (*BackupArchive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading the backup: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("backup %s: not a gzip file: %w", file, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	b := &BackupArchive{CAFiles: map[string][]byte{}}
	var manifest bool
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", file, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(h.Name)
		switch {
		case name == backupManifestName:
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&b.Manifest); err != nil {
				return nil, fmt.Errorf("backup %s: %s: %w", file, backupManifestName, err)
			}
			manifest = true
		case name == backupClusterName:
			if b.ClusterYAML, err = io.ReadAll(io.LimitReader(tr, 1<<20)); err != nil {
				return nil, fmt.Errorf("backup %s: %w", file, err)
			}
		case name == backupSnapshotName:
			b.Snapshot = filepath.Join(dir, backupSnapshotName)
			out, err := os.OpenFile(b.Snapshot, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("backup %s: extracting the snapshot: %w", file, err)
			}
		case strings.HasPrefix(name, backupPKIDir+"/ca/"):
			data, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return nil, fmt.Errorf("backup %s: %w", file, err)
			}
			b.CAFiles[strings.TrimPrefix(name, backupPKIDir+"/")] = data
		}
	}
	switch {
	case !manifest:
		return nil, fmt.Errorf("backup %s has no %s: not a kforge backup", file, backupManifestName)
	case b.Manifest.Format != BackupFormat:
		return nil, fmt.Errorf("backup %s is in format %d; this kforge reads format %d", file, b.Manifest.Format, BackupFormat)
	case b.Snapshot == "":
		return nil, fmt.Errorf("backup %s has no %s", file, backupSnapshotName)
	}
	return b, nil
}

// RestoreOptions configure `kforge restore`.
type RestoreOptions struct {
	// Up carries the converge's settings (the cluster, output, SSH,
	// binary, dry run); Restore sets its command and phases.
	Up UpOptions
	// File is the backup archive.
	File string
	// Force restores a backup whose cluster name differs from the spec's.
	Force bool
	// Now is the clock, which names the restore; time.Now when nil.
	Now func() time.Time
}

// RestoreResult is what a restore did.
type RestoreResult struct {
	Manifest BackupManifest
	Up       *UpResult
	// Restored are the masters whose member was rebuilt; MovedAside is,
	// per master that had data, where its old etcd data dir went.
	Restored   []string
	MovedAside map[string]string
	// Notes are warnings found before the restore (the PKI differs).
	Notes []string
}

// restoreDir holds the uploaded snapshot on a master.
const restoreDir = templates.StateDir + "/restore"

// Restore puts the etcd state of a backup back, then brings the cluster
// up on it with kforge up's converge. Before anything changes: the
// archive is read, its snapshot verified, its cluster name checked
// against the spec (Force restores another cluster's backup), and every
// host connected and preflighted. Then, with the configs written: the
// API's clients stop on every host (ingress, DNS, proxy and agent on the
// workers; the scheduler and controller manager on the masters), then
// the apiservers, then etcd on every master; the snapshot is uploaded to
// each master and `kforge etcd restore` rebuilds its member as one of a
// new cluster (new cluster ID, members from cluster.yaml, revisions moved
// ahead and compacted so clients relist; the old data dir renamed aside,
// never deleted). The converge then starts etcd on all masters together,
// waits until each member is healthy, and starts the apiservers, the
// controller manager and scheduler, and the workers' daemons: the
// restarted agents adopt the containers of pods the restored state has
// and remove those of pods it does not. The local PKI is kept as it is
// (and distributed as up does); the backup's is only compared with it.
func Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	c := o.Up.Cluster
	if o.Now == nil {
		o.Now = time.Now
	}
	work, err := os.MkdirTemp("", "kforge-restore-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	b, err := ReadBackup(o.File, work)
	if err != nil {
		return nil, err
	}
	m := b.Manifest
	if m.Cluster != c.Metadata.Name && !o.Force {
		return nil, fmt.Errorf("the backup is of cluster %q, the spec is of %q: nothing was changed (--force restores it anyway)", m.Cluster, c.Metadata.Name)
	}
	info, err := etcd.VerifySnapshot(b.Snapshot)
	if err != nil {
		return nil, err
	}
	if m.Snapshot.SHA256 != "" && info.SHA256 != m.Snapshot.SHA256 {
		return nil, fmt.Errorf("backup %s: the snapshot's sha256 %s is not the manifest's %s", o.File, info.SHA256, m.Snapshot.SHA256)
	}
	res := &RestoreResult{Manifest: m, MovedAside: map[string]string{}, Notes: pkiNotes(b, c.Spec.PKI.Dir)}
	snap, err := ssh.LocalFile(b.Snapshot)
	if err != nil {
		return nil, err
	}
	id := o.Now().UTC().Format("20060102T150405Z")
	r := &restoreRun{
		cluster: c, snapshot: snap, res: res,
		remote: restoreDir + "/snapshot-" + id + ".db",
		token:  etcd.RestoreToken(etcdClusterToken(c), id),
		aside:  etcdDataDir + ".before-restore-" + id,
	}
	up := o.Up
	up.Command = "kforge restore"
	up.BeforeServices = r.phases
	if !up.JSON {
		fmt.Fprintf(up.ErrOut, "Restoring the backup of cluster %s taken %s from member %s (kforge %s): etcd revision %d, %d keys.\n",
			m.Cluster, m.Time.Format(time.RFC3339), m.Member, m.KforgeVersion, m.Revision, info.TotalKeys)
		for _, n := range res.Notes {
			fmt.Fprintln(up.ErrOut, "Note: "+n)
		}
	}
	res.Up, err = Up(ctx, up)
	res.Restored = r.restored()
	msg := r.summary(up.DryRun, err)
	if up.JSON {
		_ = json.NewEncoder(up.Out).Encode(Event{Time: time.Now(), Phase: "restore", Status: StatusProgress, Message: msg, DryRun: up.DryRun})
	} else {
		fmt.Fprintln(up.Out, msg)
	}
	return res, err
}

// pkiNotes compares the backup's ca/ folder with the local PKI's.
func pkiNotes(b *BackupArchive, pkiDir string) []string {
	if !b.Manifest.PKI {
		return []string{"the backup holds no PKI (--no-pki): the cluster keeps its current PKI"}
	}
	var differ []string
	for name, data := range b.CAFiles {
		local, err := os.ReadFile(filepath.Join(pkiDir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(local, data) {
			differ = append(differ, name)
		}
	}
	if len(differ) == 0 {
		return nil
	}
	sort.Strings(differ)
	n := fmt.Sprintf("the backup's PKI differs from the local one in %s. Restore keeps the local PKI, which the hosts use; "+
		"to go back to the backup's, extract its pki/ folder into %s and run kforge up", strings.Join(differ, ", "), pkiDir)
	if slices.ContainsFunc(differ, func(s string) bool { return strings.HasSuffix(s, "encryption.yaml") }) {
		n += ". The Secrets encryption config differs: Secrets in the snapshot written with a key the local config lacks cannot be read"
	}
	return []string{n}
}

// restoreRun holds one Restore's phases and what they did.
type restoreRun struct {
	cluster  *v1alpha1.Cluster
	snapshot ssh.File
	remote   string // the snapshot's path on a master
	token    string // the restored cluster's token
	aside    string // where each master's old data dir goes
	res      *RestoreResult

	mu sync.Mutex
}

// clientRoles are the roles stopped first: every client of the API.
func clientRoles() []*Role {
	var out []*Role
	for i := len(Roles) - 1; i >= 0; i-- {
		if r := Roles[i]; r != etcdRole && r != apiserverRole && r != lbRole {
			out = append(out, r)
		}
	}
	return out
}

// stopScript stops the units of roles that have a unit file on the host.
func stopScript(roles []*Role) string {
	var units []string
	for _, r := range roles {
		units = append(units, r.Unit())
	}
	return "set -e; for u in " + strings.Join(units, " ") + "; do [ ! -e " + templates.UnitDir + "/$u ] || systemctl stop $u; done"
}

func (r *restoreRun) phases(env *Env) []Phase {
	masters := env.HostsWithRole(v1alpha1.RoleMaster)
	stop := func(id, title string, hosts []Host, roles func(h Host) []*Role) Phase {
		var p Phase
		p = &funcPhase{id: id, title: title, run: func(ctx context.Context, _ Phase) error {
			return env.Each(ctx, p, hosts, func(ctx context.Context, h Host) (string, error) {
				rs := roles(h)
				if len(rs) == 0 {
					return "", &SkipError{Why: "runs none of them"}
				}
				var names []string
				for _, ro := range rs {
					names = append(names, ro.Name)
				}
				if _, err := env.Gate.Write(ctx, h, stopScript(rs), "stop "+strings.Join(names, ", ")+" for the restore"); err != nil {
					return "", err
				}
				if env.Gate.DryRun() {
					return "would stop " + strings.Join(names, ", "), nil
				}
				return "stopped " + strings.Join(names, ", "), nil
			})
		}}
		return p
	}
	on := func(h Host, roles ...*Role) []*Role {
		var out []*Role
		for _, ro := range roles {
			if ro.runsOn(r.cluster, h) {
				out = append(out, ro)
			}
		}
		return out
	}
	upload := &funcPhase{id: "upload-snapshot", title: "Upload the snapshot to the masters"}
	upload.run = func(ctx context.Context, _ Phase) error {
		return env.Each(ctx, upload, masters, func(ctx context.Context, h Host) (string, error) {
			if _, err := env.Gate.Write(ctx, h, "install -d -m 0700 "+restoreDir, "a folder for the snapshot"); err != nil {
				return "", err
			}
			if _, err := env.Gate.Upload(ctx, h, ssh.Upload{File: r.snapshot, Remote: r.remote, Mode: 0o600}); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s (%s)", r.remote, humanBytes(r.snapshot.Size)), nil
		})
	}
	restore := &funcPhase{id: "restore-etcd", title: "Rebuild every etcd member from the snapshot (a new cluster)"}
	restore.run = func(ctx context.Context, _ Phase) error {
		return env.Each(ctx, restore, masters, func(ctx context.Context, h Host) (string, error) {
			cmd := fmt.Sprintf("%s etcd restore --config %s --snapshot %s --cluster-token %s --move-aside %s && rm -f %s",
				templates.BinaryPath, etcdRole.ConfigPath(), r.remote, r.token, r.aside, r.remote)
			out, err := env.Gate.Write(ctx, h, cmd, "restore etcd member "+h.Name()+" from the snapshot")
			if err != nil {
				return "", err
			}
			if env.Gate.DryRun() {
				return "would rebuild " + etcdDataDir + " from the snapshot (the old data dir to " + r.aside + ")", nil
			}
			r.mu.Lock()
			r.res.Restored = append(r.res.Restored, h.Name())
			if strings.Contains(out, r.aside) {
				r.res.MovedAside[h.Name()] = r.aside
			}
			r.mu.Unlock()
			return oneLine(out), nil
		})
	}
	return []Phase{
		stop("stop-clients", "Stop the API's clients (workers' daemons, scheduler, controller manager)", env.Hosts,
			func(h Host) []*Role { return on(h, clientRoles()...) }),
		stop("stop-apiservers", "Stop the apiservers", masters, func(h Host) []*Role { return on(h, apiserverRole) }),
		stop("stop-etcd", "Stop etcd on every master", masters, func(h Host) []*Role { return on(h, etcdRole) }),
		upload,
		restore,
	}
}

// summary is the line printed after the converge.
func (r *restoreRun) summary(dry bool, err error) string {
	m := r.res.Manifest
	switch {
	case dry:
		return fmt.Sprintf("Dry run: would restore etcd revision %d (backup of %s) on every master; the old data dirs would go to %s.",
			m.Revision, m.Time.Format(time.RFC3339), r.aside)
	case err != nil && len(r.res.Restored) > 0:
		return fmt.Sprintf("The restore failed after etcd was rebuilt on %s (old data dirs, where there were any, are at %s): fix the cause and run kforge up to bring the rest back, or kforge restore again.",
			strings.Join(r.restored(), ", "), r.aside)
	case err != nil:
		return "The restore failed before any etcd data was replaced; kforge up starts whatever it stopped."
	}
	s := fmt.Sprintf("Restored etcd revision %d (backup of %s, taken from %s) on %s as a new cluster. "+
		"The agents were restarted and reconcile their pods with the restored state.",
		m.Revision, m.Time.Format(time.RFC3339), m.Member, strings.Join(r.restored(), ", "))
	if aside := sortedKeys(r.res.MovedAside); len(aside) > 0 {
		s += fmt.Sprintf(" The old data dirs are kept at %s on %s: delete them once you are satisfied.", r.aside, strings.Join(aside, ", "))
	}
	return s
}

func (r *restoreRun) restored() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.res.Restored)
	sort.Strings(out)
	return out
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

package installer

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/controlplane/etcd"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/pki"
)

// Names inside a backup archive.
const (
	backupManifestName = "manifest.json"
	backupSnapshotName = "snapshot.db"
	backupClusterName  = "cluster.yaml"
	backupPKIDir       = "pki"
	// BackupFormat is the manifest format this version writes and reads.
	BackupFormat = 1
)

// BackupManifest describes a backup archive (its manifest.json).
type BackupManifest struct {
	Format        int       `json:"format"`
	KforgeVersion string    `json:"kforgeVersion"`
	Cluster       string    `json:"cluster"`
	Time          time.Time `json:"time"`
	// Member is the etcd member the snapshot was taken from, EtcdVersion
	// its version.
	Member      string `json:"member"`
	EtcdVersion string `json:"etcdVersion,omitempty"`
	// Revision is the newest etcd revision in the snapshot.
	Revision int64             `json:"revision"`
	Snapshot etcd.SnapshotInfo `json:"snapshot"`
	Members  []BackupMember    `json:"members"`
	// PKI is true when the archive holds the PKI directory (CA keys too).
	PKI bool `json:"pki"`
}

// BackupMember is an etcd member at the time of the backup.
type BackupMember struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
}

// BackupOptions configure `kforge backup`.
type BackupOptions struct {
	Cluster *v1alpha1.Cluster
	// Output is the archive to write (a .tar.gz, mode 0600). An existing
	// file is replaced only once the new archive is complete.
	Output string
	// NoPKI leaves the PKI directory out (a data-only backup).
	NoPKI       bool
	JSON, TTY   bool
	Out, ErrOut io.Writer
	// PromptPassword asks for a sudo password on a terminal (only hosts
	// behind a bastion are connected, to tunnel to etcd).
	PromptPassword func(prompt string) (string, error)
	Version        string
	Log            *slog.Logger
	// EtcdClient replaces the client of the member at a master's address
	// (tests); by default the member is reached as kforge status reaches
	// it, with the local PKI's etcd client certificate.
	EtcdClient func(ctx context.Context, address string) (*clientv3.Client, error)
	// Reporter replaces the text or JSON reporter (tests).
	Reporter Reporter
}

// BackupResult is what a backup wrote.
type BackupResult struct {
	Path     string
	Size     int64
	Manifest BackupManifest
	Duration time.Duration
}

// Backup writes one tar.gz holding an etcd snapshot, cluster.yaml, the
// PKI directory (unless NoPKI) and manifest.json. It reads only and runs
// while the cluster serves: it asks every master's etcd member for its
// status, takes the snapshot from the leader (or, without one answering
// as leader, from the first healthy member) through the maintenance API,
// verifies it (its sha256 trailer and etcdutl's database check), and
// writes the archive beside Output before renaming it into place.
func Backup(ctx context.Context, o BackupOptions) (res *BackupResult, err error) {
	start := time.Now()
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := o.Cluster
	if o.Output == "" {
		return nil, errors.New("backup: no output file (-o)")
	}
	out, err := filepath.Abs(o.Output)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("backup: %s is not a folder: %v", filepath.Dir(out), err)
	}
	masters := c.Masters()
	if len(masters) == 0 {
		return nil, errors.New("backup: the spec has no masters")
	}
	dial := o.EtcdClient
	if dial == nil {
		var closeHosts func()
		if dial, closeHosts, err = etcdDialer(ctx, c, o.PromptPassword, o.Log); err != nil {
			return nil, err
		}
		defer closeHosts()
	}
	rep := o.Reporter
	switch {
	case rep != nil:
	case o.JSON:
		rep = NewJSONReporter(o.Out)
	default:
		tr := NewTextReporter(o.ErrOut, o.TTY)
		defer tr.Close()
		rep = tr
	}
	env := &Env{Gate: NewGate(false), Reporter: rep}
	for _, m := range masters {
		env.Hosts = append(env.Hosts, &specHost{h: m})
	}
	work, err := os.MkdirTemp(filepath.Dir(out), ".kforge-backup-")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(work)

	b := &backupRun{o: o, env: env, dial: dial, snapshot: filepath.Join(work, backupSnapshotName), out: out}
	b.manifest = BackupManifest{Format: BackupFormat, KforgeVersion: o.Version, Cluster: c.Metadata.Name, PKI: !o.NoPKI}
	phases := []Phase{
		&funcPhase{id: "etcd-members", title: "Find a healthy etcd member", run: b.pickMember},
		&funcPhase{id: "snapshot", title: "Stream an etcd snapshot", run: b.takeSnapshot},
		&funcPhase{id: "archive", title: "Write the backup archive", run: b.writeArchive},
	}
	err = (&Manager{Env: env, Phases: phases}).Run(ctx)
	res = &BackupResult{Path: out, Manifest: b.manifest, Size: b.size, Duration: time.Since(start)}
	summary := backupSummary(res, err)
	if o.JSON {
		ev := Event{Status: StatusSummary, Message: summary, DurationMS: res.Duration.Milliseconds()}
		if err != nil {
			ev.Error = err.Error()
		}
		env.report(ev)
	} else {
		fmt.Fprintln(o.Out, summary)
	}
	if err != nil {
		return res, err
	}
	return res, nil
}

func backupSummary(res *BackupResult, err error) string {
	if err != nil {
		return fmt.Sprintf("kforge backup failed after %s; nothing was written to %s.", formatDuration(res.Duration), res.Path)
	}
	m := res.Manifest
	s := fmt.Sprintf("kforge backup done in %s: %s (%s, mode 0600): etcd revision %d, %d keys, from member %s of cluster %s.",
		formatDuration(res.Duration), res.Path, humanBytes(res.Size), m.Revision, m.Snapshot.TotalKeys, m.Member, m.Cluster)
	if m.PKI {
		s += "\nIt holds the PKI directory WITH THE CA PRIVATE KEYS and the Secrets encryption key: whoever reads it can act as any\n" +
			"user or node of the cluster. Keep it as private as the CAs (--no-pki leaves the PKI out)."
	} else {
		s += "\nIt holds no PKI (--no-pki). The snapshot's Secrets are encrypted with the key in the PKI directory's\n" +
			"ca/encryption.yaml: keep that key, or restored Secrets cannot be read."
	}
	return s
}

// backupRun holds one Backup's state between its phases.
type backupRun struct {
	o        BackupOptions
	env      *Env
	dial     func(ctx context.Context, address string) (*clientv3.Client, error)
	snapshot string
	out      string

	member   v1alpha1.Host // the member chosen
	manifest BackupManifest
	size     int64
}

// pickMember asks every member for its status and chooses the leader,
// or the first healthy member when none answers as leader.
func (b *backupRun) pickMember(ctx context.Context, p Phase) error {
	masters := b.o.Cluster.Masters()
	statuses := make([]*clientv3.StatusResponse, len(masters))
	err := b.env.Each(ctx, p, b.env.Hosts, func(ctx context.Context, h Host) (string, error) {
		i := indexOfHost(masters, h.Name())
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cli, err := b.dial(ctx, h.Address())
		if err != nil {
			return "", err
		}
		defer cli.Close()
		st, err := cli.Status(ctx, cli.Endpoints()[0])
		if err != nil {
			return "", fmt.Errorf("etcd status: %w", err)
		}
		if st.Leader == 0 {
			return "", errors.New("etcd member knows no leader")
		}
		if len(st.Errors) > 0 {
			return "", errors.New("etcd member reports: " + strings.Join(st.Errors, "; "))
		}
		statuses[i] = st
		role := "follower"
		if st.Leader == st.Header.MemberId {
			role = "leader"
		}
		return fmt.Sprintf("healthy %s, revision %d, db %s, etcd %s", role, st.Header.Revision, humanBytes(st.DbSize), st.Version), nil
	})
	chosen := -1
	for i, st := range statuses {
		if st == nil {
			continue
		}
		if chosen < 0 || st.Leader == st.Header.MemberId {
			chosen = i
		}
	}
	if chosen < 0 {
		return fmt.Errorf("no etcd member is healthy: %w", err)
	}
	// One unhealthy member does not stop a backup: the snapshot comes
	// from a healthy one.
	if err != nil {
		b.env.report(Event{Phase: p.ID(), Status: StatusProgress, Message: "going on without the members that failed"})
	}
	b.member = masters[chosen]
	b.manifest.Member = b.member.Name
	return nil
}

func indexOfHost(hosts []v1alpha1.Host, name string) int {
	for i, h := range hosts {
		if h.Name == name {
			return i
		}
	}
	return -1
}

// takeSnapshot streams the snapshot from the chosen member and verifies it.
func (b *backupRun) takeSnapshot(ctx context.Context, p Phase) error {
	h := &specHost{h: b.member}
	return b.env.Each(ctx, p, []Host{h}, func(ctx context.Context, h Host) (string, error) {
		cli, err := b.dial(ctx, h.Address())
		if err != nil {
			return "", err
		}
		defer cli.Close()
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		list, err := cli.MemberList(mctx)
		cancel()
		if err != nil {
			return "", fmt.Errorf("etcd member list: %w", err)
		}
		b.manifest.Members = nil
		for _, m := range list.Members {
			b.manifest.Members = append(b.manifest.Members, BackupMember{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs})
		}
		t0 := time.Now()
		var next int64 = 16 << 20
		info, version, err := etcd.SaveSnapshot(ctx, cli, b.snapshot, func(n int64) {
			if n >= next {
				next += 16 << 20
				b.env.report(Event{Phase: p.ID(), Host: h.Name(), Status: StatusProgress, Message: humanBytes(n) + " received"})
			}
		})
		if err != nil {
			return "", err
		}
		b.manifest.Time = t0.UTC().Truncate(time.Second)
		b.manifest.EtcdVersion = version
		b.manifest.Revision = info.Revision
		b.manifest.Snapshot = *info
		d := time.Since(t0)
		rate := float64(info.Size) / (1 << 20) / max(d.Seconds(), 0.001)
		return fmt.Sprintf("%s in %s (%.1f MiB/s), sha256 trailer and database verified: revision %d, %d keys",
			humanBytes(info.Size), formatDuration(d), rate, info.Revision, info.TotalKeys), nil
	})
}

// writeArchive writes the tar.gz beside the output and renames it in.
func (b *backupRun) writeArchive(ctx context.Context, p Phase) error {
	c := b.o.Cluster
	f, err := os.CreateTemp(filepath.Dir(b.out), ".kforge-backup-*.tar.gz")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmp)
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	manifest, err := json.MarshalIndent(b.manifest, "", "  ")
	if err != nil {
		return err
	}
	if err := tarBytes(tw, backupManifestName, append(manifest, '\n'), 0o600, b.manifest.Time); err != nil {
		return err
	}
	if c.Path != "" {
		data, err := os.ReadFile(c.Path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", c.Path, err)
		}
		if err := tarBytes(tw, backupClusterName, data, 0o644, b.manifest.Time); err != nil {
			return err
		}
	}
	if err := tarFile(tw, backupSnapshotName, b.snapshot); err != nil {
		return err
	}
	files := 0
	if !b.o.NoPKI {
		if files, err = tarDir(ctx, tw, backupPKIDir, c.Spec.PKI.Dir); err != nil {
			return fmt.Errorf("adding the PKI directory %s: %w", c.Spec.PKI.Dir, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, b.out); err != nil {
		return err
	}
	b.size = fi.Size()
	msg := fmt.Sprintf("%s: manifest, cluster.yaml, snapshot", b.out)
	if b.o.NoPKI {
		msg += "; no PKI (--no-pki)"
	} else {
		msg += fmt.Sprintf(", %d PKI files (CA keys included)", files)
	}
	b.env.report(Event{Phase: p.ID(), Status: StatusProgress, Message: msg})
	return nil
}

func tarBytes(tw *tar.Writer, name string, data []byte, mode int64, mtime time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func tarFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// tarDir adds the regular files and folders under dir as prefix/...,
// keeping their modes; other kinds of files are left out.
func tarDir(ctx context.Context, tw *tar.Writer, prefix, dir string) (files int, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := path.Join(prefix, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime(), Typeflag: tar.TypeDir})
		case fi.Mode().IsRegular():
			files++
			return tarFile(tw, name, p)
		}
		return nil
	})
	return files, err
}

// etcdDialer reaches the members as kforge status does: the local PKI's
// etcd client certificate, through SSH to hosts behind a bastion (only
// those are connected). closeHosts ends those connections.
func etcdDialer(ctx context.Context, c *v1alpha1.Cluster, prompt func(string) (string, error), log *slog.Logger) (func(ctx context.Context, address string) (*clientv3.Client, error), func(), error) {
	inv, err := pki.NewInventory(PKISpec(c), "")
	if err != nil {
		return nil, nil, err
	}
	var hosts []Host
	for _, h := range SSHHosts(c, false, prompt, log) {
		ch := c.Host(h.Name())
		if ch != nil && ch.Role == v1alpha1.RoleMaster && c.HostSSH(*ch).Bastion != "" {
			hosts = append(hosts, h)
		} else {
			_ = h.Close()
		}
	}
	closeHosts := func() {
		for _, h := range hosts {
			_ = h.Close()
		}
	}
	if err := ParallelEach(ctx, DefaultParallel, hosts, func(ctx context.Context, h Host) error {
		return hostError(h.Name(), h.Connect(ctx))
	}); err != nil {
		closeHosts()
		return nil, nil, err
	}
	pr, err := NewNetProber(c, inv, NewDialer(c, hosts).DialContext)
	if err != nil {
		closeHosts()
		return nil, nil, fmt.Errorf("reading the local PKI (has kforge up run?): %w", err)
	}
	return func(ctx context.Context, address string) (*clientv3.Client, error) {
		return pr.etcdClient(ctx, []string{EtcdEndpoint(address)})
	}, closeHosts, nil
}

// funcPhase is a phase whose work is one function; Env.Each gives it
// per-host ✓ lines.
type funcPhase struct {
	id, title string
	run       func(ctx context.Context, p Phase) error
}

func (p *funcPhase) ID() string                    { return p.id }
func (p *funcPhase) Title() string                 { return p.title }
func (p *funcPhase) Run(ctx context.Context) error { return p.run(ctx, p) }

// specHost is a host of the spec that is never connected: the name and
// address for reports of work done from this machine.
type specHost struct{ h v1alpha1.Host }

var _ Host = (*specHost)(nil)

func (s *specHost) Name() string                  { return s.h.Name }
func (s *specHost) Role() string                  { return s.h.Role }
func (s *specHost) Address() string               { return s.h.Address }
func (s *specHost) Connect(context.Context) error { return nil }
func (s *specHost) Close() error                  { return nil }
func (s *specHost) Run(context.Context, string) (string, error) {
	return "", errors.New("host " + s.h.Name + ": not connected")
}
func (s *specHost) Stat(context.Context, string) (ssh.RemoteFile, error) {
	return ssh.RemoteFile{}, errors.New("host " + s.h.Name + ": not connected")
}
func (s *specHost) Write(context.Context, string) (string, error) {
	return "", errors.New("host " + s.h.Name + ": not connected")
}
func (s *specHost) Upload(context.Context, ssh.Upload) (bool, error) {
	return false, errors.New("host " + s.h.Name + ": not connected")
}

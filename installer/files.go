package installer

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pmezard/go-difflib/difflib"

	"kforge.dev/kforge/installer/ssh"
)

// ChangeSet records which remote files this run changed (or, in a dry
// run, would change) on each host, so a daemon restarts only when one of
// its inputs did. Safe for concurrent use.
type ChangeSet struct {
	mu sync.Mutex
	m  map[string]map[string]bool
}

func (s *ChangeSet) add(host, path string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]map[string]bool{}
	}
	if s.m[host] == nil {
		s.m[host] = map[string]bool{}
	}
	s.m[host][path] = true
}

// Changed returns which of paths changed on host, in the order given.
func (s *ChangeSet) Changed(host string, paths ...string) []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range paths {
		if s.m[host][p] {
			out = append(out, p)
		}
	}
	return out
}

// remoteFile is one file to place on a host.
type remoteFile struct {
	Remote string
	Mode   fs.FileMode
	File   ssh.File
	// Text is the content of a non-secret text file (a config or unit),
	// diffed against the host's copy in a dry run. Nil for keys,
	// kubeconfigs and binaries, whose content is never printed.
	Text []byte
}

// statScript prints "mode owner sha256 path" (or "absent - - path") for
// each path in one round trip. It only reads.
func statScript(paths []string) string {
	var b strings.Builder
	b.WriteString("for f in")
	for _, p := range paths {
		b.WriteString(" " + ssh.ShellQuote(p))
	}
	b.WriteString(`; do if [ -f "$f" ]; then echo "$(stat -c '%a %U:%G' "$f") $(sha256sum "$f" | cut -d' ' -f1) $f"; else echo "absent - - $f"; fi; done`)
	return b.String()
}

func parseStatScript(out string) (map[string]ssh.RemoteFile, error) {
	m := map[string]ssh.RemoteFile{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 4 {
			return nil, fmt.Errorf("unexpected stat line %q", line)
		}
		if f[0] == "absent" {
			m[f[3]] = ssh.RemoteFile{}
			continue
		}
		mode, err := strconv.ParseUint(f[0], 8, 32)
		if err != nil {
			return nil, fmt.Errorf("unexpected stat line %q", line)
		}
		m[f[3]] = ssh.RemoteFile{Exists: true, Mode: fs.FileMode(mode), Owner: f[1], SHA256: f[2]}
	}
	return m, nil
}

// syncFiles makes the files on h match, reading what is there in one
// round trip and uploading only what differs, through the gate. It
// returns the remote paths it changed (or would change) and records them
// in cs.
func syncFiles(ctx context.Context, env *Env, h Host, files []remoteFile) ([]string, error) {
	if len(files) == 0 {
		return nil, nil
	}
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.Remote
	}
	out, err := h.Run(ctx, statScript(paths))
	if err != nil {
		return nil, err
	}
	cur, err := parseStatScript(out)
	if err != nil {
		return nil, err
	}
	var changed []string
	for _, f := range files {
		c := cur[f.Remote]
		if c.Exists && c.SHA256 == f.File.SHA256 && c.Mode == f.Mode.Perm() && c.Owner == "root:root" {
			continue
		}
		u := ssh.Upload{File: f.File, Remote: f.Remote, Mode: f.Mode, Owner: "root:root"}
		var did bool
		if env.Gate.DryRun() && f.Text != nil {
			did, err = env.Gate.uploadWithDiff(ctx, h, u, func() string { return textDiff(ctx, h, f, c) })
		} else {
			did, err = env.Gate.Upload(ctx, h, u)
		}
		if err != nil {
			return changed, err
		}
		if did {
			changed = append(changed, f.Remote)
			env.Changed.add(h.Name(), f.Remote)
		}
	}
	return changed, nil
}

// textDiff is a unified diff of what h has at f.Remote against f.Text.
func textDiff(ctx context.Context, h Host, f remoteFile, cur ssh.RemoteFile) string {
	old := ""
	from := "/dev/null"
	if cur.Exists {
		if cur.SHA256 == f.File.SHA256 {
			return ""
		}
		s, err := h.Run(ctx, "cat "+ssh.ShellQuote(f.Remote))
		if err != nil {
			return "(could not read the current file: " + oneLine(err.Error()) + ")"
		}
		old, from = s, f.Remote
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(old), B: difflib.SplitLines(string(f.Text)),
		FromFile: from, ToFile: f.Remote, Context: 2,
	})
	if err != nil {
		return ""
	}
	return d
}

// uploadWithDiff is Upload in a dry run, with a diff attached to the change.
func (g *Gate) uploadWithDiff(ctx context.Context, h Host, u ssh.Upload, diff func() string) (bool, error) {
	cur, err := h.Stat(ctx, u.Remote)
	if err != nil {
		return false, err
	}
	if cur.Exists && cur.SHA256 == u.File.SHA256 && cur.Mode == u.Mode.Perm() && cur.Owner == u.Owner {
		return false, nil
	}
	g.record(Change{Host: h.Name(), Kind: "upload", Target: u.Remote, Detail: uploadDetail(&cur, u), Diff: diff()})
	return true, nil
}

// sortChanges orders changes by host (stable within a host), for printing.
func sortChanges(cs []Change) []Change {
	out := append([]Change(nil), cs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

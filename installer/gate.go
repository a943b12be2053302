package installer

import (
	"context"
	"fmt"
	"sync"

	"kforge.dev/kforge/installer/ssh"
)

// Change is one remote write, done or (in a dry run) only planned.
type Change struct {
	Host string `json:"host"`
	// Kind is "upload", "command" or "etcd" (a membership change).
	Kind string `json:"kind"`
	// Target is the file written or the command run.
	Target string `json:"target"`
	// Detail says why or what differs.
	Detail string `json:"detail,omitempty"`
	// Diff is, in a dry run, a unified diff of a text file against what
	// the host has (never set for keys, kubeconfigs or binaries).
	Diff string `json:"diff,omitempty"`
}

func (c Change) String() string {
	s := fmt.Sprintf("%s: %s %s", c.Host, c.Kind, c.Target)
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// Gate is the one way phases change a host. In a dry run it only reads
// what is there and records what it would change; otherwise it makes the
// change and records it. Safe for concurrent use.
type Gate struct {
	dryRun bool
	// OnChange, when set, is called for every change as it is recorded.
	OnChange func(Change)

	mu      sync.Mutex
	changes []Change
}

// NewGate returns a gate; dryRun makes it record instead of write.
func NewGate(dryRun bool) *Gate { return &Gate{dryRun: dryRun} }

// DryRun reports whether writes are only recorded.
func (g *Gate) DryRun() bool { return g.dryRun }

// Changes returns what was changed (or would be, in a dry run), in order.
func (g *Gate) Changes() []Change {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Change(nil), g.changes...)
}

func (g *Gate) record(c Change) {
	g.mu.Lock()
	g.changes = append(g.changes, c)
	g.mu.Unlock()
	if g.OnChange != nil {
		g.OnChange(c)
	}
}

// Write runs a command that changes h, or records it in a dry run.
// why says what it is for, for the record.
func (g *Gate) Write(ctx context.Context, h Host, cmd, why string) (string, error) {
	g.record(Change{Host: h.Name(), Kind: "command", Target: cmd, Detail: why})
	if g.dryRun {
		return "", nil
	}
	return h.Write(ctx, cmd)
}

// Upload places a file on h unless it already matches. In a dry run it
// compares and records only.
func (g *Gate) Upload(ctx context.Context, h Host, u ssh.Upload) (changed bool, err error) {
	if u.Owner == "" {
		u.Owner = "root:root"
	}
	if g.dryRun {
		cur, err := h.Stat(ctx, u.Remote)
		if err != nil {
			return false, err
		}
		if cur.Exists && cur.SHA256 == u.File.SHA256 && cur.Mode == u.Mode.Perm() && cur.Owner == u.Owner {
			return false, nil
		}
		g.record(Change{Host: h.Name(), Kind: "upload", Target: u.Remote, Detail: uploadDetail(&cur, u)})
		return true, nil
	}
	changed, err = h.Upload(ctx, u)
	if err == nil && changed {
		g.record(Change{Host: h.Name(), Kind: "upload", Target: u.Remote, Detail: uploadDetail(nil, u)})
	}
	return changed, err
}

// uploadDetail describes an upload; cur is what the host has, when known.
func uploadDetail(cur *ssh.RemoteFile, u ssh.Upload) string {
	want := fmt.Sprintf("%s, %s %s, sha256 %s", humanBytes(u.File.Size), modeString(u.Mode), u.Owner, short(u.File.SHA256))
	switch {
	case cur == nil:
		return want
	case !cur.Exists:
		return "new file: " + want
	case cur.SHA256 != u.File.SHA256:
		return "content differs: sha256 " + short(cur.SHA256) + " → " + want
	default:
		return fmt.Sprintf("mode/owner %s %s → %s", modeString(cur.Mode), cur.Owner, want)
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

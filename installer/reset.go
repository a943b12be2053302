package installer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/templates"
)

// ResetOptions configure `kforge reset`.
type ResetOptions struct {
	Cluster        *v1alpha1.Cluster
	Out, ErrOut    io.Writer
	TTY            bool
	PromptPassword func(string) (string, error)
	Log            *slog.Logger
	// Hosts replaces the SSH hosts (tests).
	Hosts []Host
}

// ResetResult says what reset did.
type ResetResult struct {
	Reset   []string
	Skipped map[string]string // host → why (unreachable)
}

// resetScript stops, disables and removes every kforge unit, then every
// file and folder kforge put on the host. Roles stop in reverse start
// order, so the API's clients stop first and etcd last: a scheduler or
// controller manager stopping after the apiservers would wait for them to
// release its lease. Units of roles this version no longer knows go next.
var resetScript = `for u in ` + roleUnits(true) + `; do [ -e ` + templates.UnitDir + `/$u ] && { systemctl disable --now --quiet $u || true; }; done
for f in ` + templates.UnitDir + `/kforge-*.service; do [ -e "$f" ] || continue; systemctl disable --now --quiet "$(basename "$f")" || true; done
` + roleCleanups() + `rm -f ` + templates.UnitDir + `/kforge-*.service
systemctl daemon-reload
systemctl reset-failed 'kforge-*' 2>/dev/null || true
rm -rf ` + templates.ConfigDir + ` ` + templates.StateDir + ` ` + templates.BinaryPath

// roleCleanups runs, for each role whose config is on the host, the
// role's cleanup subcommand; a failure is reported and reset goes on.
func roleCleanups() string {
	var b strings.Builder
	for _, r := range Roles {
		if r.Cleanup == "" {
			continue
		}
		cfg := templates.ConfigPath(r.Name)
		fmt.Fprintf(&b, "if [ -f %s ] && [ -x %s ]; then %s %s %s --config %s || echo \"kforge reset: %s cleanup failed\" >&2; fi\n",
			cfg, templates.BinaryPath, templates.BinaryPath, r.Name, r.Cleanup, cfg, r.Name)
	}
	return b.String()
}

// ResetPhase uninstalls kforge from every reachable host.
type ResetPhase struct {
	Env *Env

	mu      sync.Mutex
	skipped map[string]string
}

func (p *ResetPhase) ID() string    { return "reset" }
func (p *ResetPhase) Title() string { return "Remove kforge's units, files and data" }

func (p *ResetPhase) Run(ctx context.Context) error {
	return p.Env.Each(ctx, p, p.Env.Hosts, func(ctx context.Context, h Host) (string, error) {
		if err := h.Connect(ctx); err != nil {
			p.mu.Lock()
			p.skipped[h.Name()] = oneLine(err.Error())
			p.mu.Unlock()
			return "", &SkipError{Why: "unreachable, skipped: " + oneLine(err.Error())}
		}
		if _, err := p.Env.Gate.Write(ctx, h, resetScript, "uninstall"); err != nil {
			return "", err
		}
		return "units, " + templates.ConfigDir + ", " + templates.StateDir + " and " + templates.BinaryPath + " removed", nil
	})
}

// Reset stops and removes every kforge unit, file and data folder on each
// host of the spec. Unreachable hosts are skipped and named. The local PKI,
// journal and admin kubeconfig are kept.
func Reset(ctx context.Context, o ResetOptions) (*ResetResult, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	hosts := o.Hosts
	if hosts == nil {
		hosts = SSHHosts(o.Cluster, false, o.PromptPassword, o.Log)
	}
	defer func() {
		for _, h := range hosts {
			_ = h.Close()
		}
	}()
	tr := NewTextReporter(o.ErrOut, o.TTY)
	defer tr.Close()
	env := &Env{Hosts: hosts, Gate: NewGate(false), Reporter: tr}
	p := &ResetPhase{Env: env, skipped: map[string]string{}}
	err := (&Manager{Env: env, Phases: []Phase{p}}).Run(ctx)
	res := &ResetResult{Skipped: p.skipped}
	for _, h := range hosts {
		if _, skip := p.skipped[h.Name()]; !skip {
			res.Reset = append(res.Reset, h.Name())
		}
	}
	if err != nil {
		return res, err
	}
	fmt.Fprintf(o.Out, "kforge reset: %d host(s) cleaned: %s.\n", len(res.Reset), strings.Join(res.Reset, ", "))
	if len(res.Skipped) > 0 {
		names := make([]string, 0, len(res.Skipped))
		for n := range res.Skipped {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(o.Out, "Skipped (unreachable, nothing removed): %s. Run kforge reset again when they are back.\n", strings.Join(names, ", "))
	}
	fmt.Fprintln(o.Out, "Kept on this machine: the PKI, the run journal and admin.kubeconfig (delete them to start from new CAs).")
	return res, nil
}

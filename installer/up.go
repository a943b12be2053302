package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/pki"
)

// UpOptions configure `kforge up`.
type UpOptions struct {
	Cluster *v1alpha1.Cluster
	DryRun  bool
	// AcceptNewHostKeys pins unknown host keys into spec.ssh.knownHosts.
	AcceptNewHostKeys bool
	// Binary is the kforge binary to push; empty means the running one.
	Binary string
	// UploadEncoding is how the binary crosses the wire (UploadEncodings;
	// EncodingAuto when empty).
	UploadEncoding string
	// JSON prints one JSON event per line on Out instead of status lines on ErrOut.
	JSON bool
	// TTY turns the spinner on (ErrOut is a terminal).
	TTY         bool
	Out, ErrOut io.Writer
	// PromptPassword asks for a sudo password on a terminal; nil when
	// there is none. Asked at most once per environment variable name.
	PromptPassword func(prompt string) (string, error)
	Parallel       int
	Version        string
	Log            *slog.Logger
	// Hosts replaces the SSH hosts (tests).
	Hosts []Host
	// Reporter replaces the text or JSON reporter (tests).
	Reporter Reporter
	// NewProber replaces the health prober that dials the hosts (tests).
	NewProber func(c *v1alpha1.Cluster, inv *pki.Inventory) (Prober, error)
	// BeforeChanges run after the preflight checks and before the first
	// change to a host; After run once everything else has.
	BeforeChanges, After []Phase
	// BeforeServices, when set, builds phases that run once the configs
	// are written, just before the first daemon's phase (restore stops
	// the daemons and rebuilds etcd's data there).
	BeforeServices func(env *Env) []Phase
	// Command names the run in its summary; "kforge up" when empty.
	Command string

	// rotation, set by RotateCerts, adds the reissue and served-certs phases.
	rotation *rotation
	// upgrade, set by Upgrade, replaces the converge with a rolling upgrade.
	upgrade *upgrade
}

// UpResult is what a run did.
type UpResult struct {
	Changes  []Change
	Duration time.Duration
	// Kubeconfig is the admin kubeconfig written, when one was.
	Kubeconfig string
}

// Up installs or converges the cluster: connect and gather facts,
// preflight, upload the binary, the PKI (locally) and its distribution,
// role configs and units, etcd, the apiservers, the load balancer, a wait
// for the API through it, and the admin kubeconfig beside cluster.yaml.
func Up(ctx context.Context, o UpOptions) (*UpResult, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	binPath := o.Binary
	if binPath == "" {
		p, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the running binary (pass --binary): %w", err)
		}
		binPath = p
	}
	bin, file, err := LoadBinary(binPath)
	if err != nil {
		return nil, err
	}
	hosts := o.Hosts
	if hosts == nil {
		hosts = SSHHosts(o.Cluster, o.AcceptNewHostKeys, o.PromptPassword, o.Log)
	}
	defer func() {
		for _, h := range hosts {
			_ = h.Close()
		}
	}()

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
	gate := NewGate(o.DryRun)
	env := &Env{Hosts: hosts, Gate: gate, Reporter: rep, Parallel: o.Parallel, Facts: &FactsStore{}, Changed: &ChangeSet{}}
	gate.OnChange = func(c Change) {
		env.report(Event{Phase: "", Host: c.Host, Status: StatusChange, Change: &c})
	}
	if !o.DryRun && o.Cluster.Path != "" {
		run := time.Now().UTC().Format("20060102T150405Z") + "-" + strconv.Itoa(os.Getpid())
		j, err := OpenJournal(JournalPath(o.Cluster.Path), run)
		if err != nil {
			return nil, err
		}
		defer j.Close()
		env.Journal = j
		if err := j.Record(JournalRecord{Kind: JournalRunStart, Command: o.command(), Version: o.Version, OK: true}); err != nil {
			return nil, err
		}
	}
	cp := &ControlPlane{Env: env, Cluster: o.Cluster, NewProber: o.NewProber, rotation: o.rotation}
	defer cp.Close()
	phases := append([]Phase{&FactsPhase{Env: env}, &PreflightPhase{Env: env, Binary: bin}}, o.BeforeChanges...)
	upload := &UploadBinaryPhase{Env: env, Binary: bin, File: file, Encoding: o.UploadEncoding}
	switch {
	case o.upgrade != nil:
		phases = append(phases, o.upgrade.phases(env, cp, bin, upload)...)
	case o.rotation != nil:
		// A rotation keeps the deployed binary: it changes certificates only.
		phases = append(phases, cp.Phases()...)
	default:
		phases = append(phases, upload)
		for _, p := range cp.Phases() {
			// A restore's steps come just before the first daemon starts.
			if _, ok := p.(*ServicePhase); ok && o.BeforeServices != nil {
				phases = append(phases, o.BeforeServices(env)...)
				o.BeforeServices = nil
			}
			phases = append(phases, p)
		}
	}
	m := &Manager{Env: env, Phases: append(phases, o.After...)}
	err = m.Run(ctx)
	res := &UpResult{Changes: gate.Changes(), Duration: time.Since(start)}
	if err == nil && !o.DryRun && o.Cluster.Path != "" {
		res.Kubeconfig = AdminKubeconfigPath(o.Cluster.Path)
	}
	if env.Journal != nil {
		rec := JournalRecord{Kind: JournalRunEnd, OK: err == nil, DurationMS: res.Duration.Milliseconds()}
		if err != nil {
			rec.Error = err.Error()
		}
		_ = env.Journal.Record(rec)
	}
	summary := summaryText(o, hosts, res, err)
	if res.Kubeconfig != "" && o.upgrade == nil {
		summary += "\n\n" + usageText(o.Cluster, res.Kubeconfig)
	}
	if o.JSON {
		ev := Event{Status: StatusSummary, Message: summary, DurationMS: res.Duration.Milliseconds()}
		if err != nil {
			ev.Error = err.Error()
		}
		env.report(ev)
	} else {
		if o.DryRun {
			fmt.Fprintf(o.Out, "Dry run: %d change(s) planned, nothing was changed.\n", len(res.Changes))
			for _, c := range sortChanges(res.Changes) {
				fmt.Fprintf(o.Out, "  %s\n", c)
				for _, l := range strings.Split(strings.TrimRight(c.Diff, "\n"), "\n") {
					if l != "" {
						fmt.Fprintf(o.Out, "      %s\n", l)
					}
				}
			}
		}
		fmt.Fprintln(o.Out, summary)
	}
	return res, err
}

func summaryText(o UpOptions, runHosts []Host, res *UpResult, err error) string {
	hosts := len(runHosts)
	verb := "done"
	if o.DryRun {
		verb = "dry run done"
	}
	if err != nil {
		verb = "failed"
	}
	if o.upgrade != nil {
		return o.upgrade.summary(verb, res.Duration, hosts)
	}
	if o.rotation != nil {
		n, what := len(o.rotation.done), "reissued and rolled out"
		if o.DryRun {
			n, what = o.rotation.planned, "to reissue and roll out"
		}
		return fmt.Sprintf("kforge cert rotate %s in %s on %d hosts: %d leaf certificate(s) %s (%d change(s)).",
			verb, formatDuration(res.Duration), hosts, n, what, len(res.Changes))
	}
	var roles []string
	for _, r := range Roles {
		for _, h := range o.Cluster.Spec.Hosts {
			if r.RunsOn(o.Cluster, h) && slices.ContainsFunc(runHosts, func(rh Host) bool { return rh.Name() == h.Name }) {
				roles = append(roles, r.Name)
				break
			}
		}
	}
	cmd := o.Command
	if cmd == "" {
		cmd = "kforge up"
	}
	return fmt.Sprintf("%s %s in %s on %d hosts: binary, PKI, %s (%d change(s)).",
		cmd, verb, formatDuration(res.Duration), hosts, strings.Join(roles, ", "), len(res.Changes))
}

// command is the run's command for the journal: "up", "cert rotate", ...
func (o UpOptions) command() string {
	if o.Command == "" {
		return "up"
	}
	return strings.TrimPrefix(o.Command, "kforge ")
}

func usageText(c *v1alpha1.Cluster, kubeconfig string) string {
	return fmt.Sprintf(`The API is at %s. The admin kubeconfig (cluster-admin, keep it private) is
  %s
Use it with kubectl:
  kubectl --kubeconfig %s get ns
or print it again with: kforge kubeconfig -f %s`, c.APIServerURL(), kubeconfig, kubeconfig, c.Path)
}

// SSHHosts builds a Host per cluster host with its effective SSH settings.
// Hosts sharing a known_hosts file share one HostKeys, so pinning is
// serialised.
func SSHHosts(c *v1alpha1.Cluster, acceptNew bool, prompt func(string) (string, error), log *slog.Logger) []Host {
	keys := map[string]*ssh.HostKeys{}
	pw := &passwords{prompt: prompt, cache: map[string]string{}}
	var out []Host
	for _, h := range c.Spec.Hosts {
		s := c.HostSSH(h)
		hk := keys[s.KnownHosts]
		if hk == nil {
			hk = &ssh.HostKeys{File: s.KnownHosts, AcceptNew: acceptNew}
			keys[s.KnownHosts] = hk
		}
		cfg := ssh.Config{
			Name: h.Name, Address: h.Address, Port: s.Port, User: s.User, IdentityFile: s.IdentityFile,
			HostKeys: hk, Bastion: s.Bastion, Log: log,
		}
		env, user := s.SudoPasswordEnv, s.User
		cfg.SudoPassword = func(ctx context.Context) (string, error) { return pw.get(env, user) }
		out = append(out, NewSSHHost(h.Name, h.Role, h.Address, cfg))
	}
	return out
}

// passwords hands out sudo passwords: from the environment variable the
// spec names, else asked once on the terminal.
type passwords struct {
	prompt func(string) (string, error)
	mu     sync.Mutex
	cache  map[string]string
}

func (p *passwords) get(env, user string) (string, error) {
	if env != "" {
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := env + "\x00" + user
	if v, ok := p.cache[key]; ok {
		return v, nil
	}
	if p.prompt == nil {
		if env == "" {
			return "", errors.New("sudo asks for a password: set spec.ssh.sudoPasswordEnv to an environment variable holding it, or run on a terminal to be asked")
		}
		return "", fmt.Errorf("sudo asks for a password and $%s (spec.ssh.sudoPasswordEnv) is empty; set it or run on a terminal to be asked", env)
	}
	v, err := p.prompt(fmt.Sprintf("sudo password for %s: ", user))
	if err != nil {
		return "", err
	}
	p.cache[key] = v
	return v, nil
}

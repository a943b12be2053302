package installer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Phase is one step of an install, over some or all hosts. Phases are
// idempotent: running one again on a host where it is done changes nothing.
type Phase interface {
	// ID is a stable short name, used in the journal and JSON events.
	ID() string
	// Title is what the progress line says.
	Title() string
	// Run does the phase. It changes hosts only through the Env's Gate.
	Run(ctx context.Context) error
}

// ShouldRunner is a Phase that may have nothing to do; the manager skips
// it, reporting why, when ShouldRun says false. Called just before the
// phase would run, so it can use facts earlier phases gathered.
type ShouldRunner interface {
	ShouldRun() (run bool, why string)
}

// DryRunner is a Phase with its own dry run. Without one, a dry run calls
// Run with the gate recording instead of writing.
type DryRunner interface {
	DryRun(ctx context.Context) error
}

// DefaultParallel bounds how many hosts a phase works on at once.
const DefaultParallel = 10

// Env is what the phases of one run share.
type Env struct {
	Hosts    []Host
	Gate     *Gate
	Reporter Reporter
	// Journal may be nil (dry runs write none).
	Journal *Journal
	// Parallel bounds concurrent hosts per phase (DefaultParallel when 0).
	Parallel int
	// Facts are filled by the facts phase; later phases read them.
	Facts *FactsStore
	// Changed records the files this run changed per host; nil records nothing.
	Changed *ChangeSet
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Env) report(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = e.now()
	}
	ev.DryRun = e.Gate.DryRun()
	e.Reporter.Report(ev)
}

// HostsWithRole filters the env's hosts.
func (e *Env) HostsWithRole(roles ...string) []Host {
	var out []Host
	for _, h := range e.Hosts {
		for _, r := range roles {
			if h.Role() == r {
				out = append(out, h)
			}
		}
	}
	return out
}

// Each runs fn on every host, at most Parallel at once, reporting a ✓/✗
// line per host and journaling each success or failure. fn returns a short
// message for the ✓ line; a *SkipError reports a skip instead. Every
// host runs even when others fail; the error joins every host's error, each
// naming its host.
func (e *Env) Each(ctx context.Context, p Phase, hosts []Host, fn func(ctx context.Context, h Host) (string, error)) error {
	limit := e.Parallel
	if limit <= 0 {
		limit = DefaultParallel
	}
	return ParallelEach(ctx, limit, hosts, func(ctx context.Context, h Host) error {
		start := e.now()
		e.report(Event{Phase: p.ID(), Title: p.Title(), Host: h.Name(), Status: StatusStart})
		msg, err := fn(ctx, h)
		d := e.now().Sub(start)
		var skip *SkipError
		switch {
		case errors.As(err, &skip):
			e.report(Event{Phase: p.ID(), Title: p.Title(), Host: h.Name(), Status: StatusSkipped, Message: skip.Why, DurationMS: d.Milliseconds()})
			err = nil
		case err != nil:
			err = hostError(h.Name(), err)
			e.report(Event{Phase: p.ID(), Title: p.Title(), Host: h.Name(), Status: StatusFailed, Error: err.Error(), DurationMS: d.Milliseconds()})
		default:
			e.report(Event{Phase: p.ID(), Title: p.Title(), Host: h.Name(), Status: StatusOK, Message: msg, DurationMS: d.Milliseconds()})
		}
		rec := JournalRecord{Kind: JournalStep, Phase: p.ID(), Host: h.Name(), OK: err == nil, DurationMS: d.Milliseconds()}
		if err != nil {
			rec.Error = err.Error()
		}
		if jerr := e.Journal.Record(rec); jerr != nil && err == nil {
			err = jerr
		}
		return err
	})
}

// SkipError reports that a host had nothing to do in a phase.
type SkipError struct{ Why string }

func (e *SkipError) Error() string { return "skipped: " + e.Why }

// hostError makes sure err names the host.
func hostError(host string, err error) error {
	if strings.Contains(err.Error(), "host "+host+":") || strings.Contains(err.Error(), "host "+host+" ") {
		return err
	}
	return fmt.Errorf("host %s: %w", host, err)
}

// ParallelEach calls fn for every item, at most limit at once, and waits
// for all of them. Items not started when ctx ends fail with ctx.Err().
// The error joins every failure in item order.
func ParallelEach[T any](ctx context.Context, limit int, items []T, fn func(context.Context, T) error) error {
	if limit <= 0 {
		limit = 1
	}
	errs := make([]error, len(items))
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		if err := ctx.Err(); err != nil {
			<-sem
			errs[i] = err
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fn(ctx, it)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Manager runs phases in order.
type Manager struct {
	Env    *Env
	Phases []Phase
}

// Run runs every phase in order, stopping at the first that fails or when
// ctx ends (checked between phases). A phase whose ShouldRun says false is
// reported as skipped. In a dry run a DryRunner's DryRun replaces Run.
func (m *Manager) Run(ctx context.Context) error {
	for _, p := range m.Phases {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped before %q: %w", p.Title(), err)
		}
		if sr, ok := p.(ShouldRunner); ok {
			if run, why := sr.ShouldRun(); !run {
				m.Env.report(Event{Phase: p.ID(), Title: p.Title(), Status: StatusSkipped, Message: why})
				continue
			}
		}
		start := m.Env.now()
		m.Env.report(Event{Phase: p.ID(), Title: p.Title(), Status: StatusStart})
		var err error
		if dr, ok := p.(DryRunner); ok && m.Env.Gate.DryRun() {
			err = dr.DryRun(ctx)
		} else {
			err = p.Run(ctx)
		}
		d := m.Env.now().Sub(start)
		if err != nil {
			m.Env.report(Event{Phase: p.ID(), Title: p.Title(), Status: StatusFailed, Error: err.Error(), DurationMS: d.Milliseconds()})
			return fmt.Errorf("%s: %w", p.Title(), err)
		}
		m.Env.report(Event{Phase: p.ID(), Title: p.Title(), Status: StatusOK, DurationMS: d.Milliseconds()})
	}
	return nil
}

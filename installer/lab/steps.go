package lab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"kforge.dev/kforge/installer"
)

// step is one named step of a lab command. Up and Down are each a plain
// ordered list of them.
type step struct {
	// id names the step in JSON events.
	id    string
	title string
	run   func(ctx context.Context) error
}

// runSteps runs steps in order, reporting the start and the ✓/✗ of each
// through rep. It stops at the first failure, and before a step when ctx
// has ended.
func runSteps(ctx context.Context, rep installer.Reporter, steps []step) error {
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped before %q: %w", s.title, err)
		}
		if err := runStep(ctx, rep, s); err != nil {
			return err
		}
	}
	return nil
}

// runStep runs one step and reports it; the error is returned as is (the
// steps' errors already say what failed).
func runStep(ctx context.Context, rep installer.Reporter, s step) error {
	start := time.Now()
	rep.Report(installer.Event{Time: start, Phase: s.id, Title: s.title, Status: installer.StatusStart})
	err := s.run(ctx)
	ev := installer.Event{Time: time.Now(), Phase: s.id, Title: s.title, Status: installer.StatusOK, DurationMS: time.Since(start).Milliseconds()}
	if err != nil {
		ev.Status, ev.Error = installer.StatusFailed, err.Error()
	}
	rep.Report(ev)
	return err
}

// eachHost runs fn for every host at once (a lab has a few dozen at most)
// as part of step s, reporting a ✓/✗ line per host with the message fn
// returns. Every host runs even when others fail; the error joins every
// host's error, each naming its host.
func eachHost(ctx context.Context, rep installer.Reporter, s step, hosts []HostSpec, fn func(context.Context, HostSpec) (string, error)) error {
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			rep.Report(installer.Event{Time: start, Phase: s.id, Title: s.title, Host: h.Name, Status: installer.StatusStart})
			msg, err := fn(ctx, h)
			ev := installer.Event{Time: time.Now(), Phase: s.id, Title: s.title, Host: h.Name, Status: installer.StatusOK, Message: msg, DurationMS: time.Since(start).Milliseconds()}
			if err != nil {
				err = hostError(h.Name, err)
				ev.Status, ev.Error = installer.StatusFailed, err.Error()
			}
			rep.Report(ev)
			errs[i] = err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// hostError makes sure err names the host (installer/ssh's errors do).
func hostError(host string, err error) error {
	if strings.HasPrefix(err.Error(), "host "+host+":") {
		return err
	}
	return fmt.Errorf("host %s: %w", host, err)
}

package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// restartDelay is how long a role that lost its lease waits before it
// runs again: systemd's RestartSec for the same role on a master.
const restartDelay = time.Second

// runningRole is a leader-elected role (scheduler, controller manager)
// Up runs in-process beside the apiserver.
type runningRole struct {
	err    chan error // gets the role's error once, when it stops for good
	cancel context.CancelFunc
	done   chan struct{}
}

// stop cancels the role and waits for it to return.
func (r *runningRole) stop() {
	r.cancel()
	<-r.done
}

// superviseRole runs a role until ctx ends. On a master a role that
// loses its lease exits and systemd starts it again; here the same
// happens in-process: after delay, newRun builds a fresh instance (empty
// caches) and it runs again, while etcd and the apiserver go on. Any
// other end of the role (an error, or a return before ctx ends) is
// reported on err. run is the first instance, already built.
func superviseRole(ctx context.Context, name string, log *slog.Logger, delay time.Duration,
	run func(context.Context) error, newRun func() (func(context.Context) error, error)) *runningRole {
	ctx, cancel := context.WithCancel(ctx)
	r := &runningRole{err: make(chan error, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			err := run(ctx)
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, roleconfig.ErrLeaseLost) {
				if err == nil {
					err = errors.New("stopped by itself")
				}
				r.err <- fmt.Errorf("%s: %w", name, err)
				return
			}
			log.Warn("lost its lease; starting it again", "role", name, "after", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			if run, err = newRun(); err != nil {
				r.err <- fmt.Errorf("%s: %w", name, err)
				return
			}
		}
	}()
	return r
}

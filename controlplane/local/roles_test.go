package local

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

func TestSuperviseRoleRestartsAfterLostLease(t *testing.T) {
	var builds atomic.Int32
	running := make(chan int32, 4)
	// Each instance loses its lease once it runs, except the third,
	// which runs until it is stopped.
	instance := func(n int32) func(context.Context) error {
		return func(ctx context.Context) error {
			running <- n
			if n < 3 {
				return roleconfig.ErrLeaseLost
			}
			<-ctx.Done()
			return nil
		}
	}
	newRun := func() (func(context.Context) error, error) { return instance(builds.Add(1)), nil }
	first, _ := newRun()
	r := superviseRole(context.Background(), "scheduler", slog.New(slog.DiscardHandler), time.Millisecond, first, newRun)
	for want := int32(1); want <= 3; want++ {
		select {
		case got := <-running:
			if got != want {
				t.Fatalf("instance %d ran, want %d", got, want)
			}
		case err := <-r.err:
			t.Fatalf("a lost lease was reported as an error: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("instance %d never ran", want)
		}
	}
	r.stop()
	select {
	case err := <-r.err:
		t.Errorf("stop reported %v", err)
	default:
	}
}

func TestSuperviseRoleReportsOtherErrors(t *testing.T) {
	boom := errors.New("health listener: address in use")
	for name, tc := range map[string]struct {
		run    func(context.Context) error
		newRun func() (func(context.Context) error, error)
		want   string
	}{
		"error":            {func(context.Context) error { return boom }, nil, "scheduler: health listener"},
		"return by itself": {func(context.Context) error { return nil }, nil, "scheduler: stopped by itself"},
		"rebuild fails":    {func(context.Context) error { return roleconfig.ErrLeaseLost }, func() (func(context.Context) error, error) { return nil, boom }, "scheduler: health listener"},
	} {
		t.Run(name, func(t *testing.T) {
			r := superviseRole(context.Background(), "scheduler", slog.New(slog.DiscardHandler), time.Millisecond, tc.run, tc.newRun)
			defer r.stop()
			select {
			case err := <-r.err:
				if !strings.HasPrefix(err.Error(), tc.want) {
					t.Errorf("error %q, want %q", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no error reported")
			}
		})
	}
}

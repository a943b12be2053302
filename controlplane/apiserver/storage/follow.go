package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Mirror is an in-memory copy of the keys under a prefix that Follow keeps
// current. Follow calls its methods from one goroutine; a Mirror that is
// read elsewhere does its own locking.
type Mirror interface {
	// Replace drops everything and loads items, listed at revision rev.
	Replace(items []KV, rev int64)
	// Apply applies one change seen after the last Replace.
	Apply(ev Event)
}

// Follow lists prefix into m, then applies a watch from the list's
// revision. A watch that ends is started again from the last revision
// applied, so m sees every change in order without a relist (a relist
// replaces m's content: a Cache then ends its own watchers with a 410);
// only a compacted revision (ErrExpired) makes it list again. Failures
// are retried with a backoff of up to 5s. It returns when ctx ends. name
// labels its log lines.
func (s *Store) Follow(ctx context.Context, name, prefix string, m Mirror, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 100 * time.Millisecond
	var rev int64 // the last revision m reflects; 0: list first
	for ctx.Err() == nil {
		var err error
		if rev == 0 {
			rev, err = s.relist(ctx, prefix, m)
		}
		if err == nil {
			var progressed bool
			rev, progressed, err = s.follow(ctx, prefix, rev, m)
			if progressed {
				backoff = 100 * time.Millisecond
			}
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrExpired) {
			log.Info(name+": watch expired, relisting", "prefix", prefix)
			rev = 0
			continue
		}
		log.Warn(name+": list/watch failed, retrying", "prefix", prefix, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// relistPage is how many keys relist reads a call: one etcd range for
// the whole of /registry/ would be as large as the cluster.
const relistPage = 1000

// relist loads what is stored under prefix into m, page by page at one
// revision, and returns that revision.
func (s *Store) relist(ctx context.Context, prefix string, m Mirror) (int64, error) {
	var items []KV
	o := ListOptions{Limit: relistPage}
	for {
		res, err := s.List(ctx, prefix, o)
		if err != nil {
			return 0, fmt.Errorf("listing %s: %w", prefix, err)
		}
		items = append(items, res.Items...)
		if res.Continue == "" {
			m.Replace(items, res.Revision)
			return res.Revision, nil
		}
		o.Continue = res.Continue
	}
}

// follow applies the changes after rev until the watch ends and returns
// the last revision applied, and whether any event came. It drains the
// event channel, so the watch goroutine has ended when it returns. It
// never returns a nil error: a watch that ends without one is an error
// here.
func (s *Store) follow(ctx context.Context, prefix string, rev int64, m Mirror) (int64, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, errc := s.Watch(ctx, prefix, rev)
	progressed := false
	for ev := range events {
		m.Apply(ev)
		rev, progressed = ev.KV.ModRevision, true
	}
	if err := <-errc; err != nil {
		return rev, progressed, err
	}
	if ctx.Err() != nil {
		return rev, progressed, ctx.Err()
	}
	return rev, progressed, fmt.Errorf("watch on %s ended", prefix)
}

package storage

import (
	"context"
	"errors"
	"strings"
	"time"
)

// ErrNotCovered is returned by Cache.Watch when the cache cannot serve the
// revision asked for (older than its history, or not synced yet): the
// caller watches etcd instead.
var ErrNotCovered = errors.New("the watch cache does not cover that revision")

const (
	// historySize is how many recent events the cache keeps for watches
	// that start in the past (a client resuming from its last revision).
	historySize = 10000
	// subQueueLimit is how many events a watcher may fall behind before
	// its watch is ended (cleanly: the client watches again from its last
	// revision, which the history most likely still covers).
	subQueueLimit = 10000
)

// cacheSub is one watch served from the cache.
type cacheSub struct {
	prefix string
	after  int64 // deliver events with ModRevision > after
	// queue holds events not yet handed to the watcher; wake has room for
	// one signal that the queue grew; end is set (with c.mu held) when
	// the cache ends the watch, and err says why (nil: too slow).
	queue []Event
	wake  chan struct{}
	ended bool
	err   error
}

// push queues ev for the watcher, or ends a watcher too far behind. c.mu
// is held.
func (s *cacheSub) pushLocked(ev Event) {
	if s.ended || ev.KV.ModRevision <= s.after || !strings.HasPrefix(ev.KV.Key, s.prefix) {
		return
	}
	if len(s.queue) >= subQueueLimit {
		s.endLocked(nil)
		return
	}
	s.queue = append(s.queue, ev)
	s.signal()
}

func (s *cacheSub) endLocked(err error) {
	if !s.ended {
		s.ended, s.err = true, err
		s.signal()
	}
}

func (s *cacheSub) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// history is a ring of the most recent events, oldest first.
type history struct {
	buf   []Event
	first int // index of the oldest event in buf
	n     int
}

func (h *history) add(ev Event) (evicted Event, full bool) {
	if h.buf == nil {
		h.buf = make([]Event, historySize)
	}
	if h.n == len(h.buf) {
		evicted = h.buf[h.first]
		h.buf[h.first] = ev
		h.first = (h.first + 1) % len(h.buf)
		return evicted, true
	}
	h.buf[(h.first+h.n)%len(h.buf)] = ev
	h.n++
	return Event{}, false
}

func (h *history) each(f func(Event)) {
	for i := 0; i < h.n; i++ {
		f(h.buf[(h.first+i)%len(h.buf)])
	}
}

func (h *history) clear() {
	clear(h.buf)
	h.first, h.n = 0, 0
}

// recordLocked appends ev to the history and hands it to the watchers.
func (c *Cache) recordLocked(ev Event) {
	ev.Shared = &Shared{}
	if old, full := c.history.add(ev); full {
		c.histStart = old.KV.ModRevision
	}
	for s := range c.subs {
		s.pushLocked(ev)
	}
}

// resetLocked starts a new history at rev, after a relist: the watchers
// may have missed changes, so each ends with ErrExpired (a 410: the client
// lists again).
func (c *Cache) resetLocked(rev int64) {
	c.history.clear()
	c.histStart = rev
	for s := range c.subs {
		s.endLocked(ErrExpired)
		delete(c.subs, s)
	}
}

// Watch streams the changes under prefix after revision rev from the
// cache, with Store.Watch's contract: the channel closes when ctx ends, or
// when the cache ends the watch (errc then carries ErrExpired after a
// relist, or nothing for a watcher that fell too far behind). It returns
// ErrNotCovered when the cache's history does not reach back to rev.
func (c *Cache) Watch(ctx context.Context, prefix string, rev int64) (<-chan Event, <-chan error, error) {
	c.mu.Lock()
	if !c.synced || rev < c.histStart {
		c.mu.Unlock()
		return nil, nil, ErrNotCovered
	}
	s := &cacheSub{prefix: prefix, after: rev, wake: make(chan struct{}, 1)}
	c.history.each(s.pushLocked)
	c.subs[s] = struct{}{}
	c.mu.Unlock()

	out := make(chan Event, 100)
	errc := make(chan error, 1)
	var idle <-chan time.Time // fires after ProgressInterval without events
	var idleTimer *time.Timer
	if c.ProgressInterval > 0 {
		idleTimer = time.NewTimer(c.ProgressInterval)
		idle = idleTimer.C
	}
	go func() {
		if idleTimer != nil {
			defer idleTimer.Stop()
		}
		defer close(errc)
		defer close(out)
		defer func() {
			c.mu.Lock()
			delete(c.subs, s)
			c.mu.Unlock()
		}()
		for {
			c.mu.Lock()
			batch, ended, err := s.queue, s.ended, s.err
			s.queue = nil
			c.mu.Unlock()
			for _, ev := range batch {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			if ended && len(batch) == 0 {
				if err != nil {
					errc <- err
				}
				return
			}
			if len(batch) > 0 {
				if idleTimer != nil {
					idleTimer.Reset(c.ProgressInterval)
				}
				continue // more may have come, or the end, while sending
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return
			case <-idle:
				// Every event up to the cache's revision is in this
				// watcher's queue or sent: with the queue empty, that
				// revision is delivered in full.
				c.mu.Lock()
				rev, empty := c.rev, len(s.queue) == 0 && !s.ended
				c.mu.Unlock()
				if empty && rev > s.after {
					select {
					case out <- Event{Type: Progress, KV: KV{ModRevision: rev}}:
					case <-ctx.Done():
						return
					}
				}
				idleTimer.Reset(c.ProgressInterval)
			}
		}
	}()
	return out, errc, nil
}

// Watchers is the number of watches the cache serves.
func (c *Cache) Watchers() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.subs)
}

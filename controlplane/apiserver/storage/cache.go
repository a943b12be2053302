package storage

import (
	"context"
	"sync"
	"time"
)

// Cache is a Mirror holding the raw stored value and revisions of every key
// under the prefix it follows. It is never authoritative: a reader uses
// what it finds only where a write's compare on the mod revision proves it
// current, and reads etcd when the key is missing (the cache may lag).
//
// It also serves watches (Watch): one etcd watch feeds every client's,
// with a history of recent events for watches that resume from a past
// revision.
type Cache struct {
	mu      sync.RWMutex
	kvs     map[string]KV
	rev     int64
	changed chan struct{} // closed and replaced whenever rev moves

	// ProgressInterval is how long a cache watch may sit idle before it
	// sends a Progress event with the cache's revision; 0: never. Set it
	// before the cache serves watches.
	ProgressInterval time.Duration

	synced    bool // listed at least once
	history   history
	histStart int64 // the history holds every event after this revision
	subs      map[*cacheSub]struct{}
}

// NewCache returns an empty Cache; Store.Follow fills it.
func NewCache() *Cache {
	return &Cache{kvs: map[string]KV{}, changed: make(chan struct{}), subs: map[*cacheSub]struct{}{}}
}

// WaitFor waits until the cache reflects revision rev, for at most
// timeout, and reports whether it does. A caller who knows the revision
// it needs (a write it just made) waits a watch event's delivery rather
// than paying a read from etcd.
func (c *Cache) WaitFor(ctx context.Context, rev int64, timeout time.Duration) bool {
	var t *time.Timer
	for {
		c.mu.RLock()
		cur, changed := c.rev, c.changed
		c.mu.RUnlock()
		if cur >= rev {
			return true
		}
		if t == nil {
			t = time.NewTimer(timeout)
			defer t.Stop()
		}
		select {
		case <-changed:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// movedLocked records a new revision and wakes WaitFor; c.mu is held.
func (c *Cache) movedLocked(rev int64) {
	c.rev = rev
	close(c.changed)
	c.changed = make(chan struct{})
}

// Get returns the cached key, if present.
func (c *Cache) Get(key string) (KV, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	kv, ok := c.kvs[key]
	return kv, ok
}

// Revision is the etcd revision the cache reflects (0 before the first
// list).
func (c *Cache) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// Len is the number of cached keys.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.kvs)
}

// Replace implements Mirror.
func (c *Cache) Replace(items []KV, rev int64) {
	kvs := make(map[string]KV, len(items))
	for _, kv := range items {
		kvs[kv.Key] = kv
	}
	c.mu.Lock()
	c.kvs = kvs
	c.synced = true
	c.resetLocked(rev)
	c.movedLocked(rev)
	c.mu.Unlock()
}

// Apply implements Mirror.
func (c *Cache) Apply(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Type == Deleted {
		delete(c.kvs, ev.KV.Key)
	} else {
		c.kvs[ev.KV.Key] = ev.KV
	}
	c.recordLocked(ev)
	c.movedLocked(ev.KV.ModRevision)
}

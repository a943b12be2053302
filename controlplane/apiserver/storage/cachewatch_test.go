package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func put(key string, rev int64) Event {
	return Event{Type: Put, KV: KV{Key: key, Value: []byte(fmt.Sprint(rev)), ModRevision: rev}}
}

// next receives one event or fails after a second.
func next(t *testing.T, events <-chan Event) (Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-events:
		return ev, ok
	case <-time.After(time.Second):
		t.Fatal("no event within a second")
		return Event{}, false
	}
}

func TestCacheWatchReplaysAndFollows(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewCache()
	if _, _, err := c.Watch(ctx, "/registry/a/", 0); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("watch before the first list: %v", err)
	}
	c.Replace(nil, 10)
	c.Apply(put("/registry/a/x", 11))
	c.Apply(put("/registry/b/y", 12))
	c.Apply(put("/registry/a/z", 13))

	// From 11: the history has 13 under the prefix, then what comes.
	events, errc, err := c.Watch(ctx, "/registry/a/", 11)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := next(t, events); ev.KV.Key != "/registry/a/z" || ev.KV.ModRevision != 13 {
		t.Fatalf("replayed %+v, want /registry/a/z at 13", ev.KV)
	}
	c.Apply(put("/registry/b/q", 14))
	c.Apply(Event{Type: Deleted, KV: KV{Key: "/registry/a/x", ModRevision: 15}, Prev: put("/registry/a/x", 11).KV})
	ev, _ := next(t, events)
	if ev.Type != Deleted || ev.KV.Key != "/registry/a/x" || ev.Prev.ModRevision != 11 {
		t.Fatalf("followed %+v, want the deletion of /registry/a/x with its previous value", ev)
	}
	if c.Watchers() != 1 {
		t.Fatalf("%d watchers, want 1", c.Watchers())
	}
	cancel()
	if _, ok := next(t, events); ok {
		t.Fatal("the watch did not end with its context")
	}
	if err := <-errc; err != nil {
		t.Fatalf("a cancelled watch ended with %v", err)
	}
	waitUntil(t, "the watcher's removal", func() bool { return c.Watchers() == 0 })
}

func TestCacheWatchHistoryLimits(t *testing.T) {
	ctx := context.Background()
	c := NewCache()
	c.Replace(nil, 100)
	if _, _, err := c.Watch(ctx, "/registry/", 99); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("watch from before the list: %v", err)
	}
	for i := int64(1); i <= historySize+5; i++ {
		c.Apply(put("/registry/k", 100+i))
	}
	// The five oldest events fell out of the history.
	if _, _, err := c.Watch(ctx, "/registry/", 104); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("watch from an evicted revision: %v", err)
	}
	events, _, err := c.Watch(ctx, "/registry/", 105)
	if err != nil {
		t.Fatalf("watch from the oldest covered revision: %v", err)
	}
	if ev, _ := next(t, events); ev.KV.ModRevision != 106 {
		t.Fatalf("first replayed revision %d, want 106", ev.KV.ModRevision)
	}
}

// A relist ends every watch with ErrExpired: they may have missed changes.
func TestCacheRelistExpiresWatches(t *testing.T) {
	c := NewCache()
	c.Replace(nil, 1)
	events, errc, err := c.Watch(context.Background(), "/registry/", 1)
	if err != nil {
		t.Fatal(err)
	}
	c.Replace(nil, 50)
	if _, ok := next(t, events); ok {
		t.Fatal("the watch outlived a relist")
	}
	if err := <-errc; !errors.Is(err, ErrExpired) {
		t.Fatalf("a watch ended by a relist: %v, want ErrExpired", err)
	}
}

// A watcher that stops reading is ended once it is subQueueLimit events
// behind, without an error (its client watches again); the others go on.
func TestCacheEndsAWatcherTooFarBehind(t *testing.T) {
	ctx := context.Background()
	c := NewCache()
	c.Replace(nil, 1)
	slow, slowErr, err := c.Watch(ctx, "/registry/", 1)
	if err != nil {
		t.Fatal(err)
	}
	fast, _, err := c.Watch(ctx, "/registry/", 1)
	if err != nil {
		t.Fatal(err)
	}
	// Twice the limit: however much the slow watcher's goroutine took from
	// its queue before blocking, the queue overflows after.
	const total = 2*subQueueLimit + 10
	got := make(chan int)
	go func() {
		n := 0
		for range fast {
			n++
			if n == total {
				got <- n
			}
		}
	}()
	for i := int64(2); i < total+2; i++ {
		c.Apply(put("/registry/k", i))
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the reading watcher did not get every event")
	}
	n := 0
	for range slow {
		n++
	}
	if err := <-slowErr; err != nil {
		t.Fatalf("the slow watcher ended with %v, want no error", err)
	}
	if n >= total {
		t.Fatalf("the slow watcher got all %d events; it should have been ended", n)
	}
}

// An idle watch learns the cache's revision through Progress events, so
// its bookmarks move on while other keys change.
func TestCacheWatchSendsProgressWhenIdle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewCache()
	c.ProgressInterval = 50 * time.Millisecond
	c.Replace(nil, 10)
	events, _, err := c.Watch(ctx, "/registry/a/", 10)
	if err != nil {
		t.Fatal(err)
	}
	c.Apply(put("/registry/b/x", 11))
	c.Apply(put("/registry/b/y", 12))
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Type != Progress {
				t.Fatalf("got %+v, want only Progress events", ev)
			}
			if ev.KV.ModRevision == 12 {
				// A change under the prefix still arrives, after it.
				c.Apply(put("/registry/a/z", 13))
				for {
					ev := <-events
					if ev.Type == Progress {
						if ev.KV.ModRevision > 12 {
							t.Fatalf("progress to %d before the event at 13", ev.KV.ModRevision)
						}
						continue
					}
					if ev.KV.Key != "/registry/a/z" {
						t.Fatalf("got %+v, want /registry/a/z", ev)
					}
					return
				}
			}
		case <-deadline:
			t.Fatal("no Progress event to revision 12")
		}
	}
}

package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// record is a Mirror that keeps key → value and counts Replaces.
type record struct {
	mu       sync.Mutex
	m        map[string]string
	rev      int64
	replaces int
}

func (r *record) Replace(items []KV, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m = map[string]string{}
	for _, kv := range items {
		r.m[kv.Key] = string(kv.Value)
	}
	r.rev = rev
	r.replaces++
}

func (r *record) Apply(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev.Type == Deleted {
		delete(r.m, ev.KV.Key)
	} else {
		r.m[ev.KV.Key] = string(ev.KV.Value)
	}
	r.rev = ev.KV.ModRevision
}

func (r *record) get(key string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[key]
	return v, ok
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFollowListsThenWatches(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := New(startEtcd(t))
	const prefix = "/registry/test/"
	if _, err := s.Create(ctx, prefix+"a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/registry/other/x", []byte("not mine")); err != nil {
		t.Fatal(err)
	}
	r := &record{}
	done := make(chan struct{})
	go func() { defer close(done); s.Follow(ctx, "test", prefix, r, nil) }()
	waitUntil(t, "the list", func() bool { v, ok := r.get(prefix + "a"); return ok && v == "1" })

	rev, err := s.Create(ctx, prefix+"b", []byte("2"))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the created key", func() bool { v, _ := r.get(prefix + "b"); return v == "2" })
	if _, err := s.Delete(ctx, prefix+"b", rev); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the deletion", func() bool { _, ok := r.get(prefix + "b"); return !ok })
	if _, ok := r.get("/registry/other/x"); ok {
		t.Error("a key outside the prefix reached the mirror")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return after its context ended")
	}
}

// A watch from a compacted revision reports ErrExpired, which makes
// Follow list again rather than give up.
func TestFollowFromCompactedRevisionExpires(t *testing.T) {
	c := startEtcd(t)
	s := New(c)
	const prefix = "/registry/test/"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	old, err := s.Create(ctx, prefix+"a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := s.Create(ctx, prefix+"b", []byte("2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	r := &record{}
	if _, _, err := s.follow(ctx, prefix, old-1, r); !errors.Is(err, ErrExpired) {
		t.Fatalf("follow from a compacted revision: %v", err)
	}
	got, err := s.relist(ctx, prefix, r)
	if err != nil || got < rev {
		t.Fatalf("relist: %d %v", got, err)
	}
	if len(r.m) != 2 || r.rev != got {
		t.Fatalf("relist loaded %v at %d, want 2 keys at %d", r.m, r.rev, got)
	}
}

func TestCacheFollowsAndWaitsForARevision(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(startEtcd(t))
	c := NewCache()
	if c.WaitFor(ctx, 1, 20*time.Millisecond) {
		t.Fatal("an empty cache claims revision 1")
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Follow(ctx, "cache", "/registry/", c, nil) }()
	defer func() { cancel(); <-done }()
	rev, err := s.Create(ctx, "/registry/test/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.WaitFor(ctx, rev, 5*time.Second) {
		t.Fatalf("cache did not reach revision %d (at %d)", rev, c.Revision())
	}
	if kv, ok := c.Get("/registry/test/a"); !ok || string(kv.Value) != "1" || kv.ModRevision != rev {
		t.Fatalf("cached key: %+v %v", kv, ok)
	}
	if c.WaitFor(ctx, rev+100, 20*time.Millisecond) {
		t.Fatal("WaitFor claims a revision nobody wrote")
	}
	if _, err := s.Delete(ctx, "/registry/test/a", rev); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the deletion", func() bool { _, ok := c.Get("/registry/test/a"); return !ok })
	if c.Len() != 0 {
		t.Fatalf("cache holds %d keys, want 0", c.Len())
	}
}

// A watch that ends is resumed from the last revision applied: the
// changes made meanwhile arrive as events, with no relist (which would
// make a Cache end its watchers).
func TestFollowResumesFromTheLastRevision(t *testing.T) {
	ctx := context.Background()
	s := New(startEtcd(t))
	const prefix = "/registry/test/"
	r := &record{}
	rev, err := s.relist(ctx, prefix, r)
	if err != nil {
		t.Fatal(err)
	}
	ctx1, cancel1 := context.WithCancel(ctx)
	type result struct {
		rev        int64
		progressed bool
	}
	done := make(chan result, 1)
	go func() {
		rev, progressed, _ := s.follow(ctx1, prefix, rev, r)
		done <- result{rev, progressed}
	}()
	revA, err := s.Create(ctx, prefix+"a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a", func() bool { _, ok := r.get(prefix + "a"); return ok })
	cancel1()
	res := <-done
	if res.rev != revA || !res.progressed {
		t.Fatalf("follow ended at %+v, want revision %d with progress", res, revA)
	}
	// A change while nobody watches.
	if _, err := s.Create(ctx, prefix+"b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	go func() { _, _, _ = s.follow(ctx2, prefix, res.rev, r) }()
	waitUntil(t, "b, from the resumed watch", func() bool { _, ok := r.get(prefix + "b"); return ok })
	r.mu.Lock()
	replaces := r.replaces
	r.mu.Unlock()
	if replaces != 1 {
		t.Fatalf("%d lists, want the first one only", replaces)
	}
}

// The list under Follow reads in pages, at one revision.
func TestRelistReadsEveryPage(t *testing.T) {
	ctx := context.Background()
	s := New(startEtcd(t))
	const prefix = "/registry/test/"
	n := 2*relistPage + 7
	for i := range n {
		if _, err := s.Create(ctx, fmt.Sprintf("%s%05d", prefix, i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	r := &record{}
	rev, err := s.relist(ctx, prefix, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.m) != n || r.rev != rev || r.replaces != 1 {
		t.Fatalf("relist loaded %d keys at %d in %d replaces, want %d at %d in 1", len(r.m), r.rev, r.replaces, n, rev)
	}
}

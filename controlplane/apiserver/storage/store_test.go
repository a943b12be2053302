package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
)

func startEtcd(t *testing.T) *clientv3.Client { return etcdtest.Start(t) }

func TestCRUDAndConflicts(t *testing.T) {
	ctx := context.Background()
	c := startEtcd(t)
	s := New(c)
	key := "/registry/core/configmaps/default/a"

	rev, err := s.Create(ctx, key, []byte("v1"))
	if err != nil || rev == 0 {
		t.Fatalf("create: %d %v", rev, err)
	}
	if _, err := s.Create(ctx, key, []byte("again")); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second create: %v", err)
	}
	got, err := s.Get(ctx, key)
	if err != nil || string(got.Value) != "v1" || got.ModRevision != rev {
		t.Fatalf("get: %+v %v", got, err)
	}
	rev2, _, err := s.Update(ctx, key, []byte("v2"), rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("update: %d %v", rev2, err)
	}
	_, cur, err := s.Update(ctx, key, []byte("stale"), rev)
	if !errors.Is(err, ErrConflict) || string(cur.Value) != "v2" {
		t.Fatalf("stale update: %v current %q", err, cur.Value)
	}
	if _, err := s.Delete(ctx, key, rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	if _, err := s.Delete(ctx, key, rev2); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, _, err := s.Update(ctx, key, []byte("x"), rev2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update after delete: %v", err)
	}
	if _, err := s.Delete(ctx, key, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete after delete: %v", err)
	}
}

func TestListPagesAtOneRevision(t *testing.T) {
	ctx := context.Background()
	s := New(startEtcd(t))
	prefix := "/registry/core/pods/"
	for i := 0; i < 7; i++ {
		if _, err := s.Create(ctx, fmt.Sprintf("%sdefault/p%d", prefix, i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// Something outside the prefix must not appear.
	if _, err := s.Create(ctx, "/registry/core/podsx/default/q", []byte("x")); err != nil {
		t.Fatal(err)
	}
	first, err := s.List(ctx, prefix, ListOptions{Limit: 3})
	if err != nil || len(first.Items) != 3 || first.Continue == "" || first.Remaining != 4 {
		t.Fatalf("first page: %d items, continue %q, remaining %d, %v", len(first.Items), first.Continue, first.Remaining, err)
	}
	// A write between pages is not seen: the pages read one revision.
	if _, err := s.Create(ctx, prefix+"default/p9", []byte("late")); err != nil {
		t.Fatal(err)
	}
	var names []string
	page := first
	for {
		for _, kv := range page.Items {
			names = append(names, kv.Key[len(prefix):])
		}
		if page.Continue == "" {
			break
		}
		if page.Revision != first.Revision {
			t.Fatalf("page at revision %d, first at %d", page.Revision, first.Revision)
		}
		page, err = s.List(ctx, prefix, ListOptions{Limit: 3, Continue: page.Continue})
		if err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(names) != "[default/p0 default/p1 default/p2 default/p3 default/p4 default/p5 default/p6]" {
		t.Fatalf("paged names = %v", names)
	}
	if _, err := s.List(ctx, prefix, ListOptions{Continue: "garbage"}); !errors.Is(err, ErrBadContinue) {
		t.Fatalf("bad continue: %v", err)
	}
	all, err := s.List(ctx, prefix, ListOptions{})
	if err != nil || len(all.Items) != 8 || all.Continue != "" {
		t.Fatalf("full list: %d %v", len(all.Items), err)
	}
}

func TestWatchFromRevisionAndCompaction(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := startEtcd(t)
	s := New(c)
	prefix := "/registry/core/configmaps/"
	r1, _ := s.Create(ctx, prefix+"ns/a", []byte("1"))
	r2, _, _ := s.Update(ctx, prefix+"ns/a", []byte("2"), r1)

	// From r1: only the update after it, with the previous value.
	events, errc := s.Watch(ctx, prefix, r1)
	ev := <-events
	if ev.Type != Put || ev.Created || string(ev.KV.Value) != "2" || string(ev.Prev.Value) != "1" || ev.KV.ModRevision != r2 {
		t.Fatalf("first event: %+v", ev)
	}
	if _, err := s.Delete(ctx, prefix+"ns/a", 0); err != nil {
		t.Fatal(err)
	}
	ev = <-events
	if ev.Type != Deleted || string(ev.Prev.Value) != "2" {
		t.Fatalf("delete event: %+v", ev)
	}
	cancel()
	for range events {
	}
	<-errc

	// A watch from a compacted revision ends with ErrExpired.
	if _, err := c.Compact(context.Background(), r2); err != nil {
		t.Fatal(err)
	}
	events, errc = s.Watch(context.Background(), prefix, r1-1)
	for range events {
	}
	if err := <-errc; !errors.Is(err, ErrExpired) {
		t.Fatalf("watch from compacted revision: %v", err)
	}
	if _, err := s.List(context.Background(), prefix, ListOptions{Revision: r1}); !errors.Is(err, ErrExpired) {
		t.Fatalf("list at compacted revision: %v", err)
	}
}

func TestCreateIf(t *testing.T) {
	ctx := context.Background()
	s := New(startEtcd(t))
	guard := "/registry/core/namespaces/ns"
	grev, err := s.Create(ctx, guard, []byte("ns"))
	if err != nil {
		t.Fatal(err)
	}
	key := "/registry/core/configmaps/ns/a"
	if _, err := s.CreateIf(ctx, key, []byte("v"), guard, grev); err != nil {
		t.Fatalf("create under an unchanged guard: %v", err)
	}
	if _, err := s.CreateIf(ctx, key, []byte("v"), guard, grev); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("create of an existing key: %v", err)
	}
	if _, _, err := s.Update(ctx, guard, []byte("ns2"), grev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateIf(ctx, "/registry/core/configmaps/ns/b", []byte("v"), guard, grev); !errors.Is(err, ErrConflict) {
		t.Fatalf("create under a changed guard: %v", err)
	}
	if _, err := s.Get(ctx, "/registry/core/configmaps/ns/b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused create wrote: %v", err)
	}
}

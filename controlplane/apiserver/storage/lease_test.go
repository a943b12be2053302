package storage

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLeasedKeyRefreshReleaseAndExpiry(t *testing.T) {
	ctx := context.Background()
	c := startEtcd(t)
	s := New(c)
	key := "/registry/masterleases/10.0.0.1"
	k := s.LeasedKey(key, []byte("10.0.0.1:6443"), 2*time.Second)

	if err := k.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := s.Get(ctx, key)
	if err != nil || string(first.Value) != "10.0.0.1:6443" {
		t.Fatalf("after the first refresh: %+v %v", first, err)
	}
	// A steady holder does not rewrite the key.
	if err := k.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, key); err != nil || got.ModRevision != first.ModRevision {
		t.Fatalf("a second refresh rewrote the key: %+v %v", got, err)
	}

	// A lease lost behind the holder's back (as if it expired) is taken
	// anew and the key written again.
	if _, err := c.Revoke(ctx, k.id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after revoking: %v", err)
	}
	if err := k.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, key); err != nil || string(got.Value) != "10.0.0.1:6443" {
		t.Fatalf("after refreshing a lost lease: %+v %v", got, err)
	}

	// Release deletes the key at once; releasing again does nothing.
	if err := k.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after release: %v", err)
	}
	if err := k.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// A holder that stops refreshing loses the key when the TTL runs out.
	if err := k.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the key outlived its lease")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestLeasedKeyTakesBackAnOverwrittenKey(t *testing.T) {
	ctx := context.Background()
	c := startEtcd(t)
	s := New(c)
	key := "/registry/masterleases/10.0.0.1"
	a := s.LeasedKey(key, []byte("10.0.0.1:6443"), 10*time.Second)
	b := s.LeasedKey(key, []byte("10.0.0.1:7443"), 10*time.Second)
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Releasing a lease the key is no longer attached to leaves the key.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, key); err != nil || string(got.Value) != "10.0.0.1:7443" {
		t.Fatalf("after releasing the overwritten holder: %+v %v", got, err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, key); err != nil || string(got.Value) != "10.0.0.1:6443" {
		t.Fatalf("after the first holder refreshed: %+v %v", got, err)
	}
}

package storage

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestWithTTLExpiresAndSharesLeases(t *testing.T) {
	ctx := context.Background()
	c := startEtcd(t)
	s := New(c)
	const ttl = 3 * time.Second
	if _, err := s.Create(ctx, "/registry/core/events/default/a", []byte("a"), WithTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	// A TTL of a minute is granted with a reuse window of 3s: writes
	// close together share its lease.
	if _, err := s.Create(ctx, "/registry/core/events/default/m1", []byte("m"), WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/registry/core/events/default/m2", []byte("m"), WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/registry/core/events/default/b", []byte("b"), WithTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/registry/core/configmaps/default/kept", []byte("k")); err != nil {
		t.Fatal(err)
	}
	ra, err := c.Get(ctx, "/registry/core/events/default/m1")
	if err != nil || len(ra.Kvs) != 1 {
		t.Fatalf("raw get: %v", err)
	}
	rb, _ := c.Get(ctx, "/registry/core/events/default/m2")
	if ra.Kvs[0].Lease == 0 || ra.Kvs[0].Lease != rb.Kvs[0].Lease {
		t.Fatalf("leases %d and %d: want one shared lease", ra.Kvs[0].Lease, rb.Kvs[0].Lease)
	}
	if ttl, err := c.TimeToLive(ctx, clientv3.LeaseID(ra.Kvs[0].Lease)); err != nil || ttl.GrantedTTL != 63 {
		t.Fatalf("the shared lease: %+v %v, want a granted TTL of 63s", ttl, err)
	}
	rk, _ := c.Get(ctx, "/registry/core/configmaps/default/kept")
	if rk.Kvs[0].Lease != 0 {
		t.Fatalf("a write without a TTL got lease %d", rk.Kvs[0].Lease)
	}

	// Updating b with a TTL moves it to a lease granted now, so it
	// outlives a (by 2s; etcd checks expiry every 500ms).
	time.Sleep(2 * time.Second)
	kv, err := s.Get(ctx, "/registry/core/events/default/b")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Update(ctx, kv.Key, []byte("b2"), kv.ModRevision, WithTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	gone := func(key string) bool {
		_, err := s.Get(ctx, key)
		return errors.Is(err, ErrNotFound)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !gone("/registry/core/events/default/a") {
		if time.Now().After(deadline) {
			t.Fatal("the key with a 2s TTL still exists after 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if gone("/registry/core/events/default/b") {
		// etcd's lessor checks expiry every 500ms: b's lease was granted
		// a second after a's, so it is still there when a goes.
		t.Error("the updated key expired with the first lease")
	}
	for !gone("/registry/core/events/default/b") {
		if time.Now().After(deadline) {
			t.Fatal("the updated key still exists after 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if gone("/registry/core/configmaps/default/kept") {
		t.Fatal("a key without a TTL expired")
	}
}

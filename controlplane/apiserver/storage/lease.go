package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeasedKey is a key that exists only while its holder keeps refreshing
// it: the value is attached to an etcd lease, so when the holder stops
// (a crash, a partition from etcd) etcd deletes the key once the lease's
// TTL runs out. The apiserver holds one as its master lease.
type LeasedKey struct {
	store *Store
	key   string
	value string
	ttl   int64 // seconds

	mu sync.Mutex
	id clientv3.LeaseID // 0: none granted, or forgotten
}

// LeasedKey returns a handle for holding value under key with a lease of
// ttl (rounded up to whole seconds, as etcd counts; etcd may raise a very
// short one to its minimum). Nothing is written until Refresh.
func (s *Store) LeasedKey(key string, value []byte, ttl time.Duration) *LeasedKey {
	secs := max(int64(math.Ceil(ttl.Seconds())), 1)
	return &LeasedKey{store: s, key: key, value: string(value), ttl: secs}
}

// Refresh extends the lease by its TTL and makes sure the key holds the
// value under it. A lease that has expired (the holder was cut off for
// longer than the TTL) is replaced by a new one and the key written again.
// The key is written only when missing or different, so a steady holder
// does not move etcd's revision.
func (k *LeasedKey) Refresh(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.id != 0 {
		_, err := k.store.client.KeepAliveOnce(ctx, k.id)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			k.id = 0
		} else if err != nil {
			return fmt.Errorf("etcd keepalive %s: %w", k.key, err)
		}
	}
	if k.id == 0 {
		resp, err := k.store.client.Grant(ctx, k.ttl)
		if err != nil {
			return fmt.Errorf("etcd lease for %s: %w", k.key, err)
		}
		k.id = resp.ID
	}
	_, err := k.store.client.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k.key), "=", k.value),
			clientv3.Compare(clientv3.LeaseValue(k.key), "=", k.id)).
		Else(clientv3.OpPut(k.key, k.value, clientv3.WithLease(k.id))).
		Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			k.id = 0 // expired since the keepalive; the next Refresh grants anew
		}
		return fmt.Errorf("etcd put %s: %w", k.key, err)
	}
	return nil
}

// Release revokes the lease, which deletes the key at once. A later
// Refresh takes a new lease.
func (k *LeasedKey) Release(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.id == 0 {
		return nil
	}
	_, err := k.store.client.Revoke(ctx, k.id)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("etcd revoke the lease of %s: %w", k.key, err)
	}
	k.id = 0
	return nil
}

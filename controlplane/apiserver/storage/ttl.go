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

// WriteOption changes one write.
type WriteOption func(*writeOptions)

type writeOptions struct {
	ttl time.Duration
}

// WithTTL attaches the written key to an etcd lease that runs out no
// sooner than ttl from now (whole seconds, at least etcd's minimum):
// etcd then deletes the key, unless a later write attached it to a newer
// lease. Events are written so, and expire.
func WithTTL(ttl time.Duration) WriteOption {
	return func(o *writeOptions) { o.ttl = ttl }
}

func writeOptionsOf(opts []WriteOption) writeOptions {
	var o writeOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// opPut is the put of value under key, transformed, attached to a lease
// when the write asks for a TTL.
func (s *Store) opPut(ctx context.Context, key string, value []byte, opts []WriteOption) (clientv3.Op, error) {
	data, err := s.toStorage(key, value)
	if err != nil {
		return clientv3.Op{}, err
	}
	o := writeOptionsOf(opts)
	if o.ttl <= 0 {
		return clientv3.OpPut(key, data), nil
	}
	id, err := s.leases.lease(ctx, s.client, o.ttl)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("etcd lease for %s: %w", key, err)
	}
	return clientv3.OpPut(key, data, clientv3.WithLease(id)), nil
}

// commit runs the transaction txn builds around put. A lease that expired
// between granting and the write (only possible for a lease reused near
// its end, or after a long stall) is forgotten and the write retried once
// with a fresh one.
func (s *Store) commit(ctx context.Context, key string, opts []WriteOption, txn func(put clientv3.Op) clientv3.Txn, put clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := txn(put).Commit()
	if err == nil || !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return resp, err
	}
	s.leases.forget()
	value := put.ValueBytes()
	o := writeOptionsOf(opts)
	id, lerr := s.leases.lease(ctx, s.client, o.ttl)
	if lerr != nil {
		return nil, fmt.Errorf("etcd lease for %s: %w", key, lerr)
	}
	return txn(clientv3.OpPut(key, string(value), clientv3.WithLease(id))).Commit()
}

// Lease sharing: granting a lease per write would double the writes to
// etcd, so writes with the same TTL share one lease while it still
// outlives their TTL. A lease is granted for ttl plus a reuse window (a
// twentieth of the TTL, at most a minute): keys live between ttl and
// ttl plus that window. A lease also holds at most leaseMaxKeys keys, so
// revoking or expiring one is a bounded amount of work for etcd.
const (
	leaseMaxReuse = time.Minute
	leaseMaxKeys  = 1000
)

type leaseManager struct {
	mu     sync.Mutex
	shared map[int64]*sharedLease // by TTL in seconds
}

type sharedLease struct {
	id      clientv3.LeaseID
	expires time.Time
	keys    int
}

func ttlSeconds(d time.Duration) int64 { return max(int64(math.Ceil(d.Seconds())), 1) }

// lease returns a lease that runs out no sooner than ttl from now.
func (m *leaseManager) lease(ctx context.Context, c *clientv3.Client, ttl time.Duration) (clientv3.LeaseID, error) {
	secs := ttlSeconds(ttl)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if l := m.shared[secs]; l != nil && l.keys < leaseMaxKeys && !now.Add(time.Duration(secs)*time.Second).After(l.expires) {
		l.keys++
		return l.id, nil
	}
	reuse := min(time.Duration(secs)*time.Second/20, leaseMaxReuse)
	resp, err := c.Grant(ctx, secs+int64(reuse/time.Second))
	if err != nil {
		return 0, err
	}
	if m.shared == nil {
		m.shared = map[int64]*sharedLease{}
	}
	// etcd may have raised the TTL to its minimum; count from before the
	// grant, so the estimate errs early.
	m.shared[secs] = &sharedLease{id: resp.ID, expires: now.Add(time.Duration(resp.TTL) * time.Second), keys: 1}
	return resp.ID, nil
}

// forget drops every shared lease: the next write grants a new one.
func (m *leaseManager) forget() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shared = nil
}

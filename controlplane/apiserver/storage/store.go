package storage

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Errors a Store returns; callers map them to API statuses.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict means the object changed since the revision the caller
	// read (HTTP 409).
	ErrConflict = errors.New("the object has been modified")
	// ErrExpired means the revision asked for has been compacted (HTTP 410).
	ErrExpired = errors.New("the requested revision has been compacted")
	// ErrBadContinue means a continue token could not be decoded.
	ErrBadContinue = errors.New("invalid continue token")
)

// KV is one stored object.
type KV struct {
	Key            string
	Value          []byte
	ModRevision    int64
	CreateRevision int64
	// Stale reports a value read through a Transformer that would write
	// it differently now (encrypted with an older key, or plaintext):
	// an update should write it even when nothing else changed.
	Stale bool
}

// Store reads and writes objects in etcd. Values under a prefix with a
// Transformer (WithTransformer) are transformed on the way in and out, so
// callers and the Cache only ever see the stored form.
type Store struct {
	client     *clientv3.Client
	transforms []prefixTransformer
	leases     leaseManager
}

// New returns a Store over an etcd client. The Store does not own the
// client; the caller closes it.
func New(c *clientv3.Client, opts ...Option) *Store {
	s := &Store{client: c}
	for _, o := range opts {
		o(s)
	}
	return s
}

func rawKV(k *mvccpb.KeyValue) KV {
	return KV{Key: string(k.Key), Value: k.Value, ModRevision: k.ModRevision, CreateRevision: k.CreateRevision}
}

// kvOf is a KV read from etcd, through its Transformer.
func (s *Store) kvOf(k *mvccpb.KeyValue) (KV, error) {
	kv := rawKV(k)
	return kv, s.fromStorage(&kv)
}

// Create stores value under key if nothing is there. It returns the new
// object's revision; ErrAlreadyExists when the key exists.
func (s *Store) Create(ctx context.Context, key string, value []byte, opts ...WriteOption) (int64, error) {
	put, err := s.opPut(ctx, key, value, opts)
	if err != nil {
		return 0, err
	}
	resp, err := s.commit(ctx, key, opts, func(put clientv3.Op) clientv3.Txn {
		return s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(put)
	}, put)
	if err != nil {
		return 0, fmt.Errorf("etcd create %s: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, ErrAlreadyExists
	}
	return resp.Header.Revision, nil
}

// CreateIf stores value under key if nothing is there and guard's mod
// revision is still guardRev (the caller read guard, possibly stale, and
// decided from it). It returns ErrAlreadyExists when key exists, else
// ErrConflict when guard changed.
func (s *Store) CreateIf(ctx context.Context, key string, value []byte, guard string, guardRev int64, opts ...WriteOption) (int64, error) {
	put, err := s.opPut(ctx, key, value, opts)
	if err != nil {
		return 0, err
	}
	resp, err := s.commit(ctx, key, opts, func(put clientv3.Op) clientv3.Txn {
		return s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.Compare(clientv3.ModRevision(guard), "=", guardRev)).
			Then(put).
			Else(clientv3.OpGet(key, clientv3.WithCountOnly()))
	}, put)
	if err != nil {
		return 0, fmt.Errorf("etcd create %s: %w", key, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	if len(resp.Responses) > 0 && resp.Responses[0].GetResponseRange().Count > 0 {
		return 0, ErrAlreadyExists
	}
	return 0, ErrConflict
}

// Get reads one key at the newest revision.
func (s *Store) Get(ctx context.Context, key string) (KV, error) {
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return KV{}, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return KV{}, ErrNotFound
	}
	return s.kvOf(resp.Kvs[0])
}

// Update replaces the value under key if its mod revision is still
// expected. It returns the new revision; ErrNotFound when the key is gone,
// ErrConflict (with the current KV) when it changed.
func (s *Store) Update(ctx context.Context, key string, value []byte, expected int64, opts ...WriteOption) (int64, KV, error) {
	put, err := s.opPut(ctx, key, value, opts)
	if err != nil {
		return 0, KV{}, err
	}
	resp, err := s.commit(ctx, key, opts, func(put clientv3.Op) clientv3.Txn {
		return s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", expected)).
			Then(put).
			Else(clientv3.OpGet(key))
	}, put)
	if err != nil {
		return 0, KV{}, fmt.Errorf("etcd update %s: %w", key, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, KV{}, nil
	}
	cur, err := s.currentOf(resp)
	return 0, cur, err
}

// currentOf is the value an Else branch read: ErrConflict with it, or
// ErrNotFound.
func (s *Store) currentOf(resp *clientv3.TxnResponse) (KV, error) {
	if len(resp.Responses) == 0 || len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return KV{}, ErrNotFound
	}
	kv, err := s.kvOf(resp.Responses[0].GetResponseRange().Kvs[0])
	if err != nil {
		return KV{}, err
	}
	return kv, ErrConflict
}

// Delete removes key if its mod revision is still expected (0 means any).
// It returns the deletion's revision.
func (s *Store) Delete(ctx context.Context, key string, expected int64) (int64, error) {
	var cmp clientv3.Cmp
	if expected == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	} else {
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", expected)
	}
	resp, err := s.client.Txn(ctx).If(cmp).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd delete %s: %w", key, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	_, err = s.currentOf(resp)
	if errors.Is(err, ErrTransform) {
		err = ErrConflict // the key is there, changed: its value is not needed
	}
	return 0, err
}

// ListOptions page a list.
type ListOptions struct {
	// Limit caps the number of items; 0 means all.
	Limit int64
	// Continue is the token from the previous page.
	Continue string
	// Revision reads at an exact revision; 0 means the newest.
	Revision int64
}

// ListResult is one page of a list.
type ListResult struct {
	Items []KV
	// Revision is the revision the page was read at (the list's
	// resourceVersion).
	Revision int64
	// Continue is set when more items remain.
	Continue string
	// Remaining counts the items after this page, when known.
	Remaining int64
}

type continueToken struct {
	Rev   int64  `json:"rv"`
	Start string `json:"start"`
}

// List reads the keys under prefix (which should end in "/"), in key order,
// at one revision for every page.
func (s *Store) List(ctx context.Context, prefix string, o ListOptions) (ListResult, error) {
	start, rev := prefix, o.Revision
	if o.Continue != "" {
		raw, err := base64.RawURLEncoding.DecodeString(o.Continue)
		var tok continueToken
		if err == nil {
			err = json.Unmarshal(raw, &tok)
		}
		if err != nil || tok.Rev <= 0 || !strings.HasPrefix(tok.Start, prefix) {
			return ListResult{}, ErrBadContinue
		}
		start, rev = tok.Start, tok.Rev
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix))}
	if o.Limit > 0 {
		opts = append(opts, clientv3.WithLimit(o.Limit+1))
	}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.client.Get(ctx, start, opts...)
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return ListResult{}, ErrExpired
		}
		if errors.Is(err, rpctypes.ErrFutureRev) {
			return ListResult{}, fmt.Errorf("revision %d is newer than etcd's: %w", rev, err)
		}
		return ListResult{}, fmt.Errorf("etcd list %s: %w", prefix, err)
	}
	res := ListResult{Revision: resp.Header.Revision}
	if rev > 0 {
		res.Revision = rev
	}
	kvs := resp.Kvs
	if o.Limit > 0 && int64(len(kvs)) > o.Limit {
		kvs = kvs[:o.Limit]
		next := string(kvs[len(kvs)-1].Key) + "\x00"
		raw, _ := json.Marshal(continueToken{Rev: res.Revision, Start: next})
		res.Continue = base64.RawURLEncoding.EncodeToString(raw)
		res.Remaining = resp.Count - o.Limit
	}
	res.Items = make([]KV, len(kvs))
	for i, k := range kvs {
		if res.Items[i], err = s.kvOf(k); err != nil {
			return ListResult{}, err
		}
	}
	return res, nil
}

// Revision returns etcd's current revision (a quorum read).
func (s *Store) Revision(ctx context.Context) (int64, error) {
	resp, err := s.client.Get(ctx, "/registry/", clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, fmt.Errorf("etcd revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// EventType says what happened to a key.
type EventType int

// Event types.
const (
	Put EventType = iota
	Deleted
	// Progress carries no change: KV.ModRevision is a revision the watch
	// has delivered everything up to (Cache watches send it when idle,
	// so a watch's bookmarks can move on while its keys do not change).
	Progress
)

// Event is one change seen by a watch. For a Put, KV is the new value and
// Prev the old (zero on creation); for a Delete, Prev is the value before
// deletion and KV carries the deletion's revision.
type Event struct {
	Type EventType
	KV   KV
	Prev KV
	// Created reports a Put that created the key.
	Created bool
	// Shared is set on the events a Cache fans out: one per event, seen
	// by every watcher, for what they would each compute alike (the
	// decoded objects). Nil on events from etcd.
	Shared *Shared
}

// Shared memoizes values computed from one event.
type Shared struct {
	mu sync.Mutex
	m  map[any]any
}

// Do returns the value stored under key, computing it with f the first
// time. Values are shared between goroutines: treat them as read-only.
func (s *Shared) Do(key any, f func() any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[key]; ok {
		return v
	}
	if s.m == nil {
		s.m = map[any]any{}
	}
	v := f()
	s.m[key] = v
	return v
}

// Watch streams changes under prefix that happen after revision rev (0:
// after now). The channel closes when ctx ends; a compacted start revision
// or a later compaction ends it with an error on errc (ErrExpired).
func (s *Store) Watch(ctx context.Context, prefix string, rev int64) (<-chan Event, <-chan error) {
	out := make(chan Event, 100)
	errc := make(chan error, 1)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.client.Watch(ctx, prefix, opts...)
	go func() {
		defer close(errc)
		defer close(out)
		defer cancel()
		for resp := range wch {
			if resp.CompactRevision != 0 {
				errc <- ErrExpired
				return
			}
			if err := resp.Err(); err != nil {
				errc <- fmt.Errorf("etcd watch %s: %w", prefix, err)
				return
			}
			for _, e := range resp.Events {
				// A value its Transformer cannot read is passed on as
				// etcd holds it: decoding it fails for the watchers of
				// that key alone, where ending the watch would stop
				// every watcher and the Cache on one bad key.
				ev := Event{KV: rawKV(e.Kv)}
				_ = s.fromStorage(&ev.KV)
				if e.PrevKv != nil {
					ev.Prev = rawKV(e.PrevKv)
					_ = s.fromStorage(&ev.Prev)
				}
				if e.Type == clientv3.EventTypeDelete {
					ev.Type = Deleted
				} else {
					ev.Created = e.IsCreate()
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, errc
}

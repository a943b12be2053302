package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// afterDelete cleans up what an object held once it is gone from storage:
// a Service's ClusterIP, a Namespace's content.
func (s *Server) afterDelete(ctx context.Context, obj runtime.Object) {
	s.releaseClusterIP(ctx, obj)
	if ns, ok := obj.(*corev1.Namespace); ok && !dryRunFrom(ctx) {
		s.purgeNamespace(context.WithoutCancel(ctx), ns.Name)
	}
}

// purgeNamespace removes every object left in a deleted namespace, so a
// namespace created again with the same name starts empty. Upstream the
// namespace controller does this behind the "kubernetes" finalizer; until
// kforge's controller manager takes it over, the apiserver does it when
// the namespace goes.
func (s *Server) purgeNamespace(ctx context.Context, ns string) {
	for _, res := range s.reg.list {
		if !res.Namespaced || res.Review != nil {
			continue
		}
		list, err := s.store.List(ctx, res.KeyPrefix(ns), storage.ListOptions{})
		if err != nil {
			s.log.Warn("purging a deleted namespace", "namespace", ns, "resource", res.Plural, "err", err)
			continue
		}
		for _, kv := range list.Items {
			if _, err := s.store.Delete(ctx, kv.Key, kv.ModRevision); err != nil && !errors.Is(err, storage.ErrNotFound) {
				s.log.Warn("purging a deleted namespace", "key", kv.Key, "err", err)
				continue
			}
			if obj, err := decodeStored(res, kv); err == nil {
				s.releaseClusterIP(ctx, obj)
			}
		}
	}
}

// namespaceIndex mirrors the stored namespaces' revisions and whether they
// are terminating (storage.Follow keeps it current), so a create need not
// read its namespace from etcd: the create's transaction compares the
// namespace's revision, so an index that lags only costs a retry with a
// live read (checkNamespace).
type namespaceIndex struct {
	prefix string // the namespaces' etcd prefix
	mu     sync.RWMutex
	m      map[string]namespaceEntry // name → entry
}

type namespaceEntry struct {
	rev         int64 // the namespace key's mod revision
	terminating bool
}

func newNamespaceIndex(prefix string) *namespaceIndex {
	return &namespaceIndex{prefix: prefix, m: map[string]namespaceEntry{}}
}

// lookup returns the namespace's entry, if the index has seen it.
func (x *namespaceIndex) lookup(name string) (namespaceEntry, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.m[name]
	return e, ok
}

// Replace implements storage.Mirror.
func (x *namespaceIndex) Replace(items []storage.KV, _ int64) {
	m := make(map[string]namespaceEntry, len(items))
	for _, kv := range items {
		if name, e, ok := x.entry(kv); ok {
			m[name] = e
		}
	}
	x.mu.Lock()
	x.m = m
	x.mu.Unlock()
}

// Apply implements storage.Mirror.
func (x *namespaceIndex) Apply(ev storage.Event) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if ev.Type == storage.Deleted {
		delete(x.m, strings.TrimPrefix(ev.KV.Key, x.prefix))
		return
	}
	if name, e, ok := x.entry(ev.KV); ok {
		x.m[name] = e
	} else {
		delete(x.m, name)
	}
}

// entry decodes just enough of a stored namespace. One that does not
// decode is left out: checkNamespace then reads it from etcd.
func (x *namespaceIndex) entry(kv storage.KV) (string, namespaceEntry, bool) {
	name := strings.TrimPrefix(kv.Key, x.prefix)
	var n struct {
		Metadata struct {
			DeletionTimestamp *json.RawMessage `json:"deletionTimestamp"`
		} `json:"metadata"`
		Status struct {
			Phase corev1.NamespacePhase `json:"phase"`
		} `json:"status"`
	}
	if name == "" || strings.Contains(name, "/") || json.Unmarshal(kv.Value, &n) != nil {
		return name, namespaceEntry{}, false
	}
	return name, namespaceEntry{rev: kv.ModRevision,
		terminating: n.Metadata.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating}, true
}

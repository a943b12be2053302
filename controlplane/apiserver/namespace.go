package apiserver

import (
	"context"
	"errors"

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

package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

func (s *Server) delete(ctx context.Context, res *Resource, ns, name string, opts metav1.DeleteOptions) (runtime.Object, error) {
	key := res.Key(ns, name)
	for attempt := 0; attempt < 10; attempt++ {
		kv, err := s.store.Get(ctx, key)
		if err != nil {
			return nil, storageError(err, groupResource(res), name)
		}
		obj, err := decodeStored(res, kv)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		m, _ := meta.Accessor(obj)
		if p := opts.Preconditions; p != nil {
			if p.UID != nil && *p.UID != m.GetUID() {
				return nil, apierrors.NewConflict(groupResource(res), name, fmt.Errorf("the UID in the precondition (%s) does not match the UID in record (%s). The object might have been deleted and then recreated", *p.UID, m.GetUID()))
			}
			if p.ResourceVersion != nil && *p.ResourceVersion != m.GetResourceVersion() {
				return nil, apierrors.NewConflict(groupResource(res), name, fmt.Errorf("the ResourceVersion in the precondition (%s) does not match the ResourceVersion in record (%s). The object might have been modified", *p.ResourceVersion, m.GetResourceVersion()))
			}
		}
		// Orphan propagation (kubectl delete --cascade=orphan): the owner
		// waits, with the "orphan" finalizer, until the garbage collector
		// has released its dependents.
		if orphanRequested(opts) && !slices.Contains(m.GetFinalizers(), metav1.FinalizerOrphanDependents) {
			m.SetFinalizers(append(m.GetFinalizers(), metav1.FinalizerOrphanDependents))
		}
		grace := gracePeriod(res, obj, opts)
		// keep: the object stays, marked for deletion, until its finalizers
		// (or, for a namespace, spec.finalizers) are gone or its grace ends.
		keep := grace > 0 || len(m.GetFinalizers()) > 0
		if ns, ok := obj.(*corev1.Namespace); ok && len(ns.Spec.Finalizers) > 0 {
			keep = true
			ns.Status.Phase = corev1.NamespaceTerminating
		}
		if keep {
			if m.GetDeletionTimestamp() == nil {
				now := metav1.NewTime(time.Now().Add(time.Duration(grace) * time.Second))
				m.SetDeletionTimestamp(&now)
				m.SetDeletionGracePeriodSeconds(&grace)
			} else if cur := m.GetDeletionGracePeriodSeconds(); cur != nil && grace < *cur {
				m.SetDeletionGracePeriodSeconds(&grace)
			}
			if dryRunFrom(ctx) {
				return obj, nil
			}
			data, err := encodeStored(res, obj)
			if err != nil {
				return nil, apierrors.NewInternalError(err)
			}
			rev, _, err := s.store.Update(ctx, key, data, kv.ModRevision, s.writeOptions(res)...)
			if errors.Is(err, storage.ErrConflict) {
				continue
			}
			if err != nil {
				return nil, storageError(err, groupResource(res), name)
			}
			m.SetResourceVersion(fmt.Sprint(rev))
			return obj, nil
		}
		if dryRunFrom(ctx) {
			return obj, nil
		}
		if _, err := s.store.Delete(ctx, key, kv.ModRevision); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				continue
			}
			return nil, storageError(err, groupResource(res), name)
		}
		s.afterDelete(ctx, obj)
		return obj, nil
	}
	return nil, storageError(storage.ErrConflict, groupResource(res), name)
}

// gracePeriod is the deletion grace in seconds: only bound pods that
// have not finished wait, as upstream's pod strategy.
func gracePeriod(res *Resource, obj runtime.Object, opts metav1.DeleteOptions) int64 {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return 0
	}
	if opts.GracePeriodSeconds != nil {
		return *opts.GracePeriodSeconds
	}
	if p.Spec.TerminationGracePeriodSeconds != nil {
		return *p.Spec.TerminationGracePeriodSeconds
	}
	return 30
}

func (s *Server) deleteCollection(ctx context.Context, req *request, r *http.Request) (runtime.Object, error) {
	opts, err := deleteOptions(r)
	if err != nil {
		return nil, err
	}
	if len(opts.DryRun) > 0 {
		wi := writeInfoFrom(ctx)
		wi.dryRun = true
		ctx = context.WithValue(ctx, writeInfoKey{}, wi)
	}
	listObj, err := s.list(ctx, req, r)
	if err != nil {
		return nil, err
	}
	items, _ := meta.ExtractList(listObj)
	var out []runtime.Object
	for _, it := range items {
		m, _ := meta.Accessor(it)
		o, err := s.delete(ctx, req.res, m.GetNamespace(), m.GetName(), opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	list := req.res.NewList()
	_ = meta.SetList(list, out)
	return list, nil
}

// orphanRequested reports a delete asking for its dependents to be
// orphaned, by propagationPolicy or the older orphanDependents.
func orphanRequested(o metav1.DeleteOptions) bool {
	if o.PropagationPolicy != nil {
		return *o.PropagationPolicy == metav1.DeletePropagationOrphan
	}
	return o.OrphanDependents != nil && *o.OrphanDependents // deprecated, still sent by old clients
}

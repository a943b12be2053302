package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// update writes a full object over the stored one, following the
// subresource rules: the main resource keeps the stored status, /status
// keeps everything but the status.
func (s *Server) update(ctx context.Context, req *request, obj runtime.Object) (runtime.Object, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if m.GetName() != req.name {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", m.GetName(), req.name))
	}
	if req.res.Namespaced {
		if m.GetNamespace() == "" {
			m.SetNamespace(req.ns)
		} else if m.GetNamespace() != req.ns {
			return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
	}
	return s.guaranteedUpdate(ctx, req.res, req.ns, req.name, m.GetResourceVersion(), func(old runtime.Object) (runtime.Object, error) {
		return s.mergeUpdate(req, old, obj.DeepCopyObject())
	})
}

// mergeUpdate applies the subresource and metadata rules to a new object
// given the stored one.
func (s *Server) mergeUpdate(req *request, old, obj runtime.Object) (runtime.Object, error) {
	if req.res.Custom != nil {
		return mergeCustomUpdate(req, old, obj)
	}
	om, _ := meta.Accessor(old)
	nm, _ := meta.Accessor(obj)
	oldStatus, hasStatus := fieldByName(old, "Status")
	if req.sub == "finalize" {
		// Only spec.finalizers changes (the namespace controller's step).
		out := old.DeepCopyObject().(*corev1.Namespace)
		out.Spec.Finalizers = obj.(*corev1.Namespace).Spec.Finalizers
		out.ResourceVersion = nm.GetResourceVersion()
		return out, nil
	}
	if req.sub == "status" {
		// Only the status changes: start from the stored object.
		out := old.DeepCopyObject()
		st, _ := fieldByName(out, "Status")
		newStatus, _ := fieldByName(obj, "Status")
		st.Set(newStatus)
		outM, _ := meta.Accessor(out)
		outM.SetResourceVersion(nm.GetResourceVersion())
		return out, nil
	}
	if hasStatus && req.res.HasSubresource("status") {
		st, _ := fieldByName(obj, "Status")
		st.Set(oldStatus)
	}
	nm.SetUID(om.GetUID())
	nm.SetCreationTimestamp(om.GetCreationTimestamp())
	nm.SetDeletionTimestamp(om.GetDeletionTimestamp())
	nm.SetDeletionGracePeriodSeconds(om.GetDeletionGracePeriodSeconds())
	nm.SetGeneration(om.GetGeneration())
	nm.SetNamespace(om.GetNamespace())
	nm.SetGenerateName(om.GetGenerateName())
	if os, ok := fieldByName(old, "Spec"); ok && tracksGeneration(req.res) {
		ns, _ := fieldByName(obj, "Spec")
		if !reflect.DeepEqual(os.Interface(), ns.Interface()) {
			nm.SetGeneration(om.GetGeneration() + 1)
		}
	}
	return obj, nil
}

// cacheWait bounds how long an update waits for the object cache to catch
// up with the resourceVersion it names before reading etcd instead.
const cacheWait = 50 * time.Millisecond

// cachedGet reads key from the object cache; a miss is ErrNotFound.
func (s *Server) cachedGet(_ context.Context, key string) (storage.KV, error) {
	if kv, ok := s.cache.Get(key); ok {
		return kv, nil
	}
	return storage.KV{}, storage.ErrNotFound
}

// guaranteedUpdate reads the stored object, asks mutate for the new one and
// writes it with a compare on the revision it read. With an explicit
// resourceVersion a changed object is a 409; without one it retries.
func (s *Server) guaranteedUpdate(ctx context.Context, res *Resource, ns, name, rv string, mutate func(old runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	key := res.Key(ns, name)
	// The first read is from the object cache, which spares a round trip
	// to etcd; the compare on its mod revision when writing proves it was
	// current. Every other outcome of a cached read (a miss, a 409, a
	// no-op, an error) is decided again from a linearizable read, so
	// callers get what reading linearizably every time would give.
	stale := !dryRunFrom(ctx)
	if n, err := strconv.ParseInt(rv, 10, 64); stale && err == nil {
		// A caller writing again what it just wrote is usually a watch
		// event ahead of the cache.
		s.cache.WaitFor(ctx, n, cacheWait)
	}
	// Addresses that attempts reserved for a Service changing type are
	// released unless that attempt's write went through.
	var reserved []runtime.Object
	var reservedPorts [][2]*corev1.Service // (attempt's, stored) for the node ports an attempt reserved
	defer func() {
		for _, o := range reserved {
			s.releaseClusterIP(ctx, o)
		}
		for _, p := range reservedPorts {
			s.releaseNodePorts(ctx, p[0], p[1])
		}
	}()
	for attempt := 0; attempt < 10; attempt++ {
		readStale := stale
		stale = false
		read := s.store.Get
		if readStale {
			read = s.cachedGet
		}
		kv, err := read(ctx, key)
		if err != nil {
			if readStale {
				attempt--
				continue
			}
			return nil, storageError(err, groupResource(res), name)
		}
		old, err := decodeStored(res, kv)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		if rv != "" && rv != fmt.Sprint(kv.ModRevision) {
			if readStale {
				attempt--
				continue
			}
			return nil, storageError(storage.ErrConflict, groupResource(res), name)
		}
		obj, err := mutate(old.DeepCopyObject())
		if err == nil {
			err = s.prepareForUpdate(ctx, res, obj, old)
			if newClusterIP(obj, old) {
				reserved = append(reserved, obj.DeepCopyObject())
			}
			if svc := asService(obj); svc != nil {
				reservedPorts = append(reservedPorts, [2]*corev1.Service{svc.DeepCopy(), asService(old)})
			}
		}
		if err == nil {
			// An update without a resourceVersion is unconditional: it
			// is checked as one of the version it replaces, as upstream's
			// store does before validating.
			if m, merr := meta.Accessor(obj); merr == nil && m.GetResourceVersion() == "" {
				m.SetResourceVersion(fmt.Sprint(kv.ModRevision))
			}
			if errs := validateObject(res, obj, validationBase(ctx, obj, old)); len(errs) > 0 {
				err = apierrors.NewInvalid(res.GroupVersion().WithKind(res.Kind).GroupKind(), name, errs)
			}
		}
		if err == nil {
			err = s.checkEscalation(ctx, res, obj)
		}
		if err == nil {
			err = s.restrictNodeObject(ctx, res, obj, old)
		}
		if err != nil {
			// A refusal decided on the cached copy stands when a
			// linearizable read finds that copy current: the same object
			// gets the same answer, without running the mutation (a
			// costly patch, say) again.
			if readStale {
				if cur, gerr := s.store.Get(ctx, key); gerr == nil && cur.ModRevision == kv.ModRevision {
					return nil, err
				}
				attempt--
				continue
			}
			return nil, err
		}
		m, _ := meta.Accessor(obj)
		// A terminating object whose last finalizer went away is deleted.
		if m.GetDeletionTimestamp() != nil && len(m.GetFinalizers()) == 0 && finalizeOnEmpty(res, obj) {
			if dryRunFrom(ctx) {
				return obj, nil
			}
			if _, err := s.store.Delete(ctx, key, kv.ModRevision); err != nil {
				if errors.Is(err, storage.ErrConflict) && rv == "" {
					continue
				}
				return nil, storageError(err, groupResource(res), name)
			}
			s.afterDelete(ctx, obj)
			return obj, nil
		}
		m.SetResourceVersion("")
		// A value stored in an older form (another encryption key, or
		// plaintext) is written even unchanged: that is how Secrets are
		// re-encrypted (read every one, replace it as it is).
		if !kv.Stale && sameIgnoringManagedFields(res, obj, old) {
			if readStale {
				attempt--
				continue
			}
			// A no-op write keeps the revision, as upstream does.
			return old, nil
		}
		obj = s.trackManagedFields(ctx, res, old, obj)
		m, _ = meta.Accessor(obj)
		m.SetResourceVersion("")
		data, err := encodeStored(res, obj)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		if dryRunFrom(ctx) {
			m.SetResourceVersion(fmt.Sprint(kv.ModRevision))
			return obj, nil
		}
		newRev, _, err := s.store.Update(ctx, key, data, kv.ModRevision, s.writeOptions(res)...)
		if errors.Is(err, storage.ErrConflict) && rv == "" {
			continue
		}
		if err != nil {
			return nil, storageError(err, groupResource(res), name)
		}
		m.SetResourceVersion(fmt.Sprint(newRev))
		if newClusterIP(obj, old) {
			reserved = reserved[:len(reserved)-1] // this attempt's, now held
		}
		if svc, ok := obj.(*corev1.Service); ok && svc.Spec.ClusterIP != old.(*corev1.Service).Spec.ClusterIP {
			s.releaseClusterIP(ctx, old)
		}
		if svc := asService(obj); svc != nil {
			reservedPorts = reservedPorts[:len(reservedPorts)-1] // this attempt's, now held
			s.releaseNodePorts(ctx, asService(old), svc)
		}
		return obj, nil
	}
	return nil, storageError(storage.ErrConflict, groupResource(res), name)
}

// sameIgnoringManagedFields reports a no-op write: nothing but the
// bookkeeping of who manages what would change.
func sameIgnoringManagedFields(res *Resource, a, b runtime.Object) bool {
	enc := func(o runtime.Object) []byte {
		c := o.DeepCopyObject()
		m, _ := meta.Accessor(c)
		m.SetManagedFields(nil)
		m.SetResourceVersion("")
		data, _ := encodeStored(res, c)
		return data
	}
	return bytes.Equal(enc(a), enc(b))
}

// finalizeOnEmpty says whether an object that is terminating and has no
// finalizers left is removed. Pods also wait for their grace period to be
// acknowledged by the node (a delete with grace 0).
func finalizeOnEmpty(res *Resource, obj runtime.Object) bool {
	switch o := obj.(type) {
	case *corev1.Pod:
		return o.DeletionGracePeriodSeconds != nil && *o.DeletionGracePeriodSeconds == 0 || o.Spec.NodeName == ""
	case *corev1.Namespace:
		return len(o.Spec.Finalizers) == 0
	}
	return true
}

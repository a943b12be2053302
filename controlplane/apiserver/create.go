package apiserver

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// checkNamespace refuses writes into a missing (404) or terminating (403)
// namespace. It returns the namespace's key and mod revision, which a
// create guards on. With stale, the object cache may answer: an answer
// that allows the write is proved current by that guard; a refusal is
// always decided from a linearizable read. res and name are the object
// being created, which a refusal names.
func (s *Server) checkNamespace(ctx context.Context, res *Resource, name, ns string, stale bool) (string, int64, error) {
	nsRes := s.reg.Lookup("", "v1", "namespaces")
	key := nsRes.Key("", ns)
	kv, cached := storage.KV{}, false
	if stale {
		kv, cached = s.cache.Get(key)
	}
	if !cached {
		var err error
		if kv, err = s.store.Get(ctx, key); err != nil {
			return "", 0, storageError(err, groupResource(nsRes), ns)
		}
	}
	o, err := decodeStored(nsRes, kv)
	if err != nil {
		return "", 0, apierrors.NewInternalError(err)
	}
	n := o.(*corev1.Namespace)
	if n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating {
		if stale {
			return s.checkNamespace(ctx, res, name, ns, false)
		}
		return "", 0, namespaceTerminating(res, name, ns)
	}
	return key, kv.ModRevision, nil
}

func (s *Server) create(ctx context.Context, res *Resource, ns string, obj runtime.Object) (runtime.Object, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	var nsKey string // the namespace's key and revision, which the write guards on
	var nsRev int64
	if res.Namespaced {
		switch {
		case m.GetNamespace() == "":
			m.SetNamespace(ns)
		case m.GetNamespace() != ns:
			return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		if nsKey, nsRev, err = s.checkNamespace(ctx, res, m.GetName(), ns, !dryRunFrom(ctx)); err != nil {
			return nil, err
		}
	} else {
		m.SetNamespace("")
	}
	generated := false
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + rand.String(5))
		generated = true
	}
	m.SetUID(types.UID(uuid.NewUUID()))
	m.SetCreationTimestamp(metav1.Now())
	m.SetResourceVersion("")
	m.SetDeletionTimestamp(nil)
	m.SetDeletionGracePeriodSeconds(nil)
	m.SetGeneration(0)
	if tracksGeneration(res) {
		m.SetGeneration(1)
	}
	if !writeInfoFrom(ctx).apply {
		m.SetManagedFields(nil)
	}
	if err := s.prepareForCreate(ctx, res, obj); err != nil {
		return nil, err
	}
	if err := s.admitServiceAccount(ctx, res, obj); err != nil {
		return nil, err
	}
	if err := s.admitDefaultIngressClass(ctx, obj); err != nil {
		return nil, err
	}
	admitCreate(obj)
	if errs := validateObject(res, obj, nil); len(errs) > 0 {
		s.releaseClusterIP(ctx, obj)
		s.releaseNodePorts(ctx, asService(obj), nil)
		return nil, apierrors.NewInvalid(res.GroupVersion().WithKind(res.Kind).GroupKind(), m.GetName(), errs)
	}
	if err := s.checkEscalation(ctx, res, obj); err != nil {
		return nil, err
	}
	if err := s.restrictNodeObject(ctx, res, obj, nil); err != nil {
		return nil, err
	}
	obj = s.trackManagedFields(ctx, res, nil, obj)
	if m, err = meta.Accessor(obj); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	for attempt := 0; ; attempt++ {
		data, err := encodeStored(res, obj)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		if dryRunFrom(ctx) {
			return obj, nil
		}
		var rev int64
		if nsKey != "" {
			rev, err = s.store.CreateIf(ctx, res.Key(m.GetNamespace(), m.GetName()), data, nsKey, nsRev, s.writeOptions(res)...)
		} else {
			rev, err = s.store.Create(ctx, res.Key(m.GetNamespace(), m.GetName()), data, s.writeOptions(res)...)
		}
		if errors.Is(err, storage.ErrConflict) && attempt < 5 {
			// The namespace changed since it was read: check it again.
			if nsKey, nsRev, err = s.checkNamespace(ctx, res, m.GetName(), ns, false); err != nil {
				s.releaseClusterIP(ctx, obj)
				s.releaseNodePorts(ctx, asService(obj), nil)
				return nil, err
			}
			continue
		}
		if errors.Is(err, storage.ErrAlreadyExists) && generated && attempt < 5 {
			m.SetName(m.GetGenerateName() + rand.String(5))
			continue
		}
		if err != nil {
			s.releaseClusterIP(ctx, obj)
			s.releaseNodePorts(ctx, asService(obj), nil)
			return nil, storageError(err, groupResource(res), m.GetName())
		}
		m.SetResourceVersion(fmt.Sprint(rev))
		obj.GetObjectKind().SetGroupVersionKind(res.GroupVersion().WithKind(res.Kind))
		return obj, nil
	}
}

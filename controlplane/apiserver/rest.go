package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/uuid"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, req *request) {
	ctx := r.Context()
	ctx = context.WithValue(ctx, writeInfoKey{}, writeInfo{dryRun: isDryRun(r), manager: fieldManagerName(r), sub: req.sub, user: req.user})
	gvk := req.res.GroupVersion().WithKind(req.res.Kind)
	if nodeAgentSubresources[req.sub] {
		if _, err := s.get(ctx, req.res, req.ns, req.name); err != nil {
			writeError(w, err)
			return
		}
		writeError(w, apierrors.NewServiceUnavailable(fmt.Sprintf(
			"pods/%s is served by the node agent (kforge agent), which this cluster does not run yet", req.sub)))
		return
	}
	var (
		obj      runtime.Object
		code     = http.StatusOK
		err      error
		warnings []string
	)
	switch req.verb {
	case "get":
		obj, err = s.get(ctx, req.res, req.ns, req.name)
		if err == nil && req.sub == "scale" {
			obj, err = toScale(req.res, obj)
			gvk = scaleGVK
		}
	case "list":
		obj, err = s.list(ctx, req, r)
		gvk = req.res.GroupVersion().WithKind(req.res.Kind + "List")
	case "watch":
		s.serveWatch(w, r, req)
		return
	case "create", "update", "patch":
		var body []byte
		body, err = readBody(r)
		if err != nil {
			break
		}
		switch {
		case req.sub == "binding":
			obj, err = s.bind(ctx, req, r, body)
			code = http.StatusCreated
			if err == nil {
				writeJSON(w, code, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: int32(code)})
				return
			}
		case req.sub == "scale":
			obj, warnings, err = s.updateScale(ctx, req, r, body)
			gvk = scaleGVK
		case req.res.Review != nil:
			into := req.res.New()
			warnings, err = decodeBody(r, body, gvk, into)
			if err == nil {
				obj, err = req.res.Review(s, ctx, req.user, into)
				code = http.StatusCreated
			}
		case req.verb == "create":
			into := req.res.New()
			warnings, err = decodeBody(r, body, gvk, into)
			if err == nil {
				obj, err = s.create(ctx, req.res, req.ns, into)
				code = http.StatusCreated
			}
		case req.verb == "update":
			into := req.res.New()
			warnings, err = decodeBody(r, body, gvk, into)
			if err == nil {
				obj, err = s.update(ctx, req, into)
			}
		default:
			obj, warnings, err = s.patch(ctx, req, r, body)
		}
	case "delete":
		var opts metav1.DeleteOptions
		if opts, err = deleteOptions(r); err == nil {
			if len(opts.DryRun) > 0 { // client-go sends it in the body
				wi := writeInfoFrom(ctx)
				wi.dryRun = true
				ctx = context.WithValue(ctx, writeInfoKey{}, wi)
			}
			obj, err = s.delete(ctx, req.res, req.ns, req.name, opts)
		}
	case "deletecollection":
		obj, err = s.deleteCollection(ctx, req, r)
		gvk = req.res.GroupVersion().WithKind(req.res.Kind + "List")
	}
	if err == nil && (req.verb == "get" || req.verb == "list") && req.sub == "" && wantsTable(r) {
		obj, err = asTable(r, req.res, obj)
		gvk = tableGVK
	}
	for _, wn := range warnings {
		w.Header().Add("Warning", `299 - "`+strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(wn)+`"`)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if isDryRun(r) && code == http.StatusCreated {
		code = http.StatusOK
	}
	writeObject(w, code, gvk, obj)
}

func isDryRun(r *http.Request) bool { return len(r.URL.Query()["dryRun"]) > 0 }

func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, apierrors.NewBadRequest("reading the request body: " + err.Error())
	}
	if len(body) > maxBodyBytes {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the request body is larger than %d bytes", maxBodyBytes))
	}
	return body, nil
}

func deleteOptions(r *http.Request) (metav1.DeleteOptions, error) {
	var o metav1.DeleteOptions
	body, err := readBody(r)
	if err != nil {
		return o, err
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		var err error
		if mediaType(r) == "application/vnd.kubernetes.protobuf" {
			gvk := metav1.SchemeGroupVersion.WithKind("DeleteOptions")
			_, _, err = protoSerializer.Decode(body, &gvk, &o)
		} else {
			err = json.Unmarshal(body, &o)
		}
		if err != nil {
			return o, apierrors.NewBadRequest("decoding DeleteOptions: " + err.Error())
		}
	}
	if v := r.URL.Query().Get("gracePeriodSeconds"); v != "" {
		var g int64
		if _, err := fmt.Sscan(v, &g); err != nil {
			return o, apierrors.NewBadRequest("gracePeriodSeconds: " + err.Error())
		}
		o.GracePeriodSeconds = &g
	}
	if v := r.URL.Query().Get("propagationPolicy"); v != "" {
		p := metav1.DeletionPropagation(v)
		o.PropagationPolicy = &p
	}
	return o, nil
}

// decodeStored turns a stored value into an object with its resource
// version set.
func decodeStored(res *Resource, kv storage.KV) (runtime.Object, error) {
	if res.StoredAs != nil {
		stored, err := decodeStored(res.StoredAs, kv)
		if err != nil {
			return nil, err
		}
		obj, err := res.FromStored(stored)
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
		obj.GetObjectKind().SetGroupVersionKind(res.GroupVersion().WithKind(res.Kind))
		return obj, nil
	}
	obj := res.New()
	if err := json.Unmarshal(kv.Value, obj); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	m, _ := meta.Accessor(obj)
	m.SetResourceVersion(fmt.Sprint(kv.ModRevision))
	obj.GetObjectKind().SetGroupVersionKind(res.GroupVersion().WithKind(res.Kind))
	return obj, nil
}

// encodeStored is what goes into etcd: the object without its resource
// version (the revision is the version).
func encodeStored(res *Resource, obj runtime.Object) ([]byte, error) {
	if res.StoredAs != nil {
		obj.GetObjectKind().SetGroupVersionKind(res.GroupVersion().WithKind(res.Kind))
		stored, err := res.ToStored(obj)
		if err != nil {
			return nil, err
		}
		return encodeStored(res.StoredAs, stored)
	}
	m, _ := meta.Accessor(obj)
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	obj.GetObjectKind().SetGroupVersionKind(res.GroupVersion().WithKind(res.Kind))
	data, err := json.Marshal(obj)
	m.SetResourceVersion(rv)
	return data, err
}

func (s *Server) get(ctx context.Context, res *Resource, ns, name string) (runtime.Object, error) {
	kv, err := s.store.Get(ctx, res.Key(ns, name))
	if err != nil {
		return nil, storageError(err, groupResource(res), name)
	}
	return decodeStored(res, kv)
}

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
	if errs := validateObject(res, obj, nil); len(errs) > 0 {
		s.releaseClusterIP(ctx, obj)
		return nil, apierrors.NewInvalid(res.GroupVersion().WithKind(res.Kind).GroupKind(), m.GetName(), errs)
	}
	if err := s.checkEscalation(ctx, res, obj); err != nil {
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
			return nil, storageError(err, groupResource(res), m.GetName())
		}
		m.SetResourceVersion(fmt.Sprint(rev))
		obj.GetObjectKind().SetGroupVersionKind(res.GroupVersion().WithKind(res.Kind))
		return obj, nil
	}
}

func groupResource(res *Resource) schema.GroupResource {
	return schema.GroupResource{Group: res.Group, Resource: res.Plural}
}

// fieldByName returns the named field of a struct pointer, if it has one.
func fieldByName(obj runtime.Object, name string) (reflect.Value, bool) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}, false
	}
	f := v.Elem().FieldByName(name)
	return f, f.IsValid()
}

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
		}
		if err == nil {
			if errs := validateObject(res, obj, old); len(errs) > 0 {
				err = apierrors.NewInvalid(res.GroupVersion().WithKind(res.Kind).GroupKind(), name, errs)
			}
		}
		if err == nil {
			err = s.checkEscalation(ctx, res, obj)
		}
		if err != nil {
			if readStale {
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

// gracePeriod is the deletion grace in seconds: only bound pods wait.
func gracePeriod(res *Resource, obj runtime.Object, opts metav1.DeleteOptions) int64 {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
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

// selectors parses labelSelector and fieldSelector.
func selectors(r *http.Request) (labels.Selector, fields.Selector, error) {
	q := r.URL.Query()
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest("labelSelector: " + err.Error())
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest("fieldSelector: " + err.Error())
	}
	return ls, fs, nil
}

// objectFields is the field set a field selector matches against.
func objectFields(res *Resource, obj runtime.Object) fields.Set {
	m, _ := meta.Accessor(obj)
	set := fields.Set{"metadata.name": m.GetName()}
	if res.Namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	if res.Fields != nil {
		for k, v := range res.Fields(obj) {
			set[k] = v
		}
	}
	return set
}

// checkFieldSelector refuses fields the resource does not index, as
// upstream does (a typo would otherwise match nothing, silently).
func checkFieldSelector(res *Resource, fs fields.Selector) error {
	if fs.Empty() {
		return nil
	}
	known := objectFields(res, res.New())
	known["metadata.namespace"] = ""
	for _, req := range fs.Requirements() {
		if _, ok := known[req.Field]; !ok {
			return apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", req.Field))
		}
	}
	return nil
}

func matches(res *Resource, obj runtime.Object, ls labels.Selector, fs fields.Selector) bool {
	m, _ := meta.Accessor(obj)
	if !ls.Matches(labels.Set(m.GetLabels())) {
		return false
	}
	return fs.Empty() || fs.Matches(objectFields(res, obj))
}

func (s *Server) list(ctx context.Context, req *request, r *http.Request) (runtime.Object, error) {
	ls, fs, err := selectors(r)
	if err != nil {
		return nil, err
	}
	if err := checkFieldSelector(req.res, fs); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var o storage.ListOptions
	if v := q.Get("limit"); v != "" {
		if _, err := fmt.Sscan(v, &o.Limit); err != nil || o.Limit < 0 {
			return nil, apierrors.NewBadRequest("limit: not a positive integer")
		}
	}
	o.Continue = q.Get("continue")
	if q.Get("resourceVersionMatch") == string(metav1.ResourceVersionMatchExact) {
		if _, err := fmt.Sscan(q.Get("resourceVersion"), &o.Revision); err != nil {
			return nil, apierrors.NewBadRequest("resourceVersion: " + err.Error())
		}
	}
	var items []runtime.Object
	var res storage.ListResult
	// With a selector a page may hold fewer matches than the limit; keep
	// reading pages until it is full, as upstream does.
	for {
		res, err = s.store.List(ctx, req.res.KeyPrefix(req.ns), o)
		if err != nil {
			if errors.Is(err, storage.ErrExpired) && o.Continue != "" {
				return nil, apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
			}
			return nil, storageError(err, groupResource(req.res), "")
		}
		for _, kv := range res.Items {
			obj, err := decodeStored(req.res, kv)
			if err != nil {
				return nil, apierrors.NewInternalError(err)
			}
			if matches(req.res, obj, ls, fs) {
				items = append(items, obj)
			}
		}
		if res.Continue == "" || o.Limit == 0 || int64(len(items)) >= o.Limit {
			break
		}
		o.Continue = res.Continue
		o.Limit -= int64(len(items))
	}
	list := req.res.NewList()
	if err := meta.SetList(list, items); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	lm, _ := meta.ListAccessor(list)
	lm.SetResourceVersion(fmt.Sprint(res.Revision))
	lm.SetContinue(res.Continue)
	if res.Continue != "" && ls.Empty() && fs.Empty() {
		n := res.Remaining
		lm.SetRemainingItemCount(&n)
	}
	return list, nil
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

// patch applies a JSON, merge or strategic-merge patch to the stored object
// and writes the result under the update rules.
func (s *Server) patch(ctx context.Context, req *request, r *http.Request, body []byte) (runtime.Object, []string, error) {
	var warnings []string
	ct := r.Header.Get("Content-Type")
	if i := strings.Index(ct, ";"); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	if types.PatchType(ct) == types.ApplyYAMLPatchType || ct == "application/apply-patch+cbor" {
		if ct != string(types.ApplyYAMLPatchType) {
			return nil, nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "PATCH", groupResource(req.res), req.name,
				fmt.Sprintf("the patch content type %q is not supported", ct), 0, false)
		}
		obj, err := s.applyPatch(ctx, req, r, body)
		return obj, nil, err
	}
	out, err := s.guaranteedUpdate(ctx, req.res, req.ns, req.name, "", func(old runtime.Object) (runtime.Object, error) {
		cur, err := json.Marshal(old)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		var patched []byte
		switch types.PatchType(ct) {
		case types.JSONPatchType:
			p, err := jsonpatch.DecodePatch(body)
			if err != nil {
				return nil, apierrors.NewBadRequest("json patch: " + err.Error())
			}
			if patched, err = p.Apply(cur); err != nil {
				// As upstream: 422, with the patch library's words.
				return nil, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false)
			}
		case types.MergePatchType:
			if patched, err = jsonpatch.MergePatch(cur, body); err != nil {
				return nil, apierrors.NewBadRequest("merge patch: " + err.Error())
			}
		case types.StrategicMergePatchType:
			if patched, err = strategicpatch.StrategicMergePatch(cur, body, req.res.New()); err != nil {
				return nil, apierrors.NewBadRequest("strategic merge patch: " + err.Error())
			}
		default:
			return nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "PATCH", groupResource(req.res), req.name,
				fmt.Sprintf("the patch content type %q is not supported", ct), 0, false)
		}
		obj := req.res.New()
		gvk := req.res.GroupVersion().WithKind(req.res.Kind)
		// Strict decoding finds unknown or duplicate fields the patch
		// brought in: warnings, or a 400 under fieldValidation=Strict.
		if _, _, err := jsonStrict.Decode(patched, &gvk, obj); err != nil {
			strict, ok := runtime.AsStrictDecodingError(err)
			switch {
			case !ok:
				return nil, apierrors.NewBadRequest("the patched object is malformed: " + err.Error())
			case r.URL.Query().Get("fieldValidation") == "Strict":
				return nil, apierrors.NewBadRequest(err.Error())
			case r.URL.Query().Get("fieldValidation") != "Ignore":
				warnings = warnings[:0]
				for _, e := range strict.Errors() {
					warnings = append(warnings, e.Error())
				}
			}
		}
		m, _ := meta.Accessor(obj)
		if m.GetName() != req.name {
			return nil, apierrors.NewBadRequest("a patch cannot change the name")
		}
		return s.mergeUpdate(req, old, obj)
	})
	return out, warnings, err
}

// orphanRequested reports a delete asking for its dependents to be
// orphaned, by propagationPolicy or the older orphanDependents.
func orphanRequested(o metav1.DeleteOptions) bool {
	if o.PropagationPolicy != nil {
		return *o.PropagationPolicy == metav1.DeletePropagationOrphan
	}
	return o.OrphanDependents != nil && *o.OrphanDependents //nolint:staticcheck // still sent by old clients
}

package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// fieldManagers track metadata.managedFields on every write and merge
// server-side apply patches, with apimachinery's managedfields machinery
// and the type converter client-go's applyconfigurations builds from
// upstream's OpenAPI models.
type fieldManagers struct {
	once sync.Once
	tc   managedfields.TypeConverter

	mu     sync.Mutex
	byKind map[string]*managedfields.FieldManager
}

func (s *Server) fieldManager(res *Resource, sub string) (*managedfields.FieldManager, error) {
	if res.Custom != nil {
		if sub != "status" {
			sub = ""
		}
		return res.Custom.fieldManager(sub)
	}
	f := &s.fields
	f.once.Do(func() {
		// Upstream's schema for the built-in types: list keys such as
		// [port, protocol] for Service ports, atomic lists and maps.
		f.tc = applyconfigurations.NewTypeConverter(scheme.Scheme)
		f.byKind = map[string]*managedfields.FieldManager{}
	})
	if sub != "status" {
		sub = ""
	}
	key := res.Group + "/" + res.Kind + "/" + sub
	f.mu.Lock()
	defer f.mu.Unlock()
	if fm, ok := f.byKind[key]; ok {
		return fm, nil
	}
	gvk := res.GroupVersion().WithKind(res.Kind)
	tc, sch := f.tc, scheme.Scheme
	if res.Group == apiextensionsv1.GroupName {
		tc, sch = crdTypeConverter(), crdScheme
	}
	fm, err := managedfields.NewDefaultFieldManager(tc, sch, sch, sch, gvk, gvk.GroupVersion(), sub, nil)
	if err != nil {
		return nil, err
	}
	f.byKind[key] = fm
	return fm, nil
}

// writeInfo is what a write needs to know about its request beyond the
// object: carried in the context from the handler to the storage step.
type writeInfo struct {
	dryRun  bool
	manager string // field manager
	sub     string
	apply   bool // managed fields come from the apply merge
	user    user // who writes; empty for the apiserver's own writes
}

type writeInfoKey struct{}

func writeInfoFrom(ctx context.Context) writeInfo {
	wi, _ := ctx.Value(writeInfoKey{}).(writeInfo)
	return wi
}

func dryRunFrom(ctx context.Context) bool { return writeInfoFrom(ctx).dryRun }

// fieldManagerName is the fieldManager parameter, or the client's user
// agent up to the first "/", as upstream does.
func fieldManagerName(r *http.Request) string {
	if m := r.URL.Query().Get("fieldManager"); m != "" {
		return m
	}
	ua := r.Header.Get("User-Agent")
	if i := strings.Index(ua, "/"); i >= 0 {
		ua = ua[:i]
	}
	if ua == "" {
		return "unknown"
	}
	return ua
}

// trackManagedFields records who changed what, for a non-apply write.
func (s *Server) trackManagedFields(ctx context.Context, res *Resource, old, obj runtime.Object) runtime.Object {
	wi := writeInfoFrom(ctx)
	if wi.apply || wi.sub == "scale" || res.Review != nil {
		return obj
	}
	fm, err := s.fieldManager(res, wi.sub)
	if err != nil {
		s.log.Warn("managed fields: no field manager", "kind", res.Kind, "err", err)
		return obj
	}
	if old == nil {
		old = res.New()
	}
	return fm.UpdateNoErrors(old, obj, wi.manager)
}

// applyPatch is server-side apply: the patch is a partial object whose
// fields the manager claims; conflicts with other managers are a 409
// unless force is set. A missing object is created.
func (s *Server) applyPatch(ctx context.Context, req *request, r *http.Request, body []byte) (runtime.Object, error) {
	jsonBody, err := yaml.YAMLToJSON(body)
	if err != nil {
		return nil, apierrors.NewBadRequest("apply patch: " + err.Error())
	}
	patch := &unstructured.Unstructured{}
	if err := patch.UnmarshalJSON(jsonBody); err != nil {
		return nil, apierrors.NewBadRequest("apply patch: " + err.Error())
	}
	gvk := req.res.GroupVersion().WithKind(req.res.Kind)
	if patch.GroupVersionKind() != gvk {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("apply patch: apiVersion/kind %s does not match %s", patch.GroupVersionKind(), gvk))
	}
	if patch.GetName() != req.name {
		return nil, apierrors.NewBadRequest("apply patch: metadata.name must match the name in the URL")
	}
	if ns := patch.GetNamespace(); req.res.Namespaced && ns != "" && ns != req.ns {
		return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	if r.URL.Query().Get("fieldManager") == "" {
		return nil, apierrors.NewBadRequest("PATCH with application/apply-patch+yaml requires the fieldManager parameter")
	}
	force := r.URL.Query().Get("force") == "true"
	fm, err := s.fieldManager(req.res, req.sub)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	wi := writeInfoFrom(ctx)
	wi.apply = true
	ctx = context.WithValue(ctx, writeInfoKey{}, wi)

	if _, err := s.store.Get(ctx, req.res.Key(req.ns, req.name)); err != nil {
		if !apierrors.IsNotFound(storageError(err, groupResource(req.res), req.name)) {
			return nil, storageError(err, groupResource(req.res), req.name)
		}
		if req.sub != "" {
			return nil, storageError(err, groupResource(req.res), req.name)
		}
		// An apply that creates needs the create verb too, as upstream.
		asCreate := *req
		asCreate.verb = "create"
		if err := s.authorize(r, &asCreate); err != nil {
			return nil, err
		}
		live := req.res.New()
		m, _ := meta.Accessor(live)
		m.SetName(req.name)
		m.SetNamespace(req.ns)
		live.GetObjectKind().SetGroupVersionKind(gvk)
		obj, err := fm.Apply(live, patch, wi.manager, force)
		if err != nil {
			return nil, applyError(err)
		}
		return s.create(ctx, req.res, req.ns, obj)
	}
	return s.guaranteedUpdate(ctx, req.res, req.ns, req.name, "", func(old runtime.Object) (runtime.Object, error) {
		old.GetObjectKind().SetGroupVersionKind(gvk)
		obj, err := fm.Apply(old.DeepCopyObject(), patch, wi.manager, force)
		if err != nil {
			return nil, applyError(err)
		}
		return s.mergeUpdate(req, old, obj)
	})
}

func applyError(err error) error {
	if _, ok := err.(apierrors.APIStatus); ok {
		return err
	}
	return apierrors.NewBadRequest("server-side apply: " + err.Error())
}

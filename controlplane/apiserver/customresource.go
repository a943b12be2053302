package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	crvalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/util/jsonpath"
	"k8s.io/kube-openapi/pkg/validation/spec"

	"kforge.dev/kforge/controlplane/apiserver/openapi"
)

// customResource is what serving one version of a CustomResourceDefinition
// needs beyond its row: the version's structural schema (pruning and
// defaults), its validator, printer columns and subresources.
type customResource struct {
	crdName     string
	gvk         schema.GroupVersionKind
	crd         *apiextensionsv1.CustomResourceDefinition
	structural  *structuralschema.Structural
	validator   crvalidation.SchemaValidator
	openAPI     *spec.Schema // the version's schema, for OpenAPI and apply
	columns     []column
	status      bool
	scale       *apiextensionsv1.CustomResourceSubresourceScale
	terminating bool

	fmMu sync.Mutex
	fms  map[string]*managedfields.FieldManager
}

// customResourceRows builds the rows of crd's served versions. Conversion
// between versions is None: an object is stored as written and served in
// any version by changing its apiVersion alone.
func customResourceRows(crd *apiextensionsv1.CustomResourceDefinition) ([]*Resource, error) {
	n := crd.Status.AcceptedNames
	var rows []*Resource
	for i := range crd.Spec.Versions {
		v := &crd.Spec.Versions[i]
		if !v.Served {
			continue
		}
		cr := &customResource{crdName: crd.Name, crd: crd, terminating: crd.DeletionTimestamp != nil,
			gvk: schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: n.Kind}}
		var subs []string
		if v.Subresources != nil {
			if v.Subresources.Status != nil {
				cr.status = true
				subs = append(subs, "status")
			}
			if v.Subresources.Scale != nil {
				cr.scale = v.Subresources.Scale
				subs = append(subs, "scale")
			}
		}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("version %s has no schema", v.Name)
		}
		in := &apiextensions.JSONSchemaProps{}
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, in, nil); err != nil {
			return nil, fmt.Errorf("version %s: %w", v.Name, err)
		}
		var err error
		if cr.structural, err = structuralschema.NewStructural(in); err != nil {
			return nil, fmt.Errorf("version %s: %w", v.Name, err)
		}
		if cr.validator, _, err = crvalidation.NewSchemaValidator(in); err != nil {
			return nil, fmt.Errorf("version %s: %w", v.Name, err)
		}
		cr.openAPI = cr.structural.ToKubeOpenAPI()
		cr.columns = customColumns(v.AdditionalPrinterColumns)
		gvk, listGVK := cr.gvk, cr.gvk.GroupVersion().WithKind(n.ListKind)
		rows = append(rows, &Resource{Group: crd.Spec.Group, Version: v.Name, Kind: n.Kind, Plural: n.Plural, Singular: n.Singular,
			ShortNames: n.ShortNames, Categories: n.Categories, Namespaced: crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
			Subresources: subs, Custom: cr,
			New: func() runtime.Object {
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(gvk)
				return u
			},
			NewList: func() runtime.Object {
				l := &unstructured.UnstructuredList{}
				l.SetGroupVersionKind(listGVK)
				return l
			},
			Prepare: cr.prepare, Validate: cr.validate})
	}
	return rows, nil
}

// prepare drops the status of a new object (with the status
// subresource), prunes the fields the schema does not know and applies its
// defaults, as upstream does on every write.
func (cr *customResource) prepare(obj, old runtime.Object) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	if old == nil && cr.status {
		// As upstream: with the status subresource a new object starts
		// without status.
		delete(u.Object, "status")
	}
	pruning.Prune(u.Object, cr.structural, true)
	structuraldefaulting.Default(u.Object, cr.structural)
}

// validate checks the object against the version's schema, and refuses new
// objects of a definition being deleted.
func (cr *customResource) validate(obj, old runtime.Object) field.ErrorList {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return field.ErrorList{field.InternalError(nil, fmt.Errorf("a %T, not an unstructured object", obj))}
	}
	if old == nil && cr.terminating {
		return field.ErrorList{field.Forbidden(field.NewPath("metadata"), "create not allowed while custom resource definition is terminating")}
	}
	if old != nil {
		return crvalidation.ValidateCustomResourceUpdate(nil, u.UnstructuredContent(), old.(*unstructured.Unstructured).UnstructuredContent(), cr.validator)
	}
	return crvalidation.ValidateCustomResource(nil, u.UnstructuredContent(), cr.validator)
}

// mergeCustomUpdate is mergeUpdate for custom resources: /status changes
// the status alone; the main resource keeps the stored status when the
// status subresource is on; the generation moves when anything outside
// metadata (and status, with the subresource) changes.
func mergeCustomUpdate(req *request, old, obj runtime.Object) (runtime.Object, error) {
	cr := req.res.Custom
	ou, nu := old.(*unstructured.Unstructured), obj.(*unstructured.Unstructured)
	if req.sub == "status" {
		out := ou.DeepCopy()
		if st, ok := nu.Object["status"]; ok {
			out.Object["status"] = st
		} else {
			delete(out.Object, "status")
		}
		out.SetResourceVersion(nu.GetResourceVersion())
		return out, nil
	}
	if cr.status {
		if st, ok := ou.Object["status"]; ok {
			nu.Object["status"] = st
		} else {
			delete(nu.Object, "status")
		}
	}
	nu.SetUID(ou.GetUID())
	nu.SetCreationTimestamp(ou.GetCreationTimestamp())
	nu.SetDeletionTimestamp(ou.GetDeletionTimestamp())
	nu.SetDeletionGracePeriodSeconds(ou.GetDeletionGracePeriodSeconds())
	nu.SetGeneration(ou.GetGeneration())
	nu.SetNamespace(ou.GetNamespace())
	nu.SetGenerateName(ou.GetGenerateName())
	content := func(u *unstructured.Unstructured) map[string]any {
		c := map[string]any{}
		for k, v := range u.Object {
			if k == "metadata" || k == "apiVersion" || k == "kind" || (k == "status" && cr.status) {
				continue
			}
			c[k] = v
		}
		return c
	}
	if !reflect.DeepEqual(content(ou), content(nu)) {
		nu.SetGeneration(ou.GetGeneration() + 1)
	}
	return nu, nil
}

// jsonPathFields splits ".spec.replicas" into its fields.
func jsonPathFields(p string) []string { return strings.Split(strings.TrimPrefix(p, "."), ".") }

// toScale is the autoscaling/v1 Scale of a custom resource, read at the
// scale subresource's paths.
func (cr *customResource) toScale(obj runtime.Object) (runtime.Object, error) {
	u := obj.(*unstructured.Unstructured)
	replicas, _, _ := unstructured.NestedInt64(u.Object, jsonPathFields(cr.scale.SpecReplicasPath)...)
	statusReplicas, _, _ := unstructured.NestedInt64(u.Object, jsonPathFields(cr.scale.StatusReplicasPath)...)
	selector := ""
	if cr.scale.LabelSelectorPath != nil {
		selector, _, _ = unstructured.NestedString(u.Object, jsonPathFields(*cr.scale.LabelSelectorPath)...)
	}
	return &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace(), UID: u.GetUID(),
			ResourceVersion: u.GetResourceVersion(), CreationTimestamp: u.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: int32(replicas)},
		Status: autoscalingv1.ScaleStatus{Replicas: int32(statusReplicas), Selector: selector},
	}, nil
}

// setReplicas writes a Scale's replicas at the spec replicas path.
func (cr *customResource) setReplicas(obj runtime.Object, n int32) error {
	u := obj.(*unstructured.Unstructured)
	if err := unstructured.SetNestedField(u.Object, int64(n), jsonPathFields(cr.scale.SpecReplicasPath)...); err != nil {
		return apierrors.NewBadRequest(err.Error())
	}
	return nil
}

// customColumns are the Table columns of a version: the name, then its
// additionalPrinterColumns, or the age when it has none.
func customColumns(defs []apiextensionsv1.CustomResourceColumnDefinition) []column {
	if len(defs) == 0 {
		return []column{nameCol, ageCol}
	}
	cols := []column{nameCol}
	for _, d := range defs {
		jp := jsonpath.New(d.Name).AllowMissingKeys(true)
		if err := jp.Parse("{" + d.JSONPath + "}"); err != nil {
			continue // refused by the definition's validation
		}
		c := column{def: metav1.TableColumnDefinition{Name: d.Name, Type: d.Type, Format: d.Format, Description: d.Description, Priority: d.Priority}}
		typ := d.Type
		c.cell = func(o runtime.Object, now time.Time) any {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				return nil
			}
			results, err := jp.FindResults(u.Object)
			if err != nil || len(results) == 0 || len(results[0]) == 0 {
				return nil
			}
			v := results[0][0].Interface()
			if typ == "date" {
				if s, ok := v.(string); ok {
					if t, err := time.Parse(time.RFC3339, s); err == nil {
						return age(metav1.NewTime(t), now)
					}
				}
			}
			switch v.(type) {
			case string, bool, int64, float64, nil:
				return v
			}
			return fmt.Sprint(v)
		}
		cols = append(cols, c)
	}
	return cols
}

// fieldManager is server-side apply for one version (and subresource) of
// a custom resource, over its schema.
func (cr *customResource) fieldManager(sub string) (*managedfields.FieldManager, error) {
	cr.fmMu.Lock()
	defer cr.fmMu.Unlock()
	if fm, ok := cr.fms[sub]; ok {
		return fm, nil
	}
	tc, err := cr.typeConverter()
	if err != nil {
		return nil, err
	}
	conv := unstructuredConvertor{}
	fm, err := managedfields.NewDefaultFieldManager(tc, conv, unstructuredDefaulter{cr}, unstructuredCreater{}, cr.gvk, cr.gvk.GroupVersion(), sub, nil)
	if err != nil {
		return nil, err
	}
	if cr.fms == nil {
		cr.fms = map[string]*managedfields.FieldManager{}
	}
	cr.fms[sub] = fm
	return fm, nil
}

// typeConverter is the version's schema as server-side apply reads it:
// apiVersion, kind and metadata as every object has them, the rest from
// the structural schema (list types and map keys included).
func (cr *customResource) typeConverter() (managedfields.TypeConverter, error) {
	s := *cr.openAPI
	s.Properties = map[string]spec.Schema{}
	for k, v := range cr.openAPI.Properties {
		s.Properties[k] = v
	}
	s.Type = spec.StringOrArray{"object"}
	s.Properties["apiVersion"] = *spec.StringProperty()
	s.Properties["kind"] = *spec.StringProperty()
	md := spec.Schema{}
	md.Type = spec.StringOrArray{"object"}
	md.Extensions = spec.Extensions{"x-kubernetes-preserve-unknown-fields": true}
	s.Properties["metadata"] = md
	s.Extensions = spec.Extensions{}
	for k, v := range cr.openAPI.Extensions {
		s.Extensions[k] = v
	}
	s.Extensions["x-kubernetes-group-version-kind"] = []any{map[string]any{"group": cr.gvk.Group, "version": cr.gvk.Version, "kind": cr.gvk.Kind}}
	tc, err := managedfields.NewTypeConverter(map[string]*spec.Schema{cr.gvk.String(): &s}, false)
	if err != nil {
		// A schema the converter cannot read still gets apply, with
		// every list atomic.
		return managedfields.NewDeducedTypeConverter(), nil //nolint:nilerr
	}
	return tc, nil
}

// unstructuredConvertor converts between versions the None way: only the
// apiVersion changes.
type unstructuredConvertor struct{}

func (unstructuredConvertor) Convert(in, out, _ any) error {
	return fmt.Errorf("converting %T to %T is not supported", in, out)
}

func (unstructuredConvertor) ConvertToVersion(in runtime.Object, gv runtime.GroupVersioner) (runtime.Object, error) {
	u, ok := in.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("converting %T is not supported", in)
	}
	gvk := u.GroupVersionKind()
	target, ok := gv.KindForGroupVersionKinds([]schema.GroupVersionKind{gvk})
	if !ok {
		return nil, fmt.Errorf("%s cannot be converted to %v", gvk, gv)
	}
	out := u.DeepCopy()
	out.SetGroupVersionKind(target)
	return out, nil
}

func (unstructuredConvertor) ConvertFieldLabel(_ schema.GroupVersionKind, label, value string) (string, string, error) {
	return label, value, nil
}

type unstructuredCreater struct{}

func (unstructuredCreater) New(kind schema.GroupVersionKind) (runtime.Object, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(kind)
	return u, nil
}

type unstructuredDefaulter struct{ cr *customResource }

func (d unstructuredDefaulter) Default(obj runtime.Object) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		structuraldefaulting.Default(u.Object, d.cr.structural)
	}
}

// objectMetaOf is the metadata of an object as a typed ObjectMeta, for
// Table rows of unstructured objects.
func objectMetaOf(o runtime.Object) (metav1.ObjectMeta, bool) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return metav1.ObjectMeta{}, false
	}
	md, _, _ := unstructured.NestedMap(u.Object, "metadata")
	var om metav1.ObjectMeta
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(md, &om); err != nil {
		return metav1.ObjectMeta{}, false
	}
	return om, true
}

// openAPIKind describes the version for the OpenAPI documents: its
// schema as JSON.
func (cr *customResource) openAPIKind(r *Resource) openapi.Kind {
	k := openapi.Kind{Group: r.Group, Version: r.Version, Kind: r.Kind, Plural: r.Plural, Namespaced: r.Namespaced,
		Subresources: r.Subresources, ListKind: cr.crd.Status.AcceptedNames.ListKind, Schema: openapi.Schema{"type": "object"}}
	if data, err := json.Marshal(cr.openAPI); err == nil {
		var m map[string]any
		if json.Unmarshal(data, &m) == nil && m != nil {
			k.Schema = m
		}
	}
	return k
}

// unknownFields answers the request's fieldValidation for the fields of
// obj the version's schema does not know (which pruning drops), as
// upstream: Strict refuses them (400), Ignore says nothing, Warn (the
// default) warns.
func (cr *customResource) unknownFields(r *http.Request, obj runtime.Object) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, nil
	}
	directive := r.URL.Query().Get("fieldValidation")
	if directive == "Ignore" {
		return nil, nil
	}
	c := runtime.DeepCopyJSON(u.Object)
	paths := pruning.PruneWithOptions(c, cr.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	if len(paths) == 0 {
		return nil, nil
	}
	msgs := make([]string, len(paths))
	for i, p := range paths {
		msgs[i] = fmt.Sprintf("unknown field %q", p)
	}
	if directive == "Strict" {
		return nil, apierrors.NewBadRequest("strict decoding error: " + strings.Join(msgs, ", "))
	}
	return msgs, nil
}

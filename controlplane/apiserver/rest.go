package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, req *request) {
	ctx := r.Context()
	ctx = context.WithValue(ctx, writeInfoKey{}, writeInfo{dryRun: isDryRun(r), manager: fieldManagerName(r), sub: req.sub, user: req.user})
	gvk := req.res.GroupVersion().WithKind(req.res.Kind)
	if nodeAgentSubresources[req.sub] {
		s.serveNodeProxy(w, r, req, req.proxyPath)
		return
	}
	if err := checkQuery(r, req); err != nil {
		writeError(w, err)
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
		case req.sub == "token":
			obj, warnings, err = s.createToken(ctx, req, r, body)
			gvk, code = tokenRequestGVK, http.StatusCreated
		case req.sub == "eviction":
			if warnings, err = s.evict(ctx, req, r, body); err == nil {
				writeJSON(w, http.StatusCreated, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated})
				return
			}
		case req.sub == "scale":
			obj, warnings, err = s.updateScale(ctx, req, r, body)
			gvk = scaleGVK
		case req.res.Review != nil:
			into := req.res.New()
			warnings, err = decodeBody(r, body, gvk, into)
			if err == nil {
				err = reviewNamespace(req, into)
			}
			if err == nil {
				obj, err = req.res.Review(s, ctx, req.user, into)
				code = http.StatusCreated
			}
		case req.verb == "create":
			into := req.res.New()
			warnings, err = decodeBody(r, body, gvk, into)
			if err == nil && req.res.Custom != nil {
				warnings, err = req.res.Custom.unknownFields(r, into)
			}
			if err == nil {
				obj, err = s.create(ctx, req.res, req.ns, into)
				code = http.StatusCreated
			}
		case req.verb == "update":
			into := req.res.New()
			warnings, err = decodeBody(r, body, gvk, into)
			if err == nil && req.res.Custom != nil {
				warnings, err = req.res.Custom.unknownFields(r, into)
			}
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
	// This apiserver serves a definition it wrote at once; the others
	// follow from etcd.
	if crd, ok := obj.(*apiextensionsv1.CustomResourceDefinition); ok && req.verb != "delete" && !isDryRun(r) {
		s.crds.sync(crd.DeepCopy())
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

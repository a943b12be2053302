package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

func (s *Server) get(ctx context.Context, res *Resource, ns, name string) (runtime.Object, error) {
	kv, err := s.store.Get(ctx, res.Key(ns, name))
	if err != nil {
		return nil, storageError(err, groupResource(res), name)
	}
	return decodeStored(res, kv)
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

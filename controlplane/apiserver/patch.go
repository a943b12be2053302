package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

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

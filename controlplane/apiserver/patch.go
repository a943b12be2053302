package apiserver

import (
	"context"
	"encoding/json"
	"errors"
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
	if req.res.Custom != nil && types.PatchType(ct) == types.StrategicMergePatchType {
		// As upstream: custom resources have no patch strategies.
		return nil, nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "PATCH", groupResource(req.res), req.name,
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s, %s, %s",
				types.JSONPatchType, types.MergePatchType, types.ApplyYAMLPatchType), 0, false)
	}
	var jp jsonpatch.Patch
	if types.PatchType(ct) == types.JSONPatchType {
		var err error
		if jp, err = decodeJSONPatch(body); err != nil {
			return nil, nil, err
		}
	}
	out, err := s.guaranteedUpdate(ctx, req.res, req.ns, req.name, "", func(old runtime.Object) (runtime.Object, error) {
		cur, err := json.Marshal(old)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		var patched []byte
		switch types.PatchType(ct) {
		case types.JSONPatchType:
			if patched, err = applyJSONPatch(jp, cur); err != nil {
				return nil, err
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
		if req.res.Custom != nil {
			w, err := req.res.Custom.unknownFields(r, obj)
			if err != nil {
				return nil, err
			}
			warnings = w
		}
		m, _ := meta.Accessor(obj)
		if m.GetName() != req.name {
			return nil, apierrors.NewBadRequest("a patch cannot change the name")
		}
		// A resourceVersion the patch sets is a precondition, as upstream's
		// store treats the resourceVersion of any update.
		om, _ := meta.Accessor(old)
		if rv := m.GetResourceVersion(); rv != "" && rv != om.GetResourceVersion() {
			return nil, apierrors.NewConflict(groupResource(req.res), req.name, errors.New(optimisticLockMsg))
		}
		return s.mergeUpdate(req, old, obj)
	})
	return out, warnings, err
}

// optimisticLockMsg is upstream's word for a stale resourceVersion.
const optimisticLockMsg = "the object has been modified; please apply your changes to the latest version and try again"

// decodeJSONPatch decodes a JSON patch, refusing one of more than
// maxJSONPatchOperations operations with a 413, as upstream's patch
// handler does.
func decodeJSONPatch(body []byte) (jsonpatch.Patch, error) {
	p, err := jsonpatch.DecodePatch(body)
	if err != nil {
		return nil, apierrors.NewBadRequest("json patch: " + err.Error())
	}
	if len(p) > maxJSONPatchOperations {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf(
			"The allowed maximum operations in a JSON patch is %d, got %d", maxJSONPatchOperations, len(p)))
	}
	// The library dereferences a missing value (a replace of the whole
	// document with none panics in it), so an operation lacking the member
	// RFC 6902 requires of it is refused here.
	for i, op := range p {
		need := ""
		switch op.Kind() {
		case "add", "replace", "test":
			need = "value"
		case "move", "copy":
			need = "from"
		}
		if _, ok := op[need]; need != "" && !ok {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("json patch: operation %d (%s) has no %q member", i, op.Kind(), need))
		}
		if path, _ := op.Path(); path == "" && need == "value" && op["value"] == nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("json patch: operation %d (%s) would make the whole object null", i, op.Kind()))
		}
	}
	return p, nil
}

// applyJSONPatch applies p to doc. Its copies are bounded by the library's
// accumulated copy limit (setJSONPatchCopyLimit); a failure is a 422, as
// upstream.
func applyJSONPatch(p jsonpatch.Patch, doc []byte) ([]byte, error) {
	out, err := p.Apply(doc)
	if err != nil {
		return nil, &patchError{
			StatusError: apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false),
			cause:       err,
		}
	}
	return out, nil
}

// patchError is the Status a failed JSON patch answers (upstream's 422,
// which does not repeat the library's words) that still unwraps to the
// library's error for logs and tests.
type patchError struct {
	*apierrors.StatusError
	cause error
}

func (e *patchError) Unwrap() error { return e.cause }

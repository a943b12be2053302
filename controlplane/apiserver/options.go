package apiserver

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The query parameters of each verb are decoded with the meta scheme's
// ParameterCodec (as upstream's handlers use) into its metav1 options type, then checked with metav1's
// validation, as upstream's handlers do: a parameter that does not convert
// (limit=abc) is a 400, a value that is not allowed (dryRun=Yes,
// fieldValidation=Loud) a 422 on the options kind.

func invalidOptions(kind string, errs field.ErrorList) error {
	return apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: kind}, "", errs)
}

// checkQuery decodes and validates the query parameters of req's verb.
func checkQuery(r *http.Request, req *request) error {
	q := r.URL.Query()
	gv := metav1.SchemeGroupVersion
	switch req.verb {
	case "get":
		var o metav1.GetOptions
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(q, gv, &o); err != nil {
			return apierrors.NewBadRequest(err.Error())
		}
	case "list", "watch", "deletecollection":
		var o metav1.ListOptions
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(q, gv, &o); err != nil {
			return apierrors.NewBadRequest(err.Error())
		}
		if o.Limit < 0 {
			return apierrors.NewBadRequest("limit: must not be negative")
		}
	case "create":
		var o metav1.CreateOptions
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(q, gv, &o); err != nil {
			return apierrors.NewBadRequest(err.Error())
		}
		if errs := metav1validation.ValidateCreateOptions(&o); len(errs) > 0 {
			return invalidOptions("CreateOptions", errs)
		}
	case "update":
		var o metav1.UpdateOptions
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(q, gv, &o); err != nil {
			return apierrors.NewBadRequest(err.Error())
		}
		if errs := metav1validation.ValidateUpdateOptions(&o); len(errs) > 0 {
			return invalidOptions("UpdateOptions", errs)
		}
	case "patch":
		var o metav1.PatchOptions
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(q, gv, &o); err != nil {
			return apierrors.NewBadRequest(err.Error())
		}
		if errs := metav1validation.ValidatePatchOptions(&o, types.PatchType(mediaType(r))); len(errs) > 0 {
			return invalidOptions("PatchOptions", errs)
		}
	}
	return nil
}

// deleteOptions reads a delete's options: from the body when it has one
// (kubectl and client-go send them there), else from the query; then
// checks them with metav1's ValidateDeleteOptions, as upstream.
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
			if runtime.IsNotRegisteredError(err) {
				// The DeleteOptions of a group the client-go scheme
				// does not know (apiextensions): the same message.
				err = decodeProtoDeleteOptions(body, &o)
			}
		} else {
			err = json.Unmarshal(body, &o)
		}
		if err != nil {
			return o, apierrors.NewBadRequest("decoding DeleteOptions: " + err.Error())
		}
	} else if err := metainternalversionscheme.ParameterCodec.DecodeParameters(r.URL.Query(), metav1.SchemeGroupVersion, &o); err != nil {
		return o, apierrors.NewBadRequest(err.Error())
	}
	if errs := metav1validation.ValidateDeleteOptions(&o); len(errs) > 0 {
		return o, invalidOptions("DeleteOptions", errs)
	}
	return o, nil
}

// decodeProtoDeleteOptions reads DeleteOptions from the protobuf envelope
// whatever group its type information names.
func decodeProtoDeleteOptions(body []byte, o *metav1.DeleteOptions) error {
	const magic = "k8s\x00"
	if !strings.HasPrefix(string(body), magic) {
		return errors.New("not a protobuf message")
	}
	var unk runtime.Unknown
	if err := unk.Unmarshal(body[len(magic):]); err != nil {
		return err
	}
	return o.Unmarshal(unk.Raw)
}

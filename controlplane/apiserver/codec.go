package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// maxBodyBytes caps request bodies, as upstream does (3 MiB).
const maxBodyBytes = 3 << 20

var (
	jsonStrict = jsonserializer.NewSerializerWithOptions(jsonserializer.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		jsonserializer.SerializerOptions{Strict: true})
	yamlStrict = jsonserializer.NewSerializerWithOptions(jsonserializer.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		jsonserializer.SerializerOptions{Yaml: true, Strict: true})
	protoSerializer = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
)

// decodeBody decodes a request body into into, checking that the kind
// matches gvk. client-go's typed clients send protobuf by default, kubectl
// sends JSON; both must work. Strict-decoding problems (unknown or
// duplicate fields) come back as warnings unless the caller asked for
// fieldValidation=Strict, when they are a 400.
func decodeBody(r *http.Request, body []byte, gvk schema.GroupVersionKind, into runtime.Object) (warnings []string, err error) {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	var dec runtime.Decoder
	switch mt {
	case "", "application/json":
		dec = jsonStrict
	case "application/yaml":
		dec = yamlStrict
	case "application/vnd.kubernetes.protobuf":
		dec = protoSerializer
	default:
		return nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, r.Method, schema.GroupResource{}, "",
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got %q)", ct), 0, false)
	}
	obj, gotGVK, err := dec.Decode(body, &gvk, into)
	if err != nil {
		if runtime.IsStrictDecodingError(err) && obj != nil {
			strict, _ := runtime.AsStrictDecodingError(err)
			switch r.URL.Query().Get("fieldValidation") {
			case "Strict":
				return nil, apierrors.NewBadRequest(err.Error())
			case "Ignore":
			default:
				for _, e := range strict.Errors() {
					warnings = append(warnings, e.Error())
				}
			}
		} else {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized or malformed: %v", err))
		}
	}
	if gotGVK != nil && (gotGVK.Kind != gvk.Kind || gotGVK.GroupVersion() != gvk.GroupVersion()) {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)",
			gotGVK.GroupVersion().String()+", Kind="+gotGVK.Kind, gvk.GroupVersion().String()+", Kind="+gvk.Kind))
	}
	if obj != into {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("unexpected object of type %T", obj))
	}
	return warnings, nil
}

// writeJSON writes v as the response.
func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
}

// writeObject sets apiVersion/kind and writes obj.
func writeObject(w http.ResponseWriter, code int, gvk schema.GroupVersionKind, obj runtime.Object) {
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	writeJSON(w, code, obj)
}

// writeError writes err as a metav1.Status.
func writeError(w http.ResponseWriter, err error) {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		st = apierrors.NewInternalError(err)
	}
	s := st.Status()
	s.Kind, s.APIVersion = "Status", "v1"
	code := int(s.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	// As upstream's response writers: a Status that says when to retry
	// (429, 503) says it in Retry-After too, which clients honour.
	if d := s.Details; d != nil && d.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(d.RetryAfterSeconds)))
	}
	writeJSON(w, code, s)
}

package apiserver

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// fuzzMediaTypes are what the fuzzer's media-type byte selects; any other
// value uses the fuzzed string as the Content-Type header itself.
var fuzzMediaTypes = []string{"", "application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "application/json; charset=utf-8"}

var fuzzFieldValidation = []string{"", "Strict", "Ignore", "Warn"}

// checkDecodeResult is what decodeBody guarantees for any input: no panic
// (the fuzzer reports those), and either success or an API status in the
// 4xx range, never a 500.
func checkDecodeResult(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		t.Fatalf("error is not an API status: %T %v", err, err)
	}
	if code := st.Status().Code; code < 400 || code > 499 {
		t.Fatalf("status code %d, want 4xx: %v", code, err)
	}
}

// decodeFuzzInput runs decodeBody the way the create and update handlers
// do: a fresh object of the URL's kind.
func decodeFuzzInput(t *testing.T, resources []*Resource, kind uint8, mediaType uint8, contentType string, validation uint8, body []byte) {
	res := resources[int(kind)%len(resources)]
	r := httptest.NewRequest(http.MethodPost, "/?fieldValidation="+fuzzFieldValidation[int(validation)%len(fuzzFieldValidation)], nil)
	ct := contentType
	if int(mediaType) < len(fuzzMediaTypes) {
		ct = fuzzMediaTypes[mediaType]
	}
	r.Header.Set("Content-Type", ct)
	into := res.New()
	_, err := decodeBody(r, body, res.GroupVersion().WithKind(res.Kind), into)
	checkDecodeResult(t, err)
}

func kindIndex(resources []*Resource, kind string) uint8 {
	for i, r := range resources {
		if r.Kind == kind {
			return uint8(i)
		}
	}
	panic("no kind " + kind)
}

func protoBody(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	data, err := runtime.Encode(protoSerializer, obj)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// FuzzDecodeBody feeds request bodies in JSON, YAML and protobuf, valid
// and broken, for every kind in the table. Run it with
//
//	go test ./controlplane/apiserver -run '^$' -fuzz FuzzDecodeBody -fuzztime 3m
//
// The corpus it finds is kept in testdata/fuzz/FuzzDecodeBody and replayed
// by every plain `go test`.
func FuzzDecodeBody(f *testing.F) {
	resources := DefaultResources()
	const (
		viaString = 255 // media-type byte: use the fuzzed Content-Type string
		jsonMT    = 1
		yamlMT    = 2
		protoMT   = 3
	)
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"x": "y"}}, Data: map[string]string{"k": "v"}}
	pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	replicas := int32(2)
	dep := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: metav1.ObjectMeta{Name: "d"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}, Spec: pod.Spec}}}
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: "n"}}

	cmK, podK, depK, nsK, svcK := kindIndex(resources, "ConfigMap"), kindIndex(resources, "Pod"), kindIndex(resources, "Deployment"),
		kindIndex(resources, "Namespace"), kindIndex(resources, "Service")

	// JSON: valid, unknown and duplicate fields, wrong kind and version,
	// truncated, wrong types, not an object.
	for _, s := range []struct {
		kind uint8
		body string
	}{
		{cmK, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}`},
		{cmK, `{"metadata":{"name":"a"},"data":{"k":"v"}}`},
		{cmK, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"dta":{}}`},
		{cmK, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","name":"b"}}`},
		{cmK, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}`},
		{cmK, `{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"a"}}`},
		{cmK, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":`},
		{cmK, `{"apiVersion":"v1","kind":"ConfigMap","data":{"k":1}}`},
		{cmK, `{"apiVersion":"v1","kind":"ConfigMap","binaryData":{"k":"!!notbase64"}}`},
		{cmK, `[]`},
		{cmK, `null`},
		{cmK, ``},
		{podK, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox","resources":{"limits":{"cpu":"1x"}}}]}}`},
		{podK, `{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"c","ports":[{"containerPort":99999999999999999999}]}]}}`},
		{podK, `{"apiVersion":"v1","kind":"Pod","metadata":{"creationTimestamp":"yesterday"}}`},
		{depK, `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":"two","strategy":{"rollingUpdate":{"maxSurge":"25%"}}}}`},
		{depK, `{"apiVersion":"extensions/v1beta1","kind":"Deployment","metadata":{"name":"d"}}`},
		{svcK, `{"apiVersion":"v1","kind":"Service","spec":{"ports":[{"port":80,"targetPort":"http"},{"port":81,"targetPort":8080}]}}`},
		{nsK, `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n","labels":{"a":null}}}`},
	} {
		f.Add(s.kind, uint8(jsonMT), "", uint8(0), []byte(s.body))
		f.Add(s.kind, uint8(jsonMT), "", uint8(1), []byte(s.body))
	}
	// YAML: valid, broken, anchors, multiple documents, tabs.
	for _, s := range []struct {
		kind uint8
		body string
	}{
		{cmK, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n"},
		{cmK, "kind: ["},
		{cmK, "apiVersion: v1\nkind: ConfigMap\nmetadata: &m\n  name: a\nextra: *m\n"},
		{cmK, "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Secret\n"},
		{cmK, "apiVersion: v1\nkind: ConfigMap\ndata:\n\tk: v\n"},
		{cmK, "apiVersion: v1\nkind: ConfigMap\ndata: {k: !!binary aGVsbG8=}\n"},
		{podK, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo hi']\n"},
		{depK, "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 1e400\n"},
	} {
		f.Add(s.kind, uint8(yamlMT), "", uint8(0), []byte(s.body))
		f.Add(s.kind, uint8(yamlMT), "", uint8(1), []byte(s.body))
	}
	// Protobuf: valid envelopes, then truncated and corrupted ones, a
	// mismatched kind and a bare magic prefix.
	for _, s := range []struct {
		kind uint8
		obj  runtime.Object
	}{{cmK, cm}, {podK, pod}, {depK, dep}, {nsK, ns}, {cmK, pod}} {
		data := protoBody(f, s.obj)
		f.Add(s.kind, uint8(protoMT), "", uint8(0), data)
		f.Add(s.kind, uint8(protoMT), "", uint8(0), data[:len(data)/2])
		bad := append([]byte{}, data...)
		bad[len(bad)-3] ^= 0xff
		f.Add(s.kind, uint8(protoMT), "", uint8(0), bad)
	}
	f.Add(cmK, uint8(protoMT), "", uint8(0), []byte("k8s\x00"))
	f.Add(cmK, uint8(protoMT), "", uint8(0), []byte("k8s\x00\x0a\xff\xff\xff\xff\x0f"))
	// Content types: unknown, with parameters, malformed.
	for _, ct := range []string{"text/plain", "application/json;;", "application/yaml; charset=utf-8", "application/vnd.kubernetes.protobuf;stream=watch", "application/cbor", `a/b; x="`} {
		f.Add(cmK, uint8(viaString), ct, uint8(0), []byte(`{"apiVersion":"v1","kind":"ConfigMap"}`))
	}

	f.Fuzz(func(t *testing.T, kind uint8, mediaType uint8, contentType string, validation uint8, body []byte) {
		decodeFuzzInput(t, resources, kind, mediaType, contentType, validation, body)
	})
}

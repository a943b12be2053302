package apiserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// The handler fuzzers drive ServeHTTP directly, past authentication, with
// real etcd behind it. Whatever they send, the answer must be a status
// below 500 and never a panic. Run one for longer with e.g.
//
//	go test ./controlplane/apiserver -run '^$' -fuzz FuzzPatchHandler -fuzztime 2m
//
// The seeds (f.Add and testdata/fuzz) replay in every go test.

// fuzzUsers are the callers a fuzzer's user byte selects: an admin, a user
// RBAC lets do nothing, and one with a namespaced role on ConfigMaps.
var fuzzUsers = []pkix.Name{
	{CommonName: "admin", Organization: []string{"system:masters"}},
	{CommonName: "nobody"},
	{CommonName: "editor", Organization: []string{"editors"}},
}

func fuzzTLS(user uint8) *tls.ConnectionState {
	return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{Subject: fuzzUsers[int(user)%len(fuzzUsers)]}}}}
}

// fuzzTarget is an object the fuzzers write to, with the subresources its
// resource serves.
type fuzzTarget struct {
	path string // the object's URL
	subs []string
}

var fuzzTargets = []fuzzTarget{
	{"/api/v1/namespaces/default/configmaps/fz", nil},
	{"/apis/apps/v1/namespaces/default/deployments/fz", []string{"status", "scale"}},
	{"/api/v1/namespaces/default/services/fz", []string{"status"}},
	{"/api/v1/namespaces/default/pods/fz", []string{"status", "binding", "log"}},
	{"/api/v1/namespaces/default/secrets/fz", nil},
	{"/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/fz", nil},
	{"/api/v1/namespaces/fz", []string{"status", "finalize"}},
	{"/api/v1/namespaces/default/configmaps", nil}, // a collection
}

var fuzzPatchTypes = []string{
	"application/json-patch+json", "application/merge-patch+json",
	"application/strategic-merge-patch+json", "application/apply-patch+yaml",
}

// startFuzzServer is a bootstrapped Server with an object behind each
// fuzz target and an "editors" role, served in-process (no listener).
func startFuzzServer(f *testing.F) *Server {
	srv, err := New(Options{Store: storage.New(etcdtest.Start(f)), ServiceCIDR: "10.96.0.0/16"})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	if err := srv.Bootstrap(ctx); err != nil {
		f.Fatal(err)
	}
	// RBAC and the object cache, as Serve runs them.
	f.Cleanup(srv.startIndexes(ctx))
	if err := srv.authz.WaitForSync(ctx, 30*time.Second); err != nil {
		f.Fatal(err)
	}
	labels := map[string]string{"app": "fz"}
	podSpec := corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx:1"}}}
	seed := []struct {
		group, plural, ns string
		obj               runtime.Object
	}{
		{"", "configmaps", "default", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "fz"}, Data: map[string]string{"k": "v"}}},
		{"apps", "deployments", "default", &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "fz"}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec}}}},
		{"", "services", "default", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "fz"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}},
		{"", "pods", "default", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "fz"}, Spec: podSpec}},
		{"", "secrets", "default", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "fz"}, StringData: map[string]string{"k": "v"}}},
		{"", "namespaces", "", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fz"}}},
		{"rbac.authorization.k8s.io", "roles", "default", &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "fz"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps", "services"}, Verbs: []string{"*"}}}}},
		{"rbac.authorization.k8s.io", "rolebindings", "default", &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "fz"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "fz"},
			Subjects: []rbacv1.Subject{{Kind: "Group", Name: "editors"}}}},
	}
	for _, s := range seed {
		res := srv.reg.Lookup(s.group, "v1", s.plural)
		if _, err := srv.create(ctx, res, s.ns, s.obj); err != nil {
			f.Fatalf("seeding %s: %v", s.plural, err)
		}
	}
	return srv
}

// fuzzServe sends one request through ServeHTTP and fails on a 5xx or an
// answer that is not HTTP at all.
func fuzzServe(t *testing.T, srv *Server, method, path, rawQuery, contentType string, body []byte, user uint8) {
	r := &http.Request{
		Method: method, URL: &url.URL{Path: path, RawQuery: rawQuery}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		Host: "kforge", RequestURI: path, TLS: fuzzTLS(user),
	}
	// A watch (any spelling of watch=true) streams until its client
	// leaves: the client here leaves after a few seconds. A request cut
	// short that way says nothing about the server.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r = r.WithContext(ctx)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	if ctx.Err() != nil {
		return
	}
	// A 504 is the right answer when the client set a ?timeout= the
	// request could not meet; any other 5xx is the server's fault.
	if q, err := url.ParseQuery(rawQuery); err == nil && q.Get("timeout") != "" && w.Code == http.StatusGatewayTimeout {
		return
	}
	if w.Code >= 500 || w.Code < 200 {
		t.Fatalf("%s %s?%s (%s) as %s: %d %s", method, path, rawQuery, contentType, fuzzUsers[int(user)%len(fuzzUsers)].CommonName, w.Code, w.Body.String())
	}
}

// pick returns the target URL with an optional subresource.
func pick(target, sub uint8) string {
	tg := fuzzTargets[int(target)%len(fuzzTargets)]
	if len(tg.subs) == 0 || sub == 0 {
		return tg.path
	}
	return tg.path + "/" + tg.subs[int(sub-1)%len(tg.subs)]
}

// FuzzPatchHandler sends PATCH requests of the four patch types, with
// fuzzed bodies and query parameters, to objects and subresources.
func FuzzPatchHandler(f *testing.F) {
	srv := startFuzzServer(f)
	f.Add(uint8(0), uint8(0), uint8(0), uint8(0), "", []byte(`[{"op":"replace","path":"/data/k","value":"w"}]`))
	f.Add(uint8(0), uint8(0), uint8(1), uint8(0), "", []byte(`{"metadata":{"resourceVersion":"1"},"data":{"k":null}}`))
	f.Add(uint8(1), uint8(2), uint8(2), uint8(0), "", []byte(`{"spec":{"replicas":3}}`))
	f.Add(uint8(1), uint8(0), uint8(2), uint8(1), "", []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"x"}]}}}}`))
	f.Add(uint8(2), uint8(0), uint8(3), uint8(0), "fieldManager=fz", []byte("apiVersion: v1\nkind: Service\nmetadata: {name: fz}\nspec:\n  ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]\n"))
	f.Add(uint8(0), uint8(0), uint8(3), uint8(2), "fieldManager=fz&force=true", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fz}\n"))
	f.Add(uint8(3), uint8(0), uint8(1), uint8(0), "dryRun=Maybe", []byte(`{"spec":{"nodeName":"n1"}}`))
	f.Add(uint8(0), uint8(0), uint8(0), uint8(0), "", []byte(`[{"op":"copy","from":"/data","path":"/data/a"},{"op":"copy","from":"/data","path":"/data/b"}]`))
	f.Add(uint8(6), uint8(1), uint8(1), uint8(0), "", []byte(`{"status":{"phase":"Terminating"}}`))
	f.Add(uint8(7), uint8(0), uint8(1), uint8(0), "", []byte(`{}`))
	f.Add(uint8(0), uint8(0), uint8(0), uint8(0), "", []byte(`[{"op":"replace","path":"","value":null},{"op":"move","path":"/a"}]`))
	f.Add(uint8(0), uint8(0), uint8(0), uint8(0), "", []byte(`[{"op":"add","path":"/metadata/labels","value":null}]`))
	f.Fuzz(func(t *testing.T, target, sub, patchType, user uint8, query string, body []byte) {
		ct := fuzzPatchTypes[int(patchType)%len(fuzzPatchTypes)]
		fuzzServe(t, srv, http.MethodPatch, pick(target, sub), "dryRun=All&"+query, ct, body, user)
	})
}

// FuzzPutHandler sends PUT requests with fuzzed bodies and query
// parameters, JSON or YAML, to objects and subresources.
func FuzzPutHandler(f *testing.F) {
	srv := startFuzzServer(f)
	f.Add(uint8(0), uint8(0), uint8(0), false, "", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fz"},"data":{"k":"w"}}`))
	f.Add(uint8(0), uint8(0), uint8(0), false, "fieldValidation=Loud", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fz","resourceVersion":"1"}}`))
	f.Add(uint8(1), uint8(2), uint8(0), false, "", []byte(`{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"fz"},"spec":{"replicas":-1}}`))
	f.Add(uint8(2), uint8(0), uint8(1), true, "", []byte("apiVersion: v1\nkind: Service\nmetadata: {name: fz}\nspec: {type: ExternalName, externalName: example.com}\n"))
	f.Add(uint8(6), uint8(2), uint8(0), false, "", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fz"},"spec":{"finalizers":[]}}`))
	f.Add(uint8(5), uint8(0), uint8(2), false, "", []byte(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"fz"},"roleRef":{"kind":"Role","name":"x"}}`))
	f.Fuzz(func(t *testing.T, target, sub, user uint8, yaml bool, query string, body []byte) {
		ct := "application/json"
		if yaml {
			ct = "application/yaml"
		}
		fuzzServe(t, srv, http.MethodPut, pick(target, sub), "dryRun=All&"+query, ct, body, user)
	})
}

// FuzzDeleteHandler sends DELETE requests, with DeleteOptions in the body
// or the query, to objects, subresources and collections. Every request
// is a dry run unless the fuzzed body says otherwise; a target that is
// gone answers 404, which is fine.
func FuzzDeleteHandler(f *testing.F) {
	srv := startFuzzServer(f)
	f.Add(uint8(0), uint8(0), uint8(0), "gracePeriodSeconds=0", []byte(`{"dryRun":["All"]}`))
	f.Add(uint8(1), uint8(2), uint8(0), "", []byte(`{"dryRun":["All"]}`))
	f.Add(uint8(3), uint8(1), uint8(1), "propagationPolicy=Sideways", []byte(""))
	f.Add(uint8(7), uint8(0), uint8(0), "labelSelector=a%3D%3D&limit=x", []byte(""))
	f.Add(uint8(6), uint8(0), uint8(0), "", []byte(`{"preconditions":{"uid":"nope"},"dryRun":["All"]}`))
	f.Add(uint8(0), uint8(0), uint8(2), "gracePeriodSeconds=-5", []byte(""))
	f.Fuzz(func(t *testing.T, target, sub, user uint8, query string, body []byte) {
		q := query
		if len(bytes.TrimSpace(body)) == 0 {
			q = "dryRun=All&" + query
		}
		fuzzServe(t, srv, http.MethodDelete, pick(target, sub), q, "application/json", body, user)
	})
}

// FuzzRequestURL sends any method, path and query (with a small body) as
// any of the fuzz users: routing, discovery, parameter decoding and
// authorization must answer below 500.
func FuzzRequestURL(f *testing.F) {
	srv := startFuzzServer(f)
	for _, s := range []struct {
		method, path, query string
	}{
		{"GET", "/api/v1/namespaces/default/configmaps", "limit=abc"},
		{"GET", "/api/v1/namespaces/default/configmaps", "watch=1&timeoutSeconds=x"},
		{"GET", "/api/v1/namespaces/default/configmaps/fz", "resourceVersion=9999999&timeout=1h"},
		{"GET", "/apis/apps/v1/namespaces/default/deployments/fz/scale", ""},
		{"GET", "/api/v1/namespaces/default/pods", "fieldSelector=spec.nodeName%3D%3Dx&labelSelector=%21a"},
		{"POST", "/api/v1/namespaces/default/configmaps/fz", ""},
		{"DELETE", "/api/v1/namespaces", ""},
		{"GET", "/apis", ""},
		{"GET", "/openapi/v3", ""},
		{"OPTIONS", "/api/v1/pods", ""},
		{"GET", "/api/v1/namespaces/%00/configmaps", "timeout=-1s"},
		{"GET", "/api/v1//namespaces///", "continue=%%"},
	} {
		f.Add(s.method, s.path, s.query, uint8(0), []byte(""))
	}
	f.Fuzz(func(t *testing.T, method, path, query string, user uint8, body []byte) {
		if !validMethod(method) {
			return
		}
		if method != http.MethodGet {
			query = "dryRun=All&" + query
		}
		fuzzServe(t, srv, method, "/"+strings.TrimLeft(path, "/"), query, "application/json", body, user)
	})
}

// validMethod keeps to what net/http would hand a handler.
func validMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

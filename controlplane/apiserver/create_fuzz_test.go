package apiserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http"
	"net/http/httptest"
	"testing"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// resourcePath is the collection URL a create of res in namespace ns goes to.
func resourcePath(res *Resource, ns string) string {
	p := "/api/" + res.Version
	if res.Group != "" {
		p = "/apis/" + res.Group + "/" + res.Version
	}
	if res.Namespaced {
		p += "/namespaces/" + ns
	}
	return p + "/" + res.Plural
}

// FuzzCreateHandler sends create requests with fuzzed bodies through the
// whole handler (routing, body limit, decoding, defaulting, validation)
// against real etcd, as dry runs so nothing piles up. The answer must be
// an API status below 500, never a panic. Run it with
//
//	go test ./controlplane/apiserver -run '^$' -fuzz FuzzCreateHandler -fuzztime 2m
func FuzzCreateHandler(f *testing.F) {
	srv, err := New(Options{Store: storage.New(etcdtest.Start(f)), ServiceCIDR: "10.96.0.0/16"})
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Bootstrap(context.Background()); err != nil {
		f.Fatal(err)
	}
	resources := srv.reg.all()
	admin := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}}}}}
	for _, s := range []struct {
		kind, body string
		mt         uint8
	}{
		{"ConfigMap", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}`, 1},
		{"ConfigMap", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"g-","namespace":"kube-system"}}`, 1},
		{"Pod", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}`, 1},
		{"Pod", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox, ports: [{containerPort: 80}]}]\n", 2},
		{"Service", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":80}],"clusterIP":"10.96.0.10"}}`, 1},
		{"Service", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":80}],"clusterIP":"1.2.3.4"}}`, 1},
		{"Deployment", `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`, 1},
		{"Namespace", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"Bad_Name"}}`, 1},
		{"Role", `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"r"},"rules":[{"verbs":["get"],"resources":["pods"],"apiGroups":[""]}]}`, 1},
		{"Lease", `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"l"},"spec":{"renewTime":"not-a-time"}}`, 1},
	} {
		f.Add(kindIndex(resources, s.kind), s.mt, "", false, []byte(s.body))
	}
	f.Add(kindIndex(resources, "ConfigMap"), uint8(255), "text/plain", true, []byte("x"))

	f.Fuzz(func(t *testing.T, kind uint8, mediaType uint8, contentType string, otherNamespace bool, body []byte) {
		res := resources[int(kind)%len(resources)]
		ns := "default"
		if otherNamespace {
			ns = "missing"
		}
		r := httptest.NewRequest(http.MethodPost, resourcePath(res, ns)+"?dryRun=All", bytes.NewReader(body))
		ct := contentType
		if int(mediaType) < len(fuzzMediaTypes) {
			ct = fuzzMediaTypes[mediaType]
		}
		r.Header.Set("Content-Type", ct)
		r.TLS = admin
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("POST %s (%s): %d %s", r.URL, ct, w.Code, w.Body.String())
		}
	})
}

package apiserver

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/openapi3"
)

// kubectl decides from these documents that the server validates fields
// (fieldValidation on each kind's PATCH), and explains kinds from them.
func TestOpenAPIV3AsKubectlReadsIt(t *testing.T) {
	e := startServer(t)
	root := openapi3.NewRoot(e.admin.Discovery().OpenAPIV3())
	gvs, err := root.GroupVersions()
	if err != nil {
		t.Fatal(err)
	}
	if len(gvs) < 5 {
		t.Fatalf("group versions %v", gvs)
	}
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "Pod"}, {Group: "apps", Version: "v1", Kind: "Deployment"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, {Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"},
	} {
		doc, err := root.GVSpec(gvk.GroupVersion())
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		found := false
		for _, p := range doc.Paths.Paths {
			if p == nil || p.Patch == nil {
				continue
			}
			ext := p.Patch.Extensions["x-kubernetes-group-version-kind"]
			m, ok := ext.(map[string]any)
			if !ok || m["kind"] != gvk.Kind || m["group"] != gvk.Group {
				continue
			}
			for _, param := range p.Patch.Parameters {
				found = found || param.Name == "fieldValidation" && param.In == "query"
			}
		}
		if !found {
			t.Errorf("%s: no PATCH operation with the fieldValidation query parameter", gvk)
		}
	}
	core, err := root.GVSpecAsMap(schema.GroupVersion{Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	schemas := core["components"].(map[string]any)["schemas"].(map[string]any)
	pod := schemas["io.k8s.api.core.v1.Pod"].(map[string]any)
	if pod["x-kubernetes-group-version-kind"] == nil || pod["description"] == "" {
		t.Fatalf("Pod schema lacks gvk or description: %v", pod["x-kubernetes-group-version-kind"])
	}
	spec := schemas["io.k8s.api.core.v1.PodSpec"].(map[string]any)
	containers := spec["properties"].(map[string]any)["containers"].(map[string]any)
	if containers["x-kubernetes-list-type"] != "map" || containers["x-kubernetes-patch-merge-key"] != "name" {
		t.Fatalf("containers extensions: %v", containers)
	}
	if _, ok := schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]; !ok {
		t.Fatal("ObjectMeta not defined")
	}
}

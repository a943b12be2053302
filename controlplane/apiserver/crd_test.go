package apiserver

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

func (e *env) restConfig(t *testing.T, cn string, orgs ...string) *rest.Config {
	c, k := e.ca.issue(t, cn, orgs, false)
	return &rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem, CertData: c, KeyData: k}}
}

// cronTabCRD is upstream's example definition: a schema with a pattern, a
// minimum, a default, status and scale subresources, printer columns.
func cronTabCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "crontabs.stable.example.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "stable.example.com", Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "crontabs", Singular: "crontab", Kind: "CronTab",
				ShortNames: []string{"ct"}, Categories: []string{"all"}},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"cronSpec": {Type: "string", Pattern: `^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$`},
							"image":    {Type: "string"},
							"replicas": {Type: "integer", Minimum: ptr(1.0), Maximum: ptr(10.0), Default: &apiextensionsv1.JSON{Raw: []byte("1")}},
						}},
						"status": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"replicas": {Type: "integer"},
						}},
					},
				}},
				Subresources: &apiextensionsv1.CustomResourceSubresources{
					Status: &apiextensionsv1.CustomResourceSubresourceStatus{},
					Scale:  &apiextensionsv1.CustomResourceSubresourceScale{SpecReplicasPath: ".spec.replicas", StatusReplicasPath: ".status.replicas"},
				},
				AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
					{Name: "Spec", Type: "string", JSONPath: ".spec.cronSpec"},
					{Name: "Replicas", Type: "integer", JSONPath: ".spec.replicas"},
					{Name: "Age", Type: "date", JSONPath: ".metadata.creationTimestamp"},
				},
			}},
		},
	}
}

var cronTabGVR = schema.GroupVersionResource{Group: "stable.example.com", Version: "v1", Resource: "crontabs"}

func TestCustomResourceLifecycle(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cfg := e.restConfig(t, "admin", "system:masters")
	ext := apiextclient.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)

	crd, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, cronTabCRD(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !crdEstablished(crd) || crd.Status.AcceptedNames.Kind != "CronTab" || len(crd.Status.StoredVersions) != 1 {
		t.Fatalf("created definition not established: %+v", crd.Status)
	}
	if len(crd.Finalizers) != 1 || crd.Finalizers[0] != crdCleanupFinalizer {
		t.Fatalf("finalizers %v", crd.Finalizers)
	}

	// Discovery lists it with its names and subresources.
	rl, err := e.admin.Discovery().ServerResourcesForGroupVersion("stable.example.com/v1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rl.APIResources {
		got = append(got, r.Name)
		if r.Name == "crontabs" && (r.Kind != "CronTab" || !r.Namespaced || len(r.ShortNames) != 1 || r.ShortNames[0] != "ct") {
			t.Errorf("discovery: %+v", r)
		}
	}
	if strings.Join(got, ",") != "crontabs,crontabs/status,crontabs/scale" {
		t.Errorf("discovery resources %v", got)
	}

	crs := dyn.Resource(cronTabGVR).Namespace("default")
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "stable.example.com/v1", "kind": "CronTab",
		"metadata": map[string]any{"name": "one"},
		"spec":     map[string]any{"cronSpec": "* * * * */5", "image": "busybox", "unknown": "pruned"},
		"status":   map[string]any{"replicas": int64(7)},
	}}
	// Unknown fields: Strict refuses them, Warn (the default) prunes them
	// with a warning.
	_, err = crs.Create(ctx, obj, metav1.CreateOptions{FieldValidation: "Strict"})
	if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), `unknown field "spec.unknown"`) {
		t.Fatalf("strict create with an unknown field: %v", err)
	}
	created, err := crs.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(created.Object, "spec", "unknown"); found {
		t.Errorf("unknown field kept: %v", created.Object["spec"])
	}
	if n, _, _ := unstructured.NestedInt64(created.Object, "spec", "replicas"); n != 1 {
		t.Errorf("replicas not defaulted: %v", created.Object["spec"])
	}
	if created.GetGeneration() != 1 || created.GetUID() == "" {
		t.Errorf("generation %d uid %q", created.GetGeneration(), created.GetUID())
	}

	// Schema violations are 422 with upstream's field paths.
	bad := obj.DeepCopy()
	bad.SetName("bad")
	_ = unstructured.SetNestedField(bad.Object, "not a schedule", "spec", "cronSpec")
	_ = unstructured.SetNestedField(bad.Object, int64(20), "spec", "replicas")
	_, err = crs.Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.cronSpec") || !strings.Contains(err.Error(), "spec.replicas") {
		t.Fatalf("invalid object: %v", err)
	}

	// Status: the main resource keeps the stored one; /status changes it alone.
	cur, _ := crs.Get(ctx, "one", metav1.GetOptions{})
	_ = unstructured.SetNestedField(cur.Object, "0 * * * *", "spec", "cronSpec")
	_ = unstructured.SetNestedField(cur.Object, int64(3), "status", "replicas")
	upd, err := crs.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := unstructured.NestedInt64(upd.Object, "status", "replicas"); found || upd.GetGeneration() != 2 {
		t.Errorf("update: status %v generation %d", upd.Object["status"], upd.GetGeneration())
	}
	_ = unstructured.SetNestedField(upd.Object, int64(2), "status", "replicas")
	st, err := crs.UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, _, _ := unstructured.NestedInt64(st.Object, "status", "replicas"); n != 2 || st.GetGeneration() != 2 {
		t.Errorf("status update: %v generation %d", st.Object["status"], st.GetGeneration())
	}

	// Scale reads and writes the paths the definition names.
	sc, err := crs.Get(ctx, "one", metav1.GetOptions{}, "scale")
	if err != nil {
		t.Fatal(err)
	}
	if sc.GetKind() != "Scale" || sc.Object["status"].(map[string]any)["replicas"] != int64(2) {
		t.Errorf("scale %v", sc.Object)
	}
	if _, err := crs.Patch(ctx, "one", types.MergePatchType, []byte(`{"spec":{"replicas":4}}`), metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatal(err)
	}
	cur, _ = crs.Get(ctx, "one", metav1.GetOptions{})
	if n, _, _ := unstructured.NestedInt64(cur.Object, "spec", "replicas"); n != 4 {
		t.Errorf("scale patch: %v", cur.Object["spec"])
	}

	// Merge patch works; strategic merge is a 415, as upstream.
	if _, err := crs.Patch(ctx, "one", types.MergePatchType, []byte(`{"spec":{"image":"nginx"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = crs.Patch(ctx, "one", types.StrategicMergePatchType, []byte(`{"spec":{"image":"x"}}`), metav1.PatchOptions{})
	if !apierrors.IsUnsupportedMediaType(err) {
		t.Errorf("strategic merge patch: %v", err)
	}

	// Server-side apply creates and updates, with managed fields.
	applied := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "stable.example.com/v1", "kind": "CronTab",
		"metadata": map[string]any{"name": "two", "labels": map[string]any{"app": "x"}},
		"spec":     map[string]any{"cronSpec": "*/5 * * * *"},
	}}
	two, err := crs.Apply(ctx, "two", applied, metav1.ApplyOptions{FieldManager: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(two.GetManagedFields()) == 0 {
		t.Error("apply: no managed fields")
	}

	// Field selectors on name, label selectors.
	l, err := crs.List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=two"})
	if err != nil || len(l.Items) != 1 || l.Items[0].GetName() != "two" {
		t.Fatalf("field selector: %v %v", l, err)
	}
	if _, err := crs.List(ctx, metav1.ListOptions{FieldSelector: "spec.image=x"}); !apierrors.IsBadRequest(err) {
		t.Errorf("unknown field selector: %v", err)
	}
	l, err = dyn.Resource(cronTabGVR).List(ctx, metav1.ListOptions{LabelSelector: "app=x"})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("label selector across namespaces: %v %v", l, err)
	}

	// Table output has the printer columns.
	hc := e.httpClient(t, "admin", "system:masters")
	req, _ := http.NewRequest(http.MethodGet, e.host+"/apis/stable.example.com/v1/namespaces/default/crontabs", nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range table.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	if strings.Join(cols, ",") != "Name,Spec,Replicas,Age" || len(table.Rows) != 2 {
		t.Fatalf("table: %s", body)
	}
	if table.Rows[0].Cells[1] != "0 * * * *" || table.Rows[0].Cells[2] != float64(4) {
		t.Errorf("table row: %v", table.Rows[0].Cells)
	}

	// OpenAPI v3 and v2 describe the kind from its schema.
	doc, err := e.admin.Discovery().OpenAPIV3().Paths()
	if err != nil {
		t.Fatal(err)
	}
	gvDoc, ok := doc["apis/stable.example.com/v1"]
	if !ok {
		t.Fatalf("no OpenAPI v3 document for stable.example.com/v1 in %v", doc)
	}
	v3, err := gvDoc.Schema("application/json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(v3), `"com.example.stable.v1.CronTab"`) || !strings.Contains(string(v3), `"cronSpec"`) ||
		!strings.Contains(string(v3), `"fieldValidation"`) {
		t.Errorf("OpenAPI v3 document: %.500s", v3)
	}
	v2, err := e.admin.Discovery().OpenAPISchema() // protobuf
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range v2.GetDefinitions().GetAdditionalProperties() {
		if d.GetName() == "com.example.stable.v1.CronTab" {
			for _, p := range d.GetValue().GetProperties().GetAdditionalProperties() {
				found = found || p.GetName() == "spec"
			}
		}
	}
	if !found {
		t.Error("OpenAPI v2 has no CronTab with its spec")
	}

	// A watch sees changes as unstructured objects.
	w, err := crs.Watch(ctx, metav1.ListOptions{ResourceVersion: cur.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	if err := crs.Delete(ctx, "two", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if u, ok := ev.Object.(*unstructured.Unstructured); !ok || ev.Type != "MODIFIED" && ev.Type != "DELETED" || u.GetKind() != "CronTab" {
			t.Errorf("watch event %s %T", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event")
	}
	w.Stop()

	// Deleting the definition deletes its objects, then the definition,
	// and its resources leave discovery.
	if err := ext.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, crd.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatal("the definition was not deleted:", err)
	}
	if res, err := e.srv.store.List(ctx, "/registry/stable.example.com/crontabs/", storageListAll); err != nil || len(res.Items) != 0 {
		t.Errorf("objects left: %v %v", res.Items, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.admin.Discovery().ServerResourcesForGroupVersion("stable.example.com/v1")
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Error("still in discovery:", err)
	}
}

func TestCustomResourceDefinitionValidation(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	ext := apiextclient.NewForConfigOrDie(e.restConfig(t, "admin", "system:masters"))
	crds := ext.ApiextensionsV1().CustomResourceDefinitions()
	for name, change := range map[string]func(*apiextensionsv1.CustomResourceDefinition){
		"name not plural.group": func(c *apiextensionsv1.CustomResourceDefinition) { c.Name = "other.stable.example.com" },
		"two storage versions": func(c *apiextensionsv1.CustomResourceDefinition) {
			v := c.Spec.Versions[0]
			v.Name = "v2"
			c.Spec.Versions = append(c.Spec.Versions, v)
		},
		"not structural": func(c *apiextensionsv1.CustomResourceDefinition) {
			c.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = apiextensionsv1.JSONSchemaProps{}
		},
		"default against its schema": func(c *apiextensionsv1.CustomResourceDefinition) {
			p := c.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
			r := p.Properties["replicas"]
			r.Default = &apiextensionsv1.JSON{Raw: []byte("100")}
			p.Properties["replicas"] = r
		},
	} {
		c := cronTabCRD()
		change(c)
		if _, err := crds.Create(ctx, c, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A definition whose kind another one in the group already has is
	// stored but not accepted, and serves nothing.
	if _, err := crds.Create(ctx, cronTabCRD(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	twin := cronTabCRD()
	twin.Name, twin.Spec.Names.Plural, twin.Spec.Names.Singular, twin.Spec.Names.ShortNames = "crontabz.stable.example.com", "crontabz", "crontabz", nil
	got, err := crds.Create(ctx, twin, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if crdEstablished(got) {
		t.Errorf("conflicting kind established: %+v", got.Status.Conditions)
	}
	if e.srv.reg.Lookup("stable.example.com", "v1", "crontabz") != nil {
		t.Error("conflicting definition served")
	}
}

package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// webManifest is a Deployment and a Service named web in ns, as a user
// writes them.
func webManifest(ns string, replicas int, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: %[1]s
  labels: {app: web}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: %[3]s
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: %[1]s
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
`, ns, replicas, image)
}

// table splits kubectl's table output into lines of fields.
func table(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			rows = append(rows, strings.Fields(l))
		}
	}
	return rows
}

// wantHeader checks the first line's columns.
func wantHeader(t *testing.T, out string, cols ...string) {
	t.Helper()
	rows := table(out)
	if len(rows) == 0 || strings.Join(rows[0], " ") != strings.Join(cols, " ") {
		t.Errorf("header: got\n%s\nwant columns %q", out, cols)
	}
}

// row returns the line whose column col is name, or fails.
func row(t *testing.T, out string, col int, name string) []string {
	t.Helper()
	for _, r := range table(out) {
		if len(r) > col && r[col] == name {
			return r
		}
	}
	t.Fatalf("no row with %q in column %d:\n%s", name, col, out)
	return nil
}

// names returns the first column of every line but the header, sorted as printed.
func names(out string) []string {
	var n []string
	for i, r := range table(out) {
		if i > 0 {
			n = append(n, r[0])
		}
	}
	return n
}

func wantOut(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

func wantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: %q does not contain %q", what, got, w)
		}
	}
}

func TestVersion(t *testing.T) {
	c := setup(t)
	out := c.ok(t, "version")
	wantContains(t, "kubectl version", out, "Client Version: v1.37.2\n", "Server Version: v1.37.")
}

func TestApplyMultiDocument(t *testing.T) {
	c := setup(t)
	ns := "apply-multi"
	manifest := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + ns + "\n---\n" + webManifest(ns, 2, "nginx:1.27")

	wantOut(t, "first apply", c.apply(t, manifest),
		"namespace/"+ns+" created\ndeployment.apps/web created\nservice/web created\n")
	wantOut(t, "second apply", c.apply(t, manifest),
		"namespace/"+ns+" unchanged\ndeployment.apps/web unchanged\nservice/web unchanged\n")
	changed := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + ns + "\n---\n" + webManifest(ns, 3, "nginx:1.28")
	wantOut(t, "changed apply", c.apply(t, changed),
		"namespace/"+ns+" unchanged\ndeployment.apps/web configured\nservice/web unchanged\n")
	wantOut(t, "replicas and image", c.ok(t, "get", "deployment", "web", "-n", ns, "-o",
		"jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"), "3 nginx:1.28")

	// A field removed from the manifest is removed from the object (the
	// last-applied annotation at work).
	labelled := strings.Replace(changed, "  labels: {app: web}\nspec:\n  replicas: 3", "  labels: {app: web, tier: front}\nspec:\n  replicas: 3", 1)
	c.apply(t, labelled)
	wantOut(t, "label added", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.metadata.labels.tier}"), "front")
	c.apply(t, changed)
	wantOut(t, "label removed", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.metadata.labels}"), `{"app":"web"}`)
}

func TestGetOutputs(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.apply(t, webManifest(ns, 2, "nginx:1.27"))

	out := c.ok(t, "get", "deployments", "-n", ns)
	wantHeader(t, out, "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE")
	if r := row(t, out, 0, "web"); len(r) != 5 || r[1] != "0/2" {
		t.Errorf("deployment row %q; want web 0/2 0 0 AGE", r)
	}

	out = c.ok(t, "get", "deployments", "-n", ns, "-o", "wide")
	wantHeader(t, out, "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR")
	if r := row(t, out, 0, "web"); len(r) != 8 || strings.Join(r[5:], " ") != "nginx nginx:1.27 app=web" {
		t.Errorf("wide deployment row %q; want ... nginx nginx:1.27 app=web", r)
	}

	out = c.ok(t, "get", "services", "-n", ns, "-o", "wide")
	wantHeader(t, out, "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR")
	r := row(t, out, 0, "web")
	if len(r) != 7 || r[1] != "ClusterIP" || !strings.HasPrefix(r[2], "10.96.") || r[3] != "<none>" || r[4] != "80/TCP" || r[6] != "app=web" {
		t.Errorf("wide service row %q; want web ClusterIP 10.96.x.y <none> 80/TCP AGE app=web", r)
	}

	// Two kinds at once: one table per kind, rows named kind/name.
	out = c.ok(t, "get", "deployments,services", "-n", ns)
	wantContains(t, "get deployments,services", out, "deployment.apps/web", "service/web")

	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name, Namespace, UID, ResourceVersion string
		} `json:"metadata"`
		Spec struct {
			Replicas int `json:"replicas"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "json")), &obj); err != nil {
		t.Fatalf("-o json: %v", err)
	}
	if obj.APIVersion != "apps/v1" || obj.Kind != "Deployment" || obj.Metadata.Name != "web" ||
		obj.Metadata.Namespace != ns || obj.Metadata.UID == "" || obj.Metadata.ResourceVersion == "" || obj.Spec.Replicas != 2 {
		t.Errorf("-o json decoded to %+v", obj)
	}
	var list struct {
		Kind  string `json:"kind"`
		Items []struct {
			Kind string `json:"kind"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok(t, "get", "deployments,services", "-n", ns, "-o", "json")), &list); err != nil {
		t.Fatalf("-o json of two kinds: %v", err)
	}
	if list.Kind != "List" || len(list.Items) != 2 || list.Items[0].Kind != "Deployment" || list.Items[1].Kind != "Service" {
		t.Errorf("-o json of two kinds decoded to %+v", list)
	}

	wantOut(t, "jsonpath", c.ok(t, "get", "deployment", "web", "-n", ns, "-o",
		"jsonpath={.spec.template.spec.containers[0].image}"), "nginx:1.27")
	wantOut(t, "jsonpath range", c.ok(t, "get", "deployments,services", "-n", ns, "-o",
		`jsonpath={range .items[*]}{.kind}/{.metadata.name}{"\n"}{end}`), "Deployment/web\nService/web\n")
	wantOut(t, "-o name", c.ok(t, "get", "deployments,services", "-n", ns, "-o", "name"), "deployment.apps/web\nservice/web\n")
	out = c.ok(t, "get", "deployments", "-n", ns, "-o", "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas")
	wantOut(t, "custom-columns", strings.Join(strings.Fields(out), " "), "NAME REPLICAS web 2")
	wantContains(t, "-o yaml", c.ok(t, "get", "service", "web", "-n", ns, "-o", "yaml"),
		"apiVersion: v1\nkind: Service\n", "  name: web\n", "  type: ClusterIP\n")

	r2 := c.run(t, "", "get", "deployment", "nope", "-n", ns)
	if r2.Code != 1 || r2.Err != `Error from server (NotFound): deployments.apps "nope" not found`+"\n" {
		t.Errorf("get of a missing object: %s", r2)
	}
}

func TestAllNamespaces(t *testing.T) {
	c := setup(t)
	base := c.namespace(t)
	ns1, ns2 := base+"-a", base+"-b"
	for _, ns := range []string{ns1, ns2} {
		wantOut(t, "create namespace", c.ok(t, "create", "namespace", ns), "namespace/"+ns+" created\n")
		wantOut(t, "create configmap", c.ok(t, "create", "configmap", "shared", "-n", ns, "--from-literal=k=v"), "configmap/shared created\n")
	}
	c.apply(t, webManifest(ns1, 1, "nginx:1.27"))

	out := c.ok(t, "get", "configmaps", "-A", "--field-selector", "metadata.name=shared")
	wantHeader(t, out, "NAMESPACE", "NAME", "DATA", "AGE")
	for _, ns := range []string{ns1, ns2} {
		if r := row(t, out, 0, ns); len(r) != 4 || r[1] != "shared" || r[2] != "1" {
			t.Errorf("row for %s: %q", ns, r)
		}
	}

	out = c.ok(t, "get", "deployments", "--all-namespaces", "-o", "wide")
	wantHeader(t, out, "NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR")
	row(t, out, 0, ns1)

	out = c.ok(t, "get", "all", "-A")
	var dep, svc bool
	for _, r := range table(out) {
		if len(r) > 1 && r[0] == ns1 {
			dep = dep || r[1] == "deployment.apps/web"
			svc = svc || r[1] == "service/web"
		}
	}
	if !dep || !svc {
		t.Errorf("get all -A lacks %s's deployment.apps/web or service/web:\n%s", ns1, out)
	}

	out = c.ok(t, "get", "namespaces")
	wantHeader(t, out, "NAME", "STATUS", "AGE")
	if r := row(t, out, 0, ns2); r[1] != "Active" {
		t.Errorf("namespace row %q; want Active", r)
	}
}

// TestDefaultKubernetesService: upstream's apiserver keeps a Service
// "kubernetes" in default at the first address of the service CIDR.
func TestDefaultKubernetesService(t *testing.T) {
	c := setup(t)
	out := c.ok(t, "get", "service", "kubernetes", "-n", "default")
	if r := row(t, out, 0, "kubernetes"); len(r) != 6 || strings.Join(r[1:5], " ") != "ClusterIP 10.96.0.1 <none> 443/TCP" {
		t.Errorf("kubernetes service row %q; want kubernetes ClusterIP 10.96.0.1 <none> 443/TCP AGE", r)
	}
}

func TestLabelAndAnnotate(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.ok(t, "create", "configmap", "lab", "-n", ns)

	wantOut(t, "label", c.ok(t, "label", "configmap", "lab", "-n", ns, "env=prod", "team=a"), "configmap/lab labeled\n")
	out := c.ok(t, "get", "configmap", "lab", "-n", ns, "--show-labels")
	wantHeader(t, out, "NAME", "DATA", "AGE", "LABELS")
	if r := row(t, out, 0, "lab"); r[len(r)-1] != "env=prod,team=a" {
		t.Errorf("--show-labels row %q; want env=prod,team=a last", r)
	}
	out = c.ok(t, "get", "configmaps", "-n", ns, "-L", "env")
	wantHeader(t, out, "NAME", "DATA", "AGE", "ENV")
	if r := row(t, out, 0, "lab"); r[len(r)-1] != "prod" {
		t.Errorf("-L env row %q; want prod last", r)
	}

	r := c.run(t, "", "label", "configmap", "lab", "-n", ns, "env=dev")
	if r.Code != 1 || r.Err != "error: 'env' already has a value (prod), and --overwrite is false\n" {
		t.Errorf("label without --overwrite: %s", r)
	}
	wantOut(t, "label --overwrite", c.ok(t, "label", "configmap", "lab", "-n", ns, "env=dev", "--overwrite"), "configmap/lab labeled\n")
	wantOut(t, "unlabel", c.ok(t, "label", "configmap", "lab", "-n", ns, "team-"), "configmap/lab unlabeled\n")
	wantOut(t, "labels", c.ok(t, "get", "configmap", "lab", "-n", ns, "-o", "jsonpath={.metadata.labels}"), `{"env":"dev"}`)

	wantOut(t, "annotate", c.ok(t, "annotate", "configmap", "lab", "-n", ns, "note=hello world"), "configmap/lab annotated\n")
	r = c.run(t, "", "annotate", "configmap", "lab", "-n", ns, "note=bye")
	if r.Code != 1 || r.Err != "error: --overwrite is false but found the following declared annotation(s): 'note' already has a value (hello world)\n" {
		t.Errorf("annotate without --overwrite: %s", r)
	}
	wantOut(t, "annotate --overwrite", c.ok(t, "annotate", "configmap", "lab", "-n", ns, "note=bye", "--overwrite"), "configmap/lab annotated\n")
	wantOut(t, "annotation", c.ok(t, "get", "configmap", "lab", "-n", ns, "-o", "jsonpath={.metadata.annotations.note}"), "bye")
	wantOut(t, "unannotate", c.ok(t, "annotate", "configmap", "lab", "-n", ns, "note-"), "configmap/lab annotated\n")
	wantOut(t, "annotations", c.ok(t, "get", "configmap", "lab", "-n", ns, "-o", "jsonpath={.metadata.annotations}"), "")
}

func TestSelectors(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	for name, labels := range map[string]string{"a": "app=a,tier=x", "b": "app=b,tier=y", "c": "app=a"} {
		c.ok(t, "create", "configmap", name, "-n", ns)
		c.ok(t, append([]string{"label", "configmap", name, "-n", ns}, strings.Split(labels, ",")...)...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-l", "app=a"}, "a c"},
		{[]string{"-l", "app=a,tier=x"}, "a"},
		{[]string{"-l", "app!=a"}, "b kube-root-ca.crt"},
		{[]string{"-l", "tier in (x,y)"}, "a b"},
		{[]string{"-l", "!tier"}, "c kube-root-ca.crt"},
		{[]string{"-l", "tier"}, "a b"},
		{[]string{"--field-selector", "metadata.name=b"}, "b"},
		{[]string{"--field-selector", "metadata.name!=b", "-l", "app=a"}, "a c"},
		{[]string{"--field-selector", "metadata.namespace=" + ns, "-l", "app"}, "a b c"},
	} {
		out := c.ok(t, append([]string{"get", "configmaps", "-n", ns}, tc.args...)...)
		wantOut(t, strings.Join(tc.args, " "), strings.Join(names(out), " "), tc.want)
	}
	r := c.run(t, "", "get", "configmaps", "-n", ns, "-l", "app=zzz")
	if r.Code != 0 || r.Out != "" || r.Err != "No resources found in "+ns+" namespace.\n" {
		t.Errorf("no match: %s", r)
	}
	r = c.run(t, "", "get", "configmaps", "-n", ns, "--field-selector", "data.k=v")
	if r.Code != 1 || !strings.Contains(r.Err, "field label not supported: data.k") {
		t.Errorf("unsupported field selector: %s", r)
	}
	out := c.ok(t, "delete", "configmaps", "-n", ns, "-l", "app=a")
	wantOut(t, "delete -l", out, `configmap "a" deleted from `+ns+" namespace\n"+`configmap "c" deleted from `+ns+" namespace\n")
	wantOut(t, "left", strings.Join(names(c.ok(t, "get", "configmaps", "-n", ns, "-l", "app")), " "), "b")
}

func TestScale(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.apply(t, webManifest(ns, 2, "nginx:1.27"))
	wantOut(t, "scale", c.ok(t, "scale", "deployment/web", "-n", ns, "--replicas=3"), "deployment.apps/web scaled\n")
	wantOut(t, "replicas", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}"), "3")
	r := c.run(t, "", "scale", "deployment", "web", "-n", ns, "--current-replicas=2", "--replicas=5")
	if r.Code != 1 || r.Err != "error: Expected replicas to be 2, was 3\n" {
		t.Errorf("scale with a wrong --current-replicas: %s", r)
	}
	wantOut(t, "scale --current-replicas", c.ok(t, "scale", "deployment", "web", "-n", ns, "--current-replicas=3", "--replicas=0"), "deployment.apps/web scaled\n")
	wantOut(t, "replicas", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}"), "0")
	// The scale subresource, read directly.
	wantContains(t, "scale subresource", c.ok(t, "get", "--raw", "/apis/apps/v1/namespaces/"+ns+"/deployments/web/scale"),
		`"kind":"Scale"`, `"replicas":0`)
}

func TestSetImage(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.apply(t, webManifest(ns, 1, "nginx:1.27"))
	wantOut(t, "set image", c.ok(t, "set", "image", "deployment/web", "-n", ns, "nginx=nginx:1.28"), "deployment.apps/web image updated\n")
	wantOut(t, "image", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}"), "nginx:1.28")
	out := c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "wide")
	if r := row(t, out, 0, "web"); r[6] != "nginx:1.28" {
		t.Errorf("wide row %q; want IMAGES nginx:1.28", r)
	}
	r := c.run(t, "", "set", "image", "deployment/web", "-n", ns, "nosuch=nginx:1.28")
	if r.Code != 1 || !strings.Contains(r.Err, `unable to find container named "nosuch"`) {
		t.Errorf("set image of a missing container: %s", r)
	}
}

func TestRolloutRestart(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.apply(t, webManifest(ns, 1, "nginx:1.27"))
	gen := c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.metadata.generation}")
	wantOut(t, "rollout restart", c.ok(t, "rollout", "restart", "deployment/web", "-n", ns), "deployment.apps/web restarted\n")
	at := c.ok(t, "get", "deployment", "web", "-n", ns, "-o", `jsonpath={.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}`)
	if _, err := time.Parse(time.RFC3339, at); err != nil {
		t.Errorf("restartedAt annotation %q: %v", at, err)
	}
	if gen2 := c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.metadata.generation}"); gen2 == gen {
		t.Errorf("generation stayed %s after a template change", gen)
	}
}

func TestPatch(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.apply(t, webManifest(ns, 1, "nginx:1.27"))
	get := func(path string) string {
		return c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath="+path)
	}

	// Strategic: containers merge by name, so the port stays and a second
	// container is added.
	wantOut(t, "strategic patch", c.ok(t, "patch", "deployment", "web", "-n", ns, "-p",
		`{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"},{"name":"sidecar","image":"busybox"}]}}}}`),
		"deployment.apps/web patched\n")
	wantOut(t, "after strategic patch", get(`{range .spec.template.spec.containers[*]}{.name}={.image}:{.ports[0].containerPort} {end}`),
		"nginx=nginx:1.28:80 sidecar=busybox: ")
	wantOut(t, "same patch again", c.ok(t, "patch", "deployment", "web", "-n", ns, "-p",
		`{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}`),
		"deployment.apps/web patched (no change)\n")
	// $patch: delete removes one list element.
	c.ok(t, "patch", "deployment", "web", "-n", ns, "--type=strategic", "-p",
		`{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}`)
	wantOut(t, "after $patch: delete", get(`{.spec.template.spec.containers[*].name}`), "nginx")

	// Merge: a list is replaced whole, null deletes a key.
	wantOut(t, "merge patch", c.ok(t, "patch", "deployment", "web", "-n", ns, "--type=merge", "-p",
		`{"metadata":{"labels":{"tier":"front","app":null}},"spec":{"template":{"spec":{"containers":[{"name":"only","image":"busybox"}]}}}}`),
		"deployment.apps/web patched\n")
	wantOut(t, "labels after merge patch", get(`{.metadata.labels}`), `{"tier":"front"}`)
	wantOut(t, "containers after merge patch", get(`{range .spec.template.spec.containers[*]}{.name}={.image}:{.ports[0].containerPort}{end}`),
		"only=busybox:")

	// JSON patch: test, replace, add.
	wantOut(t, "json patch", c.ok(t, "patch", "deployment", "web", "-n", ns, "--type=json", "-p",
		`[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":4},{"op":"add","path":"/metadata/labels/env","value":"prod"}]`),
		"deployment.apps/web patched\n")
	wantOut(t, "after json patch", get(`{.spec.replicas} {.metadata.labels.env}`), "4 prod")
	r := c.run(t, "", "patch", "deployment", "web", "-n", ns, "--type=json", "-p", `[{"op":"test","path":"/spec/replicas","value":1}]`)
	// Upstream answers a failed test op with a 422 whose message is
	// generic (the patch library's words go in the causes); kubectl
	// prints that message.
	if r.Code != 1 || !strings.Contains(r.Err, "The request is invalid") {
		t.Errorf("failing json patch test op: %s", r)
	}

	// A patch that makes the object invalid is refused with the field.
	r = c.run(t, "", "patch", "deployment", "web", "-n", ns, "--type=merge", "-p", `{"spec":{"replicas":-1}}`)
	if r.Code != 1 || r.Err != `The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0`+"\n" {
		t.Errorf("invalid patch: %s", r)
	}
	// A patch of a missing object.
	r = c.run(t, "", "patch", "deployment", "nope", "-n", ns, "-p", `{"spec":{"replicas":1}}`)
	if r.Code != 1 || r.Err != `Error from server (NotFound): deployments.apps "nope" not found`+"\n" {
		t.Errorf("patch of a missing object: %s", r)
	}
}

func TestCreateConflict(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	r := c.run(t, "", "create", "namespace", ns)
	if r.Code != 1 || r.Err != `Error from server (AlreadyExists): namespaces "`+ns+`" already exists`+"\n" {
		t.Errorf("second create namespace: %s", r)
	}
	c.ok(t, "create", "configmap", "one", "-n", ns)
	r = c.run(t, "", "create", "configmap", "one", "-n", ns)
	if r.Code != 1 || r.Err != `error: failed to create configmap: configmaps "one" already exists`+"\n" {
		t.Errorf("second create configmap: %s", r)
	}
	manifest := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n  namespace: " + ns + "\n"
	r = c.run(t, manifest, "create", "-f", "-")
	if r.Code != 1 || r.Err != `Error from server (AlreadyExists): error when creating "STDIN": configmaps "one" already exists`+"\n" {
		t.Errorf("create -f of an existing object: %s", r)
	}
}

func TestUnknownFieldsRejected(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	typo := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: " + ns + "\ndta:\n  a: b\n"
	r := c.run(t, typo, "apply", "-f", "-")
	if r.Code != 1 || !strings.Contains(r.Err, `strict decoding error: unknown field "dta"`) {
		t.Errorf("apply with an unknown top-level field: %s", r)
	}
	nested := strings.Replace(webManifest(ns, 1, "nginx:1.27"), "        image: nginx:1.27", "        imagee: nginx:1.27", 1)
	r = c.run(t, nested, "apply", "-f", "-")
	if r.Code != 1 || !strings.Contains(r.Err, `unknown field "spec.template.spec.containers[0].imagee"`) {
		t.Errorf("apply with an unknown nested field: %s", r)
	}
	r = c.run(t, typo, "create", "-f", "-")
	if r.Code != 1 || !strings.Contains(r.Err, `strict decoding error: unknown field "dta"`) {
		t.Errorf("create with an unknown field: %s", r)
	}
	r = c.run(t, "", "get", "configmap", "typo", "-n", ns)
	if r.Code != 1 || !strings.Contains(r.Err, "NotFound") {
		t.Errorf("the rejected object exists: %s", r)
	}
	// The service in the nested manifest went through: kubectl applies
	// document by document.
	c.ok(t, "get", "service", "web", "-n", ns)
	// kubectl patch sends no fieldValidation, so the server's default
	// (Warn) applies: the patch goes through and the unknown field comes
	// back as a Warning header, which kubectl prints.
	c.ok(t, "create", "configmap", "p", "-n", ns)
	r = c.run(t, "", "patch", "configmap", "p", "-n", ns, "--type=merge", "-p", `{"dta":{"a":"b"}}`)
	if r.Code != 0 || !strings.Contains(r.Err, `Warning: unknown field "dta"`) {
		t.Errorf("patch with an unknown field: %s; want success with a warning", r)
	}
}

func TestInvalidNamesRejected(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	r := c.run(t, "", "create", "configmap", "Bad_Name", "-n", ns)
	if r.Code != 1 || !strings.HasPrefix(r.Err, `error: failed to create configmap: ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`) {
		t.Errorf("create configmap Bad_Name: %s", r)
	}
	r = c.run(t, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: has.dot\n", "apply", "-f", "-")
	if r.Code != 1 || !strings.Contains(r.Err, `The Namespace "has.dot" is invalid: metadata.name: Invalid value: "has.dot": must not contain dots`) {
		t.Errorf("apply of namespace has.dot: %s", r)
	}
	r = c.run(t, "", "create", "deployment", "Bad", "--image=nginx", "-n", ns)
	if r.Code != 1 || !strings.HasPrefix(r.Err, `error: failed to create deployment: Deployment.apps "Bad" is invalid: metadata.name: Invalid value: "Bad": a lowercase RFC 1123 subdomain`) {
		t.Errorf("create deployment Bad: %s", r)
	}
	long := strings.Repeat("a", 64)
	r = c.run(t, "", "create", "service", "clusterip", long, "--tcp=80:80", "-n", ns)
	if r.Code != 1 || !strings.Contains(r.Err, `metadata.name: Invalid value: "`+long+`": must be no more than 63 characters`) {
		t.Errorf("create service with a 64-character name: %s", r)
	}
	// Only the root-ca-cert-publisher's ConfigMap, which every namespace has.
	r = c.run(t, "", "get", "configmaps", "-n", ns, "-o", "name")
	if r.Out != "configmap/kube-root-ca.crt\n" {
		t.Errorf("something was created: %s", r)
	}
}

func TestExplain(t *testing.T) {
	c := setup(t)
	out := c.ok(t, "explain", "deployment.spec.strategy")
	wantContains(t, "explain deployment.spec.strategy", out,
		"GROUP:      apps\n", "KIND:       Deployment\n", "VERSION:    v1\n",
		"FIELD: strategy <DeploymentStrategy>\n", "DESCRIPTION:\n", "FIELDS:\n")
	for _, re := range []string{`(?m)^  rollingUpdate\t<RollingUpdateDeployment>$`, `(?m)^  type\t<string>$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("explain deployment.spec.strategy lacks %s:\n%s", re, out)
		}
	}
	out = c.ok(t, "explain", "pods")
	wantContains(t, "explain pods", out, "KIND:       Pod\n", "VERSION:    v1\n")
	for _, re := range []string{`(?m)^  spec\t<PodSpec>$`, `(?m)^  metadata\t<ObjectMeta>$`, `(?m)^  apiVersion\t<string>$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("explain pods lacks %s:\n%s", re, out)
		}
	}
	// Required fields are marked.
	if !regexp.MustCompile(`(?m)^  containers\t<\[\]Container> -required-$`).MatchString(c.ok(t, "explain", "pod.spec")) {
		t.Errorf("explain pod.spec does not mark containers -required-")
	}
	wantContains(t, "explain --recursive", c.ok(t, "explain", "service.spec", "--recursive"), "  ports\t<[]ServicePort>\n", "    targetPort\t<IntOrString>\n")
	r := c.run(t, "", "explain", "deployment.spec.nope")
	if r.Code != 1 || !strings.Contains(r.Err, `error: field "nope" does not exist`) {
		t.Errorf("explain of a missing field: %s", r)
	}
}

// lockedBuffer is written by exec's copier and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestGetWatch(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.ok(t, "create", "configmap", "before", "-n", ns)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectl, "get", "configmaps", "-n", ns, "--watch")
	cmd.Env = c.env(c.kubeconfig)
	var errOut lockedBuffer
	cmd.Stderr = &errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan []string, 100)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			t.Logf("watch: %s", s.Text())
			lines <- strings.Fields(s.Text())
		}
	}()
	defer func() {
		cancel()
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	await := func(what string, match func([]string) bool) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("kubectl get --watch ended before %s; stderr:\n%s", what, errOut.String())
				}
				if match(l) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %s within 30s; stderr:\n%s", what, errOut.String())
			}
		}
	}
	await("header", func(l []string) bool { return strings.Join(l, " ") == "NAME DATA AGE" })
	await("the existing configmap", func(l []string) bool { return len(l) == 3 && l[0] == "before" && l[1] == "0" })

	c.ok(t, "create", "configmap", "during", "-n", ns, "--from-literal=a=b")
	await("the new configmap", func(l []string) bool { return len(l) == 3 && l[0] == "during" && l[1] == "1" })
	c.ok(t, "patch", "configmap", "during", "-n", ns, "--type=merge", "-p", `{"data":{"c":"d"}}`)
	await("the change", func(l []string) bool { return len(l) == 3 && l[0] == "during" && l[1] == "2" })

	// --watch-only with --output-watch-events, bounded by
	// --request-timeout: kubectl ends by itself.
	done := make(chan result, 1)
	go func() {
		done <- c.run(t, "", "get", "configmaps", "-n", ns, "--watch-only", "--output-watch-events", "--request-timeout=5s")
	}()
	time.Sleep(1500 * time.Millisecond)
	c.ok(t, "delete", "configmap", "during", "-n", ns)
	r := <-done
	if rows := table(r.Out); r.Code != 0 || len(rows) != 2 || strings.Join(rows[0], " ") != "EVENT NAME DATA AGE" ||
		strings.Join(rows[1][:3], " ") != "DELETED during 2" {
		t.Errorf("--watch-only --output-watch-events: %s", r)
	}
}

func TestDelete(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.apply(t, webManifest(ns, 1, "nginx:1.27"))
	wantOut(t, "delete", c.ok(t, "delete", "deployment", "web", "-n", ns), `deployment.apps "web" deleted from `+ns+" namespace\n")
	r := c.run(t, "", "get", "deployment", "web", "-n", ns)
	if r.Code != 1 || r.Err != `Error from server (NotFound): deployments.apps "web" not found`+"\n" {
		t.Errorf("get after delete: %s", r)
	}
	r = c.run(t, "", "delete", "deployment", "web", "-n", ns)
	if r.Code != 1 || r.Err != `Error from server (NotFound): deployments.apps "web" not found`+"\n" {
		t.Errorf("second delete: %s", r)
	}
	wantOut(t, "delete --ignore-not-found", c.ok(t, "delete", "deployment", "web", "-n", ns, "--ignore-not-found"), "")

	// delete waits while a finalizer holds the object.
	held := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: " + ns + "\n  finalizers: [example.com/hold]\n"
	c.apply(t, held)
	r = c.run(t, "", "delete", "configmap", "held", "-n", ns, "--timeout=2s")
	if r.Code != 1 || r.Out != `configmap "held" deleted from `+ns+" namespace\n" || r.Err != "error: timed out waiting for the condition on configmaps/held\n" {
		t.Errorf("delete of a held object with --timeout=2s: %s", r)
	}
	if ts := c.ok(t, "get", "configmap", "held", "-n", ns, "-o", "jsonpath={.metadata.deletionTimestamp}"); ts == "" {
		t.Errorf("held object has no deletionTimestamp")
	}
	// A second delete waits until the finalizer goes.
	done := make(chan result, 1)
	start := time.Now()
	go func() { done <- c.run(t, "", "delete", "configmap", "held", "-n", ns, "--timeout=30s") }()
	time.Sleep(2 * time.Second)
	select {
	case r := <-done:
		t.Fatalf("delete returned while the finalizer held the object: %s", r)
	default:
	}
	c.ok(t, "patch", "configmap", "held", "-n", ns, "--type=json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`)
	r = <-done
	if r.Code != 0 || r.Out != `configmap "held" deleted from `+ns+" namespace\n" || time.Since(start) < 2*time.Second {
		t.Errorf("delete that waited for the finalizer: %s after %s", r, time.Since(start))
	}
	r = c.run(t, "", "get", "configmap", "held", "-n", ns)
	if r.Code != 1 || !strings.Contains(r.Err, "NotFound") {
		t.Errorf("get after the finalizer went: %s", r)
	}
}

func TestDryRunServer(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	wantOut(t, "create --dry-run=server", c.ok(t, "create", "configmap", "dry", "-n", ns, "--from-literal=a=b", "--dry-run=server"),
		"configmap/dry created (server dry run)\n")
	wantOut(t, "apply --dry-run=server", c.apply(t, webManifest(ns, 2, "nginx:1.27"), "--dry-run=server"),
		"deployment.apps/web created (server dry run)\nservice/web created (server dry run)\n")
	// The server fills in defaults and a clusterIP in the dry-run answer.
	wantOut(t, "defaulted strategy", c.ok(t, "create", "deployment", "other", "-n", ns, "--image=nginx", "--dry-run=server", "-o", "jsonpath={.spec.strategy.type}"), "RollingUpdate")
	if ip := c.ok(t, "create", "service", "clusterip", "other", "-n", ns, "--tcp=80:80", "--dry-run=server", "-o", "jsonpath={.spec.clusterIP}"); !strings.HasPrefix(ip, "10.96.") {
		t.Errorf("dry-run service has clusterIP %q", ip)
	}
	r := c.run(t, "", "get", "configmaps,deployments,services", "-n", ns, "-o", "name")
	if r.Out != "configmap/kube-root-ca.crt\n" {
		t.Errorf("dry run persisted something: %s", r)
	}

	c.apply(t, webManifest(ns, 2, "nginx:1.27"))
	wantOut(t, "changed apply --dry-run=server", c.apply(t, webManifest(ns, 5, "nginx:1.27"), "--dry-run=server"),
		"deployment.apps/web configured (server dry run)\nservice/web unchanged (server dry run)\n")
	wantOut(t, "scale --dry-run=server", c.ok(t, "scale", "deployment", "web", "-n", ns, "--replicas=7", "--dry-run=server"),
		"deployment.apps/web scaled (server dry run)\n")
	// kubectl patch drops the "(server dry run)" suffix (its ToPrinter
	// overwrites the operation the dry-run template was applied to); so
	// does upstream.
	wantOut(t, "patch --dry-run=server", c.ok(t, "patch", "deployment", "web", "-n", ns, "-p", `{"spec":{"replicas":9}}`, "--dry-run=server"),
		"deployment.apps/web patched\n")
	wantOut(t, "set image --dry-run=server", c.ok(t, "set", "image", "deployment/web", "-n", ns, "nginx=nginx:9", "--dry-run=server"),
		"deployment.apps/web image updated (server dry run)\n")
	wantOut(t, "replicas and image", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"), "2 nginx:1.27")
	wantOut(t, "delete --dry-run=server", c.ok(t, "delete", "deployment", "web", "-n", ns, "--dry-run=server"),
		`deployment.apps "web" deleted from `+ns+" namespace (server dry run)\n")
	c.ok(t, "get", "deployment", "web", "-n", ns)
	// Validation still runs.
	r = c.run(t, "", "create", "configmap", "Bad_Name", "-n", ns, "--dry-run=server")
	if r.Code != 1 || !strings.Contains(r.Err, `ConfigMap "Bad_Name" is invalid`) {
		t.Errorf("invalid create --dry-run=server: %s", r)
	}
}

func TestDiff(t *testing.T) {
	c := setup(t)
	if _, err := exec.LookPath("diff"); err != nil {
		t.Skip("kubectl diff needs diff(1) on PATH")
	}
	ns := c.namespace(t)
	manifest := webManifest(ns, 2, "nginx:1.27")
	r := c.run(t, manifest, "diff", "-f", "-")
	if r.Code != 1 || !strings.Contains(r.Out, "+  name: web\n") || !strings.Contains(r.Out, "+  replicas: 2\n") {
		t.Errorf("diff of new objects: %s", r)
	}
	c.apply(t, manifest)
	if r := c.run(t, manifest, "diff", "-f", "-"); r.Code != 0 || r.Out != "" || r.Err != "" {
		t.Errorf("diff of applied objects: %s", r)
	}
	r = c.run(t, webManifest(ns, 3, "nginx:1.28"), "diff", "-f", "-")
	if r.Code != 1 {
		t.Errorf("diff of changed objects: exit %d; want 1\n%s", r.Code, r)
	}
	wantContains(t, "diff of changed objects", r.Out, "-  replicas: 2\n", "+  replicas: 3\n", "-      - image: nginx:1.27\n", "+      - image: nginx:1.28\n", "apps.v1.Deployment."+ns+".web")
	if strings.Contains(r.Out, "v1.Service."+ns+".web") {
		t.Errorf("diff shows the unchanged service:\n%s", r.Out)
	}
	wantOut(t, "nothing changed by diff", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}"), "2")
	// A server-side error is exit code > 1.
	r = c.run(t, strings.Replace(manifest, "replicas: 2", "replicas: -2", 1), "diff", "-f", "-")
	if r.Code <= 1 || !strings.Contains(r.Err, "spec.replicas: Invalid value: -2") {
		t.Errorf("diff of an invalid object: %s", r)
	}
}

func TestServerSideApply(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	cm := func(v string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: " + ns + "\ndata:\n  a: \"" + v + "\"\n"
	}
	wantOut(t, "apply --server-side", c.apply(t, cm("1"), "--server-side"), "configmap/ssa serverside-applied\n")
	wantOut(t, "managers", c.ok(t, "get", "configmap", "ssa", "-n", ns, "-o", "jsonpath={.metadata.managedFields[*].manager}"), "kubectl")
	wantOut(t, "again", c.apply(t, cm("1"), "--server-side"), "configmap/ssa serverside-applied\n")

	r := c.run(t, cm("2"), "apply", "-f", "-", "--server-side", "--field-manager=other")
	if r.Code != 1 || !strings.Contains(r.Err, `Apply failed with 1 conflict: conflict with "kubectl": .data.a`) ||
		!strings.Contains(r.Err, "--force-conflicts") {
		t.Errorf("conflicting apply: %s", r)
	}
	wantOut(t, "value after the conflict", c.ok(t, "get", "configmap", "ssa", "-n", ns, "-o", "jsonpath={.data.a}"), "1")

	wantOut(t, "--force-conflicts", c.apply(t, cm("2"), "--server-side", "--field-manager=other", "--force-conflicts"), "configmap/ssa serverside-applied\n")
	wantOut(t, "value after --force-conflicts", c.ok(t, "get", "configmap", "ssa", "-n", ns, "-o", "jsonpath={.data.a}"), "2")

	// A deployment applied server-side gets the defaults, and a field left
	// out of the next apply by its only manager is removed.
	c.apply(t, webManifest(ns, 2, "nginx:1.27"), "--server-side")
	wantOut(t, "defaults", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.strategy.type}"), "RollingUpdate")
	noLabels := strings.Replace(webManifest(ns, 2, "nginx:1.27"), "  labels: {app: web}\nspec:", "spec:", 1)
	c.apply(t, noLabels, "--server-side")
	wantOut(t, "label removed", c.ok(t, "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.metadata.labels}"), "")
}

func TestAuthCanI(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	for _, args := range [][]string{
		{"create", "deployments.apps", "-n", ns},
		{"delete", "secrets", "-A"},
		{"*", "*"},
		{"get", "/healthz"},
	} {
		r := c.run(t, "", append([]string{"auth", "can-i"}, args...)...)
		if r.Code != 0 || r.Out != "yes\n" {
			t.Errorf("admin can-i %s: %s", strings.Join(args, " "), r)
		}
	}

	alice := c.userKubeconfig(t, "alice")
	r := c.runAs(t, alice, "", "auth", "can-i", "list", "configmaps", "-n", ns)
	if r.Code != 1 || r.Out != "no\n" {
		t.Errorf("alice can-i list configmaps: %s", r)
	}
	r = c.runAs(t, alice, "", "get", "configmaps", "-n", ns)
	if r.Code != 1 || r.Err != `Error from server (Forbidden): configmaps is forbidden: User "alice" cannot list resource "configmaps" in API group "" in the namespace "`+ns+`"`+"\n" {
		t.Errorf("alice get configmaps: %s", r)
	}

	wantOut(t, "rolebinding", c.ok(t, "create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", ns),
		"rolebinding.rbac.authorization.k8s.io/alice-view created\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = c.runAs(t, alice, "", "auth", "can-i", "list", "configmaps", "-n", ns)
		if r.Code == 0 && r.Out == "yes\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice can-i list configmaps 10s after the rolebinding: %s", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r = c.runAs(t, alice, "", "auth", "can-i", "create", "configmaps", "-n", ns)
	if r.Code != 1 || r.Out != "no\n" {
		t.Errorf("alice (view) can-i create configmaps: %s", r)
	}
	r = c.runAs(t, alice, "", "auth", "can-i", "list", "configmaps", "-n", "default")
	if r.Code != 1 || r.Out != "no\n" {
		t.Errorf("alice can-i list configmaps in default: %s", r)
	}
	if r := c.runAs(t, alice, "", "get", "configmaps", "-n", ns); r.Code != 0 {
		t.Errorf("alice (view) get configmaps: %s", r)
	}
	out := c.runAs(t, alice, "", "auth", "can-i", "--list", "-n", ns).Out
	wantHeader(t, out, "Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs")
	if !regexp.MustCompile(`(?m)^configmaps\s+\[\]\s+\[\]\s+\[get list watch\]$`).MatchString(out) {
		t.Errorf("alice can-i --list lacks configmaps [get list watch]:\n%s", out)
	}
}

// TestImpersonation: kubectl --as, as the admin (system:masters may
// impersonate anyone).
func TestImpersonation(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	r := c.run(t, "", "auth", "can-i", "list", "configmaps", "-n", ns, "--as=bob")
	if r.Code != 1 || r.Out != "no\n" {
		t.Errorf("can-i --as=bob: %s", r)
	}
	r = c.run(t, "", "get", "configmaps", "-n", ns, "--as=bob")
	if r.Code != 1 || !strings.Contains(r.Err, `User "bob" cannot list resource "configmaps"`) {
		t.Errorf("get --as=bob: %s", r)
	}
	// alice may not impersonate.
	alice := c.userKubeconfig(t, "alice")
	r = c.runAs(t, alice, "", "get", "configmaps", "-n", ns, "--as=admin", "--as-group=system:masters")
	if r.Code != 1 || !strings.Contains(r.Err, `User "alice" cannot impersonate resource "users"`) {
		t.Errorf("alice get --as=admin: %s", r)
	}
}

// TestAuthWhoAmI: `kubectl auth whoami` asks authentication.k8s.io/v1
// SelfSubjectReview.
func TestAuthWhoAmI(t *testing.T) {
	c := setup(t)
	out := c.ok(t, "auth", "whoami")
	wantHeader(t, out, "ATTRIBUTE", "VALUE")
	wantContains(t, "auth whoami", out, "Username", "kubernetes-admin", "system:masters")
}

// TestNamespaceNameLabel: upstream labels every namespace with
// kubernetes.io/metadata.name (NetworkPolicy namespaceSelectors rely on it).
func TestNamespaceNameLabel(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	wantOut(t, "namespace name label", c.ok(t, "get", "namespace", ns, "-o", `jsonpath={.metadata.labels.kubernetes\.io/metadata\.name}`), ns)
	wantOut(t, "selected by it", c.ok(t, "get", "namespaces", "-l", "kubernetes.io/metadata.name="+ns, "-o", "name"), "namespace/"+ns+"\n")
}

package main_test

import (
	"fmt"
	"strings"
	"testing"
)

// widgetCRD is a namespaced definition with a schema (a pattern, a
// maximum, a default), the status subresource and printer columns.
const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.kubectl.kforge.dev}
spec:
  group: kubectl.kforge.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget is like.
            properties:
              color: {type: string, pattern: '^(red|green|blue)$', description: The widget's color.}
              size: {type: integer, maximum: 10, default: 3}
          status:
            type: object
            properties:
              ready: {type: boolean}
`

func widget(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: kubectl.kforge.dev/v1\nkind: Widget\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", name, ns, spec)
}

// TestCustomResources: a CRD with a schema, applied with kubectl, serves
// its kind: invalid objects are refused (422), unknown fields pruned,
// defaults applied, printer columns shown, explain reads the schema, and
// deleting the CRD deletes its objects.
func TestCustomResources(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	c.apply(t, widgetCRD)
	c.ok(t, "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.kubectl.kforge.dev")

	// Invalid: the pattern and the maximum; kubectl prints the Status.
	r := c.run(t, widget(ns, "bad", "{color: pink, size: 11}"), "apply", "-f", "-")
	if r.Code == 0 || !strings.Contains(r.Err, `The Widget "bad" is invalid`) ||
		!strings.Contains(r.Err, "spec.color") || !strings.Contains(r.Err, "spec.size") {
		t.Fatalf("invalid widget: %s", r)
	}

	// An unknown field: kubectl's strict validation is the server's, which
	// refuses it; without validation it is pruned.
	r = c.run(t, widget(ns, "one", "{color: red, shape: round}"), "apply", "-f", "-")
	if r.Code == 0 || !strings.Contains(r.Err, `unknown field "spec.shape"`) {
		t.Fatalf("unknown field under strict validation: %s", r)
	}
	r = c.run(t, widget(ns, "one", "{color: red, shape: round}"), "apply", "--validate=ignore", "-f", "-")
	if r.Code != 0 {
		t.Fatalf("apply: %s", r)
	}
	if got := c.ok(t, "get", "widget", "one", "-n", ns, "-o", "jsonpath={.spec}"); got != `{"color":"red","size":3}` {
		t.Errorf("spec not pruned and defaulted: %s", got)
	}
	c.apply(t, widget(ns, "two", "{color: blue, size: 7}"))

	// Printer columns, by kind and by short name.
	out := c.ok(t, "get", "wdg", "-n", ns)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NAME COLOR SIZE AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "one red 3 ") ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[2]), " "), "two blue 7 ") {
		t.Errorf("kubectl get wdg:\n%s", out)
	}
	// Field selectors on the name.
	if got := c.ok(t, "get", "widgets", "-n", ns, "--field-selector", "metadata.name=two", "-o", "name"); got != "widget.kubectl.kforge.dev/two\n" {
		t.Errorf("field selector: %q", got)
	}
	// explain reads the OpenAPI v3 document built from the schema.
	if got := c.ok(t, "explain", "widget.spec.color"); !strings.Contains(got, "The widget's color.") {
		t.Errorf("kubectl explain:\n%s", got)
	}
	// api-resources lists it.
	if got := c.ok(t, "api-resources", "--api-group", "kubectl.kforge.dev", "--no-headers"); !strings.Contains(got, "wdg") || !strings.Contains(got, "Widget") {
		t.Errorf("api-resources: %q", got)
	}

	// Deleting the definition deletes its objects.
	c.ok(t, "delete", "crd", "widgets.kubectl.kforge.dev", "--wait=true", "--timeout=30s")
	c.apply(t, widgetCRD)
	c.ok(t, "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.kubectl.kforge.dev")
	if got := c.ok(t, "get", "widgets", "-n", ns, "-o", "name"); got != "" {
		t.Errorf("objects outlived their definition: %q", got)
	}
	c.ok(t, "delete", "crd", "widgets.kubectl.kforge.dev")
}

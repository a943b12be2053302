package openapi

import (
	"reflect"
	"slices"
	"strings"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kind is what the document needs to know of one served resource.
type Kind struct {
	Group, Version, Kind, Plural string
	Namespaced                   bool
	Subresources                 []string
	// Object and List are the Go types of the kind and its list.
	Object, List reflect.Type
	// CreateOnly kinds (access reviews) are only ever POSTed.
	CreateOnly bool
	// Schema, when set, is the object's schema (a custom resource's,
	// from its definition) and Object and List are not read.
	Schema Schema
	// ListKind is the kind of a custom resource's list.
	ListKind string
}

var (
	statusType        = reflect.TypeOf(metav1.Status{})
	deleteOptionsType = reflect.TypeOf(metav1.DeleteOptions{})
	scaleType         = reflect.TypeOf(autoscalingv1.Scale{})
	bindingType       = reflect.TypeOf(corev1.Binding{})
	patchType         = reflect.TypeOf(metav1.Patch{})
)

func queryParam(name, desc string) Schema {
	return Schema{"name": name, "in": "query", "description": desc, "schema": Schema{"type": "string"}, "uniqueItems": true}
}

var (
	dryRunParam          = queryParam("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All.")
	fieldManagerParam    = queryParam("fieldManager", "A name associated with the actor or entity that is making these changes.")
	fieldValidationParam = queryParam("fieldValidation", "How the server handles unknown or duplicate fields in the request body: Ignore, Warn (the default) or Strict.")
	forceParam           = Schema{"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.", "schema": Schema{"type": "boolean"}, "uniqueItems": true}
	prettyParam          = queryParam("pretty", "If 'true', then the output is pretty printed.")
)

var listParams = []Schema{
	queryParam("continue", "The continue option should be set when retrieving more results from the server."),
	queryParam("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
	queryParam("labelSelector", "A selector to restrict the list of returned objects by their labels."),
	{"name": "limit", "in": "query", "description": "Maximum number of responses to return for a list call.", "schema": Schema{"type": "integer"}, "uniqueItems": true},
	queryParam("resourceVersion", "Which resource versions the request may be served from."),
	queryParam("resourceVersionMatch", "How resourceVersion is applied to list calls."),
	{"name": "sendInitialEvents", "in": "query", "description": "Send the current objects as synthetic ADDED events, then a bookmark.", "schema": Schema{"type": "boolean"}, "uniqueItems": true},
	{"name": "allowWatchBookmarks", "in": "query", "description": "Requests watch events of type BOOKMARK.", "schema": Schema{"type": "boolean"}, "uniqueItems": true},
	{"name": "timeoutSeconds", "in": "query", "description": "Timeout for the list/watch call.", "schema": Schema{"type": "integer"}, "uniqueItems": true},
	{"name": "watch", "in": "query", "description": "Watch for changes to the described resources.", "schema": Schema{"type": "boolean"}, "uniqueItems": true},
}

func camel(s string) string {
	var b strings.Builder
	up := true
	for _, r := range s {
		if r == '.' || r == '-' {
			up = true
			continue
		}
		if up {
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Document builds the OpenAPI v3 document of one group/version.
func Document(gv schema.GroupVersion, kinds []Kind) Schema {
	b := NewBuilder()
	for _, k := range kinds {
		if k.Schema != nil {
			continue
		}
		b.SetGVK(k.Object, schema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind})
		if !k.CreateOnly {
			b.SetGVK(k.List, schema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind + "List"})
		}
	}
	for _, v := range []string{"v1"} {
		b.SetGVK(statusType, schema.GroupVersionKind{Version: v, Kind: "Status"})
		b.SetGVK(deleteOptionsType, schema.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: "DeleteOptions"})
	}
	groupPart := "Core"
	prefix := "/api/" + gv.Version
	if gv.Group != "" {
		groupPart = camel(strings.TrimSuffix(strings.TrimSuffix(gv.Group, ".k8s.io"), ".authorization"))
		if strings.HasSuffix(gv.Group, ".authorization.k8s.io") {
			groupPart += "Authorization"
		}
		prefix = "/apis/" + gv.Group + "/" + gv.Version
	}
	opBase := groupPart + camel(gv.Version)

	paths := Schema{}
	for _, k := range kinds {
		gvk := Schema{"group": k.Group, "version": k.Version, "kind": k.Kind}
		var objRef, listRef string
		switch {
		case k.Schema != nil:
			objRef, listRef = b.defineCustom(k)
		case k.CreateOnly:
			objRef = b.Ref(k.Object)
		default:
			objRef, listRef = b.Ref(k.Object), b.Ref(k.List)
		}
		statusRef := b.Ref(statusType)
		nsPart, nsParams := "", []Schema{}
		collection := prefix + "/" + k.Plural
		if k.Namespaced {
			nsPart = "Namespaced"
			collection = prefix + "/namespaces/{namespace}/" + k.Plural
			nsParams = []Schema{{"name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "schema": Schema{"type": "string"}, "uniqueItems": true}}
		}
		nameParam := Schema{"name": "name", "in": "path", "required": true, "description": "name of the " + k.Kind, "schema": Schema{"type": "string"}, "uniqueItems": true}
		body := func(ref string) Schema {
			return Schema{"required": true, "content": Schema{"*/*": Schema{"schema": Schema{"$ref": ref}}}}
		}
		resp := func(ref string, codes ...string) Schema {
			r := Schema{}
			for _, c := range codes {
				r[c] = Schema{"description": "OK", "content": Schema{
					"application/json":                    Schema{"schema": Schema{"$ref": ref}},
					"application/yaml":                    Schema{"schema": Schema{"$ref": ref}},
					"application/vnd.kubernetes.protobuf": Schema{"schema": Schema{"$ref": ref}},
				}}
			}
			r["401"] = Schema{"description": "Unauthorized"}
			return r
		}
		op := func(verb, action, desc string, params []Schema, extra Schema) Schema {
			o := Schema{
				"tags":                            []string{strings.ToLower(opBase)},
				"description":                     desc,
				"operationId":                     verb + opBase + nsPart + k.Kind,
				"x-kubernetes-action":             action,
				"x-kubernetes-group-version-kind": gvk,
			}
			if len(params) > 0 {
				o["parameters"] = params
			}
			for key, v := range extra {
				o[key] = v
			}
			return o
		}
		withParams := func(ps ...Schema) []Schema { return append(append([]Schema{}, nsParams...), ps...) }
		patchBody := Schema{"required": true, "content": Schema{
			"application/json-patch+json":            Schema{"schema": Schema{"$ref": b.Ref(patchType)}},
			"application/merge-patch+json":           Schema{"schema": Schema{"$ref": b.Ref(patchType)}},
			"application/strategic-merge-patch+json": Schema{"schema": Schema{"$ref": b.Ref(patchType)}},
			"application/apply-patch+yaml":           Schema{"schema": Schema{"$ref": b.Ref(patchType)}},
		}}
		writeParams := func(named bool, patch bool) []Schema {
			ps := []Schema{prettyParam, dryRunParam, fieldManagerParam, fieldValidationParam}
			if patch {
				ps = append(ps, forceParam)
			}
			if named {
				return withParams(append([]Schema{nameParam}, ps...)...)
			}
			return withParams(ps...)
		}

		if k.CreateOnly {
			paths[collection] = Schema{
				"post": op("create", "post", "create a "+k.Kind, writeParams(false, false), Schema{"requestBody": body(objRef), "responses": resp(objRef, "200", "201", "202")}),
			}
			continue
		}
		paths[collection] = Schema{
			"get":    op("list", "list", "list or watch objects of kind "+k.Kind, withParams(append([]Schema{prettyParam}, listParams...)...), Schema{"responses": resp(listRef, "200")}),
			"post":   op("create", "post", "create a "+k.Kind, writeParams(false, false), Schema{"requestBody": body(objRef), "responses": resp(objRef, "200", "201", "202")}),
			"delete": op("deletecollection", "deletecollection", "delete collection of "+k.Kind, withParams(append([]Schema{prettyParam}, listParams...)...), Schema{"requestBody": Schema{"content": Schema{"*/*": Schema{"schema": Schema{"$ref": b.Ref(deleteOptionsType)}}}}, "responses": resp(statusRef, "200")}),
		}
		paths[collection+"/{name}"] = Schema{
			"get":    op("read", "get", "read the specified "+k.Kind, withParams(nameParam, prettyParam), Schema{"responses": resp(objRef, "200")}),
			"put":    op("replace", "put", "replace the specified "+k.Kind, writeParams(true, false), Schema{"requestBody": body(objRef), "responses": resp(objRef, "200", "201")}),
			"patch":  op("patch", "patch", "partially update the specified "+k.Kind, writeParams(true, true), Schema{"requestBody": patchBody, "responses": resp(objRef, "200", "201")}),
			"delete": op("delete", "delete", "delete a "+k.Kind, withParams(nameParam, prettyParam, dryRunParam), Schema{"requestBody": Schema{"content": Schema{"*/*": Schema{"schema": Schema{"$ref": b.Ref(deleteOptionsType)}}}}, "responses": resp(objRef, "200", "202")}),
		}
		for _, sub := range k.Subresources {
			ref := objRef
			subGVK := gvk
			switch sub {
			case "scale":
				ref = b.Ref(scaleType)
				subGVK = Schema{"group": "autoscaling", "version": "v1", "kind": "Scale"}
			case "binding":
				p := op("create", "post", "create binding of a Pod", writeParams(true, false), Schema{"requestBody": body(b.Ref(bindingType)), "responses": resp(b.Ref(bindingType), "200", "201")})
				p["operationId"] = "create" + opBase + nsPart + "PodBinding"
				p["x-kubernetes-group-version-kind"] = Schema{"group": "", "version": "v1", "kind": "Binding"}
				paths[collection+"/{name}/binding"] = Schema{"post": p}
				continue
			case "finalize", "log", "exec", "attach", "portforward":
				continue
			}
			suffix := camel(sub)
			mk := func(verb, action string, params []Schema, extra Schema) Schema {
				o := op(verb, action, action+" "+sub+" of the specified "+k.Kind, params, extra)
				o["operationId"] = verb + opBase + nsPart + k.Kind + suffix
				o["x-kubernetes-group-version-kind"] = subGVK
				return o
			}
			paths[collection+"/{name}/"+sub] = Schema{
				"get":   mk("read", "get", withParams(nameParam, prettyParam), Schema{"responses": resp(ref, "200")}),
				"put":   mk("replace", "put", writeParams(true, false), Schema{"requestBody": body(ref), "responses": resp(ref, "200", "201")}),
				"patch": mk("patch", "patch", writeParams(true, true), Schema{"requestBody": patchBody, "responses": resp(ref, "200", "201")}),
			}
		}
	}
	return Schema{
		"openapi":    "3.0.0",
		"info":       Schema{"title": "Kubernetes", "version": "v1.37.0-kforge"},
		"paths":      paths,
		"components": Schema{"schemas": b.Schemas()},
	}
}

// Schemas returns the component schemas of every kind, across groups, with
// their x-kubernetes-group-version-kind: what server-side apply's type
// converter needs.
func Schemas(kinds []Kind) map[string]Schema {
	b := NewBuilder()
	for _, k := range kinds {
		if k.Schema != nil {
			continue
		}
		b.SetGVK(k.Object, schema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind})
		if !k.CreateOnly {
			b.SetGVK(k.List, schema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind + "List"})
		}
	}
	b.SetGVK(scaleType, schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"})
	for _, k := range kinds {
		if k.Schema != nil {
			b.defineCustom(k)
			continue
		}
		b.Ref(k.Object)
	}
	b.Ref(scaleType)
	return b.Schemas()
}

var (
	objectMetaType = reflect.TypeOf(metav1.ObjectMeta{})
	listMetaType   = reflect.TypeOf(metav1.ListMeta{})
)

// customName is upstream's definition name of a custom kind: the group
// reversed, the version, the kind ("com.example.stable.v1.CronTab").
func customName(group, version, kind string) string {
	parts := strings.Split(group, ".")
	slices.Reverse(parts)
	return strings.Join(parts, ".") + "." + version + "." + kind
}

// defineCustom defines a custom kind and its list from the kind's schema,
// with apiVersion, kind and metadata as every object has them, and
// returns their references.
func (b *Builder) defineCustom(k Kind) (objRef, listRef string) {
	name := customName(k.Group, k.Version, k.Kind)
	obj := Schema{}
	for key, v := range k.Schema {
		obj[key] = v
	}
	props := Schema{}
	if p, ok := obj["properties"].(map[string]any); ok {
		for key, v := range p {
			props[key] = v
		}
	}
	props["apiVersion"] = Schema{"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}
	props["kind"] = Schema{"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}
	props["metadata"] = Schema{"$ref": b.Ref(objectMetaType), "description": "Standard object's metadata."}
	obj["properties"] = props
	obj["type"] = "object"
	obj["x-kubernetes-group-version-kind"] = []map[string]string{{"group": k.Group, "version": k.Version, "kind": k.Kind}}
	b.schemas[name] = obj
	listKind := k.ListKind
	if listKind == "" {
		listKind = k.Kind + "List"
	}
	objRef = "#/components/schemas/" + name
	b.schemas[customName(k.Group, k.Version, listKind)] = Schema{
		"type":     "object",
		"required": []string{"items"},
		"properties": Schema{
			"apiVersion": Schema{"type": "string"},
			"kind":       Schema{"type": "string"},
			"items":      Schema{"type": "array", "items": Schema{"$ref": objRef}},
			"metadata":   Schema{"$ref": b.Ref(listMetaType)},
		},
		"x-kubernetes-group-version-kind": []map[string]string{{"group": k.Group, "version": k.Version, "kind": listKind}},
	}
	return objRef, "#/components/schemas/" + customName(k.Group, k.Version, listKind)
}

package openapi

import (
	"reflect"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Schema is one JSON schema object, as it is marshalled.
type Schema = map[string]any

// schemaTypeNamer is the OpenAPISchemaType method apimachinery's special
// types (Time, Quantity, IntOrString, …) declare.
type schemaTypeNamer interface{ OpenAPISchemaType() []string }
type schemaFormatter interface{ OpenAPISchemaFormat() string }
type oneOfTyper interface{ OpenAPIV3OneOfTypes() []string }
type swaggerDoc interface{ SwaggerDoc() map[string]string }

var (
	rawExtensionType = reflect.TypeOf(runtime.RawExtension{})
	fieldsV1Type     = reflect.TypeOf(metav1.FieldsV1{})
)

// Builder collects the component schemas reachable from the types it is
// asked about.
type Builder struct {
	schemas map[string]Schema
	gvks    map[reflect.Type][]schema.GroupVersionKind
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{schemas: map[string]Schema{}, gvks: map[reflect.Type][]schema.GroupVersionKind{}}
}

// Schemas are the component schemas built so far, by definition name.
func (b *Builder) Schemas() map[string]Schema { return b.schemas }

// SetGVK marks a root type with its group, version and kind; call it
// before the type is first referenced.
func (b *Builder) SetGVK(t reflect.Type, gvk schema.GroupVersionKind) {
	for _, g := range b.gvks[t] {
		if g == gvk {
			return
		}
	}
	b.gvks[t] = append(b.gvks[t], gvk)
	if s, ok := b.schemas[DefinitionName(t)]; ok {
		s["x-kubernetes-group-version-kind"] = gvkList(b.gvks[t])
	}
}

func gvkList(gvks []schema.GroupVersionKind) []map[string]string {
	out := make([]map[string]string, len(gvks))
	for i, g := range gvks {
		out[i] = map[string]string{"group": g.Group, "version": g.Version, "kind": g.Kind}
	}
	return out
}

// DefinitionName is upstream's name for a Go type: its package path with
// the domain reversed ("k8s.io/api/core/v1" → "io.k8s.api.core.v1"), a dot
// and the type name.
func DefinitionName(t reflect.Type) string {
	pkg := t.PkgPath()
	host, rest, _ := strings.Cut(pkg, "/")
	parts := strings.Split(host, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	name := strings.Join(parts, ".")
	if rest != "" {
		name += "." + strings.ReplaceAll(rest, "/", ".")
	}
	return name + "." + t.Name()
}

// Ref returns the reference to t's component schema, defining it first.
func (b *Builder) Ref(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	b.define(t)
	return "#/components/schemas/" + DefinitionName(t)
}

// define builds the component schema of a named struct (or special) type.
func (b *Builder) define(t reflect.Type) {
	name := DefinitionName(t)
	if _, ok := b.schemas[name]; ok {
		return
	}
	s := Schema{}
	b.schemas[name] = s // before recursing: types refer to themselves
	for k, v := range b.inline(t, true) {
		s[k] = v
	}
	if docs := docsOf(t); docs[""] != "" {
		s["description"] = docs[""]
	}
	if g := b.gvks[t]; len(g) > 0 {
		s["x-kubernetes-group-version-kind"] = gvkList(g)
	}
}

func docsOf(t reflect.Type) map[string]string {
	if d, ok := reflect.New(t).Elem().Interface().(swaggerDoc); ok {
		return d.SwaggerDoc()
	}
	if d, ok := reflect.New(t).Interface().(swaggerDoc); ok {
		return d.SwaggerDoc()
	}
	return nil
}

// special returns the schema of apimachinery's types that marshal as
// scalars or free-form objects.
func special(t reflect.Type) (Schema, bool) {
	switch t {
	case rawExtensionType, fieldsV1Type:
		return Schema{"type": "object", "x-kubernetes-preserve-unknown-fields": true}, true
	}
	v := reflect.New(t).Elem().Interface()
	if o, ok := v.(oneOfTyper); ok {
		types := o.OpenAPIV3OneOfTypes()
		var any []Schema
		for _, ty := range types {
			any = append(any, Schema{"type": ty})
		}
		s := Schema{"anyOf": any, "x-kubernetes-int-or-string": true}
		if f, ok := v.(schemaFormatter); ok && f.OpenAPISchemaFormat() != "" {
			s["format"] = f.OpenAPISchemaFormat()
		}
		return s, true
	}
	if n, ok := v.(schemaTypeNamer); ok {
		if len(n.OpenAPISchemaType()) == 0 {
			// Any JSON value (apiextensions' JSON, JSONSchemaPropsOrBool).
			return Schema{"x-kubernetes-preserve-unknown-fields": true}, true
		}
		s := Schema{"type": n.OpenAPISchemaType()[0]}
		if f, ok := v.(schemaFormatter); ok && f.OpenAPISchemaFormat() != "" {
			s["format"] = f.OpenAPISchemaFormat()
		}
		return s, true
	}
	return nil, false
}

// inline is the schema of t written in place: scalars, arrays and maps
// inline; named structs by reference, unless top (defining t itself).
func (b *Builder) inline(t reflect.Type, top bool) Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := special(t); ok {
		if top || t.PkgPath() == "" {
			return s
		}
		return Schema{"$ref": b.Ref(t)}
	}
	switch t.Kind() {
	case reflect.String:
		return Schema{"type": "string"}
	case reflect.Bool:
		return Schema{"type": "boolean"}
	case reflect.Int32, reflect.Uint32, reflect.Int16, reflect.Uint16, reflect.Int8, reflect.Uint8:
		return Schema{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64:
		return Schema{"type": "integer", "format": "int64"}
	case reflect.Float32, reflect.Float64:
		return Schema{"type": "number", "format": "double"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return Schema{"type": "string", "format": "byte"}
		}
		return Schema{"type": "array", "items": b.inline(t.Elem(), false)}
	case reflect.Map:
		return Schema{"type": "object", "additionalProperties": b.inline(t.Elem(), false)}
	case reflect.Interface:
		return Schema{"x-kubernetes-preserve-unknown-fields": true}
	case reflect.Struct:
		if !top && t.Name() != "" {
			return Schema{"$ref": b.Ref(t)}
		}
		return b.structSchema(t)
	}
	return Schema{}
}

func (b *Builder) structSchema(t reflect.Type) Schema {
	props := Schema{}
	var required []string
	docs := docsOf(t)
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" || (!f.IsExported() && !f.Anonymous) {
				continue
			}
			if f.Anonymous && (name == "" || strings.Contains(opts, "inline")) {
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					// The embedded type's docs first: its fields are
					// described while it is walked.
					for k, v := range docsOf(ft) {
						if _, ok := docs[k]; !ok && k != "" {
							if docs == nil {
								docs = map[string]string{}
							}
							docs[k] = v
						}
					}
					walk(ft)
					continue
				}
			}
			if name == "" {
				name = f.Name
			}
			props[name] = b.fieldSchema(f, docs[name])
			// The k8s.io/api convention: an optional field is omitempty or
			// a pointer; the rest are required (what explain marks).
			if !strings.Contains(opts, "omitempty") && f.Type.Kind() != reflect.Pointer {
				required = append(required, name)
			}
		}
	}
	walk(t)
	out := Schema{"type": "object", "properties": props}
	if len(required) > 0 {
		sort.Strings(required)
		out["required"] = required
	}
	return out
}

// fieldSchema is a property: its type, description and the patch and
// list-type extensions from the struct tags.
func (b *Builder) fieldSchema(f reflect.StructField, doc string) Schema {
	s := b.inline(f.Type, false)
	if ref, ok := s["$ref"]; ok {
		// OpenAPI 3.0 ignores siblings of $ref: wrap it, as upstream does.
		s = Schema{"allOf": []Schema{{"$ref": ref}}}
		if !isScalarRef(f.Type) {
			s["default"] = map[string]any{}
		}
	}
	if doc != "" {
		s["description"] = doc
	}
	strategy := f.Tag.Get("patchStrategy")
	key := f.Tag.Get("patchMergeKey")
	if strategy != "" {
		s["x-kubernetes-patch-strategy"] = strategy
	}
	if key != "" {
		s["x-kubernetes-patch-merge-key"] = key
	}
	ft := f.Type
	for ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
	}
	if ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Uint8 {
		switch {
		case strings.Contains(strategy, "merge") && key != "":
			s["x-kubernetes-list-type"] = "map"
			s["x-kubernetes-list-map-keys"] = []string{key}
		case strings.Contains(strategy, "merge") && isScalar(ft.Elem()):
			s["x-kubernetes-list-type"] = "set"
		default:
			s["x-kubernetes-list-type"] = "atomic"
		}
	}
	return s
}

func isScalar(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func isScalarRef(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s, ok := special(t)
	return ok && s["type"] != "object"
}

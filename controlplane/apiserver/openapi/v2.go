package openapi

import (
	"encoding/json"
	"slices"
	"strings"
)

// V2 merges the OpenAPI v3 documents Document builds (one per group
// version) into the single OpenAPI v2 (Swagger 2.0) document that
// /openapi/v2 serves: component schemas become definitions, request
// bodies body parameters, a response's content its schema. Schemas keep
// their x-kubernetes extensions; what v2 cannot say (anyOf for
// int-or-string) takes upstream's v2 form.
func V2(docs []Schema) (Schema, error) {
	paths, defs := map[string]any{}, map[string]any{}
	for _, d := range docs {
		var doc map[string]any
		data, err := json.Marshal(d)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, err
		}
		if c, ok := doc["components"].(map[string]any); ok {
			if ss, ok := c["schemas"].(map[string]any); ok {
				for name, s := range ss {
					defs[name] = v2Schema(s)
				}
			}
		}
		if ps, ok := doc["paths"].(map[string]any); ok {
			for p, item := range ps {
				ops := map[string]any{}
				for method, op := range item.(map[string]any) {
					ops[method] = v2Operation(op.(map[string]any))
				}
				paths[p] = ops
			}
		}
	}
	return Schema{
		"swagger":     "2.0",
		"info":        Schema{"title": "Kubernetes", "version": "v1.37.0-kforge"},
		"paths":       paths,
		"definitions": defs,
		"securityDefinitions": Schema{"BearerToken": Schema{"type": "apiKey", "name": "authorization", "in": "header",
			"description": "Bearer Token authentication"}},
		"security": []Schema{{"BearerToken": []string{}}},
	}, nil
}

func v2Operation(op map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range op {
		switch k {
		case "parameters", "requestBody", "responses":
		default:
			out[k] = v
		}
	}
	var params []any
	if ps, ok := op["parameters"].([]any); ok {
		for _, p := range ps {
			pm := p.(map[string]any)
			np := map[string]any{}
			for k, v := range pm {
				if k == "schema" {
					if s, ok := v.(map[string]any); ok {
						np["type"] = s["type"]
					}
					continue
				}
				np[k] = v
			}
			params = append(params, np)
		}
	}
	if rb, ok := op["requestBody"].(map[string]any); ok {
		content, _ := rb["content"].(map[string]any)
		var types []string
		for ct := range content {
			types = append(types, ct)
		}
		slices.Sort(types)
		if len(types) > 0 {
			s := content[types[0]].(map[string]any)["schema"]
			params = append(params, map[string]any{"name": "body", "in": "body", "required": true, "schema": v2Schema(s)})
			if types[0] != "*/*" {
				out["consumes"] = types
			} else {
				out["consumes"] = []string{"*/*"}
			}
		}
	}
	if params != nil {
		out["parameters"] = params
	}
	responses := map[string]any{}
	if rs, ok := op["responses"].(map[string]any); ok {
		for code, r := range rs {
			rm := r.(map[string]any)
			nr := map[string]any{"description": rm["description"]}
			if content, ok := rm["content"].(map[string]any); ok {
				var types []string
				for ct := range content {
					types = append(types, ct)
				}
				slices.Sort(types)
				if len(types) > 0 {
					nr["schema"] = v2Schema(content[types[0]].(map[string]any)["schema"])
					out["produces"] = types
				}
			}
			responses[code] = nr
		}
	}
	out["responses"] = responses
	out["schemes"] = []string{"https"}
	return out
}

// v2Schema rewrites references to definitions and the int-or-string
// anyOf to upstream's v2 form, throughout a schema.
func v2Schema(s any) any {
	switch v := s.(type) {
	case map[string]any:
		out := map[string]any{}
		if v["x-kubernetes-int-or-string"] == true {
			out["type"], out["format"] = "string", "int-or-string"
		}
		for k, x := range v {
			switch {
			case k == "$ref":
				if ref, ok := x.(string); ok {
					out[k] = strings.Replace(ref, "#/components/schemas/", "#/definitions/", 1)
				}
			case k == "anyOf" && out["format"] == "int-or-string", k == "nullable", k == "oneOf":
			case k == "properties" || k == "definitions":
				// Names, not schema keywords: keep every name.
				props := map[string]any{}
				if pm, ok := x.(map[string]any); ok {
					for name, p := range pm {
						props[name] = v2Schema(p)
					}
				}
				out[k] = props
			default:
				out[k] = v2Schema(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = v2Schema(x)
		}
		return out
	}
	return s
}

// Package openapi generates the OpenAPI v3 documents the apiserver serves,
// by reflection over the k8s.io/api Go types: json tags name the
// properties, SwaggerDoc() methods give descriptions, patchStrategy and
// patchMergeKey tags give the patch and list-type extensions, and every
// served kind carries x-kubernetes-group-version-kind. kubectl reads these
// documents to decide that the server validates fields itself
// (fieldValidation on PATCH), and `kubectl explain` prints them. A custom
// resource's kind comes with its schema instead of a Go type (Kind.Schema).
// V2 merges the v3 documents into the Swagger 2.0 document of
// /openapi/v2.
package openapi

// Package openapi generates the OpenAPI v3 documents the apiserver serves,
// by reflection over the k8s.io/api Go types: json tags name the
// properties, SwaggerDoc() methods give descriptions, patchStrategy and
// patchMergeKey tags give the patch and list-type extensions, and every
// served kind carries x-kubernetes-group-version-kind. kubectl reads these
// documents to decide that the server validates fields itself
// (fieldValidation on PATCH), and `kubectl explain` prints them.
package openapi

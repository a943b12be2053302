// Package ingress owns the ingress controller role (kforge ingress): it
// watches Ingresses and routes HTTP and HTTPS to Service endpoints.
package ingress

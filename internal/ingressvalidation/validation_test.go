package ingressvalidation

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

func TestValidate(t *testing.T) {
	prefix, regex := networkingv1.PathTypePrefix, networkingv1.PathType("Regex")
	svc := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}
	rule := func(host, path string, pt *networkingv1.PathType, be networkingv1.IngressBackend) networkingv1.IngressRule {
		return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: path, PathType: pt, Backend: be}}}}}
	}
	for _, tc := range []struct {
		name string
		spec networkingv1.IngressSpec
		want string // a substring of the first error, "" for valid
	}{
		{"valid", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("*.example.com", "/a", &prefix, svc)}}, ""},
		{"empty", networkingv1.IngressSpec{}, "either `defaultBackend` or `rules`"},
		{"ip host", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("10.0.0.1", "/", &prefix, svc)}}, "not an IP address"},
		{"double wildcard", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("*.*.example.com", "/", &prefix, svc)}}, "spec.rules[0].host"},
		{"relative", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("a.com", "app", &prefix, svc)}}, "must be an absolute path"},
		{"dot dot", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("a.com", "/a/../b", &prefix, svc)}}, "must not contain '/../'"},
		{"no path type", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("a.com", "/", nil, svc)}}, "pathType must be specified"},
		{"unknown path type", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("a.com", "/", &regex, svc)}}, "Unsupported value"},
		{"no backend", networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule("a.com", "/", &prefix, networkingv1.IngressBackend{})}}, "one backend must be specified"},
		{"port name and number", networkingv1.IngressSpec{DefaultBackend: &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
			Name: "web", Port: networkingv1.ServiceBackendPort{Name: "http", Number: 80}}}}, "cannot set both port name & port number"},
	} {
		errs := Validate(&networkingv1.Ingress{Spec: tc.spec})
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%s: %v", tc.name, errs)
		case tc.want != "" && (len(errs) == 0 || !strings.Contains(errs[0].Error(), tc.want)):
			t.Errorf("%s: got %v, want an error with %q", tc.name, errs, tc.want)
		}
	}
}

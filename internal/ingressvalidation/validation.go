// Package ingressvalidation is the API's validation of networking/v1
// Ingress objects, shared by the apiserver (which refuses an invalid
// Ingress with 422) and the ingress controller (which skips one, should
// an older object be stored).
package ingressvalidation

import (
	"net/netip"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Validate follows upstream's ValidateIngressSpec
// (pkg/apis/networking/validation): a default backend or rules; hosts
// that are DNS names (a wildcard only as the first label), never IP
// addresses; each path with a supported pathType and, for Exact and
// Prefix, an absolute path without "//", "/./", "/../" or an encoded
// slash; each backend either a Service (an RFC 1035 name and a port by
// name or number, not both) or a resource.
func Validate(ing *networkingv1.Ingress) field.ErrorList {
	sp := field.NewPath("spec")
	var errs field.ErrorList
	s := &ing.Spec
	if len(s.Rules) == 0 && s.DefaultBackend == nil {
		errs = append(errs, field.Invalid(sp, s.Rules, "either `defaultBackend` or `rules` must be specified"))
	}
	if s.DefaultBackend != nil {
		errs = append(errs, validateIngressBackend(s.DefaultBackend, sp.Child("defaultBackend"))...)
	}
	if c := s.IngressClassName; c != nil {
		for _, msg := range validation.IsDNS1123Subdomain(*c) {
			errs = append(errs, field.Invalid(sp.Child("ingressClassName"), *c, msg))
		}
	}
	for i, r := range s.Rules {
		rp := sp.Child("rules").Index(i)
		if r.Host != "" {
			errs = append(errs, validateIngressHost(r.Host, rp.Child("host"))...)
		}
		if r.HTTP == nil {
			continue
		}
		hp := rp.Child("http", "paths")
		if len(r.HTTP.Paths) == 0 {
			errs = append(errs, field.Required(hp, ""))
		}
		for j, p := range r.HTTP.Paths {
			pp := hp.Index(j)
			errs = append(errs, validateIngressPath(p.Path, p.PathType, pp)...)
			errs = append(errs, validateIngressBackend(&p.Backend, pp.Child("backend"))...)
		}
	}
	for i, tls := range s.TLS {
		for j, h := range tls.Hosts {
			errs = append(errs, validateIngressHost(h, sp.Child("tls").Index(i).Child("hosts").Index(j))...)
		}
	}
	return errs
}

func validateIngressHost(host string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if _, err := netip.ParseAddr(host); err == nil {
		return field.ErrorList{field.Invalid(p, host, "must be a DNS name, not an IP address")}
	}
	msgs := validation.IsDNS1123Subdomain(host)
	if strings.Contains(host, "*") {
		msgs = validation.IsWildcardDNS1123Subdomain(host)
	}
	for _, msg := range msgs {
		errs = append(errs, field.Invalid(p, host, msg))
	}
	return errs
}

// invalidPathSequences and invalidPathSuffixes are upstream's for Exact
// and Prefix paths.
var (
	invalidPathSequences = []string{"//", "/./", "/../", "%2f", "%2F"}
	invalidPathSuffixes  = []string{"/..", "/."}
)

func validateIngressPath(path string, pt *networkingv1.PathType, p *field.Path) field.ErrorList {
	if pt == nil {
		return field.ErrorList{field.Required(p.Child("pathType"), "pathType must be specified")}
	}
	switch *pt {
	case networkingv1.PathTypeExact, networkingv1.PathTypePrefix:
		if !strings.HasPrefix(path, "/") {
			return field.ErrorList{field.Invalid(p.Child("path"), path, "must be an absolute path")}
		}
		for _, seq := range invalidPathSequences {
			if strings.Contains(path, seq) {
				return field.ErrorList{field.Invalid(p.Child("path"), path, "must not contain '"+seq+"'")}
			}
		}
		for _, suf := range invalidPathSuffixes {
			if strings.HasSuffix(path, suf) {
				return field.ErrorList{field.Invalid(p.Child("path"), path, "cannot end with '"+suf+"'")}
			}
		}
	case networkingv1.PathTypeImplementationSpecific:
		if path != "" && !strings.HasPrefix(path, "/") {
			return field.ErrorList{field.Invalid(p.Child("path"), path, "must be an absolute path")}
		}
	default:
		return field.ErrorList{field.NotSupported(p.Child("pathType"), *pt,
			[]string{string(networkingv1.PathTypeExact), string(networkingv1.PathTypePrefix), string(networkingv1.PathTypeImplementationSpecific)})}
	}
	return nil
}

func validateIngressBackend(b *networkingv1.IngressBackend, p *field.Path) field.ErrorList {
	switch {
	case b.Service != nil && b.Resource != nil:
		return field.ErrorList{field.Invalid(p, "", "cannot set both service and resource backends")}
	case b.Resource != nil:
		var errs field.ErrorList
		if b.Resource.Kind == "" {
			errs = append(errs, field.Required(p.Child("resource", "kind"), ""))
		}
		if b.Resource.Name == "" {
			errs = append(errs, field.Required(p.Child("resource", "name"), ""))
		}
		return errs
	case b.Service == nil:
		return field.ErrorList{field.Invalid(p, "", "one backend must be specified")}
	}
	sp := p.Child("service")
	var errs field.ErrorList
	if b.Service.Name == "" {
		errs = append(errs, field.Required(sp.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1035Label(b.Service.Name) {
			errs = append(errs, field.Invalid(sp.Child("name"), b.Service.Name, msg))
		}
	}
	port := b.Service.Port
	switch {
	case port.Name != "" && port.Number != 0:
		errs = append(errs, field.Invalid(sp.Child("port"), port, "cannot set both port name & port number"))
	case port.Name != "":
		for _, msg := range validation.IsValidPortName(port.Name) {
			errs = append(errs, field.Invalid(sp.Child("port", "name"), port.Name, msg))
		}
	case port.Number != 0:
		for _, msg := range validation.IsValidPortNum(int(port.Number)) {
			errs = append(errs, field.Invalid(sp.Child("port", "number"), port.Number, msg))
		}
	default:
		errs = append(errs, field.Required(sp.Child("port"), "port name or number is required"))
	}
	return errs
}

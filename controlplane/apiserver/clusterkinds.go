package apiserver

import (
	"fmt"
	"net/netip"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validateClusterKinds validates the kinds the cluster's own components
// write — Nodes, Endpoints, EndpointSlices, Leases, IngressClasses — so
// that a careless or hostile client cannot store what the proxy, the DNS
// or the scheduler would choke on. old is nil on create.
func validateClusterKinds(obj, old runtime.Object) field.ErrorList {
	switch o := obj.(type) {
	case *corev1.Node:
		errs := validateNode(o)
		if old != nil {
			errs = append(errs, validateNodeUpdate(o, old.(*corev1.Node))...)
		}
		return errs
	case *corev1.Endpoints:
		return validateEndpoints(o)
	case *discoveryv1.EndpointSlice:
		errs := validateEndpointSlice(o)
		if old != nil && old.(*discoveryv1.EndpointSlice).AddressType != o.AddressType {
			errs = append(errs, field.Invalid(field.NewPath("addressType"), o.AddressType, "field is immutable"))
		}
		return errs
	case *coordinationv1.Lease:
		return validateLease(o)
	case *corev1.Event:
		return validateEventNamespace(o.Namespace, o.InvolvedObject.Namespace, field.NewPath("involvedObject", "namespace"))
	case *eventsv1.Event:
		return validateEventNamespace(o.Namespace, o.Regarding.Namespace, field.NewPath("regarding", "namespace"))
	case *networkingv1.IngressClass:
		errs := validateIngressClass(o)
		if old != nil && old.(*networkingv1.IngressClass).Spec.Controller != o.Spec.Controller {
			errs = append(errs, field.Invalid(field.NewPath("spec", "controller"), o.Spec.Controller, "field is immutable"))
		}
		return errs
	}
	return nil
}

// defaultClusterKinds applies upstream's defaults to those kinds: ports
// of Endpoints and EndpointSlices are TCP unless they say otherwise.
func defaultClusterKinds(obj runtime.Object) {
	switch o := obj.(type) {
	case *corev1.Endpoints:
		for i := range o.Subsets {
			for j := range o.Subsets[i].Ports {
				if o.Subsets[i].Ports[j].Protocol == "" {
					o.Subsets[i].Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	case *discoveryv1.EndpointSlice:
		for i := range o.Ports {
			if o.Ports[i].Protocol == nil {
				tcp := corev1.ProtocolTCP
				o.Ports[i].Protocol = &tcp
			}
			if o.Ports[i].Name == nil {
				empty := ""
				o.Ports[i].Name = &empty
			}
		}
	}
}

var taintEffects = []string{string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute)}

// validateNode follows upstream's ValidateNode: pod CIDRs valid and at
// most one per IP family, podCIDR the first of podCIDRs, taints with a
// qualified key, a label value and a known effect, unique by key and
// effect.
func validateNode(n *corev1.Node) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec")
	if len(n.Spec.PodCIDRs) > 2 {
		errs = append(errs, field.TooMany(sp.Child("podCIDRs"), len(n.Spec.PodCIDRs), 2))
	}
	families := map[bool]bool{}
	for i, c := range n.Spec.PodCIDRs {
		p := sp.Child("podCIDRs").Index(i)
		if e := validation.IsValidCIDR(p, c); len(e) > 0 {
			errs = append(errs, e...)
			continue
		}
		v4 := netip.MustParsePrefix(c).Addr().Is4()
		if families[v4] {
			errs = append(errs, field.Invalid(p, c, "may specify no more than one CIDR for each IP family"))
		}
		families[v4] = true
	}
	if n.Spec.PodCIDR != "" && len(n.Spec.PodCIDRs) > 0 && n.Spec.PodCIDR != n.Spec.PodCIDRs[0] {
		errs = append(errs, field.Invalid(sp.Child("podCIDR"), n.Spec.PodCIDR, "must match the first element of podCIDRs"))
	}
	seen := sets.New[string]()
	for i, t := range n.Spec.Taints {
		p := sp.Child("taints").Index(i)
		errs = append(errs, metav1validation.ValidateLabelName(t.Key, p.Child("key"))...)
		for _, msg := range validation.IsValidLabelValue(t.Value) {
			errs = append(errs, field.Invalid(p.Child("value"), t.Value, msg))
		}
		switch t.Effect {
		case "":
			errs = append(errs, field.Required(p.Child("effect"), ""))
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			errs = append(errs, field.NotSupported(p.Child("effect"), t.Effect, taintEffects))
		}
		k := t.Key + "\x00" + string(t.Effect)
		if seen.Has(k) {
			errs = append(errs, field.Duplicate(p, fmt.Sprintf("%s=%s:%s", t.Key, t.Value, t.Effect)))
		}
		seen.Insert(k)
	}
	for i, a := range n.Status.Addresses {
		if a.Type == "" {
			errs = append(errs, field.Required(field.NewPath("status", "addresses").Index(i).Child("type"), ""))
		}
	}
	return errs
}

// validateNodeUpdate follows upstream's ValidateNodeUpdate: a pod CIDR
// and a provider ID, once set, do not change.
func validateNodeUpdate(n, old *corev1.Node) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec")
	if len(old.Spec.PodCIDRs) > 0 {
		same := len(old.Spec.PodCIDRs) == len(n.Spec.PodCIDRs)
		for i := 0; same && i < len(old.Spec.PodCIDRs); i++ {
			same = old.Spec.PodCIDRs[i] == n.Spec.PodCIDRs[i]
		}
		if !same {
			errs = append(errs, field.Forbidden(sp.Child("podCIDRs"), "node updates may not change podCIDR except from \"\" to valid"))
		}
	}
	if old.Spec.ProviderID != "" && old.Spec.ProviderID != n.Spec.ProviderID {
		errs = append(errs, field.Forbidden(sp.Child("providerID"), "node updates may not change providerID except from \"\" to valid"))
	}
	return errs
}

// validateEndpointPorts checks the ports of an Endpoints subset or an
// EndpointSlice: names DNS labels, unique, required when there are
// several (Endpoints only); numbers in range; known protocols.
func validateEndpointPorts(n int, get func(i int) (name string, port *int32, proto *corev1.Protocol), nameRequired bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i := range n {
		name, port, proto := get(i)
		ip := p.Index(i)
		switch {
		case name == "" && nameRequired && n > 1:
			errs = append(errs, field.Required(ip.Child("name"), ""))
		case name != "":
			for _, msg := range validation.IsDNS1123Label(name) {
				errs = append(errs, field.Invalid(ip.Child("name"), name, msg))
			}
			if names.Has(name) {
				errs = append(errs, field.Duplicate(ip.Child("name"), name))
			}
			names.Insert(name)
		}
		if port != nil {
			for _, msg := range validation.IsValidPortNum(int(*port)) {
				errs = append(errs, field.Invalid(ip.Child("port"), *port, msg))
			}
		}
		if proto == nil || *proto == "" {
			errs = append(errs, field.Required(ip.Child("protocol"), ""))
		} else {
			errs = append(errs, validateProtocol(*proto, ip.Child("protocol"))...)
		}
	}
	return errs
}

// validateEndpoints follows upstream's ValidateEndpoints: every address
// an IP address, ports as validateEndpointPorts says.
func validateEndpoints(e *corev1.Endpoints) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range e.Subsets {
		sp := field.NewPath("subsets").Index(i)
		for j, a := range ss.Addresses {
			errs = append(errs, validation.IsValidIP(sp.Child("addresses").Index(j).Child("ip"), a.IP)...)
		}
		for j, a := range ss.NotReadyAddresses {
			errs = append(errs, validation.IsValidIP(sp.Child("notReadyAddresses").Index(j).Child("ip"), a.IP)...)
		}
		errs = append(errs, validateEndpointPorts(len(ss.Ports), func(i int) (string, *int32, *corev1.Protocol) {
			return ss.Ports[i].Name, &ss.Ports[i].Port, &ss.Ports[i].Protocol
		}, true, sp.Child("ports"))...)
	}
	return errs
}

// Upstream's EndpointSlice limits.
const (
	maxSliceEndpoints = 1000
	maxSlicePorts     = 100
	maxSliceAddresses = 100
)

var sliceAddressTypes = []string{string(discoveryv1.AddressTypeIPv4), string(discoveryv1.AddressTypeIPv6), string(discoveryv1.AddressTypeFQDN)}

// validateEndpointSlice follows upstream's ValidateEndpointSlice: a
// known address type, at most 1000 endpoints of 1 to 100 addresses of
// that type, at most 100 ports.
func validateEndpointSlice(s *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	switch s.AddressType {
	case "":
		errs = append(errs, field.Required(field.NewPath("addressType"), ""))
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType, sliceAddressTypes))
	}
	ep := field.NewPath("endpoints")
	if len(s.Endpoints) > maxSliceEndpoints {
		errs = append(errs, field.TooMany(ep, len(s.Endpoints), maxSliceEndpoints))
	}
	for i, e := range s.Endpoints {
		p := ep.Index(i)
		ap := p.Child("addresses")
		switch {
		case len(e.Addresses) == 0:
			errs = append(errs, field.Required(ap, "must contain at least 1 address"))
		case len(e.Addresses) > maxSliceAddresses:
			errs = append(errs, field.TooMany(ap, len(e.Addresses), maxSliceAddresses))
		}
		for j, a := range e.Addresses {
			errs = append(errs, validateSliceAddress(s.AddressType, a, ap.Index(j))...)
		}
		if e.Hostname != nil {
			for _, msg := range validation.IsDNS1123Label(*e.Hostname) {
				errs = append(errs, field.Invalid(p.Child("hostname"), *e.Hostname, msg))
			}
		}
		if e.NodeName != nil {
			for _, msg := range validation.IsDNS1123Subdomain(*e.NodeName) {
				errs = append(errs, field.Invalid(p.Child("nodeName"), *e.NodeName, msg))
			}
		}
	}
	if len(s.Ports) > maxSlicePorts {
		errs = append(errs, field.TooMany(field.NewPath("ports"), len(s.Ports), maxSlicePorts))
	}
	errs = append(errs, validateEndpointPorts(len(s.Ports), func(i int) (string, *int32, *corev1.Protocol) {
		var name string
		if s.Ports[i].Name != nil {
			name = *s.Ports[i].Name
		}
		return name, s.Ports[i].Port, s.Ports[i].Protocol
	}, false, field.NewPath("ports"))...)
	return errs
}

func validateSliceAddress(t discoveryv1.AddressType, a string, p *field.Path) field.ErrorList {
	switch t {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		if errs := validation.IsValidIP(p, a); len(errs) > 0 {
			return errs
		}
		if netip.MustParseAddr(a).Is4() != (t == discoveryv1.AddressTypeIPv4) {
			return field.ErrorList{field.Invalid(p, a, "must be an "+string(t)+" address")}
		}
	case discoveryv1.AddressTypeFQDN:
		var errs field.ErrorList
		for _, msg := range validation.IsDNS1123Subdomain(a) {
			errs = append(errs, field.Invalid(p, a, msg))
		}
		return errs
	}
	return nil
}

// validateEventNamespace follows upstream's legacy event validation: an
// Event about a namespaced object lives in that object's namespace; one
// about a cluster-scoped object in "default" (or none).
func validateEventNamespace(ns, objectNS string, p *field.Path) field.ErrorList {
	if objectNS == "" {
		if ns != metav1.NamespaceNone && ns != metav1.NamespaceDefault {
			return field.ErrorList{field.Invalid(p, objectNS, "does not match event.namespace")}
		}
		return nil
	}
	if ns != objectNS {
		return field.ErrorList{field.Invalid(p, objectNS, "does not match event.namespace")}
	}
	return nil
}

// validateLease follows upstream's ValidateLeaseSpec: a positive
// duration and no negative transitions.
func validateLease(l *coordinationv1.Lease) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec")
	if d := l.Spec.LeaseDurationSeconds; d != nil && *d <= 0 {
		errs = append(errs, field.Invalid(sp.Child("leaseDurationSeconds"), *d, "must be greater than 0"))
	}
	if t := l.Spec.LeaseTransitions; t != nil && *t < 0 {
		errs = append(errs, field.Invalid(sp.Child("leaseTransitions"), *t, "must be greater than or equal to 0"))
	}
	return errs
}

// validateIngressClass follows upstream's ValidateIngressClass: a
// controller that is a domain-prefixed path of at most 250 characters.
func validateIngressClass(c *networkingv1.IngressClass) field.ErrorList {
	p := field.NewPath("spec", "controller")
	if c.Spec.Controller == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	if len(c.Spec.Controller) > 250 {
		return field.ErrorList{field.TooLong(p, "", 250)}
	}
	return validation.IsDomainPrefixedPath(p, c.Spec.Controller)
}

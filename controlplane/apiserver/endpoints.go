package apiserver

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// publishEndpoint adds (or, at shutdown, removes) this apiserver's
// advertised address in the Endpoints and EndpointSlice of the
// "kubernetes" Service, so in-cluster clients find the apiservers as
// upstream. A master that dies without shutting down stays listed until it
// comes back (upstream prunes by master leases; not done here).
func (s *Server) publishEndpoint(ctx context.Context, add bool) error {
	if s.cfg.Advertise == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(s.cfg.Advertise)
	if err != nil {
		return fmt.Errorf("apiserver: advertise address %q: %w", s.cfg.Advertise, err)
	}
	ip, port := ap.Addr().String(), int32(ap.Port())
	ctx = context.WithValue(ctx, writeInfoKey{}, writeInfo{manager: "kforge-apiserver"})
	change := func(ips []string) []string {
		set := map[string]bool{}
		for _, x := range ips {
			set[x] = true
		}
		if add {
			set[ip] = true
		} else {
			delete(set, ip)
		}
		out := make([]string, 0, len(set))
		for x := range set {
			out = append(out, x)
		}
		sort.Strings(out)
		return out
	}
	meta := metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault}

	epRes := s.reg.Lookup("", "v1", "endpoints")
	endpoints := func(ips []string) *corev1.Endpoints {
		ep := &corev1.Endpoints{ObjectMeta: meta}
		if len(ips) > 0 {
			sub := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "https", Port: port, Protocol: corev1.ProtocolTCP}}}
			for _, x := range ips {
				sub.Addresses = append(sub.Addresses, corev1.EndpointAddress{IP: x})
			}
			ep.Subsets = []corev1.EndpointSubset{sub}
		}
		return ep
	}
	err = s.upsert(ctx, epRes, func(old runtime.Object) runtime.Object {
		var ips []string
		if o, ok := old.(*corev1.Endpoints); ok {
			for _, sub := range o.Subsets {
				for _, a := range sub.Addresses {
					ips = append(ips, a.IP)
				}
			}
		}
		ep := endpoints(change(ips))
		if old != nil {
			ep.ObjectMeta = *old.(*corev1.Endpoints).ObjectMeta.DeepCopy()
		}
		return ep
	})
	if err != nil {
		return fmt.Errorf("apiserver: the kubernetes endpoints: %w", err)
	}

	sliceRes := s.reg.Lookup("discovery.k8s.io", "v1", "endpointslices")
	fam := discoveryv1.AddressTypeIPv4
	if ap.Addr().Is6() {
		fam = discoveryv1.AddressTypeIPv6
	}
	err = s.upsert(ctx, sliceRes, func(old runtime.Object) runtime.Object {
		var ips []string
		sl := &discoveryv1.EndpointSlice{ObjectMeta: meta, AddressType: fam}
		if o, ok := old.(*discoveryv1.EndpointSlice); ok {
			sl.ObjectMeta = *o.ObjectMeta.DeepCopy()
			for _, e := range o.Endpoints {
				ips = append(ips, e.Addresses...)
			}
		}
		sl.Labels = map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "kforge-apiserver"}
		name, proto, ready := "https", corev1.ProtocolTCP, true
		sl.Ports = []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}
		sl.Endpoints = nil
		for _, x := range change(ips) {
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{x}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		return sl
	})
	if err != nil {
		return fmt.Errorf("apiserver: the kubernetes endpointslice: %w", err)
	}
	return nil
}

// upsert creates default/kubernetes of res from build(nil), or rewrites it
// from build(current), retrying on conflicts; an unchanged result writes
// nothing.
func (s *Server) upsert(ctx context.Context, res *Resource, build func(old runtime.Object) runtime.Object) error {
	for attempt := 0; attempt < 5; attempt++ {
		_, err := s.get(ctx, res, metav1.NamespaceDefault, "kubernetes")
		if apierrors.IsNotFound(err) {
			_, err = s.create(ctx, res, metav1.NamespaceDefault, build(nil))
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		_, err = s.guaranteedUpdate(ctx, res, metav1.NamespaceDefault, "kubernetes", "", func(old runtime.Object) (runtime.Object, error) {
			return build(old), nil
		})
		return err
	}
	return fmt.Errorf("default/kubernetes %s kept changing", res.Plural)
}

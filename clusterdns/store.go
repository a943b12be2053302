package clusterdns

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// Index names on the informer stores.
const (
	indexByIP      = "ip"      // Services by ClusterIP, EndpointSlices by endpoint address
	indexByService = "service" // EndpointSlices by NAMESPACE/SERVICE
	indexByNS      = cache.NamespaceIndex
)

// Store is what the resolver reads: Services and EndpointSlices kept by
// informers (or, in tests, loaded into indexers by hand). A Store keeps
// its last contents while the API is unreachable, so answers go on.
type Store struct {
	services cache.Indexer
	slices   cache.Indexer
}

// serviceIndexers are the indexes the resolver needs on Services besides
// the namespace index informers have.
func serviceIndexers() cache.Indexers {
	return cache.Indexers{
		indexByIP: func(obj any) ([]string, error) {
			svc, ok := obj.(*corev1.Service)
			if !ok {
				return nil, nil
			}
			var out []string
			for _, ip := range clusterIPs(svc) {
				out = append(out, ip.String())
			}
			return out, nil
		},
	}
}

// sliceIndexers are the indexes the resolver needs on EndpointSlices.
func sliceIndexers() cache.Indexers {
	return cache.Indexers{
		indexByService: func(obj any) ([]string, error) {
			s, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
				return nil, nil
			}
			return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
		},
		indexByIP: func(obj any) ([]string, error) {
			s, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return nil, nil
			}
			var out []string
			for _, ep := range s.Endpoints {
				for _, a := range ep.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						out = append(out, ip.Unmap().String())
					}
				}
			}
			return out, nil
		},
	}
}

// NewMemoryStore is a Store over fresh in-memory indexers holding objs
// (Services and EndpointSlices): the resolver's view without an API.
func NewMemoryStore(objs ...any) *Store {
	svcIdx := serviceIndexers()
	svcIdx[indexByNS] = cache.MetaNamespaceIndexFunc
	s := &Store{
		services: cache.NewIndexer(cache.MetaNamespaceKeyFunc, svcIdx),
		slices:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, sliceIndexers()),
	}
	for _, o := range objs {
		switch o.(type) {
		case *corev1.Service:
			_ = s.services.Add(o)
		case *discoveryv1.EndpointSlice:
			_ = s.slices.Add(o)
		}
	}
	return s
}

// service returns NAMESPACE/NAME, or nil.
func (s *Store) service(ns, name string) *corev1.Service {
	o, ok, err := s.services.GetByKey(ns + "/" + name)
	if err != nil || !ok {
		return nil
	}
	return o.(*corev1.Service)
}

// hasNamespace reports whether a Service exists in ns: the namespace's
// name under svc.DOMAIN exists then.
func (s *Store) hasNamespace(ns string) bool {
	keys, err := s.services.IndexKeys(indexByNS, ns)
	return err == nil && len(keys) > 0
}

// endpointSlices are the slices of Service ns/name.
func (s *Store) endpointSlices(ns, name string) []*discoveryv1.EndpointSlice {
	objs, err := s.slices.ByIndex(indexByService, ns+"/"+name)
	if err != nil {
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*discoveryv1.EndpointSlice))
	}
	return out
}

// servicesByIP are the Services with this ClusterIP.
func (s *Store) servicesByIP(ip netip.Addr) []*corev1.Service {
	objs, err := s.services.ByIndex(indexByIP, ip.String())
	if err != nil {
		return nil
	}
	out := make([]*corev1.Service, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Service))
	}
	return out
}

// slicesByIP are the EndpointSlices with an endpoint at ip.
func (s *Store) slicesByIP(ip netip.Addr) []*discoveryv1.EndpointSlice {
	objs, err := s.slices.ByIndex(indexByIP, ip.String())
	if err != nil {
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*discoveryv1.EndpointSlice))
	}
	return out
}

// clusterIPs are a Service's cluster addresses (none for headless and
// ExternalName Services).
func clusterIPs(svc *corev1.Service) []netip.Addr {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// headless reports a Service with clusterIP None.
func headless(svc *corev1.Service) bool {
	return svc.Spec.Type != corev1.ServiceTypeExternalName && svc.Spec.ClusterIP == corev1.ClusterIPNone
}

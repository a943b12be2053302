package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// allocateClusterIP gives a new Service its ClusterIP from the service
// CIDR (the first address belongs to the "kubernetes" Service), or
// reserves the one it asks for.
func (s *Server) allocateClusterIP(ctx context.Context, svc *corev1.Service) error {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	if s.cfg.ServiceCIDR == "" {
		return nil
	}
	prefix, err := netip.ParsePrefix(s.cfg.ServiceCIDR)
	if err != nil {
		return apierrors.NewInternalError(fmt.Errorf("service CIDR %q: %w", s.cfg.ServiceCIDR, err))
	}
	used := map[netip.Addr]bool{}
	svcRes := s.reg.Lookup("", "v1", "services")
	lr, err := s.store.List(ctx, svcRes.KeyPrefix(""), storageListAll)
	if err != nil {
		return storageError(err, groupResource(svcRes), svc.Name)
	}
	for _, kv := range lr.Items {
		o, err := decodeStored(svcRes, kv)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(o.(*corev1.Service).Spec.ClusterIP); err == nil {
			used[a] = true
		}
	}
	if svc.Spec.ClusterIP != "" {
		a, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !prefix.Contains(a) {
			return apierrors.NewInvalid(svcRes.GroupVersion().WithKind("Service").GroupKind(), svc.Name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "clusterIP"), svc.Spec.ClusterIP, "must be an address in the service CIDR "+prefix.String())})
		}
		ok := !used[a]
		if ok {
			if ok, err = s.reserveClusterIP(ctx, a, svc); err != nil {
				return err
			}
		}
		if !ok {
			return apierrors.NewInvalid(svcRes.GroupVersion().WithKind("Service").GroupKind(), svc.Name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "clusterIP"), svc.Spec.ClusterIP, "provided IP is already allocated")})
		}
	} else {
		first := prefix.Masked().Addr().Next()
		start := first.Next()
		if svc.Namespace == metav1.NamespaceDefault && svc.Name == "kubernetes" {
			start = first
		}
		for a := start; prefix.Contains(a) && a.Next().IsValid() && prefix.Contains(a.Next()); a = a.Next() {
			if used[a] {
				continue
			}
			// The listing is only a hint: the reservation decides, so two
			// concurrent creates never get the same address.
			ok, err := s.reserveClusterIP(ctx, a, svc)
			if err != nil {
				return err
			}
			if ok {
				svc.Spec.ClusterIP = a.String()
				break
			}
		}
		if svc.Spec.ClusterIP == "" {
			return apierrors.NewInternalError(fmt.Errorf("no ClusterIP left in %s", prefix))
		}
	}
	svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	fam := corev1.IPv4Protocol
	if netip.MustParseAddr(svc.Spec.ClusterIP).Is6() {
		fam = corev1.IPv6Protocol
	}
	svc.Spec.IPFamilies = []corev1.IPFamily{fam}
	svc.Spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicySingleStack)
	svc.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
	return nil
}

var storageListAll = storage.ListOptions{}

// clusterIPKey is where a ClusterIP's reservation is kept; its value names
// the Service holding it.
func clusterIPKey(ip string) string { return "/registry/kforge.dev/serviceips/" + ip }

// reserveClusterIP claims an address in one etcd transaction; false means
// another Service holds it. A dry run claims nothing.
func (s *Server) reserveClusterIP(ctx context.Context, a netip.Addr, svc *corev1.Service) (bool, error) {
	if dryRunFrom(ctx) {
		_, err := s.store.Get(ctx, clusterIPKey(a.String()))
		return errors.Is(err, storage.ErrNotFound), nil
	}
	_, err := s.store.Create(ctx, clusterIPKey(a.String()), []byte(clusterIPOwner(svc)))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, storage.ErrAlreadyExists):
		return false, nil
	}
	return false, apierrors.NewInternalError(err)
}

// clusterIPOwner is the value of a reservation: the Service's namespace,
// name and UID, so that a Service released only what it holds.
func clusterIPOwner(svc *corev1.Service) string {
	return svc.Namespace + "/" + svc.Name + "/" + string(svc.UID)
}

// releaseClusterIP frees a deleted (or never created) Service's address,
// when the reservation is that Service's: a create that failed because it
// asked for an address another Service holds must not free it.
// Reservations written before they named the UID match by namespace and
// name.
func (s *Server) releaseClusterIP(ctx context.Context, obj runtime.Object) {
	svc, ok := obj.(*corev1.Service)
	if !ok || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || dryRunFrom(ctx) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	key := clusterIPKey(svc.Spec.ClusterIP)
	kv, err := s.store.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			s.log.Warn("releasing a ClusterIP", "ip", svc.Spec.ClusterIP, "err", err)
		}
		return
	}
	if v := string(kv.Value); v != clusterIPOwner(svc) && v != svc.Namespace+"/"+svc.Name {
		return
	}
	if _, err := s.store.Delete(ctx, key, kv.ModRevision); err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrConflict) {
		s.log.Warn("releasing a ClusterIP", "ip", svc.Spec.ClusterIP, "err", err)
	}
}

// serviceTypeChange keeps a Service's ClusterIP across updates and follows
// upstream's rules when the type changes: to ExternalName the address is
// dropped (and released once the update is written), from ExternalName one
// is allocated.
func (s *Server) serviceTypeChange(ctx context.Context, svc, prev *corev1.Service) error {
	toExternal := svc.Spec.Type == corev1.ServiceTypeExternalName && prev.Spec.Type != corev1.ServiceTypeExternalName
	fromExternal := svc.Spec.Type != corev1.ServiceTypeExternalName && prev.Spec.Type == corev1.ServiceTypeExternalName
	switch {
	case toExternal:
		// As upstream's dropTypeDependentFields: the addresses the client
		// left as they were go with the type.
		if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == prev.Spec.ClusterIP {
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil
			svc.Spec.IPFamilies, svc.Spec.IPFamilyPolicy = nil, nil
			svc.Spec.InternalTrafficPolicy = nil
		}
	case fromExternal:
		svc.Spec.ClusterIPs = nil
		if err := s.allocateClusterIP(ctx, svc); err != nil {
			return err
		}
	case svc.Spec.ClusterIP == "":
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = prev.Spec.ClusterIP, prev.Spec.ClusterIPs
	}
	return s.allocateNodePorts(ctx, svc, prev)
}

// newClusterIP reports whether an update of prev to svc reserved an
// address prev did not hold.
func newClusterIP(obj, old runtime.Object) bool {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return false
	}
	prev := old.(*corev1.Service)
	ip := svc.Spec.ClusterIP
	return ip != "" && ip != corev1.ClusterIPNone && ip != prev.Spec.ClusterIP
}

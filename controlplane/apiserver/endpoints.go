package apiserver

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// Master leases, as upstream's "lease" endpoint reconciler: every
// apiserver that advertises an address holds the key masterLeasePrefix+IP
// (value: its advertise address) under an etcd lease it refreshes every
// MasterLeaseInterval. The key outlives a dead apiserver by at most the
// TTL, and the "kubernetes" Endpoints keep only addresses that hold one.
const masterLeasePrefix = "/registry/masterleases/"

// Defaults of Options.MasterLeaseTTL and Options.MasterLeaseInterval.
const (
	DefaultMasterLeaseTTL      = 15 * time.Second
	DefaultMasterLeaseInterval = 5 * time.Second
)

// publishEndpoint adds (or, at shutdown, removes) this apiserver's
// advertised address in the Endpoints and EndpointSlice of the
// "kubernetes" Service, so in-cluster clients find the apiservers as
// upstream. A master that dies without shutting down is pruned by its
// peers' (or its successor's) reconcileEndpoints once its master lease
// expires.
func (s *Server) publishEndpoint(ctx context.Context, add bool) error {
	return s.setEndpoints(ctx, func(ips []string, own string) []string {
		out := make([]string, 0, len(ips)+1)
		for _, x := range ips {
			if x != own {
				out = append(out, x)
			}
		}
		if add {
			out = append(out, own)
		}
		return out
	})
}

// reconcileEndpoints keeps in the "kubernetes" Endpoints and EndpointSlice
// only the addresses of apiservers holding a live master lease, and adds
// this apiserver's own. Unlike upstream it adds no other address: each
// apiserver publishes itself, so a peer that listed the leases just
// before an apiserver's clean stop cannot write that apiserver back (the
// change is applied to the object as read at the write, whose compare on
// the revision makes it atomic). The result is the same set once every
// live apiserver has reconciled; nothing is written when it is unchanged.
func (s *Server) reconcileEndpoints(ctx context.Context) error {
	list, err := s.store.List(ctx, masterLeasePrefix, storage.ListOptions{})
	if err != nil {
		return fmt.Errorf("apiserver: listing master leases: %w", err)
	}
	live := map[string]bool{}
	for _, kv := range list.Items {
		if a, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, masterLeasePrefix)); err == nil {
			live[a.String()] = true
		}
	}
	return s.setEndpoints(ctx, func(ips []string, own string) []string {
		out := []string{own}
		for _, x := range ips {
			if live[x] && x != own {
				out = append(out, x)
			}
		}
		return out
	})
}

// setEndpoints rewrites the addresses of the "kubernetes" Endpoints and
// EndpointSlice to change(current addresses, this apiserver's IP), sorted
// and without duplicates, with this apiserver's port. Without an
// advertise address it does nothing.
func (s *Server) setEndpoints(ctx context.Context, change func(ips []string, own string) []string) error {
	if s.cfg.Advertise == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(s.cfg.Advertise)
	if err != nil {
		return fmt.Errorf("apiserver: advertise address %q: %w", s.cfg.Advertise, err)
	}
	ip, port := ap.Addr().String(), int32(ap.Port())
	ctx = context.WithValue(ctx, writeInfoKey{}, writeInfo{manager: "kforge-apiserver"})
	normalized := func(ips []string) []string {
		out := change(ips, ip)
		sort.Strings(out)
		return slices.Compact(out)
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
		ep := endpoints(normalized(ips))
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
		for _, x := range normalized(ips) {
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{x}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		return sl
	})
	if err != nil {
		return fmt.Errorf("apiserver: the kubernetes endpointslice: %w", err)
	}
	return nil
}

// startMasterLease runs the master lease loop the first time it is called,
// when this apiserver advertises an address: right away and then every
// MasterLeaseInterval it refreshes its lease and reconciles the
// "kubernetes" Endpoints. The returned func stops the loop and waits for
// it; it may be called more than once.
func (s *Server) startMasterLease(ctx context.Context) (stop func()) {
	stop = func() {}
	if s.lease == nil {
		return stop
	}
	s.leaseOnce.Do(func() {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.runMasterLease(ctx)
		}()
		stop = sync.OnceFunc(func() {
			cancel()
			<-done
		})
	})
	return stop
}

func (s *Server) runMasterLease(ctx context.Context) {
	t := time.NewTicker(s.cfg.MasterLeaseInterval)
	defer t.Stop()
	failing := false
	for {
		err := s.renewMasterLease(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && !failing:
			s.log.Warn("master lease: refreshing or reconciling the kubernetes endpoints failed; retrying", "err", err, "every", s.cfg.MasterLeaseInterval)
		case err != nil:
			s.log.Debug("master lease: still failing", "err", err)
		case failing:
			s.log.Info("master lease: refreshed again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renewMasterLease is one round of the loop, bounded by the lease's TTL
// (a round that takes longer has lost the lease anyway). The Endpoints
// are reconciled only when the lease is held.
func (s *Server) renewMasterLease(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.MasterLeaseTTL)
	defer cancel()
	if err := s.lease.Refresh(ctx); err != nil {
		return err
	}
	return s.reconcileEndpoints(ctx)
}

// leaveEndpoints is a clean stop's goodbye: the master lease is revoked
// (its key goes at once) and this apiserver's address removed, so clients
// stop picking it while it drains. Failures are logged; the lease then
// expires by itself and peers prune the address. It takes at most the
// lease's TTL: waiting longer for an unreachable etcd gains nothing, the
// lease has expired by then.
func (s *Server) leaveEndpoints(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.MasterLeaseTTL)
	defer cancel()
	if s.lease != nil {
		if err := s.lease.Release(ctx); err != nil {
			s.log.Warn("releasing the master lease", "err", err)
		}
	}
	if err := s.publishEndpoint(ctx, false); err != nil {
		s.log.Warn("removing this apiserver from the kubernetes endpoints", "err", err)
	}
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

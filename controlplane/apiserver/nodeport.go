package apiserver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// The NodePort range, upstream's default.
const (
	nodePortMin = 30000
	nodePortMax = 32767
)

// nodePortKey is where a NodePort's reservation is kept; its value names
// the Service holding it (clusterIPOwner).
func nodePortKey(p int32) string {
	return "/registry/kforge.dev/servicenodeports/" + strconv.Itoa(int(p))
}

func wantsNodePorts(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
}

var serviceGK = schema.GroupKind{Kind: "Service"}

// allocateNodePorts gives each port of a NodePort or LoadBalancer
// Service its node port, as upstream: a requested one must be in the
// range and free (422 otherwise), an unset one is picked at random, and
// on update an unset one keeps what the same port had (prev; nil on
// create). A Service of another type keeps no node port: on update the
// ones left as they were are dropped, a new one is a 422. One port
// number may serve a port's TCP and UDP both. On error nothing it
// reserved stays reserved.
func (s *Server) allocateNodePorts(ctx context.Context, svc, prev *corev1.Service) error {
	ports := svc.Spec.Ports
	prevPort := func(p corev1.ServicePort) int32 {
		if prev == nil {
			return 0
		}
		for _, o := range prev.Spec.Ports {
			if (p.Name != "" && o.Name == p.Name) || (o.Port == p.Port && o.Protocol == p.Protocol) {
				return o.NodePort
			}
		}
		return 0
	}
	path := field.NewPath("spec", "ports")
	if !wantsNodePorts(svc) {
		var errs field.ErrorList
		for i := range ports {
			if ports[i].NodePort == 0 {
				continue
			}
			if prev != nil && ports[i].NodePort == prevPort(ports[i]) {
				ports[i].NodePort = 0
				continue
			}
			errs = append(errs, field.Forbidden(path.Index(i).Child("nodePort"), fmt.Sprintf("may not be used when `type` is '%s'", svc.Spec.Type)))
		}
		if len(errs) > 0 {
			return apierrors.NewInvalid(serviceGK, svc.Name, errs)
		}
		return nil
	}
	held := map[int32]bool{}
	if prev != nil && wantsNodePorts(prev) {
		for _, p := range prev.Spec.Ports {
			held[p.NodePort] = true
		}
	}
	var got []int32
	fail := func(err error) error {
		for _, p := range got {
			s.releaseNodePort(ctx, p, svc)
		}
		return err
	}
	for i := range ports {
		p := &ports[i]
		if p.NodePort == 0 {
			p.NodePort = prevPort(*p)
		}
		if p.NodePort != 0 {
			if p.NodePort < nodePortMin || p.NodePort > nodePortMax {
				return fail(apierrors.NewInvalid(serviceGK, svc.Name, field.ErrorList{field.Invalid(path.Index(i).Child("nodePort"), p.NodePort,
					fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", nodePortMin, nodePortMax))}))
			}
			if held[p.NodePort] {
				continue
			}
			ok, err := s.reserveNodePort(ctx, p.NodePort, svc)
			if err != nil {
				return fail(err)
			}
			if !ok {
				return fail(apierrors.NewInvalid(serviceGK, svc.Name, field.ErrorList{field.Invalid(path.Index(i).Child("nodePort"), p.NodePort,
					"provided port is already allocated")}))
			}
			held[p.NodePort] = true
			got = append(got, p.NodePort)
			continue
		}
		n := int32(nodePortMax - nodePortMin + 1)
		start := rand.Int32N(n)
		for j := range n {
			cand := nodePortMin + (start+j)%n
			if held[cand] {
				continue
			}
			ok, err := s.reserveNodePort(ctx, cand, svc)
			if err != nil {
				return fail(err)
			}
			if ok {
				p.NodePort = cand
				held[cand] = true
				got = append(got, cand)
				break
			}
		}
		if p.NodePort == 0 {
			return fail(apierrors.NewInternalError(fmt.Errorf("no NodePort left in %d-%d", nodePortMin, nodePortMax)))
		}
	}
	return nil
}

// reserveNodePort claims a port in one etcd transaction; false means
// another Service holds it. A dry run claims nothing.
func (s *Server) reserveNodePort(ctx context.Context, p int32, svc *corev1.Service) (bool, error) {
	if dryRunFrom(ctx) {
		kv, err := s.store.Get(ctx, nodePortKey(p))
		return errors.Is(err, storage.ErrNotFound) || (err == nil && string(kv.Value) == clusterIPOwner(svc)), nil
	}
	_, err := s.store.Create(ctx, nodePortKey(p), []byte(clusterIPOwner(svc)))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, storage.ErrAlreadyExists):
		// A retried update of the same Service holds it already.
		kv, gerr := s.store.Get(ctx, nodePortKey(p))
		return gerr == nil && string(kv.Value) == clusterIPOwner(svc), nil
	}
	return false, apierrors.NewInternalError(err)
}

// releaseNodePorts frees the node ports svc holds that keep (the
// Service's new version, or nil) does not.
func (s *Server) releaseNodePorts(ctx context.Context, svc, keep *corev1.Service) {
	if svc == nil || !wantsNodePorts(svc) {
		return
	}
	kept := map[int32]bool{}
	if keep != nil && wantsNodePorts(keep) {
		for _, p := range keep.Spec.Ports {
			kept[p.NodePort] = true
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 && !kept[p.NodePort] {
			s.releaseNodePort(ctx, p.NodePort, svc)
		}
	}
}

func (s *Server) releaseNodePort(ctx context.Context, p int32, svc *corev1.Service) {
	if dryRunFrom(ctx) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	kv, err := s.store.Get(ctx, nodePortKey(p))
	if err != nil || string(kv.Value) != clusterIPOwner(svc) {
		return
	}
	if _, err := s.store.Delete(ctx, nodePortKey(p), kv.ModRevision); err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrConflict) {
		s.log.Warn("releasing a NodePort", "port", p, "err", err)
	}
}

// asService is obj as a Service, or nil.
func asService(obj any) *corev1.Service {
	svc, _ := obj.(*corev1.Service)
	return svc
}

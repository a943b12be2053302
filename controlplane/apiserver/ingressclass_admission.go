package apiserver

import (
	"context"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// admitDefaultIngressClass is upstream's DefaultIngressClass admission: a
// new Ingress that names no class (neither spec.ingressClassName nor the
// legacy kubernetes.io/ingress.class annotation) gets the IngressClass
// annotated as the default; with several defaults, the newest one. With
// none the Ingress is left as it is.
func (s *Server) admitDefaultIngressClass(ctx context.Context, obj runtime.Object) error {
	ing, ok := obj.(*networkingv1.Ingress)
	if !ok || ing.Spec.IngressClassName != nil {
		return nil
	}
	if _, legacy := ing.Annotations["kubernetes.io/ingress.class"]; legacy {
		return nil
	}
	res := s.reg.Lookup(networkingv1.GroupName, "v1", "ingressclasses")
	if res == nil {
		return nil
	}
	lr, err := s.store.List(ctx, res.KeyPrefix(""), storageListAll)
	if err != nil {
		return storageError(err, groupResource(res), ing.Name)
	}
	var chosen *networkingv1.IngressClass
	for _, kv := range lr.Items {
		o, err := decodeStored(res, kv)
		if err != nil {
			continue
		}
		ic := o.(*networkingv1.IngressClass)
		if ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] != "true" {
			continue
		}
		if chosen == nil || ic.CreationTimestamp.After(chosen.CreationTimestamp.Time) {
			chosen = ic
		}
	}
	if chosen != nil {
		name := chosen.Name
		ing.Spec.IngressClassName = &name
	}
	return nil
}

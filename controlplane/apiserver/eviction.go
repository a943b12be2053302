package apiserver

import (
	"context"
	"net/http"

	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// evictionGVK is the kind POST pods/NAME/eviction takes; discovery
// announces it, which is how kubectl drain finds out it may evict rather
// than delete.
var evictionGVK = policyv1.SchemeGroupVersion.WithKind("Eviction")

// evict handles POST pods/NAME/eviction (kubectl drain). PodDisruption
// Budgets are not served, so no budget can refuse it: an eviction is the
// pod's deletion with the Eviction's delete options (grace period,
// preconditions), answered, as upstream, with a Success Status and 201.
func (s *Server) evict(ctx context.Context, req *request, r *http.Request, body []byte) ([]string, error) {
	ev := &policyv1.Eviction{}
	warnings, err := decodeBody(r, body, evictionGVK, ev)
	if err != nil {
		return warnings, err
	}
	if ev.Name != "" && ev.Name != req.name {
		return warnings, apierrors.NewBadRequest("name in URL does not match name in Eviction object")
	}
	if ev.Namespace != "" && ev.Namespace != req.ns {
		return warnings, apierrors.NewBadRequest("namespace in URL does not match namespace in Eviction object")
	}
	opts := metav1.DeleteOptions{}
	if ev.DeleteOptions != nil {
		opts = *ev.DeleteOptions
	}
	if len(opts.DryRun) > 0 {
		wi := writeInfoFrom(ctx)
		wi.dryRun = true
		ctx = context.WithValue(ctx, writeInfoKey{}, wi)
	}
	_, err = s.delete(ctx, req.res, req.ns, req.name, opts)
	return warnings, err
}

package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// evictionGVK is the kind POST pods/NAME/eviction takes; discovery
// announces it, which is how kubectl drain finds out it may evict rather
// than delete.
var evictionGVK = policyv1.SchemeGroupVersion.WithKind("Eviction")

// morePDBs is upstream's refusal when several budgets select a pod.
const morePDBs = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."

// maxDisruptedPods bounds a budget's status.disruptedPods, as upstream.
const maxDisruptedPods = 2000

// evict handles POST pods/NAME/eviction (kubectl drain) as upstream's
// eviction REST: a pod that is finished, pending or already terminating
// goes at once; otherwise the one PodDisruptionBudget that selects it
// must allow a disruption, which the eviction takes from its status
// (disruptionsAllowed down by one, the pod in disruptedPods) before the
// pod gets the DisruptionTarget condition and is deleted with the
// Eviction's delete options. A budget that forbids it is a 429.
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
	dryRun := len(opts.DryRun) > 0
	if dryRun {
		wi := writeInfoFrom(ctx)
		wi.dryRun = true
		ctx = context.WithValue(ctx, writeInfoKey{}, wi)
	}
	obj, err := s.get(ctx, req.res, req.ns, req.name)
	if err != nil {
		return warnings, err
	}
	pod := obj.(*corev1.Pod)
	if !canIgnoreBudget(pod) {
		if err := s.takeDisruption(ctx, pod, dryRun); err != nil {
			return warnings, err
		}
		if !dryRun {
			s.markDisruptionTarget(ctx, req, pod)
		}
	}
	_, err = s.delete(ctx, req.res, req.ns, req.name, opts)
	return warnings, err
}

// canIgnoreBudget: a finished, pending or terminating pod is no
// disruption, as upstream.
func canIgnoreBudget(p *corev1.Pod) bool {
	return p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded ||
		p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodPending
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// budgetRefusal is upstream's 429 for an eviction a budget forbids.
func budgetRefusal(cause string) error {
	err := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{Type: policyv1.DisruptionBudgetCause, Message: cause})
	return err
}

// takeDisruption checks the budgets that select pod and, when one does
// and allows it, records the disruption in its status.
func (s *Server) takeDisruption(ctx context.Context, pod *corev1.Pod, dryRun bool) error {
	res := s.reg.ByKind(policyv1.GroupName, "PodDisruptionBudget")
	if res == nil {
		return nil
	}
	for attempt := 0; attempt < 5; attempt++ {
		list, err := s.store.List(ctx, res.KeyPrefix(pod.Namespace), storage.ListOptions{})
		if err != nil {
			return storageError(err, groupResource(res), "")
		}
		var match []*policyv1.PodDisruptionBudget
		for _, kv := range list.Items {
			o, err := decodeStored(res, kv)
			if err != nil {
				continue
			}
			b := o.(*policyv1.PodDisruptionBudget)
			if b.Spec.Selector == nil {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
				continue
			}
			match = append(match, b)
		}
		switch len(match) {
		case 0:
			return nil
		case 1:
		default:
			//lint:ignore ST1005 upstream's words, a sentence with a capital and a stop
			return apierrors.NewInternalError(errors.New(morePDBs))
		}
		b := match[0]
		if !podIsReady(pod) {
			// An unhealthy pod may go when the policy says so, or while
			// the budget is met anyway.
			if up := b.Spec.UnhealthyPodEvictionPolicy; up != nil && *up == policyv1.AlwaysAllow {
				return nil
			}
			if b.Status.ObservedGeneration == b.Generation && b.Status.CurrentHealthy >= b.Status.DesiredHealthy && b.Status.DesiredHealthy > 0 {
				return nil
			}
		}
		switch {
		case b.Status.ObservedGeneration < b.Generation:
			return budgetRefusal(fmt.Sprintf("The disruption budget %s is still being processed by the server.", b.Name))
		case b.Status.DisruptionsAllowed < 0:
			return apierrors.NewForbidden(groupResource(res), b.Name, fmt.Errorf("pdb disruptions allowed is negative"))
		case len(b.Status.DisruptedPods) > maxDisruptedPods:
			return apierrors.NewForbidden(groupResource(res), b.Name, fmt.Errorf("DisruptedPods map too big - too many evictions not confirmed by PDB controller"))
		case b.Status.DisruptionsAllowed == 0:
			return budgetRefusal(fmt.Sprintf("The disruption budget %s needs %d healthy pods and has %d currently", b.Name, b.Status.DesiredHealthy, b.Status.CurrentHealthy))
		}
		if dryRun {
			return nil
		}
		rv := b.ResourceVersion
		_, err = s.guaranteedUpdate(ctx, res, b.Namespace, b.Name, rv, func(old runtime.Object) (runtime.Object, error) {
			cur := old.(*policyv1.PodDisruptionBudget)
			cur.Status.DisruptionsAllowed--
			if cur.Status.DisruptedPods == nil {
				cur.Status.DisruptedPods = map[string]metav1.Time{}
			}
			cur.Status.DisruptedPods[pod.Name] = metav1.NewTime(time.Now())
			return cur, nil
		})
		if apierrors.IsConflict(err) {
			continue // another eviction took one: decide again
		}
		return err
	}
	return budgetRefusal("The disruption budget is being changed by other evictions; try again.")
}

// markDisruptionTarget sets the DisruptionTarget condition upstream's
// eviction gives a pod it is about to delete; a failure only loses the
// condition.
func (s *Server) markDisruptionTarget(ctx context.Context, req *request, pod *corev1.Pod) {
	_, err := s.guaranteedUpdate(ctx, req.res, pod.Namespace, pod.Name, "", func(old runtime.Object) (runtime.Object, error) {
		p := old.(*corev1.Pod)
		setPodCondition(&p.Status, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: "EvictionByEvictionAPI", Message: "Eviction API: evicting", LastTransitionTime: metav1.Now()})
		return p, nil
	})
	if err != nil {
		s.log.Warn("eviction: setting DisruptionTarget", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	policyinformers "k8s.io/client-go/informers/policy/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"
)

// disruptedPodTimeout is how long an eviction's entry in disruptedPods
// holds a disruption before the pod must have been deleted, as upstream.
const disruptedPodTimeout = 2 * time.Minute

// DisruptionController keeps each PodDisruptionBudget's status: the pods
// it selects (expectedPods, from their controllers' scale when the
// budget is a percentage or a maxUnavailable), how many are healthy
// (Ready and not being evicted), how many must be (desiredHealthy) and so
// how many disruptions the eviction subresource may allow.
type DisruptionController struct {
	*loop
	client       kubernetes.Interface
	pdbs         policylisters.PodDisruptionBudgetLister
	pods         corelisters.PodLister
	rss          appslisters.ReplicaSetLister
	deployments  appslisters.DeploymentLister
	statefulSets appslisters.StatefulSetLister
	now          func() time.Time
}

// NewDisruptionController wires the controller to the shared informers;
// stsInf may be nil (StatefulSet pods then have no known scale, as in
// unit tests that build the controller alone).
func NewDisruptionController(client kubernetes.Interface, pdbInf policyinformers.PodDisruptionBudgetInformer, podInf coreinformers.PodInformer,
	rsInf appsinformers.ReplicaSetInformer, depInf appsinformers.DeploymentInformer, stsInf appsinformers.StatefulSetInformer,
	log *slog.Logger, m *metrics) (*DisruptionController, error) {
	c := &DisruptionController{client: client, pdbs: pdbInf.Lister(), pods: podInf.Lister(), rss: rsInf.Lister(),
		deployments: depInf.Lister(), now: time.Now}
	synced := []cache.InformerSynced{pdbInf.Informer().HasSynced, podInf.Informer().HasSynced,
		rsInf.Informer().HasSynced, depInf.Informer().HasSynced}
	scaled := []cache.SharedIndexInformer{rsInf.Informer(), depInf.Informer()}
	if stsInf != nil {
		c.statefulSets = stsInf.Lister()
		synced = append(synced, stsInf.Informer().HasSynced)
		scaled = append(scaled, stsInf.Informer())
	}
	c.loop = newLoop(NameDisruption, log, m, c.sync, synced...)
	if _, err := pdbInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	onPod := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			t, ok := obj.(cache.DeletedFinalStateUnknown)
			if !ok {
				return
			}
			if p, ok = t.Obj.(*corev1.Pod); !ok {
				return
			}
		}
		c.enqueueFor(p)
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, n any) { onPod(n) }, DeleteFunc: onPod,
	}); err != nil {
		return nil, err
	}
	// A controller's scale is part of expectedPods.
	for _, inf := range scaled {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(_, n any) {
				if m, ok := n.(metav1.Object); ok {
					c.enqueueNamespace(m.GetNamespace())
				}
			},
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *DisruptionController) enqueueFor(p *corev1.Pod) {
	list, err := c.pdbs.PodDisruptionBudgets(p.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, b := range list {
		if sel, ok := pdbSelector(b); ok && sel.Matches(labels.Set(p.Labels)) {
			c.enqueue(b)
		}
	}
}

func (c *DisruptionController) enqueueNamespace(ns string) {
	list, _ := c.pdbs.PodDisruptionBudgets(ns).List(labels.Everything())
	for _, b := range list {
		c.enqueue(b)
	}
}

// pdbSelector: in policy/v1 a nil selector selects nothing and an empty
// one every pod of the namespace.
func pdbSelector(b *policyv1.PodDisruptionBudget) (labels.Selector, bool) {
	if b.Spec.Selector == nil {
		return nil, false
	}
	sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
	return sel, err == nil
}

func (c *DisruptionController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	shared, err := c.pdbs.PodDisruptionBudgets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	b := shared.DeepCopy()
	var pods []*corev1.Pod
	if sel, ok := pdbSelector(b); ok {
		all, err := c.pods.Pods(ns).List(sel)
		if err != nil {
			return err
		}
		for _, p := range all {
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				pods = append(pods, p)
			}
		}
	}
	now := c.now()
	st := b.Status.DeepCopy()
	st.ObservedGeneration = b.Generation
	expected, desired, err := c.expectation(b, pods)
	// Evictions not yet seen as deletions still count as disruptions.
	disrupted := map[string]metav1.Time{}
	var recheck time.Duration
	for _, p := range pods {
		t, ok := b.Status.DisruptedPods[p.Name]
		if !ok || p.DeletionTimestamp != nil {
			continue
		}
		if left := t.Add(disruptedPodTimeout).Sub(now); left > 0 {
			disrupted[p.Name] = t
			if recheck == 0 || left < recheck {
				recheck = left
			}
		}
	}
	if recheck > 0 {
		c.queue.AddAfter(key, recheck)
	}
	var healthy int32
	for _, p := range pods {
		if _, evicting := disrupted[p.Name]; !evicting && p.DeletionTimestamp == nil && podReady(p) {
			healthy++
		}
	}
	st.DisruptedPods = disrupted
	if len(disrupted) == 0 {
		st.DisruptedPods = nil
	}
	cond := metav1.Condition{Type: policyv1.DisruptionAllowedCondition, ObservedGeneration: b.Generation}
	if err != nil {
		// Without the controllers' scale nothing is known: allow nothing.
		st.ExpectedPods, st.DesiredHealthy, st.CurrentHealthy, st.DisruptionsAllowed = 0, 0, healthy, 0
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, policyv1.SyncFailedReason, err.Error()
	} else {
		st.ExpectedPods, st.DesiredHealthy, st.CurrentHealthy = expected, desired, healthy
		st.DisruptionsAllowed = max(healthy-desired, 0)
		cond.Status, cond.Reason = metav1.ConditionTrue, policyv1.SufficientPodsReason
		if st.DisruptionsAllowed == 0 {
			cond.Status, cond.Reason = metav1.ConditionFalse, policyv1.InsufficientPodsReason
		}
	}
	setMetaCondition(&st.Conditions, cond, now)
	if equality.Semantic.DeepEqual(&b.Status, st) {
		return nil
	}
	b.Status = *st
	_, uerr := c.client.PolicyV1().PodDisruptionBudgets(ns).UpdateStatus(ctx, b, metav1.UpdateOptions{})
	if apierrors.IsNotFound(uerr) {
		return nil
	}
	return uerr
}

// setMetaCondition sets c in conds, keeping the transition time when the
// status does not change.
func setMetaCondition(conds *[]metav1.Condition, c metav1.Condition, now time.Time) {
	for i := range *conds {
		old := &(*conds)[i]
		if old.Type != c.Type {
			continue
		}
		c.LastTransitionTime = old.LastTransitionTime
		if old.Status != c.Status {
			c.LastTransitionTime = metav1.NewTime(now)
		}
		*old = c
		return
	}
	c.LastTransitionTime = metav1.NewTime(now)
	*conds = append(*conds, c)
}

// expectation is upstream's: with an integer minAvailable, the pods
// themselves are expected and minAvailable of them must be healthy;
// otherwise expectedPods is the sum of the scales of the pods'
// controllers, and the percentage (rounded up) or maxUnavailable decides.
func (c *DisruptionController) expectation(b *policyv1.PodDisruptionBudget, pods []*corev1.Pod) (expected, desired int32, err error) {
	if ma := b.Spec.MinAvailable; ma != nil && ma.Type == intstr.Int {
		return int32(len(pods)), ma.IntVal, nil
	}
	if b.Spec.MinAvailable == nil && b.Spec.MaxUnavailable == nil {
		return int32(len(pods)), 0, nil
	}
	expected, err = c.expectedCount(pods)
	if err != nil {
		return 0, 0, err
	}
	if ma := b.Spec.MinAvailable; ma != nil {
		v, err := intstr.GetScaledValueFromIntOrPercent(ma, int(expected), true)
		if err != nil {
			return 0, 0, err
		}
		return expected, int32(v), nil
	}
	v, err := intstr.GetScaledValueFromIntOrPercent(b.Spec.MaxUnavailable, int(expected), true)
	if err != nil {
		return 0, 0, err
	}
	return expected, max(expected-int32(v), 0), nil
}

// expectedCount sums the scale of the controllers of pods (each once): a
// ReplicaSet's (its Deployment's when it has one) or a StatefulSet's.
func (c *DisruptionController) expectedCount(pods []*corev1.Pod) (int32, error) {
	seen := map[types.UID]bool{}
	var sum int64
	for _, p := range pods {
		ref := metav1.GetControllerOf(p)
		if ref == nil {
			return 0, fmt.Errorf("found no controller ref for pod %q", p.Name)
		}
		uid, scale, err := c.scaleOf(p.Namespace, ref)
		if err != nil {
			return 0, err
		}
		if !seen[uid] {
			seen[uid] = true
			sum += int64(scale)
		}
	}
	if sum > math.MaxInt32 {
		sum = math.MaxInt32
	}
	return int32(sum), nil
}

func (c *DisruptionController) scaleOf(ns string, ref *metav1.OwnerReference) (types.UID, int32, error) {
	unsupported := fmt.Errorf("found no controllers for pod's owner %s %q", ref.Kind, ref.Name)
	switch ref.APIVersion + "/" + ref.Kind {
	case "apps/v1/ReplicaSet":
		rs, err := c.rss.ReplicaSets(ns).Get(ref.Name)
		if err != nil || rs.UID != ref.UID {
			return "", 0, unsupported
		}
		if d := metav1.GetControllerOf(rs); d != nil && d.Kind == "Deployment" {
			if dep, err := c.deployments.Deployments(ns).Get(d.Name); err == nil && dep.UID == d.UID {
				return dep.UID, deref32(dep.Spec.Replicas), nil
			}
		}
		return rs.UID, deref32(rs.Spec.Replicas), nil
	case "apps/v1/StatefulSet":
		if c.statefulSets == nil {
			return "", 0, unsupported
		}
		s, err := c.statefulSets.StatefulSets(ns).Get(ref.Name)
		if err != nil || s.UID != ref.UID {
			return "", 0, unsupported
		}
		return s.UID, deref32(s.Spec.Replicas), nil
	}
	return "", 0, unsupported
}

func deref32(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

package controllers

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
)

// Labels and annotations the Deployment controller shares with upstream.
const (
	PodTemplateHashLabel        = appsv1.DefaultDeploymentUniqueLabelKey // "pod-template-hash"
	RevisionAnnotation          = "deployment.kubernetes.io/revision"
	DesiredReplicasAnnotation   = "deployment.kubernetes.io/desired-replicas"
	ReasonNewReplicaSetAvailble = "NewReplicaSetAvailable"
	ReasonReplicaSetUpdated     = "ReplicaSetUpdated"
	ReasonMinimumReplicasAvail  = "MinimumReplicasAvailable"
	ReasonMinimumReplicasUnavl  = "MinimumReplicasUnavailable"
)

// DeploymentController makes a ReplicaSet per pod template and moves
// replicas from the old ones to the new one, rolling or recreating.
type DeploymentController struct {
	*loop
	client   kubernetes.Interface
	dLister  appslisters.DeploymentLister
	rsLister appslisters.ReplicaSetLister
	recorder events.EventRecorder
}

// NewDeploymentController wires the controller to the shared informers.
func NewDeploymentController(client kubernetes.Interface, dInf appsinformers.DeploymentInformer, rsInf appsinformers.ReplicaSetInformer, log *slog.Logger, m *metrics) (*DeploymentController, error) {
	c := &DeploymentController{client: client, dLister: dInf.Lister(), rsLister: rsInf.Lister(), recorder: noEvents}
	c.loop = newLoop(NameDeployment, log, m, c.sync, dInf.Informer().HasSynced, rsInf.Informer().HasSynced)
	if _, err := dInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	rsEvent := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		rs, ok := obj.(*appsv1.ReplicaSet)
		if !ok {
			return
		}
		if ref := metav1.GetControllerOf(rs); ref != nil {
			if ref.Kind == deploymentKind.Kind {
				c.queue.Add(rs.Namespace + "/" + ref.Name)
			}
			return
		}
		// An orphan: the deployments that select it may adopt it.
		ds, _ := c.dLister.Deployments(rs.Namespace).List(labels.Everything())
		for _, d := range ds {
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err == nil && !sel.Empty() && sel.Matches(labels.Set(rs.Labels)) {
				c.enqueue(d)
			}
		}
	}
	if _, err := rsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: rsEvent, UpdateFunc: func(_, n any) { rsEvent(n) }, DeleteFunc: rsEvent,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// ComputeHash is the pod-template-hash of a template, computed like
// upstream: FNV-32a over the template's deep dump (plus the collision
// count), rendered with the safe alphabet.
func ComputeHash(template *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*template))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// equalIgnoreHash compares two templates without their pod-template-hash label.
func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, PodTemplateHashLabel)
	delete(b.Labels, PodTemplateHashLabel)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(b.Labels) == 0 {
		b.Labels = nil
	}
	return apiequality.Semantic.DeepEqual(a, b)
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

func revision(rs *appsv1.ReplicaSet) int64 {
	v, _ := strconv.ParseInt(rs.Annotations[RevisionAnnotation], 10, 64)
	return v
}

// surgeAndUnavailable resolves maxSurge and maxUnavailable for want
// replicas like upstream: surge rounds up, unavailable down, and both
// zero becomes unavailable 1.
func surgeAndUnavailable(d *appsv1.Deployment) (surge, unavailable int32) {
	want := int(replicas(d.Spec.Replicas))
	ru := d.Spec.Strategy.RollingUpdate
	def := intstr.FromString("25%")
	ms, mu := &def, &def
	if ru != nil {
		if ru.MaxSurge != nil {
			ms = ru.MaxSurge
		}
		if ru.MaxUnavailable != nil {
			mu = ru.MaxUnavailable
		}
	}
	s, _ := intstr.GetScaledValueFromIntOrPercent(ms, want, true)
	u, _ := intstr.GetScaledValueFromIntOrPercent(mu, want, false)
	if s == 0 && u == 0 {
		u = 1
	}
	if u > want {
		u = want
	}
	return int32(s), int32(u)
}

func (c *DeploymentController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	shared, err := c.dLister.Deployments(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	d := shared.DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil
	}
	rsList, err := c.claimReplicaSets(ctx, d, sel)
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return c.syncStatus(ctx, d, nil, rsList)
	}
	newRS, old := c.splitNew(d, rsList)
	if d.Spec.Paused {
		return c.syncStatus(ctx, d, newRS, rsList)
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return c.rolloutRecreate(ctx, d, newRS, old)
	}
	return c.rolloutRolling(ctx, d, newRS, old)
}

// claimReplicaSets returns the ReplicaSets d controls, adopting matching orphans.
func (c *DeploymentController) claimReplicaSets(ctx context.Context, d *appsv1.Deployment, sel labels.Selector) ([]*appsv1.ReplicaSet, error) {
	all, err := c.rsLister.ReplicaSets(d.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var owned []*appsv1.ReplicaSet
	for _, rs := range all {
		ref := metav1.GetControllerOf(rs)
		switch {
		case ref != nil && ref.UID == d.UID:
			owned = append(owned, rs)
		case ref == nil && d.DeletionTimestamp == nil && rs.DeletionTimestamp == nil && sel.Matches(labels.Set(rs.Labels)):
			cp := rs.DeepCopy()
			cp.OwnerReferences = append(cp.OwnerReferences, ownerRef(d, deploymentKind))
			got, err := c.client.AppsV1().ReplicaSets(d.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("adopting replica set %s: %w", rs.Name, err)
			}
			owned = append(owned, got)
		}
	}
	return owned, nil
}

// splitNew finds the ReplicaSet whose template is d's (the oldest one if
// several) and returns it and the others.
func (c *DeploymentController) splitNew(d *appsv1.Deployment, all []*appsv1.ReplicaSet) (*appsv1.ReplicaSet, []*appsv1.ReplicaSet) {
	sorted := append([]*appsv1.ReplicaSet(nil), all...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return sorted[i].CreationTimestamp.Before(&sorted[j].CreationTimestamp)
	})
	var newRS *appsv1.ReplicaSet
	var old []*appsv1.ReplicaSet
	for _, rs := range sorted {
		if newRS == nil && equalIgnoreHash(&rs.Spec.Template, &d.Spec.Template) {
			newRS = rs
			continue
		}
		old = append(old, rs)
	}
	return newRS, old
}

// ensureNewRS returns the new ReplicaSet, creating it with
// createReplicas when missing, and makes its revision the newest.
func (c *DeploymentController) ensureNewRS(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet, createReplicas int32) (*appsv1.ReplicaSet, error) {
	var maxOld int64
	for _, rs := range old {
		maxOld = max(maxOld, revision(rs))
	}
	want := strconv.FormatInt(maxOld+1, 10)
	if newRS != nil {
		if revision(newRS) > maxOld && newRS.Annotations[DesiredReplicasAnnotation] == strconv.Itoa(int(replicas(d.Spec.Replicas))) {
			return newRS, c.setDeploymentRevision(ctx, d, newRS.Annotations[RevisionAnnotation])
		}
		rs := newRS.DeepCopy()
		if rs.Annotations == nil {
			rs.Annotations = map[string]string{}
		}
		if revision(rs) <= maxOld {
			rs.Annotations[RevisionAnnotation] = want
		}
		rs.Annotations[DesiredReplicasAnnotation] = strconv.Itoa(int(replicas(d.Spec.Replicas)))
		got, err := c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
		if err != nil {
			return nil, err
		}
		return got, c.setDeploymentRevision(ctx, d, got.Annotations[RevisionAnnotation])
	}
	hash := ComputeHash(&d.Spec.Template, d.Status.CollisionCount)
	t := d.Spec.Template.DeepCopy()
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	t.Labels[PodTemplateHashLabel] = hash
	sel := d.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[PodTemplateHashLabel] = hash
	rsLabels := map[string]string{}
	for k, v := range d.Spec.Template.Labels {
		rsLabels[k] = v
	}
	rsLabels[PodTemplateHashLabel] = hash
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:      d.Name + "-" + hash,
			Namespace: d.Namespace,
			Labels:    rsLabels,
			Annotations: map[string]string{
				RevisionAnnotation:        want,
				DesiredReplicasAnnotation: strconv.Itoa(int(replicas(d.Spec.Replicas))),
			},
			OwnerReferences: []metav1.OwnerReference{ownerRef(d, deploymentKind)},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas:        &createReplicas,
			MinReadySeconds: d.Spec.MinReadySeconds,
			Selector:        sel,
			Template:        *t,
		},
	}
	got, err := c.client.AppsV1().ReplicaSets(d.Namespace).Create(ctx, rs, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Ours with the same template (a slow cache): use it next sync. A
		// different template is a hash collision: bump the count.
		existing, gerr := c.client.AppsV1().ReplicaSets(d.Namespace).Get(ctx, rs.Name, metav1.GetOptions{})
		if gerr == nil && metav1.IsControlledBy(existing, d) && equalIgnoreHash(&existing.Spec.Template, &d.Spec.Template) {
			return existing, nil
		}
		cc := int32(0)
		if d.Status.CollisionCount != nil {
			cc = *d.Status.CollisionCount
		}
		cc++
		d.Status.CollisionCount = &cc
		if _, uerr := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); uerr != nil {
			return nil, uerr
		}
		return nil, fmt.Errorf("replica set name %s collides; collision count now %d", rs.Name, cc)
	}
	if err != nil {
		return nil, err
	}
	if createReplicas > 0 {
		c.recordScaling(d, got.Name, 0, createReplicas)
	}
	return got, c.setDeploymentRevision(ctx, d, want)
}

// setDeploymentRevision copies the new ReplicaSet's revision onto d
// (metadata, so through a plain update); d takes the new resourceVersion.
func (c *DeploymentController) setDeploymentRevision(ctx context.Context, d *appsv1.Deployment, rev string) error {
	if d.Annotations[RevisionAnnotation] == rev {
		return nil
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[RevisionAnnotation] = rev
	got, err := c.client.AppsV1().Deployments(d.Namespace).Update(ctx, d, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	got.DeepCopyInto(d)
	return nil
}

func (c *DeploymentController) scale(ctx context.Context, d *appsv1.Deployment, rs *appsv1.ReplicaSet, n int32) (*appsv1.ReplicaSet, error) {
	from := replicas(rs.Spec.Replicas)
	if from == n {
		return rs, nil
	}
	cp := rs.DeepCopy()
	cp.Spec.Replicas = &n
	got, err := c.client.AppsV1().ReplicaSets(cp.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
	if err == nil {
		c.recordScaling(d, rs.Name, from, n)
	}
	return got, err
}

// recordScaling records upstream's ScalingReplicaSet event on d.
func (c *DeploymentController) recordScaling(d *appsv1.Deployment, rs string, from, to int32) {
	dir := "up"
	if to < from {
		dir = "down"
	}
	c.recorder.Eventf(d, nil, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaling",
		"Scaled %s replica set %s from %d to %d", dir, rs, from, to)
}

func (c *DeploymentController) rolloutRecreate(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	want := replicas(d.Spec.Replicas)
	var errs []error
	running := false
	for i, rs := range old {
		if replicas(rs.Spec.Replicas) != 0 {
			got, err := c.scale(ctx, d, rs, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			old[i] = got
			running = true
		}
		if rs.Status.Replicas > 0 {
			running = true // wait for the old pods to go
		}
	}
	all := append([]*appsv1.ReplicaSet(nil), old...)
	if len(errs) == 0 && !running {
		rs, err := c.ensureNewRS(ctx, d, newRS, old, want)
		if err != nil {
			errs = append(errs, err)
		} else if rs, err = c.scale(ctx, d, rs, want); err != nil {
			errs = append(errs, err)
		} else {
			newRS = rs
		}
	}
	if newRS != nil {
		all = append(all, newRS)
	}
	errs = append(errs, c.cleanup(ctx, d, newRS, old))
	errs = append(errs, c.syncStatus(ctx, d, newRS, all))
	return errors.Join(errs...)
}

func (c *DeploymentController) rolloutRolling(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	want := replicas(d.Spec.Replicas)
	surge, maxUnavailable := surgeAndUnavailable(d)
	var oldTotal int32
	for _, rs := range old {
		oldTotal += replicas(rs.Spec.Replicas)
	}

	// Scale up the new ReplicaSet within maxSurge.
	var newCount int32
	if newRS != nil {
		newCount = replicas(newRS.Spec.Replicas)
	}
	target := newCount
	switch {
	case oldTotal == 0:
		target = want // no rollout in flight: a plain scale
	case newCount < want:
		room := want + surge - (oldTotal + newCount)
		if room > 0 {
			target = newCount + min(room, want-newCount)
		}
	}
	rs, err := c.ensureNewRS(ctx, d, newRS, old, target)
	if err != nil {
		return errors.Join(err, c.syncStatus(ctx, d, newRS, append(old, nilSafe(newRS)...)))
	}
	if rs, err = c.scale(ctx, d, rs, target); err != nil {
		return err
	}
	newRS = rs

	// Scale old ReplicaSets down as far as availability allows.
	var errs []error
	if oldTotal > 0 {
		errs = append(errs, c.scaleDownOld(ctx, d, newRS, old, want, maxUnavailable))
	}
	errs = append(errs, c.cleanup(ctx, d, newRS, old))
	errs = append(errs, c.syncStatus(ctx, d, newRS, append(old, newRS)))
	return errors.Join(errs...)
}

func nilSafe(rs *appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	if rs == nil {
		return nil
	}
	return []*appsv1.ReplicaSet{rs}
}

// scaleDownOld is upstream's reconcileOldReplicaSets: first drop old
// replicas that are not available anyway, then available ones down to
// want - maxUnavailable available pods in all.
func (c *DeploymentController) scaleDownOld(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet, want, maxUnavailable int32) error {
	all := append(append([]*appsv1.ReplicaSet(nil), old...), newRS)
	var total, available int32
	for _, rs := range all {
		total += replicas(rs.Spec.Replicas)
		available += rs.Status.AvailableReplicas
	}
	minAvailable := want - maxUnavailable
	newUnavailable := replicas(newRS.Spec.Replicas) - newRS.Status.AvailableReplicas
	maxScaleDown := total - minAvailable - newUnavailable
	if maxScaleDown <= 0 {
		return nil
	}
	sort.SliceStable(old, func(i, j int) bool { return old[i].CreationTimestamp.Before(&old[j].CreationTimestamp) })
	// 1. Unhealthy replicas of old sets cost no availability.
	for i, rs := range old {
		if maxScaleDown <= 0 {
			break
		}
		n := replicas(rs.Spec.Replicas)
		unhealthy := n - rs.Status.AvailableReplicas
		if n == 0 || unhealthy <= 0 {
			continue
		}
		drop := min(unhealthy, maxScaleDown)
		got, err := c.scale(ctx, d, rs, n-drop)
		if err != nil {
			return err
		}
		old[i] = got
		maxScaleDown -= drop
		total -= drop
	}
	// 2. Available ones, keeping minAvailable.
	if available <= minAvailable {
		return nil
	}
	budget := available - minAvailable
	for i, rs := range old {
		if budget <= 0 {
			break
		}
		n := replicas(rs.Spec.Replicas)
		if n == 0 {
			continue
		}
		drop := min(n, budget)
		got, err := c.scale(ctx, d, rs, n-drop)
		if err != nil {
			return err
		}
		old[i] = got
		budget -= drop
	}
	return nil
}

// cleanup deletes the oldest fully scaled-down old ReplicaSets beyond
// revisionHistoryLimit.
func (c *DeploymentController) cleanup(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	limit := int32(10)
	if d.Spec.RevisionHistoryLimit != nil {
		limit = *d.Spec.RevisionHistoryLimit
	}
	var dead []*appsv1.ReplicaSet
	for _, rs := range old {
		if newRS != nil && rs.UID == newRS.UID {
			continue
		}
		if replicas(rs.Spec.Replicas) == 0 && rs.Status.Replicas == 0 && rs.DeletionTimestamp == nil && rs.Generation == rs.Status.ObservedGeneration {
			dead = append(dead, rs)
		}
	}
	if int32(len(dead)) <= limit {
		return nil
	}
	sort.SliceStable(dead, func(i, j int) bool { return revision(dead[i]) < revision(dead[j]) })
	var errs []error
	for _, rs := range dead[:int32(len(dead))-limit] {
		err := c.client.AppsV1().ReplicaSets(rs.Namespace).Delete(ctx, rs.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &rs.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncStatus computes d's status from its ReplicaSets and writes it
// through the status subresource when it changed.
func (c *DeploymentController) syncStatus(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, all []*appsv1.ReplicaSet) error {
	want := replicas(d.Spec.Replicas)
	_, maxUnavailable := surgeAndUnavailable(d)
	st := d.Status.DeepCopy()
	st.ObservedGeneration = d.Generation
	st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas = 0, 0, 0, 0
	var specTotal int32
	for _, rs := range all {
		if rs == nil {
			continue
		}
		st.Replicas += rs.Status.Replicas
		st.ReadyReplicas += rs.Status.ReadyReplicas
		st.AvailableReplicas += rs.Status.AvailableReplicas
		specTotal += replicas(rs.Spec.Replicas)
	}
	if newRS != nil {
		st.UpdatedReplicas = newRS.Status.Replicas
	}
	st.UnavailableReplicas = max(0, specTotal-st.AvailableReplicas)

	if st.AvailableReplicas >= want-maxUnavailable {
		setCondition(st, appsv1.DeploymentAvailable, corev1.ConditionTrue, ReasonMinimumReplicasAvail, "Deployment has minimum availability.")
	} else {
		setCondition(st, appsv1.DeploymentAvailable, corev1.ConditionFalse, ReasonMinimumReplicasUnavl, "Deployment does not have minimum availability.")
	}
	if newRS != nil {
		if st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want && newRS.Status.AvailableReplicas == want {
			setCondition(st, appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonNewReplicaSetAvailble,
				fmt.Sprintf("ReplicaSet %q has successfully progressed.", newRS.Name))
		} else {
			setCondition(st, appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonReplicaSetUpdated,
				fmt.Sprintf("ReplicaSet %q is progressing.", newRS.Name))
		}
	}
	if apiequality.Semantic.DeepEqual(st, &d.Status) {
		return nil
	}
	d.Status = *st
	_, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// setCondition sets a condition, keeping lastTransitionTime unless the
// status changes and lastUpdateTime unless anything changes.
func setCondition(st *appsv1.DeploymentStatus, t appsv1.DeploymentConditionType, status corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status == status && c.Reason == reason && c.Message == msg {
			return
		}
		if c.Status != status {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message, c.LastUpdateTime = status, reason, msg, now
		return
	}
	st.Conditions = append(st.Conditions, appsv1.DeploymentCondition{
		Type: t, Status: status, Reason: reason, Message: msg, LastUpdateTime: now, LastTransitionTime: now,
	})
}

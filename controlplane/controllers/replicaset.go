package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
)

// burstReplicas caps the pods one sync creates or deletes.
const burstReplicas = 500

// ReplicaSetController keeps each ReplicaSet's active pods at
// spec.replicas and reports their readiness in its status.
type ReplicaSetController struct {
	*loop
	client   kubernetes.Interface
	rsLister appslisters.ReplicaSetLister
	pods     corelisters.PodLister
	exp      *expectations
	now      func() time.Time
	recorder events.EventRecorder
}

// NewReplicaSetController wires the controller to the shared informers.
func NewReplicaSetController(client kubernetes.Interface, rsInf appsinformers.ReplicaSetInformer, podInf coreinformers.PodInformer, log *slog.Logger, m *metrics) (*ReplicaSetController, error) {
	c := &ReplicaSetController{
		client: client, rsLister: rsInf.Lister(), pods: podInf.Lister(),
		exp: newExpectations(), now: time.Now, recorder: noEvents,
	}
	c.loop = newLoop(NameReplicaSet, log, m, c.sync, rsInf.Informer().HasSynced, podInf.Informer().HasSynced)
	if _, err := rsInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			p := obj.(*corev1.Pod)
			if key, ok := c.ownerKey(p); ok {
				c.exp.creationObserved(key)
				c.queue.Add(key)
				return
			}
			c.enqueueMatching(p)
		},
		UpdateFunc: func(o, n any) {
			op, np := o.(*corev1.Pod), n.(*corev1.Pod)
			if op.ResourceVersion == np.ResourceVersion {
				return
			}
			if key, ok := c.ownerKey(op); ok {
				c.queue.Add(key)
			}
			if key, ok := c.ownerKey(np); ok {
				if np.DeletionTimestamp != nil && op.DeletionTimestamp == nil {
					c.exp.deletionObserved(key, np.Namespace+"/"+np.Name)
				}
				c.queue.Add(key)
				// minReadySeconds: look again when the pod becomes available.
				if rs, err := c.rsLister.ReplicaSets(np.Namespace).Get(np.OwnerReferences[0].Name); err == nil && rs.Spec.MinReadySeconds > 0 && !podReady(op) && podReady(np) {
					c.queue.AddAfter(key, time.Duration(rs.Spec.MinReadySeconds)*time.Second+time.Second)
				}
				return
			}
			c.enqueueMatching(np)
		},
		DeleteFunc: func(obj any) {
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
			if key, ok := c.ownerKey(p); ok {
				c.exp.deletionObserved(key, p.Namespace+"/"+p.Name)
				c.queue.Add(key)
			}
		},
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// ownerKey is the key of the ReplicaSet that controls p, if any.
func (c *ReplicaSetController) ownerKey(p *corev1.Pod) (string, bool) {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != replicaSetKind.Kind || ref.APIVersion != replicaSetKind.GroupVersion().String() {
		return "", false
	}
	rs, err := c.rsLister.ReplicaSets(p.Namespace).Get(ref.Name)
	if err != nil || rs.UID != ref.UID {
		return "", false
	}
	return p.Namespace + "/" + ref.Name, true
}

// enqueueMatching enqueues every ReplicaSet whose selector matches an
// orphan pod, so one of them adopts it.
func (c *ReplicaSetController) enqueueMatching(p *corev1.Pod) {
	if metav1.GetControllerOf(p) != nil || p.DeletionTimestamp != nil {
		return
	}
	list, err := c.rsLister.ReplicaSets(p.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, rs := range list {
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(p.Labels)) {
			c.enqueue(rs)
		}
	}
}

func (c *ReplicaSetController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	shared, err := c.rsLister.ReplicaSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	rs := shared.DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil // invalid: nothing we can do until the user fixes it
	}
	pods, err := c.claimPods(ctx, rs, sel)
	if err != nil {
		return err
	}
	var active []*corev1.Pod
	for _, p := range pods {
		if podActive(p) {
			active = append(active, p)
		}
	}
	var manageErr error
	if rs.DeletionTimestamp == nil && c.exp.satisfied(key) {
		manageErr = c.manageReplicas(ctx, key, rs, active)
	}
	if err := c.updateStatus(ctx, rs, active); err != nil {
		return errors.Join(manageErr, err)
	}
	return manageErr
}

// claimPods returns the pods rs controls, adopting orphans that match its
// selector (unless rs is being deleted).
func (c *ReplicaSetController) claimPods(ctx context.Context, rs *appsv1.ReplicaSet, sel labels.Selector) ([]*corev1.Pod, error) {
	all, err := c.pods.Pods(rs.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var owned []*corev1.Pod
	for _, p := range all {
		ref := metav1.GetControllerOf(p)
		switch {
		case ref != nil && ref.UID == rs.UID:
			owned = append(owned, p)
		case ref == nil && rs.DeletionTimestamp == nil && p.DeletionTimestamp == nil && sel.Matches(labels.Set(p.Labels)):
			// Adopt: check rs is still the one we read, then take the pod.
			cp := p.DeepCopy()
			cp.OwnerReferences = append(cp.OwnerReferences, ownerRef(rs, replicaSetKind))
			got, err := c.client.CoreV1().Pods(rs.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("adopting pod %s: %w", p.Name, err)
			}
			owned = append(owned, got)
		}
	}
	return owned, nil
}

func (c *ReplicaSetController) manageReplicas(ctx context.Context, key string, rs *appsv1.ReplicaSet, active []*corev1.Pod) error {
	want := int32(1)
	if rs.Spec.Replicas != nil {
		want = *rs.Spec.Replicas
	}
	diff := int(want) - len(active)
	switch {
	case diff > 0:
		diff = min(diff, burstReplicas)
		c.exp.expectCreations(key, diff)
		var errs []error
		for range diff {
			if err := c.createPod(ctx, rs); err != nil {
				c.exp.creationObserved(key) // it will never show up
				c.recorder.Eventf(rs, nil, corev1.EventTypeWarning, "FailedCreate", "Create", "Error creating: %v", err)
				errs = append(errs, err)
				if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
					break
				}
			}
		}
		return errors.Join(errs...)
	case diff < 0:
		victims := podsToDelete(active, min(-diff, burstReplicas))
		keys := make([]string, len(victims))
		for i, p := range victims {
			keys[i] = p.Namespace + "/" + p.Name
		}
		c.exp.expectDeletions(key, keys)
		var errs []error
		for i, p := range victims {
			err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
			if err != nil {
				c.exp.deletionObserved(key, keys[i])
				if !apierrors.IsNotFound(err) {
					c.recorder.Eventf(rs, nil, corev1.EventTypeWarning, "FailedDelete", "Delete", "Error deleting: %v", err)
					errs = append(errs, err)
				}
				continue
			}
			c.recorder.Eventf(rs, nil, corev1.EventTypeNormal, "SuccessfulDelete", "Delete", "Deleted pod: %s", p.Name)
		}
		return errors.Join(errs...)
	}
	return nil
}

func (c *ReplicaSetController) createPod(ctx context.Context, rs *appsv1.ReplicaSet) error {
	t := rs.Spec.Template.DeepCopy()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    rs.Name + "-",
			Namespace:       rs.Namespace,
			Labels:          t.Labels,
			Annotations:     t.Annotations,
			Finalizers:      t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{ownerRef(rs, replicaSetKind)},
		},
		Spec: t.Spec,
	}
	got, err := c.client.CoreV1().Pods(rs.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err == nil {
		c.recorder.Eventf(rs, nil, corev1.EventTypeNormal, "SuccessfulCreate", "Create", "Created pod: %s", got.Name)
	}
	return err
}

// podsToDelete picks n pods to delete: unscheduled first, then pending,
// then not ready, then the newest.
func podsToDelete(pods []*corev1.Pod, n int) []*corev1.Pod {
	sorted := append([]*corev1.Pod(nil), pods...)
	rank := func(p *corev1.Pod) int {
		switch {
		case p.Spec.NodeName == "":
			return 0
		case p.Status.Phase == corev1.PodPending:
			return 1
		case p.Status.Phase == corev1.PodUnknown:
			return 2
		case !podReady(p):
			return 3
		}
		return 4
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		ri, rj := rank(sorted[i]), rank(sorted[j])
		if ri != rj {
			return ri < rj
		}
		ti, tj := sorted[i].CreationTimestamp, sorted[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti) // newer first
		}
		return sorted[i].Name > sorted[j].Name
	})
	return sorted[:min(n, len(sorted))]
}

// updateStatus writes what the pods say through the status subresource
// when it changed.
func (c *ReplicaSetController) updateStatus(ctx context.Context, rs *appsv1.ReplicaSet, active []*corev1.Pod) error {
	now := c.now()
	tmplLabels := labels.Set(rs.Spec.Template.Labels)
	st := rs.Status.DeepCopy()
	st.Replicas = int32(len(active))
	st.FullyLabeledReplicas, st.ReadyReplicas, st.AvailableReplicas = 0, 0, 0
	var waiting bool
	for _, p := range active {
		if tmplLabels.AsSelector().Matches(labels.Set(p.Labels)) {
			st.FullyLabeledReplicas++
		}
		if podReady(p) {
			st.ReadyReplicas++
			if podAvailable(p, rs.Spec.MinReadySeconds, now) {
				st.AvailableReplicas++
			} else {
				waiting = true
			}
		}
	}
	st.ObservedGeneration = rs.Generation
	if waiting {
		c.queue.AddAfter(rs.Namespace+"/"+rs.Name, time.Second)
	}
	if equalRSStatus(&rs.Status, st) {
		return nil
	}
	rs.Status = *st
	_, err := c.client.AppsV1().ReplicaSets(rs.Namespace).UpdateStatus(ctx, rs, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func equalRSStatus(a, b *appsv1.ReplicaSetStatus) bool {
	return a.Replicas == b.Replicas && a.FullyLabeledReplicas == b.FullyLabeledReplicas &&
		a.ReadyReplicas == b.ReadyReplicas && a.AvailableReplicas == b.AvailableReplicas &&
		a.ObservedGeneration == b.ObservedGeneration
}

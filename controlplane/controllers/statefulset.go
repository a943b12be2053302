package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
)

var statefulSetKind = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}

// revisionHashLabel carries a StatefulSet ControllerRevision's hash, as
// upstream's controller history labels it.
const revisionHashLabel = "controller.kubernetes.io/hash"

// StatefulSetController runs the pods of each StatefulSet under stable
// names NAME-0..NAME-(n-1) (from spec.ordinals.start), each with its
// hostname and the subdomain of spec.serviceName so the headless
// Service's DNS names reach it. With OrderedReady it creates the next pod
// only once the ones before it are Running and Ready and removes pods
// from the highest ordinal one at a time; with Parallel it does both at
// once. Each pod template is a ControllerRevision; a RollingUpdate
// replaces pods of an older revision from the highest ordinal down to
// the partition, maxUnavailable at a time, and OnDelete waits for the
// user to delete them. Failed pods are deleted and recreated.
// volumeClaimTemplates create no claims: each pod gets an emptyDir of
// the template's name in their place.
type StatefulSetController struct {
	*loop
	client    kubernetes.Interface
	setLister appslisters.StatefulSetLister
	revLister appslisters.ControllerRevisionLister
	pods      corelisters.PodLister
	exp       *expectations
	now       func() time.Time
	recorder  events.EventRecorder
}

// NewStatefulSetController wires the controller to the shared informers.
func NewStatefulSetController(client kubernetes.Interface, setInf appsinformers.StatefulSetInformer, revInf appsinformers.ControllerRevisionInformer,
	podInf coreinformers.PodInformer, log *slog.Logger, m *metrics) (*StatefulSetController, error) {
	c := &StatefulSetController{
		client: client, setLister: setInf.Lister(), revLister: revInf.Lister(), pods: podInf.Lister(),
		exp: newExpectations(), now: time.Now, recorder: noEvents,
	}
	c.loop = newLoop(NameStatefulSet, log, m, c.sync, setInf.Informer().HasSynced, revInf.Informer().HasSynced, podInf.Informer().HasSynced)
	if _, err := setInf.Informer().AddEventHandler(c.handler()); err != nil {
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
			c.enqueueAdopters(p)
		},
		UpdateFunc: func(o, n any) {
			op, np := o.(*corev1.Pod), n.(*corev1.Pod)
			if op.ResourceVersion == np.ResourceVersion {
				return
			}
			key, ok := c.ownerKey(np)
			if !ok {
				c.enqueueAdopters(np)
				return
			}
			if np.DeletionTimestamp != nil && op.DeletionTimestamp == nil {
				c.exp.deletionObserved(key, np.Namespace+"/"+np.Name)
			}
			c.queue.Add(key)
			if set, err := c.setLister.StatefulSets(np.Namespace).Get(metav1.GetControllerOf(np).Name); err == nil &&
				set.Spec.MinReadySeconds > 0 && !podReady(op) && podReady(np) {
				c.queue.AddAfter(key, time.Duration(set.Spec.MinReadySeconds)*time.Second+time.Second)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			p, ok := obj.(*corev1.Pod)
			if !ok {
				return
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

// ownerKey is the key of the StatefulSet that controls p, if any.
func (c *StatefulSetController) ownerKey(p *corev1.Pod) (string, bool) {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != statefulSetKind.Kind || ref.APIVersion != "apps/v1" {
		return "", false
	}
	set, err := c.setLister.StatefulSets(p.Namespace).Get(ref.Name)
	if err != nil || set.UID != ref.UID {
		return "", false
	}
	return p.Namespace + "/" + ref.Name, true
}

// enqueueAdopters queues the StatefulSet an orphan pod's name and labels
// make it a member of.
func (c *StatefulSetController) enqueueAdopters(p *corev1.Pod) {
	if metav1.GetControllerOf(p) != nil || p.DeletionTimestamp != nil {
		return
	}
	parent, _, ok := parentAndOrdinal(p.Name)
	if !ok {
		return
	}
	set, err := c.setLister.StatefulSets(p.Namespace).Get(parent)
	if err != nil {
		return
	}
	if sel, err := metav1.LabelSelectorAsSelector(set.Spec.Selector); err == nil && !sel.Empty() && sel.Matches(labels.Set(p.Labels)) {
		c.enqueue(set)
	}
}

// parentAndOrdinal splits a StatefulSet pod's name NAME-ORDINAL.
func parentAndOrdinal(name string) (string, int, bool) {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 {
		return "", 0, false
	}
	ord, err := strconv.Atoi(name[i+1:])
	if err != nil || ord < 0 || strconv.Itoa(ord) != name[i+1:] {
		return "", 0, false
	}
	return name[:i], ord, true
}

func (c *StatefulSetController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	shared, err := c.setLister.StatefulSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	set := shared.DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(set.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil // invalid: nothing to do until the user fixes it
	}
	if set.DeletionTimestamp != nil {
		return nil // the garbage collector removes the pods
	}
	revs, err := c.ownedRevisions(set, sel)
	if err != nil {
		return err
	}
	upd, revs, err := c.syncRevisions(ctx, set, revs)
	if err != nil {
		return err
	}
	cur := upd
	for _, r := range revs {
		if r.Name == set.Status.CurrentRevision {
			cur = r
		}
	}
	curTmpl, err := revisionTemplate(cur)
	if err != nil {
		return fmt.Errorf("revision %s: %w", cur.Name, err)
	}
	pods, err := c.claimPods(ctx, set, sel)
	if err != nil {
		return err
	}
	var errs []error
	if c.exp.satisfied(key) {
		errs = append(errs, c.apply(ctx, key, set, c.plan(set, pods, curTmpl, cur.Name, upd.Name)))
	}
	errs = append(errs, c.cleanupRevisions(ctx, set, pods, revs, cur, upd))
	errs = append(errs, c.updateStatus(ctx, set, pods, cur.Name, upd.Name))
	return errors.Join(errs...)
}

// revisionTemplate reads the pod template back from a revision's data.
func revisionTemplate(r *appsv1.ControllerRevision) (*corev1.PodTemplateSpec, error) {
	var d struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(r.Data.Raw, &d); err != nil {
		return nil, err
	}
	return &d.Spec.Template, nil
}

// stsPlan is what one sync does: pods to create (in order) and to delete.
type stsPlan struct {
	creates []*corev1.Pod
	deletes []*corev1.Pod
}

// podRevision is the name of the revision a StatefulSet pod was made from.
func podRevision(p *corev1.Pod) string { return p.Labels[appsv1.StatefulSetRevisionLabel] }

// runningAndReady is upstream's isRunningAndReady.
func runningAndReady(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && podReady(p)
}

func podFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
}

// plan follows upstream's updateStatefulSet: the replicas (ordinals
// start..start+n-1) are made to exist and be healthy, in order when the
// policy is OrderedReady; then pods of higher ordinals (condemned) go,
// highest first; then, with RollingUpdate, pods of an older revision at
// or above the partition are deleted from the highest ordinal down, at
// most maxUnavailable pods being unavailable; their replacements are
// created from the update revision by a later sync.
func (c *StatefulSetController) plan(set *appsv1.StatefulSet, pods []*corev1.Pod, curTmpl *corev1.PodTemplateSpec, curRev, updRev string) stsPlan {
	var p stsPlan
	now := c.now()
	start := 0
	if set.Spec.Ordinals != nil {
		start = int(set.Spec.Ordinals.Start)
	}
	n := int(deref32(set.Spec.Replicas))
	replicas := make([]*corev1.Pod, n)
	var condemned []*corev1.Pod
	for _, pod := range pods {
		_, ord, ok := parentAndOrdinal(pod.Name)
		if !ok {
			continue
		}
		if ord >= start && ord < start+n {
			replicas[ord-start] = pod
		} else {
			condemned = append(condemned, pod)
		}
	}
	sort.Slice(condemned, func(i, j int) bool {
		_, a, _ := parentAndOrdinal(condemned[i].Name)
		_, b, _ := parentAndOrdinal(condemned[j].Name)
		return a > b
	})
	ordered := set.Spec.PodManagementPolicy != appsv1.ParallelPodManagement
	partition := 0
	rolling := set.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType
	if ru := set.Spec.UpdateStrategy.RollingUpdate; rolling && ru != nil && ru.Partition != nil {
		partition = int(*ru.Partition)
	}

	// The replicas, lowest ordinal first.
	unhealthy := 0
	for i, pod := range replicas {
		ord := start + i
		switch {
		case pod == nil:
			// New pods below the partition keep the current revision.
			if rolling && curRev != updRev && i < partition {
				p.creates = append(p.creates, statefulPod(set, curTmpl, curRev, ord))
			} else {
				p.creates = append(p.creates, statefulPod(set, &set.Spec.Template, updRev, ord))
			}
		case podFinished(pod) && pod.DeletionTimestamp == nil:
			p.deletes = append(p.deletes, pod) // recreated by a later sync
		case pod.DeletionTimestamp != nil, !runningAndReady(pod), !podAvailable(pod, set.Spec.MinReadySeconds, now):
		default:
			continue
		}
		unhealthy++
		if ordered {
			return p
		}
	}

	// Condemned pods, highest ordinal first.
	for _, pod := range condemned {
		if pod.DeletionTimestamp != nil {
			if ordered {
				return p
			}
			continue
		}
		if ordered && unhealthy > 0 {
			return p
		}
		p.deletes = append(p.deletes, pod)
		if ordered {
			return p
		}
	}
	if !rolling || len(p.creates) > 0 || len(p.deletes) > 0 {
		return p
	}

	// The rolling update, highest ordinal first, down to the partition.
	maxUnavailable := 1
	if ru := set.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.MaxUnavailable != nil {
		v, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, n, false)
		if err == nil {
			maxUnavailable = max(v, 1)
		}
	}
	for i := n - 1; i >= 0 && i >= partition; i-- {
		pod := replicas[i]
		if podRevision(pod) == updRev {
			continue
		}
		if unhealthy >= maxUnavailable {
			break
		}
		if pod.DeletionTimestamp == nil {
			p.deletes = append(p.deletes, pod)
			if runningAndReady(pod) {
				unhealthy++
			}
		}
	}
	return p
}

// statefulPod is the pod of ordinal ord from tmpl, made from revision rev.
func statefulPod(set *appsv1.StatefulSet, tmpl *corev1.PodTemplateSpec, rev string, ord int) *corev1.Pod {
	t := tmpl.DeepCopy()
	name := set.Name + "-" + strconv.Itoa(ord)
	lbls := map[string]string{}
	for k, v := range t.Labels {
		lbls[k] = v
	}
	lbls[appsv1.StatefulSetPodNameLabel] = name
	lbls[appsv1.PodIndexLabel] = strconv.Itoa(ord)
	lbls[appsv1.StatefulSetRevisionLabel] = rev
	spec := t.Spec
	spec.Hostname, spec.Subdomain = name, set.Spec.ServiceName
	for _, claim := range set.Spec.VolumeClaimTemplates {
		have := false
		for _, v := range spec.Volumes {
			have = have || v.Name == claim.Name
		}
		if !have {
			spec.Volumes = append(spec.Volumes, corev1.Volume{Name: claim.Name,
				VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: set.Namespace,
			Labels: lbls, Annotations: t.Annotations, Finalizers: t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{ownerRef(set, statefulSetKind)},
		},
		Spec: spec,
	}
}

// apply creates and deletes what plan says, recording expectations so a
// slow informer does not make the next sync act on a stale view (and, in
// order, skip a pod that is not there any more).
func (c *StatefulSetController) apply(ctx context.Context, key string, set *appsv1.StatefulSet, p stsPlan) error {
	if len(p.creates) > burstReplicas {
		p.creates = p.creates[:burstReplicas]
	}
	podKeys := make([]string, len(p.deletes))
	for i, pod := range p.deletes {
		podKeys[i] = pod.Namespace + "/" + pod.Name
	}
	c.exp.expect(key, len(p.creates), podKeys)
	var errs []error
	for _, pod := range p.creates {
		_, err := c.client.CoreV1().Pods(set.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			c.exp.creationObserved(key)
			if apierrors.IsAlreadyExists(err) {
				continue // the cache has not shown it yet
			}
			c.recorder.Eventf(set, nil, corev1.EventTypeWarning, "FailedCreate", "Create", "create Pod %s in StatefulSet %s failed error: %v", pod.Name, set.Name, err)
			errs = append(errs, err)
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				break
			}
			continue
		}
		c.recorder.Eventf(set, nil, corev1.EventTypeNormal, "SuccessfulCreate", "Create", "create Pod %s in StatefulSet %s successful", pod.Name, set.Name)
	}
	for i, pod := range p.deletes {
		err := c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil {
			c.exp.deletionObserved(key, podKeys[i])
			if !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				c.recorder.Eventf(set, nil, corev1.EventTypeWarning, "FailedDelete", "Delete", "delete Pod %s in StatefulSet %s failed error: %v", pod.Name, set.Name, err)
				errs = append(errs, err)
			}
			continue
		}
		c.recorder.Eventf(set, nil, corev1.EventTypeNormal, "SuccessfulDelete", "Delete", "delete Pod %s in StatefulSet %s successful", pod.Name, set.Name)
	}
	return errors.Join(errs...)
}

// claimPods returns the pods set controls, adopting orphans that match
// its selector and carry its name (NAME-ORDINAL), as upstream.
func (c *StatefulSetController) claimPods(ctx context.Context, set *appsv1.StatefulSet, sel labels.Selector) ([]*corev1.Pod, error) {
	all, err := c.pods.Pods(set.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var owned []*corev1.Pod
	for _, p := range all {
		ref := metav1.GetControllerOf(p)
		switch {
		case ref != nil && ref.UID == set.UID:
			owned = append(owned, p)
		case ref == nil && p.DeletionTimestamp == nil && sel.Matches(labels.Set(p.Labels)):
			if parent, _, ok := parentAndOrdinal(p.Name); !ok || parent != set.Name {
				continue
			}
			cp := p.DeepCopy()
			cp.OwnerReferences = append(cp.OwnerReferences, ownerRef(set, statefulSetKind))
			got, err := c.client.CoreV1().Pods(set.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
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

// ownedRevisions lists the ControllerRevisions set controls.
func (c *StatefulSetController) ownedRevisions(set *appsv1.StatefulSet, sel labels.Selector) ([]*appsv1.ControllerRevision, error) {
	list, err := c.revLister.ControllerRevisions(set.Namespace).List(sel)
	if err != nil {
		return nil, err
	}
	var out []*appsv1.ControllerRevision
	for _, r := range list {
		if metav1.IsControlledBy(r, set) {
			out = append(out, r)
		}
	}
	return out, nil
}

// syncRevisions returns the revision of set's template (the update
// revision), creating it with the next revision number or, when an older
// revision holds the same template (a rollback), renumbering that one as
// the newest; and the revisions with it.
func (c *StatefulSetController) syncRevisions(ctx context.Context, set *appsv1.StatefulSet, revs []*appsv1.ControllerRevision) (*appsv1.ControllerRevision, []*appsv1.ControllerRevision, error) {
	data, err := templateRevisionData(&set.Spec.Template)
	if err != nil {
		return nil, nil, err
	}
	var maxRev int64
	var match *appsv1.ControllerRevision
	for _, r := range revs {
		maxRev = max(maxRev, r.Revision)
		if bytes.Equal(r.Data.Raw, data) && (match == nil || r.Revision > match.Revision) {
			match = r
		}
	}
	replace := func(got *appsv1.ControllerRevision) []*appsv1.ControllerRevision {
		out := []*appsv1.ControllerRevision{got}
		for _, r := range revs {
			if r.Name != got.Name {
				out = append(out, r)
			}
		}
		return out
	}
	if match != nil {
		if match.Revision == maxRev {
			return match, revs, nil
		}
		cp := match.DeepCopy()
		cp.Revision = maxRev + 1
		got, err := c.client.AppsV1().ControllerRevisions(set.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
		if err != nil {
			return nil, nil, err
		}
		return got, replace(got), nil
	}
	for {
		hash := revisionHash(data, set.Status.CollisionCount)
		lbls := map[string]string{}
		for k, v := range set.Spec.Template.Labels {
			lbls[k] = v
		}
		lbls[revisionHashLabel] = hash
		rev := &appsv1.ControllerRevision{
			ObjectMeta: metav1.ObjectMeta{
				Name: set.Name + "-" + hash, Namespace: set.Namespace, Labels: lbls,
				Annotations:     set.Annotations,
				OwnerReferences: []metav1.OwnerReference{ownerRef(set, statefulSetKind)},
			},
			Data:     runtime.RawExtension{Raw: data},
			Revision: maxRev + 1,
		}
		got, err := c.client.AppsV1().ControllerRevisions(set.Namespace).Create(ctx, rev, metav1.CreateOptions{})
		if err == nil {
			return got, replace(got), nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, nil, err
		}
		existing, gerr := c.client.AppsV1().ControllerRevisions(set.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		if gerr != nil {
			return nil, nil, gerr
		}
		if metav1.IsControlledBy(existing, set) && bytes.Equal(existing.Data.Raw, data) {
			return existing, replace(existing), nil // ours: the cache had not shown it yet
		}
		// Someone else's revision holds the name: count a collision.
		cc := int32(0)
		if set.Status.CollisionCount != nil {
			cc = *set.Status.CollisionCount
		}
		cc++
		set.Status.CollisionCount = &cc
		updated, err := c.client.AppsV1().StatefulSets(set.Namespace).UpdateStatus(ctx, set, metav1.UpdateOptions{})
		if err != nil {
			return nil, nil, err
		}
		updated.DeepCopyInto(set)
	}
}

// cleanupRevisions deletes the oldest revisions beyond
// revisionHistoryLimit that are neither the current nor the update
// revision nor run by a live pod.
func (c *StatefulSetController) cleanupRevisions(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod, revs []*appsv1.ControllerRevision, cur, upd *appsv1.ControllerRevision) error {
	limit := 10
	if set.Spec.RevisionHistoryLimit != nil {
		limit = int(*set.Spec.RevisionHistoryLimit)
	}
	inUse := map[string]bool{cur.Name: true, upd.Name: true}
	for _, p := range pods {
		if p.DeletionTimestamp == nil {
			inUse[podRevision(p)] = true
		}
	}
	var old []*appsv1.ControllerRevision
	for _, r := range revs {
		if !inUse[r.Name] {
			old = append(old, r)
		}
	}
	if len(old) <= limit {
		return nil
	}
	sort.Slice(old, func(i, j int) bool { return old[i].Revision < old[j].Revision })
	var errs []error
	for _, r := range old[:len(old)-limit] {
		if err := c.client.AppsV1().ControllerRevisions(set.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// updateStatus counts the pods as upstream: replicas are the pods that
// exist, ready and available ones are Running and Ready (available after
// minReadySeconds), current and updated ones are the live pods of each
// revision. A rolling update that has replaced and readied every pod
// makes the update revision current.
func (c *StatefulSetController) updateStatus(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod, curRev, updRev string) error {
	now := c.now()
	st := set.Status.DeepCopy()
	st.ObservedGeneration = set.Generation
	st.Replicas, st.ReadyReplicas, st.AvailableReplicas, st.CurrentReplicas, st.UpdatedReplicas = 0, 0, 0, 0, 0
	st.CurrentRevision, st.UpdateRevision = curRev, updRev
	waiting := false
	for _, p := range pods {
		if _, _, ok := parentAndOrdinal(p.Name); !ok {
			continue
		}
		st.Replicas++
		if p.DeletionTimestamp != nil {
			continue
		}
		if runningAndReady(p) {
			st.ReadyReplicas++
			if podAvailable(p, set.Spec.MinReadySeconds, now) {
				st.AvailableReplicas++
			} else {
				waiting = true
			}
		}
		if podRevision(p) == curRev {
			st.CurrentReplicas++
		}
		if podRevision(p) == updRev {
			st.UpdatedReplicas++
		}
	}
	n := deref32(set.Spec.Replicas)
	if st.UpdatedReplicas == n && st.ReadyReplicas == n && st.Replicas == n {
		st.CurrentRevision, st.CurrentReplicas = updRev, st.UpdatedReplicas
	}
	if waiting {
		c.queue.AddAfter(set.Namespace+"/"+set.Name, time.Second)
	}
	if equalSTSStatus(&set.Status, st) {
		return nil
	}
	set.Status = *st
	_, err := c.client.AppsV1().StatefulSets(set.Namespace).UpdateStatus(ctx, set, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func equalSTSStatus(a, b *appsv1.StatefulSetStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && a.Replicas == b.Replicas && a.ReadyReplicas == b.ReadyReplicas &&
		a.AvailableReplicas == b.AvailableReplicas && a.CurrentReplicas == b.CurrentReplicas && a.UpdatedReplicas == b.UpdatedReplicas &&
		a.CurrentRevision == b.CurrentRevision && a.UpdateRevision == b.UpdateRevision
}

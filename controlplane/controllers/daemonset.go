package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

var daemonSetKind = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}

// DaemonSetController runs one pod of each DaemonSet on every node the
// DaemonSet selects (nodeSelector, required node affinity, taints against
// its tolerations plus the daemon tolerations), records each pod template
// as a ControllerRevision, and replaces pods of an older template as the
// update strategy says (RollingUpdate with maxUnavailable or maxSurge, or
// OnDelete).
type DaemonSetController struct {
	*loop
	client    kubernetes.Interface
	dsLister  appslisters.DaemonSetLister
	revLister appslisters.ControllerRevisionLister
	nodes     corelisters.NodeLister
	pods      corelisters.PodLister
	exp       *expectations
	now       func() time.Time
	recorder  events.EventRecorder
}

// NewDaemonSetController wires the controller to the shared informers.
func NewDaemonSetController(client kubernetes.Interface, dsInf appsinformers.DaemonSetInformer, revInf appsinformers.ControllerRevisionInformer,
	podInf coreinformers.PodInformer, nodeInf coreinformers.NodeInformer, log *slog.Logger, m *metrics) (*DaemonSetController, error) {
	c := &DaemonSetController{
		client: client, dsLister: dsInf.Lister(), revLister: revInf.Lister(), nodes: nodeInf.Lister(), pods: podInf.Lister(),
		exp: newExpectations(), now: time.Now, recorder: noEvents,
	}
	c.loop = newLoop(NameDaemonSet, log, m, c.sync, dsInf.Informer().HasSynced, revInf.Informer().HasSynced,
		podInf.Informer().HasSynced, nodeInf.Informer().HasSynced)
	if _, err := dsInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if key, ok := c.ownerKey(obj.(*corev1.Pod)); ok {
				c.exp.creationObserved(key)
				c.queue.Add(key)
			}
		},
		UpdateFunc: func(o, n any) {
			op, np := o.(*corev1.Pod), n.(*corev1.Pod)
			if op.ResourceVersion == np.ResourceVersion {
				return
			}
			key, ok := c.ownerKey(np)
			if !ok {
				return
			}
			if np.DeletionTimestamp != nil && op.DeletionTimestamp == nil {
				c.exp.deletionObserved(key, np.Namespace+"/"+np.Name)
			}
			c.queue.Add(key)
			if ds, err := c.dsLister.DaemonSets(np.Namespace).Get(metav1.GetControllerOf(np).Name); err == nil &&
				ds.Spec.MinReadySeconds > 0 && !podReady(op) && podReady(np) {
				c.queue.AddAfter(key, time.Duration(ds.Spec.MinReadySeconds)*time.Second+time.Second)
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
	if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.enqueueAll() },
		UpdateFunc: func(o, n any) {
			if nodeChangeMattersToDaemons(o.(*corev1.Node), n.(*corev1.Node)) {
				c.enqueueAll()
			}
		},
		DeleteFunc: func(any) { c.enqueueAll() },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *DaemonSetController) enqueueAll() {
	list, err := c.dsLister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, ds := range list {
		c.enqueue(ds)
	}
}

// nodeChangeMattersToDaemons: what decides whether a daemon pod runs on
// a node (labels, taints, readiness for availability), not heartbeats.
func nodeChangeMattersToDaemons(o, n *corev1.Node) bool {
	if !labels.Equals(o.Labels, n.Labels) || len(o.Spec.Taints) != len(n.Spec.Taints) || readyStatus(o) != readyStatus(n) {
		return true
	}
	for i := range o.Spec.Taints {
		if !o.Spec.Taints[i].MatchTaint(&n.Spec.Taints[i]) || o.Spec.Taints[i].Value != n.Spec.Taints[i].Value {
			return true
		}
	}
	return false
}

// ownerKey is the key of the DaemonSet that controls p, if any.
func (c *DaemonSetController) ownerKey(p *corev1.Pod) (string, bool) {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != daemonSetKind.Kind || ref.APIVersion != "apps/v1" {
		return "", false
	}
	ds, err := c.dsLister.DaemonSets(p.Namespace).Get(ref.Name)
	if err != nil || ds.UID != ref.UID {
		return "", false
	}
	return p.Namespace + "/" + ref.Name, true
}

// daemonTolerations are the tolerations every daemon pod gets, as
// upstream's daemon set controller adds them: it stays on nodes that are
// not ready or unreachable, and runs despite pressure and cordons.
func daemonTolerations(spec *corev1.PodSpec) []corev1.Toleration {
	out := []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}
	if spec.HostNetwork {
		out = append(out, corev1.Toleration{Key: corev1.TaintNodeNetworkUnavailable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	}
	return out
}

// addDaemonTolerations adds the daemon tolerations spec lacks.
func addDaemonTolerations(spec *corev1.PodSpec) {
	for _, t := range daemonTolerations(spec) {
		have := false
		for i := range spec.Tolerations {
			if spec.Tolerations[i].MatchToleration(&t) {
				have = true
				break
			}
		}
		if !have {
			spec.Tolerations = append(spec.Tolerations, t)
		}
	}
}

// nodePlacement says whether a daemon pod of ds should be started on
// node (run) and whether one already there may stay (stay): the node
// must match the nodeSelector and required node affinity; a NoSchedule
// taint the pod does not tolerate stops new pods, a NoExecute one also
// removes running ones.
func nodePlacement(spec *corev1.PodSpec, node *corev1.Node) (run, stay bool) {
	if ok, err := nodeaffinity.GetRequiredNodeAffinity(&corev1.Pod{Spec: *spec}).Match(node); err != nil || !ok {
		return false, false
	}
	run, stay = true, true
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		tolerated := false
		for j := range spec.Tolerations {
			if spec.Tolerations[j].ToleratesTaint(klog.Background(), t, false) {
				tolerated = true
				break
			}
		}
		if !tolerated {
			run = false
			if t.Effect == corev1.TaintEffectNoExecute {
				stay = false
			}
		}
	}
	return run, stay
}

func (c *DaemonSetController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	shared, err := c.dsLister.DaemonSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	ds := shared.DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil // invalid: nothing to do until the user fixes it
	}
	if ds.DeletionTimestamp != nil {
		return nil
	}
	cur, err := c.syncRevisions(ctx, ds, sel)
	if err != nil {
		return err
	}
	hash := cur.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
	pods, err := c.claimPods(ctx, ds, sel)
	if err != nil {
		return err
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	byNode := map[string][]*corev1.Pod{}
	var orphaned []*corev1.Pod // bound to a node that is gone, or unscheduled leftovers
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		node := daemonPodNode(p)
		byNode[node] = append(byNode[node], p)
	}
	known := map[string]bool{}
	for _, n := range nodes {
		known[n.Name] = true
	}
	for node, ps := range byNode {
		if !known[node] {
			orphaned = append(orphaned, ps...)
		}
	}

	plan := c.plan(ds, hash, nodes, byNode)
	plan.deletes = append(plan.deletes, orphaned...)
	var errs []error
	if c.exp.satisfied(key) {
		errs = append(errs, c.apply(ctx, key, ds, hash, plan))
	}
	errs = append(errs, c.cleanupRevisions(ctx, ds, sel, pods, cur))
	errs = append(errs, c.updateStatus(ctx, ds, hash, nodes, byNode))
	return errors.Join(errs...)
}

// daemonPodNode is the node a daemon pod is bound to, or, before the
// scheduler binds it, the node its node affinity names.
func daemonPodNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range t.MatchFields {
			if f.Key == metav1.ObjectNameField && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// dsPlan is what one sync changes: nodes to start a pod on, pods to
// delete.
type dsPlan struct {
	creates []string
	deletes []*corev1.Pod
}

func isCurrent(p *corev1.Pod, hash string) bool {
	return p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] == hash
}

// oldestFirst sorts pods by creation, then name.
func oldestFirst(ps []*corev1.Pod) {
	sort.SliceStable(ps, func(i, j int) bool {
		ti, tj := ps[i].CreationTimestamp, ps[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return ps[i].Name < ps[j].Name
	})
}

// plan decides, node by node, which pods to create and delete: one pod
// per node that should run one, none elsewhere; failed pods are replaced;
// then the rolling update replaces pods of older templates within
// maxUnavailable (or, with maxSurge, starts the new pod beside the old
// one and removes the old one once the new one is available).
func (c *DaemonSetController) plan(ds *appsv1.DaemonSet, hash string, nodes []*corev1.Node, byNode map[string][]*corev1.Pod) dsPlan {
	var p dsPlan
	now := c.now()
	spec := ds.Spec.Template.Spec.DeepCopy()
	addDaemonTolerations(spec)
	var oldOnly []string // nodes whose only pod is of an older template
	wanted, unavailable, surging := 0, 0, 0
	for _, n := range nodes {
		run, stay := nodePlacement(spec, n)
		var live []*corev1.Pod
		for _, pod := range byNode[n.Name] {
			if pod.Status.Phase == corev1.PodFailed {
				p.deletes = append(p.deletes, pod) // replaced by the next sync
				continue
			}
			if pod.Status.Phase != corev1.PodSucceeded {
				live = append(live, pod)
			}
		}
		if !stay || (!run && len(live) == 0) {
			p.deletes = append(p.deletes, live...)
			continue
		}
		if !run && len(live) > 0 {
			// A NoSchedule taint came after the pod: it stays, but is not
			// counted as wanted and never replaced.
			continue
		}
		wanted++
		if len(live) == 0 {
			p.creates = append(p.creates, n.Name)
			unavailable++
			continue
		}
		var cur, old []*corev1.Pod
		for _, pod := range live {
			if isCurrent(pod, hash) {
				cur = append(cur, pod)
			} else {
				old = append(old, pod)
			}
		}
		oldestFirst(cur)
		oldestFirst(old)
		if len(cur) > 1 {
			p.deletes = append(p.deletes, cur[1:]...)
			cur = cur[:1]
		}
		if len(old) > 1 {
			p.deletes = append(p.deletes, old[1:]...)
			old = old[:1]
		}
		switch {
		case len(cur) == 1 && len(old) == 1:
			// A surge in flight: the old pod goes once the new one is up.
			if podAvailable(cur[0], ds.Spec.MinReadySeconds, now) {
				p.deletes = append(p.deletes, old[0])
			} else {
				surging++
			}
		case len(cur) == 1:
			if !podAvailable(cur[0], ds.Spec.MinReadySeconds, now) {
				unavailable++
			}
		default:
			if !podAvailable(old[0], ds.Spec.MinReadySeconds, now) {
				unavailable++
			}
			oldOnly = append(oldOnly, n.Name)
		}
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		return p
	}
	maxSurge, maxUnavailable := dsSurgeAndUnavailable(ds, wanted)
	for _, node := range oldOnly {
		old := byNode[node]
		oldestFirst(old)
		var pod *corev1.Pod
		for _, o := range old {
			if o.Status.Phase != corev1.PodFailed && o.Status.Phase != corev1.PodSucceeded {
				pod = o
				break
			}
		}
		switch {
		case pod == nil:
		case !podAvailable(pod, ds.Spec.MinReadySeconds, now):
			p.deletes = append(p.deletes, pod) // unavailable anyway
		case maxSurge > 0:
			if surging < maxSurge {
				p.creates = append(p.creates, node)
				surging++
			}
		case unavailable < maxUnavailable:
			p.deletes = append(p.deletes, pod)
			unavailable++
		}
	}
	return p
}

// dsSurgeAndUnavailable resolves the rolling update's maxSurge (rounded
// up) and maxUnavailable (rounded up, at least 1 without surge) against
// the number of nodes that want a pod; defaults are 0 and 1, as upstream.
func dsSurgeAndUnavailable(ds *appsv1.DaemonSet, wanted int) (int, int) {
	ms, mu := intstr.FromInt32(0), intstr.FromInt32(1)
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		if ru.MaxSurge != nil {
			ms = *ru.MaxSurge
		}
		if ru.MaxUnavailable != nil {
			mu = *ru.MaxUnavailable
		}
	}
	surge, _ := intstr.GetScaledValueFromIntOrPercent(&ms, wanted, true)
	unavailable, _ := intstr.GetScaledValueFromIntOrPercent(&mu, wanted, true)
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return surge, unavailable
}

// apply creates and deletes what plan says, recording expectations so a
// slow informer does not make the next sync do it twice.
func (c *DaemonSetController) apply(ctx context.Context, key string, ds *appsv1.DaemonSet, hash string, p dsPlan) error {
	if len(p.creates) > burstReplicas {
		p.creates = p.creates[:burstReplicas]
	}
	podKeys := make([]string, len(p.deletes))
	for i, pod := range p.deletes {
		podKeys[i] = pod.Namespace + "/" + pod.Name
	}
	c.exp.expect(key, len(p.creates), podKeys)
	var errs []error
	for _, node := range p.creates {
		got, err := c.client.CoreV1().Pods(ds.Namespace).Create(ctx, daemonPod(ds, hash, node), metav1.CreateOptions{})
		if err != nil {
			c.exp.creationObserved(key)
			c.recorder.Eventf(ds, nil, corev1.EventTypeWarning, "FailedCreate", "Create", "Error creating: %v", err)
			errs = append(errs, err)
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				break
			}
			continue
		}
		c.recorder.Eventf(ds, nil, corev1.EventTypeNormal, "SuccessfulCreate", "Create", "Created pod: %s", got.Name)
	}
	for i, pod := range p.deletes {
		err := c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil {
			c.exp.deletionObserved(key, podKeys[i])
			if !apierrors.IsNotFound(err) {
				c.recorder.Eventf(ds, nil, corev1.EventTypeWarning, "FailedDelete", "Delete", "Error deleting: %v", err)
				errs = append(errs, err)
			}
			continue
		}
		c.recorder.Eventf(ds, nil, corev1.EventTypeNormal, "SuccessfulDelete", "Delete", "Deleted pod: %s", pod.Name)
	}
	return errors.Join(errs...)
}

// daemonPod is ds's pod for node: the template with the revision's hash
// label, the daemon tolerations, and node affinity to the node's name
// (the scheduler binds it, as upstream since 1.12).
func daemonPod(ds *appsv1.DaemonSet, hash, node string) *corev1.Pod {
	t := ds.Spec.Template.DeepCopy()
	lbls := map[string]string{}
	for k, v := range t.Labels {
		lbls[k] = v
	}
	lbls[appsv1.DefaultDaemonSetUniqueLabelKey] = hash
	lbls["pod-template-generation"] = strconv.FormatInt(ds.Generation, 10)
	spec := t.Spec
	addDaemonTolerations(&spec)
	term := corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{
		{Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}}
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{term}}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    ds.Name + "-",
			Namespace:       ds.Namespace,
			Labels:          lbls,
			Annotations:     t.Annotations,
			Finalizers:      t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{ownerRef(ds, daemonSetKind)},
		},
		Spec: spec,
	}
}

// claimPods returns the pods ds controls, adopting orphans that match
// its selector.
func (c *DaemonSetController) claimPods(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) ([]*corev1.Pod, error) {
	all, err := c.pods.Pods(ds.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var owned []*corev1.Pod
	for _, p := range all {
		ref := metav1.GetControllerOf(p)
		switch {
		case ref != nil && ref.UID == ds.UID:
			owned = append(owned, p)
		case ref == nil && p.DeletionTimestamp == nil && sel.Matches(labels.Set(p.Labels)):
			cp := p.DeepCopy()
			cp.OwnerReferences = append(cp.OwnerReferences, ownerRef(ds, daemonSetKind))
			got, err := c.client.CoreV1().Pods(ds.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
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

// revisionData is the ControllerRevision data of ds's template.
func revisionData(ds *appsv1.DaemonSet) ([]byte, error) {
	return templateRevisionData(&ds.Spec.Template)
}

// templateRevisionData is the ControllerRevision data of a DaemonSet's or
// StatefulSet's pod template in the form kubectl rollout undo applies as
// a strategic merge patch (and compares byte for byte with the one it
// builds from the live object): {"spec":{"template":{...,"$patch":"replace"}}}.
func templateRevisionData(t *corev1.PodTemplateSpec) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var tmpl map[string]any
	if err := json.Unmarshal(b, &tmpl); err != nil {
		return nil, err
	}
	tmpl["$patch"] = "replace"
	return json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
}

// revisionHash names a revision by its data (and the collision count).
func revisionHash(data []byte, collisions *int32) string {
	h := fnv.New32a()
	h.Write(data)
	if collisions != nil {
		fmt.Fprintf(h, "%d", *collisions)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// ownedRevisions lists the ControllerRevisions ds controls.
func (c *DaemonSetController) ownedRevisions(ds *appsv1.DaemonSet, sel labels.Selector) ([]*appsv1.ControllerRevision, error) {
	list, err := c.revLister.ControllerRevisions(ds.Namespace).List(sel)
	if err != nil {
		return nil, err
	}
	var out []*appsv1.ControllerRevision
	for _, r := range list {
		if metav1.IsControlledBy(r, ds) {
			out = append(out, r)
		}
	}
	return out, nil
}

// syncRevisions returns the ControllerRevision of ds's current template,
// creating it (with the next revision number) or, after a rollback to an
// older template, renumbering it as the newest.
func (c *DaemonSetController) syncRevisions(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) (*appsv1.ControllerRevision, error) {
	data, err := revisionData(ds)
	if err != nil {
		return nil, err
	}
	revs, err := c.ownedRevisions(ds, sel)
	if err != nil {
		return nil, err
	}
	var maxRev int64
	var cur *appsv1.ControllerRevision
	for _, r := range revs {
		maxRev = max(maxRev, r.Revision)
		if bytes.Equal(r.Data.Raw, data) && (cur == nil || r.Revision > cur.Revision) {
			cur = r
		}
	}
	if cur != nil {
		if cur.Revision < maxRev {
			cp := cur.DeepCopy()
			cp.Revision = maxRev + 1
			return c.client.AppsV1().ControllerRevisions(ds.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
		}
		return cur, nil
	}
	for {
		hash := revisionHash(data, ds.Status.CollisionCount)
		lbls := map[string]string{}
		for k, v := range ds.Spec.Template.Labels {
			lbls[k] = v
		}
		lbls[appsv1.DefaultDaemonSetUniqueLabelKey] = hash
		rev := &appsv1.ControllerRevision{
			ObjectMeta: metav1.ObjectMeta{
				Name: ds.Name + "-" + hash, Namespace: ds.Namespace, Labels: lbls,
				Annotations:     ds.Annotations,
				OwnerReferences: []metav1.OwnerReference{ownerRef(ds, daemonSetKind)},
			},
			Data:     runtime.RawExtension{Raw: data},
			Revision: maxRev + 1,
		}
		got, err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Create(ctx, rev, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return got, err
		}
		existing, gerr := c.client.AppsV1().ControllerRevisions(ds.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		if gerr != nil {
			return nil, gerr
		}
		if metav1.IsControlledBy(existing, ds) && bytes.Equal(existing.Data.Raw, data) {
			return existing, nil // ours: the cache had not shown it yet
		}
		// Someone else's revision holds the name: count a collision.
		cc := int32(0)
		if ds.Status.CollisionCount != nil {
			cc = *ds.Status.CollisionCount
		}
		cc++
		ds.Status.CollisionCount = &cc
		updated, err := c.client.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{})
		if err != nil {
			return nil, err
		}
		updated.DeepCopyInto(ds)
	}
}

// cleanupRevisions deletes the oldest revisions beyond
// revisionHistoryLimit that no live pod runs.
func (c *DaemonSetController) cleanupRevisions(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector, pods []*corev1.Pod, cur *appsv1.ControllerRevision) error {
	limit := 10
	if ds.Spec.RevisionHistoryLimit != nil {
		limit = int(*ds.Spec.RevisionHistoryLimit)
	}
	revs, err := c.ownedRevisions(ds, sel)
	if err != nil {
		return err
	}
	inUse := map[string]bool{}
	for _, p := range pods {
		if p.DeletionTimestamp == nil {
			inUse[p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]] = true
		}
	}
	var old []*appsv1.ControllerRevision
	for _, r := range revs {
		if r.Name != cur.Name && !inUse[r.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]] {
			old = append(old, r)
		}
	}
	if len(old) <= limit {
		return nil
	}
	sort.Slice(old, func(i, j int) bool { return old[i].Revision < old[j].Revision })
	var errs []error
	for _, r := range old[:len(old)-limit] {
		if err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// updateStatus counts, per node, what the DaemonSet runs there and
// writes the status when it changed.
func (c *DaemonSetController) updateStatus(ctx context.Context, ds *appsv1.DaemonSet, hash string, nodes []*corev1.Node, byNode map[string][]*corev1.Pod) error {
	now := c.now()
	spec := ds.Spec.Template.Spec.DeepCopy()
	addDaemonTolerations(spec)
	st := ds.Status.DeepCopy()
	st.DesiredNumberScheduled, st.CurrentNumberScheduled, st.NumberMisscheduled = 0, 0, 0
	st.NumberReady, st.NumberAvailable, st.UpdatedNumberScheduled, st.NumberUnavailable = 0, 0, 0, 0
	waiting := false
	for _, n := range nodes {
		run, stay := nodePlacement(spec, n)
		var live []*corev1.Pod
		for _, p := range byNode[n.Name] {
			if podActive(p) {
				live = append(live, p)
			}
		}
		want := run || (stay && len(live) > 0)
		if !want {
			if len(live) > 0 {
				st.NumberMisscheduled++
			}
			continue
		}
		st.DesiredNumberScheduled++
		if len(live) == 0 {
			continue
		}
		st.CurrentNumberScheduled++
		// The pod that counts: the current template's if there is one.
		oldestFirst(live)
		pod := live[0]
		for _, p := range live {
			if isCurrent(p, hash) {
				pod = p
				break
			}
		}
		if isCurrent(pod, hash) {
			st.UpdatedNumberScheduled++
		}
		if podReady(pod) {
			st.NumberReady++
			if podAvailable(pod, ds.Spec.MinReadySeconds, now) {
				st.NumberAvailable++
			} else {
				waiting = true
			}
		}
	}
	st.NumberUnavailable = max(st.DesiredNumberScheduled-st.NumberAvailable, 0)
	st.ObservedGeneration = ds.Generation
	if waiting {
		c.queue.AddAfter(ds.Namespace+"/"+ds.Name, time.Second)
	}
	if equalDSStatus(&ds.Status, st) {
		return nil
	}
	ds.Status = *st
	_, err := c.client.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func equalDSStatus(a, b *appsv1.DaemonSetStatus) bool {
	return a.DesiredNumberScheduled == b.DesiredNumberScheduled && a.CurrentNumberScheduled == b.CurrentNumberScheduled &&
		a.NumberMisscheduled == b.NumberMisscheduled && a.NumberReady == b.NumberReady &&
		a.NumberAvailable == b.NumberAvailable && a.NumberUnavailable == b.NumberUnavailable &&
		a.UpdatedNumberScheduled == b.UpdatedNumberScheduled && a.ObservedGeneration == b.ObservedGeneration
}

package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinformers "k8s.io/client-go/informers/coordination/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/klog/v2"
)

// Node lifecycle reasons and messages, as upstream's node lifecycle
// controller words them.
const (
	ReasonNodeStatusUnknown      = "NodeStatusUnknown"
	ReasonNodeStatusNeverUpdated = "NodeStatusNeverUpdated"
	ReasonTaintManagerEviction   = "TaintManagerEviction"
	msgNodeStatusUnknown         = "Kubelet stopped posting node status."
	msgNodeStatusNeverUpdated    = "Kubelet never posted node status."
)

// Eviction rate of the NoExecute taint manager: pods deleted per second
// across the cluster, and the burst allowed.
const (
	evictionQPS   = 10
	evictionBurst = 50
)

// agentConditions are the node conditions the node agent owns: a node
// that stops reporting has them all set to Unknown. NetworkUnavailable
// belongs to the network, not the agent.
var agentConditions = []corev1.NodeConditionType{
	corev1.NodeReady, corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure,
}

// conditionTaints maps a node condition in a given status to the
// NoSchedule taint it puts on the node (upstream's TaintNodesByCondition).
var conditionTaints = map[corev1.NodeConditionType]map[corev1.ConditionStatus]string{
	corev1.NodeReady: {
		corev1.ConditionFalse:   corev1.TaintNodeNotReady,
		corev1.ConditionUnknown: corev1.TaintNodeUnreachable,
	},
	corev1.NodeMemoryPressure:     {corev1.ConditionTrue: corev1.TaintNodeMemoryPressure},
	corev1.NodeDiskPressure:       {corev1.ConditionTrue: corev1.TaintNodeDiskPressure},
	corev1.NodePIDPressure:        {corev1.ConditionTrue: corev1.TaintNodePIDPressure},
	corev1.NodeNetworkUnavailable: {corev1.ConditionTrue: corev1.TaintNodeNetworkUnavailable},
}

// managedNoSchedule are the NoSchedule taint keys this controller owns:
// it adds and removes them; any other taint is the user's.
var managedNoSchedule = map[string]bool{
	corev1.TaintNodeNotReady: true, corev1.TaintNodeUnreachable: true, corev1.TaintNodeUnschedulable: true,
	corev1.TaintNodeMemoryPressure: true, corev1.TaintNodeDiskPressure: true, corev1.TaintNodePIDPressure: true,
	corev1.TaintNodeNetworkUnavailable: true,
}

// NodeLifecycleController watches each Node's heartbeats (its Lease in
// kube-node-lease and its Ready condition), marks a node whose agent
// went silent for the grace period Unknown, keeps the node's taints in
// line with its conditions and spec.unschedulable, and evicts the pods
// that do not tolerate its NoExecute taints.
type NodeLifecycleController struct {
	*loop
	client   kubernetes.Interface
	nodes    corelisters.NodeLister
	leases   coordlisters.LeaseLister
	podIndex cache.Indexer
	grace    time.Duration
	now      func() time.Time
	limiter  flowcontrol.RateLimiter
	recorder events.EventRecorder

	mu     sync.Mutex
	health map[string]*nodeHealth
}

// nodeHealth is what the controller last saw of a node's heartbeats and,
// by its own clock, when that last changed: a node is judged by how long
// its heartbeats have stood still, never by comparing its clock to ours.
type nodeHealth struct {
	heartbeat metav1.Time // the Ready condition's lastHeartbeatTime
	renew     metav1.Time // the Lease's renewTime
	probed    time.Time   // when either last changed, by the controller's clock
}

// NewNodeLifecycleController wires the controller to the shared
// informers; grace is how long heartbeats may stand still before the
// node is Unknown.
func NewNodeLifecycleController(client kubernetes.Interface, nodeInf coreinformers.NodeInformer, leaseInf coordinformers.LeaseInformer,
	podInf coreinformers.PodInformer, grace time.Duration, log *slog.Logger, m *metrics) (*NodeLifecycleController, error) {
	if err := addPodNodeIndex(podInf); err != nil {
		return nil, err
	}
	c := &NodeLifecycleController{
		client: client, nodes: nodeInf.Lister(), leases: leaseInf.Lister(), podIndex: podInf.Informer().GetIndexer(),
		grace: grace, now: time.Now, limiter: flowcontrol.NewTokenBucketRateLimiter(evictionQPS, evictionBurst),
		recorder: noEvents, health: map[string]*nodeHealth{},
	}
	c.loop = newLoop(NameNodeLifecycle, log, m, c.sync,
		nodeInf.Informer().HasSynced, leaseInf.Informer().HasSynced, podInf.Informer().HasSynced)
	if _, err := nodeInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	if _, err := leaseInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.leaseChanged,
		UpdateFunc: func(_, n any) { c.leaseChanged(n) },
	}); err != nil {
		return nil, err
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podChanged,
		UpdateFunc: func(_, n any) { c.podChanged(n) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// podNodeIndex indexes pods by spec.nodeName.
const podNodeIndex = "spec.nodeName"

// addPodNodeIndex adds the pods-by-node index once, whoever asks first.
func addPodNodeIndex(podInf coreinformers.PodInformer) error {
	inf := podInf.Informer()
	if _, ok := inf.GetIndexer().GetIndexers()[podNodeIndex]; ok {
		return nil
	}
	return inf.AddIndexers(cache.Indexers{podNodeIndex: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" {
			return nil, nil
		}
		return []string{p.Spec.NodeName}, nil
	}})
}

// podsOnNode lists the pods bound to node from the index.
func podsOnNode(idx cache.Indexer, node string) []*corev1.Pod {
	objs, err := idx.ByIndex(podNodeIndex, node)
	if err != nil {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

func (c *NodeLifecycleController) leaseChanged(obj any) {
	if l, ok := obj.(*coordinationv1.Lease); ok && l.Namespace == corev1.NamespaceNodeLease {
		c.queue.Add(l.Name)
	}
}

// podChanged looks at a pod's node again when the node has NoExecute
// taints the pod may not tolerate.
func (c *NodeLifecycleController) podChanged(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
		return
	}
	n, err := c.nodes.Get(p.Spec.NodeName)
	if err != nil {
		return
	}
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoExecute {
			c.queue.Add(n.Name)
			return
		}
	}
}

func (c *NodeLifecycleController) sync(ctx context.Context, name string) error {
	shared, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		c.mu.Lock()
		delete(c.health, name)
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	node := shared.DeepCopy()
	now := c.now()
	if node, err = c.checkHealth(ctx, node, now); err != nil {
		return err
	}
	if node, err = c.reconcileTaints(ctx, node, now); err != nil {
		return err
	}
	var errs []error
	if readyStatus(node) == corev1.ConditionUnknown {
		errs = append(errs, c.markPodsNotReady(ctx, node))
	}
	errs = append(errs, c.evictIntolerant(ctx, node, now))
	return errors.Join(errs...)
}

// readyStatus is the node's Ready condition status, "" when it has none.
func readyStatus(n *corev1.Node) corev1.ConditionStatus {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status
		}
	}
	return ""
}

// checkHealth records the node's heartbeats and, when they have stood
// still for the grace period, sets the agent's conditions to Unknown.
// Otherwise it looks at the node again when the grace period would end.
func (c *NodeLifecycleController) checkHealth(ctx context.Context, node *corev1.Node, now time.Time) (*corev1.Node, error) {
	var heartbeat, renew metav1.Time
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			heartbeat = cond.LastHeartbeatTime
		}
	}
	if l, err := c.leases.Leases(corev1.NamespaceNodeLease).Get(node.Name); err == nil && l.Spec.RenewTime != nil {
		renew = metav1.Time{Time: l.Spec.RenewTime.Time}
	}
	c.mu.Lock()
	h := c.health[node.Name]
	if h == nil || !h.heartbeat.Equal(&heartbeat) || !h.renew.Equal(&renew) {
		h = &nodeHealth{heartbeat: heartbeat, renew: renew, probed: now}
		c.health[node.Name] = h
	}
	probed := h.probed
	c.mu.Unlock()
	if left := probed.Add(c.grace).Sub(now); left > 0 {
		c.queue.AddAfter(node.Name, left+10*time.Millisecond)
		return node, nil
	}
	changed := false
	ready := readyStatus(node)
	if ready == "" {
		node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{
			Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: ReasonNodeStatusNeverUpdated,
			Message: msgNodeStatusNeverUpdated, LastHeartbeatTime: metav1.NewTime(node.CreationTimestamp.Time),
			LastTransitionTime: metav1.NewTime(now),
		})
		changed = true
	}
	for i := range node.Status.Conditions {
		cond := &node.Status.Conditions[i]
		if !isAgentCondition(cond.Type) || cond.Status == corev1.ConditionUnknown {
			continue
		}
		cond.Status, cond.Reason, cond.Message = corev1.ConditionUnknown, ReasonNodeStatusUnknown, msgNodeStatusUnknown
		cond.LastTransitionTime = metav1.NewTime(now)
		changed = true
	}
	if !changed {
		return node, nil
	}
	c.log.Info("node stopped posting status", "node", node.Name, "silentFor", now.Sub(probed).Round(time.Second).String())
	updated, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("marking node %s Unknown: %w", node.Name, err)
	}
	if ready != corev1.ConditionUnknown {
		c.recorder.Eventf(updated, nil, corev1.EventTypeNormal, "NodeNotReady", "NodeNotReady",
			"Node %s status is now: NodeNotReady", node.Name)
	}
	return updated, nil
}

func isAgentCondition(t corev1.NodeConditionType) bool {
	for _, a := range agentConditions {
		if a == t {
			return true
		}
	}
	return false
}

// wantTaints are the taints this controller owns that node should carry
// now: NoSchedule ones for its conditions and spec.unschedulable, and
// NoExecute not-ready (Ready False) or unreachable (Ready Unknown). A
// node that has not reported Ready yet keeps not-ready:NoSchedule.
func wantTaints(node *corev1.Node) []corev1.Taint {
	var out []corev1.Taint
	noSchedule := func(key string) {
		out = append(out, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
	}
	for _, cond := range node.Status.Conditions {
		if key, ok := conditionTaints[cond.Type][cond.Status]; ok {
			noSchedule(key)
		}
	}
	switch readyStatus(node) {
	case "":
		noSchedule(corev1.TaintNodeNotReady)
	case corev1.ConditionFalse:
		out = append(out, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute})
	case corev1.ConditionUnknown:
		out = append(out, corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute})
	}
	if node.Spec.Unschedulable {
		noSchedule(corev1.TaintNodeUnschedulable)
	}
	return out
}

// managedTaint reports whether t is one of this controller's taints.
func managedTaint(t *corev1.Taint) bool {
	switch t.Effect {
	case corev1.TaintEffectNoSchedule:
		return managedNoSchedule[t.Key]
	case corev1.TaintEffectNoExecute:
		return t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable
	}
	return false
}

// reconcileTaints brings the node's managed taints to wantTaints, keeping
// the user's taints and the timeAdded of managed ones that stay.
func (c *NodeLifecycleController) reconcileTaints(ctx context.Context, node *corev1.Node, now time.Time) (*corev1.Node, error) {
	want := wantTaints(node)
	var next []corev1.Taint
	changed := false
	for _, t := range node.Spec.Taints {
		if !managedTaint(&t) {
			next = append(next, t)
			continue
		}
		keep := false
		for i := range want {
			if want[i].MatchTaint(&t) {
				keep = true
			}
		}
		if keep {
			next = append(next, t)
		} else {
			changed = true
		}
	}
	for _, w := range want {
		have := false
		for i := range next {
			if next[i].MatchTaint(&w) {
				have = true
			}
		}
		if !have {
			if w.Effect == corev1.TaintEffectNoExecute {
				w.TimeAdded = &metav1.Time{Time: now}
			}
			next = append(next, w)
			changed = true
		}
	}
	if !changed {
		return node, nil
	}
	node.Spec.Taints = next
	updated, err := c.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("tainting node %s: %w", node.Name, err)
	}
	return updated, nil
}

// markPodsNotReady sets Ready=False on the pods of a node that stopped
// reporting, so Services stop sending them traffic; the agent sets them
// again when it comes back.
func (c *NodeLifecycleController) markPodsNotReady(ctx context.Context, node *corev1.Node) error {
	var errs []error
	for _, p := range podsOnNode(c.podIndex, node.Name) {
		if !podReady(p) || p.DeletionTimestamp != nil {
			continue
		}
		cp := p.DeepCopy()
		for i := range cp.Status.Conditions {
			if cond := &cp.Status.Conditions[i]; cond.Type == corev1.PodReady {
				cond.Status, cond.Reason, cond.LastTransitionTime = corev1.ConditionFalse, "NodeNotReady", metav1.NewTime(c.now())
			}
		}
		if _, err := c.client.CoreV1().Pods(cp.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("marking pod %s/%s not ready: %w", cp.Namespace, cp.Name, err))
		}
	}
	return errors.Join(errs...)
}

// evictionTime is when pod must leave a node with the NoExecute taints
// taints: the zero time for at once, ok false for never. A taint no
// toleration tolerates evicts at once; tolerations with seconds evict
// that long after the taint was added (the shortest wins).
func evictionTime(pod *corev1.Pod, taints []corev1.Taint, now time.Time) (time.Time, bool) {
	var at time.Time
	found := false
	for i := range taints {
		t := &taints[i]
		if t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		tolerated, forever := false, false
		var secs int64 = -1
		for j := range pod.Spec.Tolerations {
			tol := &pod.Spec.Tolerations[j]
			if !tol.ToleratesTaint(klog.Background(), t, false) {
				continue
			}
			tolerated = true
			if tol.TolerationSeconds == nil {
				forever = true
				break
			}
			if s := max(*tol.TolerationSeconds, 0); secs < 0 || s < secs {
				secs = s
			}
		}
		if !tolerated {
			return time.Time{}, true
		}
		if forever {
			continue
		}
		added := now
		if t.TimeAdded != nil {
			added = t.TimeAdded.Time
		}
		when := added.Add(time.Duration(secs) * time.Second)
		if !found || when.Before(at) {
			at, found = when, true
		}
	}
	return at, found
}

// evictIntolerant deletes the pods of node whose eviction time under its
// NoExecute taints has come, and looks at the node again when the next
// one comes. Deletions pass a cluster-wide rate limiter.
func (c *NodeLifecycleController) evictIntolerant(ctx context.Context, node *corev1.Node, now time.Time) error {
	hasNoExecute := false
	for _, t := range node.Spec.Taints {
		hasNoExecute = hasNoExecute || t.Effect == corev1.TaintEffectNoExecute
	}
	if !hasNoExecute {
		return nil
	}
	var errs []error
	var next time.Duration
	for _, p := range podsOnNode(c.podIndex, node.Name) {
		if p.DeletionTimestamp != nil || !podActive(p) {
			continue
		}
		at, evict := evictionTime(p, node.Spec.Taints, now)
		if !evict {
			continue
		}
		if wait := at.Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		if !c.limiter.TryAccept() {
			next = time.Second
			break
		}
		c.recorder.Eventf(p, nil, corev1.EventTypeNormal, ReasonTaintManagerEviction, "Delete",
			"Marking for deletion Pod %s/%s", p.Namespace, p.Name)
		c.log.Info("evicting pod from tainted node", "pod", p.Namespace+"/"+p.Name, "node", node.Name)
		err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("evicting pod %s/%s: %w", p.Namespace, p.Name, err))
		}
	}
	if next > 0 {
		c.queue.AddAfter(node.Name, next+10*time.Millisecond)
	}
	return errors.Join(errs...)
}

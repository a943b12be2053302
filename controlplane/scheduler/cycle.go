package scheduler

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// lead runs the scheduling loop until ctx ends (shutdown or a lost
// lease): the queue closes with it, since the scheduler does not lead
// twice. One loop keeps the scheduling cycles serial, so each sees what
// the previous one placed (assumed in the cache); binds run beside it.
func (s *Scheduler) lead(ctx context.Context) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	s.workers.Add(1)
	s.mu.Unlock()
	defer s.workers.Done()
	s.metrics.leader.Set(1)
	defer s.metrics.leader.Set(0)
	stop := context.AfterFunc(ctx, s.queue.close)
	defer stop()
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		s.flushLoop(ctx)
	}()
	defer func() { <-flushDone }()
	for s.scheduleOne(ctx) {
	}
	return nil
}

// flushLoop moves pods whose backoff ended to the active queue, retries
// long-unschedulable pods and expires assumed pods never confirmed.
func (s *Scheduler) flushLoop(ctx context.Context) {
	tick := time.NewTicker(queueFlushInterval)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		all := time.Since(last) > unschedulableFlushTick
		if all {
			last = time.Now()
		}
		s.queue.flush(all)
		if s.cache.cleanupExpired() > 0 {
			s.queue.moveAll(false)
		}
	}
}

// needsScheduling: ours, unbound, alive.
func (s *Scheduler) needsScheduling(pod *corev1.Pod) bool {
	name := pod.Spec.SchedulerName
	if name == "" {
		name = DefaultSchedulerName
	}
	return name == s.cfg.SchedulerName && pod.Spec.NodeName == "" &&
		pod.DeletionTimestamp == nil && !terminated(pod)
}

// podChanged handles an added pod (old nil) or an updated one: a bound
// pod goes into the cache, an unbound one of ours into the queue. An
// update requeues a pending pod only when its spec changed (tolerations,
// say): our own status writes must not cut its backoff short.
func (s *Scheduler) podChanged(old, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := podKey(pod)
	if pod.Spec.NodeName != "" {
		s.queue.remove(key)
		if terminated(pod) {
			s.cache.removePod(key)
			s.queue.moveAll(false)
			return
		}
		if o, ok := old.(*corev1.Pod); ok && o.Spec.NodeName == pod.Spec.NodeName && !s.cache.isAssumed(key) &&
			equality.Semantic.DeepEqual(o.Labels, pod.Labels) && equality.Semantic.DeepEqual(o.Spec, pod.Spec) {
			return // a status change: nothing the cache counts
		}
		s.cache.addPod(pod)
		s.queue.moveAll(true)
		return
	}
	if !s.needsScheduling(pod) {
		s.queue.remove(key)
		return
	}
	if o, ok := old.(*corev1.Pod); ok && s.needsScheduling(o) && equality.Semantic.DeepEqual(o.Spec, pod.Spec) &&
		equality.Semantic.DeepEqual(o.Labels, pod.Labels) {
		return
	}
	s.queue.add(pod)
}

func (s *Scheduler) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := podKey(pod)
	s.queue.remove(key)
	if pod.Spec.NodeName != "" || s.cache.isAssumed(key) {
		s.cache.removePod(key)
		s.queue.moveAll(false) // its resources, ports and spread are free now
	}
}

// nodeChangeMatters: heartbeats change nodes every few seconds; only
// what the filters and scores read should requeue pending pods.
func nodeChangeMatters(old, cur *corev1.Node) bool {
	if nodeReady(old) != nodeReady(cur) || old.Spec.Unschedulable != cur.Spec.Unschedulable ||
		!equality.Semantic.DeepEqual(old.Labels, cur.Labels) || len(old.Spec.Taints) != len(cur.Spec.Taints) {
		return true
	}
	for i := range old.Spec.Taints {
		if !old.Spec.Taints[i].MatchTaint(&cur.Spec.Taints[i]) || old.Spec.Taints[i].Value != cur.Spec.Taints[i].Value {
			return true
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods} {
		a, b := old.Status.Allocatable[r], cur.Status.Allocatable[r]
		if a.Cmp(b) != 0 {
			return true
		}
	}
	return false
}

// scheduleOne is one scheduling cycle: pop the next pod, bring the
// snapshot up to date, find a node, assume the pod there and hand the
// bind to a goroutine. It returns false once the queue is closed.
func (s *Scheduler) scheduleOne(ctx context.Context) bool {
	qp, cycle := s.queue.pop()
	if qp == nil {
		return false
	}
	if ctx.Err() != nil {
		return false
	}
	key := qp.key
	pod, err := s.podLister.Pods(qp.pod.Namespace).Get(qp.pod.Name)
	if err != nil || pod.UID != qp.pod.UID || !s.needsScheduling(pod) || s.cache.isAssumed(key) {
		s.queue.done(key)
		return true
	}
	if len(pod.Spec.SchedulingGates) > 0 {
		qp.gated = true
		s.queue.requeueUnschedulable(qp, cycle)
		s.async(func() { s.markGated(ctx, pod) })
		return true
	}
	s.cache.updateSnapshot(s.snap)
	node, fit := s.findNode(pod)
	if node == "" {
		qp.podEvents = fit.podRules
		msg := failureMessage(len(s.snap.list), fit.reasons)
		s.metrics.attempts.WithLabelValues(resultUnschedulable).Inc()
		s.log.Info("unschedulable", "pod", key, "reason", msg)
		s.queue.requeueUnschedulable(qp, cycle)
		s.async(func() {
			s.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "FailedScheduling", "Scheduling", msg)
			if err := s.markUnschedulable(ctx, pod, msg); err != nil {
				s.log.Warn("updating PodScheduled", "pod", key, "err", err)
			}
		})
		return true
	}
	assumed := pod.DeepCopy()
	assumed.Spec.NodeName = node
	s.cache.assume(assumed)
	first := qp.firstSeen
	s.async(func() { s.bind(ctx, pod, node, first) })
	return true
}

// async runs f in a binding goroutine, at most maxConcurrentBinds at once.
func (s *Scheduler) async(f func()) {
	s.bindSem <- struct{}{}
	s.binds.Add(1)
	go func() {
		defer s.binds.Done()
		defer func() { <-s.bindSem }()
		f()
	}()
}

// bind is the binding cycle: pods/binding, then the Scheduled event. A
// failed bind forgets the assumed pod and retries it after its backoff.
func (s *Scheduler) bind(ctx context.Context, pod *corev1.Pod, node string, first time.Time) {
	key := podKey(pod)
	err := s.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{})
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		// Another scheduler instance bound it in the moment between two
		// leaders; the apiserver kept the first bind, which the informer
		// brings.
		s.cache.forget(key)
		s.queue.done(key)
		s.metrics.attempts.WithLabelValues(resultConflict).Inc()
		s.log.Info("pod already bound", "pod", key)
		return
	case apierrors.IsNotFound(err):
		s.cache.forget(key)
		s.queue.done(key)
		s.queue.moveAll(false)
		return
	case err != nil:
		s.cache.forget(key)
		s.metrics.attempts.WithLabelValues(resultError).Inc()
		if ctx.Err() == nil {
			s.log.Warn("scheduling failed; will retry", "pod", key, "err", fmt.Errorf("binding to %s: %w", node, err))
		}
		s.queue.requeueBackoff(key)
		s.queue.moveAll(false)
		return
	}
	s.cache.finishBinding(key)
	s.queue.done(key)
	s.metrics.attempts.WithLabelValues(resultScheduled).Inc()
	s.metrics.e2e.Observe(time.Since(first).Seconds())
	s.log.Info("scheduled", "pod", key, "node", node)
	s.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Scheduled", "Binding",
		"Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, node)
}

// Upstream's PodScheduled reason and message for a pod held by
// spec.schedulingGates.
const (
	reasonSchedulingGated = "SchedulingGated"
	msgSchedulingGated    = "Scheduling is blocked due to non-empty scheduling gates"
)

func (s *Scheduler) markGated(ctx context.Context, pod *corev1.Pod) {
	if err := s.setPodScheduled(ctx, pod, reasonSchedulingGated, msgSchedulingGated); err != nil {
		s.log.Warn("updating PodScheduled", "pod", podKey(pod), "err", err)
	}
}

// markUnschedulable sets the pod's PodScheduled condition to False,
// reason Unschedulable.
func (s *Scheduler) markUnschedulable(ctx context.Context, pod *corev1.Pod, msg string) error {
	return s.setPodScheduled(ctx, pod, corev1.PodReasonUnschedulable, msg)
}

// setPodScheduled sets PodScheduled=False with reason and msg through the
// status subresource; it skips the write when the condition already says
// so.
func (s *Scheduler) setPodScheduled(ctx context.Context, pod *corev1.Pod, reason, msg string) error {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == reason && c.Message == msg {
			return nil
		}
	}
	p := pod.DeepCopy()
	cond := corev1.PodCondition{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: reason, Message: msg,
		LastTransitionTime: metav1.Now(),
	}
	replaced := false
	for i, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			if c.Status == cond.Status {
				cond.LastTransitionTime = c.LastTransitionTime
			}
			p.Status.Conditions[i] = cond
			replaced = true
		}
	}
	if !replaced {
		p.Status.Conditions = append(p.Status.Conditions, cond)
	}
	_, err := s.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // the next attempt reads the newer pod
	}
	return err
}

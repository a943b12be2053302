package nodeagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"
)

// Pod admission, as the kubelet does before it runs a pod: the scheduler
// has already placed it, but a pod bound by name (spec.nodeName set by its
// author), or one bound from a stale view of the node, may ask for more
// than is left or for a host port another pod holds. Such a pod is not
// run: it is failed with the kubelet's reasons (OutOfcpu, OutOfmemory,
// OutOfpods, OutOfephemeral-storage, NodePorts) and a warning event.

// rejection is why a pod was not admitted.
type rejection struct {
	reason, message string
}

// admitPod decides once whether pod may run here. A pod that has a
// sandbox record (it ran before an agent restart) or was admitted earlier
// is admitted. Otherwise it is checked against the pods admitted so far;
// admitted, it joins them. Admission is serialized, so two pods cannot
// both take the last CPU or the same host port.
func (a *Agent) admitPod(pod *corev1.Pod) *rejection {
	a.admitMu.Lock()
	defer a.admitMu.Unlock()
	if a.admitted[pod.UID] || a.hasSandbox(pod.UID) {
		a.admitted[pod.UID] = true
		return nil
	}
	all, err := a.pods.List(labels.Everything())
	if err != nil {
		all = nil
	}
	var others []*corev1.Pod
	active := map[types.UID]bool{}
	for _, p := range all {
		if p.UID == pod.UID || p.Spec.NodeName != a.cfg.NodeName ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if a.admitted[p.UID] || a.hasSandbox(p.UID) {
			a.admitted[p.UID] = true // stat each sandbox record once
			others = append(others, p)
			active[p.UID] = true
		}
	}
	for uid := range a.admitted { // pods gone or finished hold nothing
		if !active[uid] {
			delete(a.admitted, uid)
		}
	}
	if r := checkAdmission(pod, others, a.allocatableNow()); r != nil {
		return r
	}
	a.admitted[pod.UID] = true
	return nil
}

func (a *Agent) hasSandbox(uid types.UID) bool {
	_, err := os.Stat(filepath.Join(a.podDir(uid), sandboxFile))
	return err == nil
}

// allocatableNow is what the agent last reported as the Node's
// allocatable, or what it would report now when it has not yet.
func (a *Agent) allocatableNow() corev1.ResourceList {
	if v, ok := a.allocatable.Load().(corev1.ResourceList); ok && v != nil {
		return v
	}
	return allocatable(readHost(a.cfg.RootDir).capacity(a.cfg.MaxPods), a.cfg.Reserved)
}

// checkAdmission is the kubelet's resource and host-port admission of pod
// on a node with allocatable, where others are already admitted.
func checkAdmission(pod *corev1.Pod, others []*corev1.Pod, alloc corev1.ResourceList) *rejection {
	// Resources, in a fixed order so the first shortage reported is stable.
	used := corev1.ResourceList{}
	for _, o := range others {
		for name, q := range resourcehelper.PodRequests(o, resourcehelper.PodResourcesOptions{}) {
			sum := used[name]
			sum.Add(q)
			used[name] = sum
		}
	}
	want := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	if capPods, ok := alloc[corev1.ResourcePods]; ok && int64(len(others))+1 > capPods.Value() {
		return outOf(corev1.ResourcePods, 1, int64(len(others)), capPods.Value())
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, string(name))
	}
	sort.Strings(names)
	for _, n := range names {
		name := corev1.ResourceName(n)
		req := want[name]
		if req.IsZero() {
			continue
		}
		capQ, ok := alloc[name]
		u := used[name]
		if name == corev1.ResourceCPU {
			if !ok || u.MilliValue()+req.MilliValue() > capQ.MilliValue() {
				return outOf(name, req.MilliValue(), u.MilliValue(), capQ.MilliValue())
			}
			continue
		}
		if !ok || u.Value()+req.Value() > capQ.Value() {
			return outOf(name, req.Value(), u.Value(), capQ.Value())
		}
	}

	// Host ports: one protocol and port may be held once per host address,
	// and an unset (or 0.0.0.0) address holds it on every address.
	type hostPort struct {
		proto corev1.Protocol
		ip    string
		port  int32
	}
	ports := func(p *corev1.Pod) []hostPort {
		var out []hostPort
		for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for _, c := range cs {
				for _, cp := range c.Ports {
					if cp.HostPort <= 0 {
						continue
					}
					proto, ip := cp.Protocol, cp.HostIP
					if proto == "" {
						proto = corev1.ProtocolTCP
					}
					if ip == "" {
						ip = "0.0.0.0"
					}
					out = append(out, hostPort{proto, ip, cp.HostPort})
				}
			}
		}
		return out
	}
	mine := ports(pod)
	if len(mine) == 0 {
		return nil
	}
	for _, o := range others {
		for _, theirs := range ports(o) {
			for _, m := range mine {
				if m.proto == theirs.proto && m.port == theirs.port &&
					(m.ip == theirs.ip || m.ip == "0.0.0.0" || theirs.ip == "0.0.0.0") {
					return &rejection{reason: "NodePorts",
						message: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"}
				}
			}
		}
	}
	return nil
}

func outOf(name corev1.ResourceName, requested, used, capacity int64) *rejection {
	return &rejection{reason: "OutOf" + string(name),
		message: fmt.Sprintf("Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d", name, requested, used, capacity)}
}

// rejectPod fails a pod the agent did not admit, as the kubelet does:
// phase Failed, the reason, "Pod was rejected: " and the message, and a
// warning event with the reason.
func (a *Agent) rejectPod(ctx context.Context, pod *corev1.Pod, r *rejection) error {
	a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, r.reason, "Admit", "%s", r.message)
	p := pod.DeepCopy()
	p.Status.Phase = corev1.PodFailed
	p.Status.Reason = r.reason
	p.Status.Message = "Pod was rejected: " + r.message
	if p.Status.StartTime == nil {
		now := metav1.Now()
		p.Status.StartTime = &now
	}
	_, err := a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("rejecting %s/%s (%s): %w", pod.Namespace, pod.Name, r.reason, err)
	}
	return nil
}

package scheduler

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	v1helper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// Reasons a node is filtered out, worded like upstream's so the
// PodScheduled message reads the same.
const (
	reasonNotReady      = "node(s) were not ready"
	reasonUnschedulable = "node(s) were unschedulable"
	reasonAffinity      = "node(s) didn't match Pod's node affinity/selector"
	reasonPorts         = "node(s) didn't have free ports for the requested pod ports"
	reasonTooManyPods   = "Too many pods"
)

// hostPort is one host port a pod's container claims.
type hostPort struct {
	ip       string // "" or 0.0.0.0 for every address
	protocol corev1.Protocol
	port     int32
}

func (a hostPort) conflicts(b hostPort) bool {
	if a.port != b.port || a.protocol != b.protocol {
		return false
	}
	wild := func(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }
	return wild(a.ip) || wild(b.ip) || a.ip == b.ip
}

// podHostPorts lists the host ports of pod's containers (and init
// containers, which hold them while they run).
func podHostPorts(pod *corev1.Pod) []hostPort {
	var out []hostPort
	add := func(cs []corev1.Container) {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.HostPort <= 0 {
					continue
				}
				proto := p.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				out = append(out, hostPort{ip: p.HostIP, protocol: proto, port: p.HostPort})
			}
		}
	}
	add(pod.Spec.InitContainers)
	add(pod.Spec.Containers)
	return out
}

// filter returns why pod cannot run on ni's node, or nil if it can. The
// checks run in a fixed order and stop at the first failing one; the
// resource check reports every insufficient resource.
func filter(pod *corev1.Pod, ni *nodeInfo) []string {
	n := ni.node
	if !nodeReady(n) {
		return []string{reasonNotReady}
	}
	if n.Spec.Unschedulable && !toleratesUnschedulable(pod) {
		return []string{reasonUnschedulable}
	}
	if !matchesNodeSelectorAndAffinity(pod, n) {
		return []string{reasonAffinity}
	}
	if t, ok := untoleratedTaint(pod.Spec.Tolerations, n.Spec.Taints); ok {
		return []string{fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)}
	}
	if portsConflict(podHostPorts(pod), ni.ports) {
		return []string{reasonPorts}
	}
	return fitsResources(pod, ni)
}

// nodeReady is true only when the node's Ready condition is True; a node
// with no conditions has never reported and is not ready.
func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// toleratesUnschedulable: upstream lets a pod that tolerates the
// node.kubernetes.io/unschedulable:NoSchedule taint onto a cordoned node
// (DaemonSet pods do).
func toleratesUnschedulable(pod *corev1.Pod) bool {
	t := corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}
	_, bad := untoleratedTaint(pod.Spec.Tolerations, []corev1.Taint{t})
	return !bad
}

// untoleratedTaint returns the first NoSchedule or NoExecute taint that
// no toleration tolerates. PreferNoSchedule taints never filter.
func untoleratedTaint(tols []corev1.Toleration, taints []corev1.Taint) (corev1.Taint, bool) {
	return v1helper.FindMatchingUntoleratedTaint(klog.Background(), taints, tols, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}, false)
}

func portsConflict(want, used []hostPort) bool {
	for _, w := range want {
		for _, u := range used {
			if w.conflicts(u) {
				return true
			}
		}
	}
	return false
}

// fitsResources checks the pod's requests plus what the node's pods
// request against the node's allocatable cpu, memory and pods.
func fitsResources(pod *corev1.Pod, ni *nodeInfo) []string {
	alloc := ni.node.Status.Allocatable
	var out []string
	if maxPods := alloc.Pods().Value(); len(ni.pods)+1 > int(maxPods) {
		out = append(out, reasonTooManyPods)
	}
	r := podRequests(pod)
	if r.milliCPU > 0 && ni.requested.milliCPU+r.milliCPU > alloc.Cpu().MilliValue() {
		out = append(out, "Insufficient cpu")
	}
	if r.memory > 0 && ni.requested.memory+r.memory > alloc.Memory().Value() {
		out = append(out, "Insufficient memory")
	}
	return out
}

// matchesNodeSelectorAndAffinity checks spec.nodeSelector and the
// required node affinity with upstream's semantics (component-helpers'
// nodeaffinity: terms ORed, a term's expressions and fields ANDed, an
// empty term matches nothing; a term that does not parse matches nothing).
func matchesNodeSelectorAndAffinity(pod *corev1.Pod, n *corev1.Node) bool {
	ok, _ := nodeaffinity.GetRequiredNodeAffinity(pod).Match(n)
	return ok
}

// failureMessage words a scheduling failure like upstream:
// "0/3 nodes are available: 1 node(s) had untolerated taint {x: y}, 2 Insufficient cpu."
func failureMessage(nodes int, reasons map[string]int) string {
	if nodes == 0 {
		return "no nodes available to schedule pods"
	}
	parts := make([]string, 0, len(reasons))
	for r, n := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(parts)
	return fmt.Sprintf("0/%d nodes are available: %s.", nodes, strings.Join(parts, ", "))
}

// The node scores, each 0..maxScore.
const maxScore = 100

// score rates a feasible node for pod; higher is better. It adds
// least-allocated (free cpu and memory after placing the pod), balanced
// allocation (cpu and memory used in the same proportion) and, weighted
// twice, the spread of the pod's controller's pods (fewer siblings on the
// node is better; maxSiblings is the most any feasible node has).
func score(pod *corev1.Pod, ni *nodeInfo, maxSiblings int) int64 {
	r := podNonZeroRequests(pod)
	alloc := ni.node.Status.Allocatable
	cpuFrac := fraction(ni.nonZero.milliCPU+r.milliCPU, alloc.Cpu().MilliValue())
	memFrac := fraction(ni.nonZero.memory+r.memory, alloc.Memory().Value())
	least := int64((2 - cpuFrac - memFrac) / 2 * maxScore)
	diff := cpuFrac - memFrac
	if diff < 0 {
		diff = -diff
	}
	balanced := int64((1 - diff) * maxScore)
	spread := int64(maxScore)
	if o := controllerOf(pod); o != "" && maxSiblings > 0 {
		spread = int64(maxSiblings-ni.owners[o]) * maxScore / int64(maxSiblings)
	}
	return least + balanced + 2*spread
}

// fraction is used/capacity clamped to [0, 1]; no capacity is full.
func fraction(used, capacity int64) float64 {
	if capacity <= 0 {
		return 1
	}
	f := float64(used) / float64(capacity)
	return min(max(f, 0), 1)
}

package scheduler

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
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

// requests is what a pod asks for: CPU in millicores, memory in bytes.
type requests struct {
	milliCPU int64
	memory   int64
}

// podRequests is the effective request of pod, as upstream computes it:
// the sum of the app containers (and sidecars, the restartable init
// containers, which run beside them), or the largest init container
// (plus the sidecars started before it) if that is more, plus the pod
// overhead.
func podRequests(pod *corev1.Pod) requests {
	var sum, sidecars, initMax requests
	for _, c := range pod.Spec.Containers {
		sum.add(containerRequests(c))
	}
	for _, c := range pod.Spec.InitContainers {
		r := containerRequests(c)
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars.add(r)
			continue
		}
		r.add(sidecars)
		initMax.max(r)
	}
	sum.add(sidecars)
	sum.max(initMax)
	if pod.Spec.Overhead != nil {
		sum.add(requests{milliCPU: pod.Spec.Overhead.Cpu().MilliValue(), memory: pod.Spec.Overhead.Memory().Value()})
	}
	return sum
}

func containerRequests(c corev1.Container) requests {
	return requests{milliCPU: c.Resources.Requests.Cpu().MilliValue(), memory: c.Resources.Requests.Memory().Value()}
}

func (r *requests) add(o requests) {
	r.milliCPU += o.milliCPU
	r.memory += o.memory
}

func (r *requests) max(o requests) {
	r.milliCPU = max(r.milliCPU, o.milliCPU)
	r.memory = max(r.memory, o.memory)
}

// Defaults upstream uses when scoring pods that request nothing, so a
// node full of best-effort pods does not look empty.
const (
	defaultMilliCPURequest = 100
	defaultMemoryRequest   = 200 << 20
)

func nonZero(r requests) requests {
	if r.milliCPU == 0 {
		r.milliCPU = defaultMilliCPURequest
	}
	if r.memory == 0 {
		r.memory = defaultMemoryRequest
	}
	return r
}

// nodeInfo is a node and what the pods bound to it use.
type nodeInfo struct {
	node      *corev1.Node
	requested requests // sum of podRequests
	nonZero   requests // the same with upstream's defaults for empty requests
	pods      int
	ports     []hostPort
	owners    map[types.UID]int // pods per controller owner
}

func newNodeInfo(n *corev1.Node) *nodeInfo {
	return &nodeInfo{node: n, owners: map[types.UID]int{}}
}

// addPod accounts for pod running on the node.
func (ni *nodeInfo) addPod(pod *corev1.Pod) {
	r := podRequests(pod)
	ni.requested.add(r)
	ni.nonZero.add(nonZero(r))
	ni.pods++
	ni.ports = append(ni.ports, podHostPorts(pod)...)
	if o := controllerOf(pod); o != "" {
		ni.owners[o]++
	}
}

// controllerOf is the UID of pod's controlling owner, or "".
func controllerOf(pod *corev1.Pod) types.UID {
	for _, r := range pod.OwnerReferences {
		if r.Controller != nil && *r.Controller {
			return r.UID
		}
	}
	return ""
}

// terminated pods hold no resources.
func terminated(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// buildNodeInfos maps each node name to its nodeInfo, accounting for
// every pod bound to a known node that has not terminated.
func buildNodeInfos(nodes []*corev1.Node, pods []*corev1.Pod) map[string]*nodeInfo {
	out := make(map[string]*nodeInfo, len(nodes))
	for _, n := range nodes {
		out[n.Name] = newNodeInfo(n)
	}
	for _, p := range pods {
		if p.Spec.NodeName == "" || terminated(p) {
			continue
		}
		if ni := out[p.Spec.NodeName]; ni != nil {
			ni.addPod(p)
		}
	}
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
	for _, taint := range taints {
		if taint.Effect != corev1.TaintEffectNoSchedule && taint.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		ok := false
		for i := range tols {
			if tols[i].ToleratesTaint(klog.Background(), &taint, false) {
				ok = true
				break
			}
		}
		if !ok {
			return taint, true
		}
	}
	return corev1.Taint{}, false
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
	if maxPods := alloc.Pods().Value(); ni.pods+1 > int(maxPods) {
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
// required node affinity: the selector's labels must all match, and at
// least one of the affinity's node selector terms must match (terms are
// ORed, a term's expressions and fields ANDed; an empty term matches
// nothing).
func matchesNodeSelectorAndAffinity(pod *corev1.Pod, n *corev1.Node) bool {
	if len(pod.Spec.NodeSelector) > 0 &&
		!labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(labels.Set(n.Labels)) {
		return false
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return true
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if matchesTerm(term, n) {
			return true
		}
	}
	return false
}

func matchesTerm(term corev1.NodeSelectorTerm, n *corev1.Node) bool {
	if len(term.MatchExpressions) == 0 && len(term.MatchFields) == 0 {
		return false
	}
	for _, req := range term.MatchExpressions {
		if !matchesRequirement(req, labels.Set(n.Labels)) {
			return false
		}
	}
	for _, req := range term.MatchFields {
		// metadata.name is the only field upstream supports.
		if req.Key != "metadata.name" || !matchesRequirement(req, labels.Set{"metadata.name": n.Name}) {
			return false
		}
	}
	return true
}

func matchesRequirement(req corev1.NodeSelectorRequirement, set labels.Set) bool {
	var op selection.Operator
	switch req.Operator {
	case corev1.NodeSelectorOpIn:
		op = selection.In
	case corev1.NodeSelectorOpNotIn:
		op = selection.NotIn
	case corev1.NodeSelectorOpExists:
		op = selection.Exists
	case corev1.NodeSelectorOpDoesNotExist:
		op = selection.DoesNotExist
	case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
		if len(req.Values) != 1 || !set.Has(req.Key) {
			return false
		}
		want, err1 := strconv.ParseInt(req.Values[0], 10, 64)
		have, err2 := strconv.ParseInt(set.Get(req.Key), 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if req.Operator == corev1.NodeSelectorOpGt {
			return have > want
		}
		return have < want
	default:
		return false
	}
	r, err := labels.NewRequirement(req.Key, op, req.Values)
	if err != nil {
		return false
	}
	return r.Matches(set)
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
	r := nonZero(podRequests(pod))
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

// pickNode scores the feasible nodes and returns the best; ties go to
// the node at position start (mod the number tied) in name order, so
// callers that rotate start spread equal nodes' load.
func pickNode(pod *corev1.Pod, feasible []*nodeInfo, start int) *nodeInfo {
	if len(feasible) == 0 {
		return nil
	}
	maxSiblings := 0
	if o := controllerOf(pod); o != "" {
		for _, ni := range feasible {
			maxSiblings = max(maxSiblings, ni.owners[o])
		}
	}
	var best []*nodeInfo
	bestScore := int64(-1)
	for _, ni := range feasible {
		s := score(pod, ni, maxSiblings)
		switch {
		case s > bestScore:
			bestScore, best = s, []*nodeInfo{ni}
		case s == bestScore:
			best = append(best, ni)
		}
	}
	sort.Slice(best, func(i, j int) bool { return best[i].node.Name < best[j].node.Name })
	if start < 0 {
		start = -start
	}
	return best[start%len(best)]
}

package scheduler

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"
)

// requests is what a pod asks for: CPU in millicores, memory in bytes.
type requests struct {
	milliCPU int64
	memory   int64
}

func (r *requests) add(o requests) {
	r.milliCPU += o.milliCPU
	r.memory += o.memory
}

func (r *requests) sub(o requests) {
	r.milliCPU -= o.milliCPU
	r.memory -= o.memory
}

// Defaults upstream uses when scoring containers that request nothing, so
// a node full of best-effort pods does not look empty.
const (
	defaultMilliCPURequest = 100
	defaultMemoryRequest   = 200 << 20
)

var nonZeroDefaults = corev1.ResourceList{
	corev1.ResourceCPU:    *resource.NewMilliQuantity(defaultMilliCPURequest, resource.DecimalSI),
	corev1.ResourceMemory: *resource.NewQuantity(defaultMemoryRequest, resource.BinarySI),
}

// podRequests is the effective request of pod as upstream computes it
// (component-helpers' PodRequests: containers and sidecars, the largest
// init container if more, pod-level resources, overhead).
func podRequests(pod *corev1.Pod) requests {
	return fromList(resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{}))
}

// podNonZeroRequests is podRequests with upstream's defaults for the
// containers that request no cpu or memory: what the scores count.
func podNonZeroRequests(pod *corev1.Pod) requests {
	return fromList(resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{NonMissingContainerRequests: nonZeroDefaults}))
}

func fromList(l corev1.ResourceList) requests {
	return requests{milliCPU: l.Cpu().MilliValue(), memory: l.Memory().Value()}
}

// podInfo is a pod bound to a node with what the filters and scores read
// of it computed once.
type podInfo struct {
	pod      *corev1.Pod
	key      string
	req      requests
	nonZero  requests
	ports    []hostPort
	owner    types.UID
	affinity bool // has pod affinity or anti-affinity terms
}

func newPodInfo(pod *corev1.Pod) *podInfo {
	a := pod.Spec.Affinity
	return &podInfo{
		pod: pod, key: pod.Namespace + "/" + pod.Name,
		req: podRequests(pod), nonZero: podNonZeroRequests(pod),
		ports: podHostPorts(pod), owner: controllerOf(pod),
		affinity: a != nil && (a.PodAffinity != nil || a.PodAntiAffinity != nil),
	}
}

// nodeInfo is a node and the pods bound (or assumed bound) to it, with
// their totals kept up to date as pods come and go. node is nil while
// the cache knows pods on a node it has not seen (or has seen deleted).
type nodeInfo struct {
	node       *corev1.Node
	pods       []*podInfo
	requested  requests // sum of podRequests
	nonZero    requests // the same with upstream's defaults for empty requests
	ports      []hostPort
	owners     map[types.UID]int // pods per controller owner
	affinity   int               // pods with pod (anti-)affinity terms
	generation int64             // the cache's generation at the last change
}

func newNodeInfo(n *corev1.Node) *nodeInfo {
	return &nodeInfo{node: n, owners: map[types.UID]int{}}
}

// addPod accounts for pod running on the node.
func (ni *nodeInfo) addPod(pod *corev1.Pod) { ni.add(newPodInfo(pod)) }

func (ni *nodeInfo) add(pi *podInfo) {
	ni.pods = append(ni.pods, pi)
	ni.requested.add(pi.req)
	ni.nonZero.add(pi.nonZero)
	ni.ports = append(ni.ports, pi.ports...)
	if pi.owner != "" {
		ni.owners[pi.owner]++
	}
	if pi.affinity {
		ni.affinity++
	}
}

// remove takes the pod named key off the node; false if it was not there.
func (ni *nodeInfo) remove(key string) bool {
	for i, pi := range ni.pods {
		if pi.key != key {
			continue
		}
		ni.pods[i] = ni.pods[len(ni.pods)-1]
		ni.pods[len(ni.pods)-1] = nil
		ni.pods = ni.pods[:len(ni.pods)-1]
		ni.requested.sub(pi.req)
		ni.nonZero.sub(pi.nonZero)
		if pi.owner != "" {
			if ni.owners[pi.owner]--; ni.owners[pi.owner] <= 0 {
				delete(ni.owners, pi.owner)
			}
		}
		if pi.affinity {
			ni.affinity--
		}
		if len(pi.ports) > 0 {
			ni.ports = ni.ports[:0:0]
			for _, p := range ni.pods {
				ni.ports = append(ni.ports, p.ports...)
			}
		}
		return true
	}
	return false
}

// clone copies what changes as pods come and go; the pods themselves are
// shared (never modified).
func (ni *nodeInfo) clone() *nodeInfo {
	c := *ni
	c.pods = append([]*podInfo(nil), ni.pods...)
	c.ports = append([]hostPort(nil), ni.ports...)
	c.owners = make(map[types.UID]int, len(ni.owners))
	for k, v := range ni.owners {
		c.owners[k] = v
	}
	return &c
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

package scheduler

import (
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// assumedTTL is how long a pod this scheduler bound stays assumed after
// its bind returned, waiting for the informer to show it bound; if the
// informer never does (the pod was deleted in between, say), it is
// dropped from the cache so its resources are free again.
const assumedTTL = 30 * time.Second

// podState is the cache's record of one pod on a node.
type podState struct {
	pod      *corev1.Pod
	assumed  bool       // placed by this scheduler, not yet seen bound
	deadline *time.Time // set once the bind returned: when the assumption expires
}

// schedCache is the scheduler's incremental view of the cluster: every
// node with the pods on it and their totals, updated from informer events
// (and from this scheduler's own placements before the apiserver confirms
// them), so a scheduling cycle never lists pods or nodes.
type schedCache struct {
	mu         sync.Mutex
	nodes      map[string]*nodeInfo
	pods       map[string]*podState // by namespace/name
	generation int64
	nodeSetGen int64 // generation when a node was last added or removed
	now        func() time.Time
}

func newSchedCache() *schedCache {
	return &schedCache{nodes: map[string]*nodeInfo{}, pods: map[string]*podState{}, now: time.Now}
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// nodeFor returns the node's info, creating an empty one (a node not seen
// yet) if needed. Callers hold mu.
func (c *schedCache) nodeFor(name string) *nodeInfo {
	ni := c.nodes[name]
	if ni == nil {
		ni = newNodeInfo(nil)
		c.nodes[name] = ni
	}
	return ni
}

func (c *schedCache) touch(ni *nodeInfo) {
	c.generation++
	ni.generation = c.generation
}

func (c *schedCache) setNode(n *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ni := c.nodeFor(n.Name)
	if ni.node == nil {
		c.nodeSetGen = c.generation + 1
	}
	ni.node = n
	c.touch(ni)
}

func (c *schedCache) removeNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ni := c.nodes[name]
	if ni == nil {
		return
	}
	c.touch(ni)
	c.nodeSetGen = c.generation
	if len(ni.pods) == 0 {
		delete(c.nodes, name)
		return
	}
	ni.node = nil // its pods stay accounted until their deletes arrive
}

// addPod records a bound pod from the informer; it confirms an assumed
// one (moving it if the apiserver put it elsewhere).
func (c *schedCache) addPod(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := podKey(p)
	if st := c.pods[key]; st != nil {
		c.removeLocked(key, st)
	}
	c.pods[key] = &podState{pod: p}
	ni := c.nodeFor(p.Spec.NodeName)
	ni.addPod(p)
	c.touch(ni)
}

// removePod forgets a pod that was deleted, terminated or unbound.
func (c *schedCache) removePod(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.pods[key]; st != nil {
		c.removeLocked(key, st)
	}
}

func (c *schedCache) removeLocked(key string, st *podState) {
	delete(c.pods, key)
	ni := c.nodes[st.pod.Spec.NodeName]
	if ni == nil {
		return
	}
	ni.remove(key)
	c.touch(ni)
	if ni.node == nil && len(ni.pods) == 0 {
		delete(c.nodes, st.pod.Spec.NodeName)
	}
}

// assume places pod (its spec.nodeName set) before the bind: the next
// cycle sees what it takes.
func (c *schedCache) assume(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := podKey(p)
	if st := c.pods[key]; st != nil {
		c.removeLocked(key, st)
	}
	c.pods[key] = &podState{pod: p, assumed: true}
	ni := c.nodeFor(p.Spec.NodeName)
	ni.addPod(p)
	c.touch(ni)
}

// finishBinding starts the expiry of an assumed pod whose bind returned.
func (c *schedCache) finishBinding(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.pods[key]; st != nil && st.assumed {
		d := c.now().Add(assumedTTL)
		st.deadline = &d
	}
}

// forget drops an assumed pod whose bind failed.
func (c *schedCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.pods[key]; st != nil && st.assumed {
		c.removeLocked(key, st)
	}
}

// isAssumed: placed by this scheduler and not yet seen bound.
func (c *schedCache) isAssumed(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.pods[key]
	return st != nil && st.assumed
}

// cleanupExpired drops the assumed pods whose bind returned more than
// assumedTTL ago without the informer showing them; it returns how many.
func (c *schedCache) cleanupExpired() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now, n := c.now(), 0
	for key, st := range c.pods {
		if st.assumed && st.deadline != nil && now.After(*st.deadline) {
			c.removeLocked(key, st)
			n++
		}
	}
	return n
}

// snapshot is a scheduling cycle's consistent copy of the cache: node
// infos cloned when they changed since the previous cycle, the nodes in
// name order, and the nodes that hold pods with affinity terms.
type snapshot struct {
	infos      map[string]*nodeInfo
	list       []*nodeInfo // nodes with a Node object, by name
	index      map[string]int
	affinity   []*nodeInfo // nodes with pods that have pod (anti-)affinity
	generation int64
	nodeSetGen int64
}

func newSnapshot() *snapshot {
	return &snapshot{infos: map[string]*nodeInfo{}, index: map[string]int{}}
}

// updateSnapshot brings s up to date with the cache, cloning only the
// nodes that changed; it rebuilds the ordered list only when nodes came
// or went.
func (c *schedCache) updateSnapshot(s *snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.generation == s.generation {
		return
	}
	rebuild := c.nodeSetGen > s.generation || len(s.infos) != len(c.nodes)
	affinityChanged := false
	for name, ni := range c.nodes {
		if ni.generation <= s.generation {
			continue
		}
		old := s.infos[name]
		cl := ni.clone()
		s.infos[name] = cl
		if old == nil || (old.node == nil) != (cl.node == nil) {
			rebuild = true
		} else if i, ok := s.index[name]; ok {
			s.list[i] = cl
		}
		if cl.affinity > 0 || (old != nil && old.affinity > 0) {
			affinityChanged = true
		}
	}
	for name := range s.infos {
		if c.nodes[name] == nil {
			delete(s.infos, name)
			rebuild = true
		}
	}
	if rebuild {
		s.list = s.list[:0]
		for _, ni := range s.infos {
			if ni.node != nil {
				s.list = append(s.list, ni)
			}
		}
		sort.Slice(s.list, func(i, j int) bool { return s.list[i].node.Name < s.list[j].node.Name })
		clear(s.index)
		for i, ni := range s.list {
			s.index[ni.node.Name] = i
		}
		affinityChanged = true
	}
	if affinityChanged {
		s.affinity = s.affinity[:0]
		for _, ni := range s.list {
			if ni.affinity > 0 {
				s.affinity = append(s.affinity, ni)
			}
		}
	}
	s.generation = c.generation
	s.nodeSetGen = c.nodeSetGen
}

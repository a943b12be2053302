package controllers

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// NodeIPAMController gives every Node a pod range (spec.podCIDR and
// spec.podCIDRs) cut from the cluster's pod CIDR, and takes it back when
// the Node is deleted, as upstream's range allocator does. Its queue
// holds node names. The ranges in use are rebuilt from the Nodes
// themselves at start, so nothing is stored besides the Nodes.
type NodeIPAMController struct {
	*loop
	client kubernetes.Interface
	nodes  corelisters.NodeLister

	mu      sync.Mutex
	base    uint32 // the cluster CIDR's first address
	size    int    // how many node ranges fit
	shift   uint   // 32 - node mask size
	mask    int
	used    map[int]string // range index → node
	byNode  map[string]int
	primed  bool
	nextTry int
}

// NewNodeIPAMController allocates /maskSize ranges from clusterCIDR (IPv4).
func NewNodeIPAMController(client kubernetes.Interface, nodeInf coreinformers.NodeInformer, clusterCIDR string, maskSize int, log *slog.Logger, m *metrics) (*NodeIPAMController, error) {
	_, n, err := net.ParseCIDR(clusterCIDR)
	if err != nil {
		return nil, fmt.Errorf("cluster CIDR %q: %w", clusterCIDR, err)
	}
	ip4 := n.IP.To4()
	if ip4 == nil {
		return nil, fmt.Errorf("cluster CIDR %q: only IPv4 is supported", clusterCIDR)
	}
	ones, _ := n.Mask.Size()
	if maskSize < ones || maskSize > 30 {
		return nil, fmt.Errorf("node CIDR mask size /%d does not fit in %s (needs /%d to /30)", maskSize, clusterCIDR, ones)
	}
	c := &NodeIPAMController{
		client: client, nodes: nodeInf.Lister(),
		base: binary.BigEndian.Uint32(ip4), size: 1 << (maskSize - ones), shift: uint(32 - maskSize), mask: maskSize,
		used: map[int]string{}, byNode: map[string]int{},
	}
	c.loop = newLoop(NameNodeIPAM, log, m, c.sync, nodeInf.Informer().HasSynced)
	if _, err := nodeInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	return c, nil
}

// cidr is the range at index i.
func (c *NodeIPAMController) cidr(i int) string {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, c.base+uint32(i)<<c.shift)
	return fmt.Sprintf("%s/%d", ip, c.mask)
}

// index is the range index of cidr, or -1 when it is not one of ours.
func (c *NodeIPAMController) index(cidr string) int {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return -1
	}
	if ones, _ := n.Mask.Size(); ones != c.mask {
		return -1
	}
	v := binary.BigEndian.Uint32(ip.To4())
	if v < c.base {
		return -1
	}
	i := int((v - c.base) >> c.shift)
	if i >= c.size || c.cidr(i) != n.String() {
		return -1
	}
	return i
}

// prime marks the ranges the Nodes hold (once, with c.mu held).
func (c *NodeIPAMController) prime() error {
	if c.primed {
		return nil
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, n := range nodes {
		c.mark(n.Name, n.Spec.PodCIDR)
	}
	c.primed = true
	return nil
}

func (c *NodeIPAMController) mark(node, cidr string) {
	i := c.index(cidr)
	if i < 0 {
		return
	}
	if owner, ok := c.used[i]; ok && owner != node {
		c.log.Warn("two nodes hold the same pod CIDR", "cidr", cidr, "nodes", []string{owner, node})
		return
	}
	c.used[i] = node
	c.byNode[node] = i
}

func (c *NodeIPAMController) release(node string) {
	if i, ok := c.byNode[node]; ok {
		delete(c.byNode, node)
		if c.used[i] == node {
			delete(c.used, i)
		}
	}
}

// errRangeFull is a node left without a range because all are taken.
var errRangeFull = errors.New("no pod CIDR left in the cluster range")

func (c *NodeIPAMController) sync(ctx context.Context, name string) error {
	c.mu.Lock()
	if err := c.prime(); err != nil {
		c.mu.Unlock()
		return err
	}
	n, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		c.release(name)
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		c.mu.Unlock()
		return err
	}
	if n.Spec.PodCIDR != "" {
		c.mark(name, n.Spec.PodCIDR)
		c.mu.Unlock()
		return nil
	}
	i, ok := c.byNode[name] // allocated before, the informer has not caught up
	if !ok {
		i = -1
		for k := 0; k < c.size; k++ {
			j := (c.nextTry + k) % c.size
			if _, taken := c.used[j]; !taken {
				i = j
				break
			}
		}
		if i < 0 {
			c.mu.Unlock()
			return fmt.Errorf("node %s: %w", name, errRangeFull)
		}
		c.used[i], c.byNode[name] = name, i
		c.nextTry = (i + 1) % c.size
	}
	cidr := c.cidr(i)
	c.mu.Unlock()

	if err := c.patch(ctx, name, cidr); err != nil {
		c.mu.Lock()
		c.release(name)
		c.mu.Unlock()
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil // deleted, or replaced: its own event follows
		}
		return err
	}
	c.log.Info("assigned pod CIDR", "node", name, "podCIDR", cidr)
	return nil
}

func (c *NodeIPAMController) patch(ctx context.Context, name, cidr string) error {
	body, err := json.Marshal(map[string]any{
		"spec": map[string]any{"podCIDR": cidr, "podCIDRs": []string{cidr}},
	})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{})
	return err
}

// Allocated reports the range a node holds, for tests and status.
func (c *NodeIPAMController) Allocated(node string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.byNode[node]
	if !ok {
		return "", false
	}
	return c.cidr(i), true
}

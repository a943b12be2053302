package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// nodeUserPrefix starts a node agent's user name: system:node:NAME, in
// the group system:nodes.
const nodeUserPrefix = "system:node:"

// nodeName is the node a user is, or "" when the user is not a node.
func nodeName(u rbac.User) string {
	if !strings.HasPrefix(u.Name, nodeUserPrefix) {
		return ""
	}
	for _, g := range u.Groups {
		if g == rbac.Nodes {
			return strings.TrimPrefix(u.Name, nodeUserPrefix)
		}
	}
	return ""
}

// podsPrefix is where pods are stored.
const podsPrefix = "/registry/core/pods/"

// graphObject is an object a pod uses: a secret, configmap, claim or
// service account in the pod's namespace.
type graphObject struct {
	resource, namespace, name string
}

// nodeGraph is the Node authorizer's view of which node may reach what:
// for every pod bound to a node, the secrets, configmaps, persistent
// volume claims and service account it uses. A watch on pods keeps it
// current (storage.Follow); it is read under its lock.
type nodeGraph struct {
	mu    sync.RWMutex
	pods  map[string]podEdges            // pod key → what it adds
	uses  map[string]map[graphObject]int // node → object → pods using it
	rev   int64                          // the revision reflected
	moved chan struct{}                  // closed and replaced when rev moves

	synced     chan struct{}
	syncedOnce sync.Once
}

type podEdges struct {
	node string
	objs []graphObject
}

func newNodeGraph() *nodeGraph {
	return &nodeGraph{pods: map[string]podEdges{}, uses: map[string]map[graphObject]int{},
		moved: make(chan struct{}), synced: make(chan struct{})}
}

// Replace implements storage.Mirror.
func (g *nodeGraph) Replace(items []storage.KV, rev int64) {
	g.mu.Lock()
	g.pods, g.uses = map[string]podEdges{}, map[string]map[graphObject]int{}
	for _, kv := range items {
		g.setLocked(kv.Key, kv.Value)
	}
	g.movedLocked(rev)
	g.mu.Unlock()
	g.syncedOnce.Do(func() { close(g.synced) })
}

// Apply implements storage.Mirror.
func (g *nodeGraph) Apply(ev storage.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch ev.Type {
	case storage.Put:
		g.setLocked(ev.KV.Key, ev.KV.Value)
	case storage.Deleted:
		g.setLocked(ev.KV.Key, nil)
	}
	g.movedLocked(ev.KV.ModRevision)
}

func (g *nodeGraph) movedLocked(rev int64) {
	if rev > g.rev {
		g.rev = rev
		close(g.moved)
		g.moved = make(chan struct{})
	}
}

// setLocked replaces what the pod under key contributes (value nil: it
// is gone).
func (g *nodeGraph) setLocked(key string, value []byte) {
	if old, ok := g.pods[key]; ok {
		m := g.uses[old.node]
		for _, o := range old.objs {
			if m[o]--; m[o] <= 0 {
				delete(m, o)
			}
		}
		if len(m) == 0 {
			delete(g.uses, old.node)
		}
		delete(g.pods, key)
	}
	if value == nil {
		return
	}
	var p corev1.Pod
	if err := json.Unmarshal(value, &p); err != nil || p.Spec.NodeName == "" {
		return
	}
	e := podEdges{node: p.Spec.NodeName, objs: podObjects(&p)}
	g.pods[key] = e
	m := g.uses[e.node]
	if m == nil {
		m = map[graphObject]int{}
		g.uses[e.node] = m
	}
	for _, o := range e.objs {
		m[o]++
	}
}

// podObjects lists what a pod uses, each once.
func podObjects(p *corev1.Pod) []graphObject {
	seen := map[graphObject]bool{}
	var out []graphObject
	add := func(resource, name string) {
		o := graphObject{resource, p.Namespace, name}
		if name != "" && !seen[o] {
			seen[o] = true
			out = append(out, o)
		}
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	add("serviceaccounts", sa)
	for _, s := range p.Spec.ImagePullSecrets {
		add("secrets", s.Name)
	}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.Secret != nil:
			add("secrets", v.Secret.SecretName)
		case v.ConfigMap != nil:
			add("configmaps", v.ConfigMap.Name)
		case v.PersistentVolumeClaim != nil:
			add("persistentvolumeclaims", v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			add("persistentvolumeclaims", p.Name+"-"+v.Name)
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					add("secrets", s.Secret.Name)
				}
				if s.ConfigMap != nil {
					add("configmaps", s.ConfigMap.Name)
				}
			}
		}
		switch {
		case v.CSI != nil && v.CSI.NodePublishSecretRef != nil:
			add("secrets", v.CSI.NodePublishSecretRef.Name)
		case v.ISCSI != nil && v.ISCSI.SecretRef != nil:
			add("secrets", v.ISCSI.SecretRef.Name)
		case v.RBD != nil && v.RBD.SecretRef != nil:
			add("secrets", v.RBD.SecretRef.Name)
		case v.CephFS != nil && v.CephFS.SecretRef != nil:
			add("secrets", v.CephFS.SecretRef.Name)
		case v.FlexVolume != nil && v.FlexVolume.SecretRef != nil:
			add("secrets", v.FlexVolume.SecretRef.Name)
		case v.AzureFile != nil:
			add("secrets", v.AzureFile.SecretName)
		}
	}
	containers := append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...)
	for _, e := range p.Spec.EphemeralContainers {
		containers = append(containers, corev1.Container{Env: e.Env, EnvFrom: e.EnvFrom})
	}
	for _, c := range containers {
		for _, f := range c.EnvFrom {
			if f.SecretRef != nil {
				add("secrets", f.SecretRef.Name)
			}
			if f.ConfigMapRef != nil {
				add("configmaps", f.ConfigMapRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if e.ValueFrom.SecretKeyRef != nil {
				add("secrets", e.ValueFrom.SecretKeyRef.Name)
			}
			if e.ValueFrom.ConfigMapKeyRef != nil {
				add("configmaps", e.ValueFrom.ConfigMapKeyRef.Name)
			}
		}
	}
	return out
}

// reaches reports whether a pod bound to node uses o.
func (g *nodeGraph) reaches(node string, o graphObject) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.uses[node][o] > 0
}

// waitFor waits until the graph reflects revision rev, ctx ends or
// timeout passes; it reports whether the graph got there.
func (g *nodeGraph) waitFor(ctx context.Context, rev int64, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		g.mu.RLock()
		at, moved := g.rev, g.moved
		g.mu.RUnlock()
		if at >= rev {
			return true
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
}

// waitForSync waits until the graph has loaded the stored pods once; a
// 503 when it has not in time.
func (g *nodeGraph) waitForSync(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-g.synced:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	return apierrors.NewServiceUnavailable("authorization is not ready yet: the node authorizer's graph has not loaded")
}

// nodeRules are what the Node authorizer grants a node before the graph
// narrows it.
var nodeRules = rbac.NodeRules()

// graphResources are what the Node authorizer checks against the graph.
var graphResources = map[string]bool{"secrets": true, "configmaps": true, "persistentvolumeclaims": true}

// nodeAuthorize is the Node authorizer, upstream's first in
// --authorization-mode=Node,RBAC: for a node agent (system:node:NAME in
// system:nodes) it allows rbac.NodeRules, except that secrets, configmaps
// and claims may be read one by one and only when a pod bound to the node
// uses them, and a service-account token only for an account such a pod
// runs as. It has no opinion on anyone else, nor on what it does not
// allow: RBAC decides then. NodeRestriction admission (nodeadmission.go)
// narrows the writes it allows to the node's own objects.
func (s *Server) nodeAuthorize(ctx context.Context, at rbac.Attributes) (allowed bool, reason string, err error) {
	node := nodeName(at.User)
	if node == "" || !at.ResourceRequest {
		return false, "", nil
	}
	if !anyRuleAllows(at, nodeRules) {
		return false, "", nil
	}
	var o graphObject
	switch {
	case at.APIGroup == "" && at.Subresource == "" && graphResources[at.Resource]:
		if at.Verb != "get" && at.Verb != "list" && at.Verb != "watch" {
			return false, "", nil
		}
		if at.Name == "" {
			return false, fmt.Sprintf("can only read individual %s the node's pods use", at.Resource), nil
		}
		o = graphObject{at.Resource, at.Namespace, at.Name}
	case at.APIGroup == "" && at.Resource == "serviceaccounts" && at.Subresource == "token":
		if at.Name == "" {
			return false, "can only create tokens for individual service accounts", nil
		}
		o = graphObject{"serviceaccounts", at.Namespace, at.Name}
	case at.APIGroup == "" && at.Resource == "persistentvolumes":
		// Volumes are reached through claims, which kforge does not
		// serve yet: no node reaches any.
		return false, "no relationship found between node '" + node + "' and this object", nil
	default:
		return true, "", nil
	}
	if err := s.nodes.waitForSync(ctx, s.cfg.AuthzSyncTimeout); err != nil {
		return false, "", err
	}
	if s.nodes.reaches(node, o) {
		return true, "", nil
	}
	// The pod that links them may be newer than the graph: catch up with
	// etcd's current revision once before saying no.
	if rev, err := s.store.Revision(ctx); err == nil && s.nodes.waitFor(ctx, rev, s.cfg.AuthzSyncTimeout) && s.nodes.reaches(node, o) {
		return true, "", nil
	}
	return false, "no relationship found between node '" + node + "' and this object", nil
}

func anyRuleAllows(at rbac.Attributes, rules []rbacv1.PolicyRule) bool {
	for i := range rules {
		if rbac.RuleAllows(at, &rules[i]) {
			return true
		}
	}
	return false
}

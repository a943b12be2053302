package apiserver

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

// nodeRestrictionPrefix marks labels a node may not set on itself, as
// upstream: an operator uses them to place workloads on nodes the nodes
// cannot claim to be.
const nodeRestrictionPrefix = "node-restriction.kubernetes.io/"

// mirrorPodAnnotation marks a static pod's mirror, the only pod a node
// may create.
const mirrorPodAnnotation = corev1.MirrorPodAnnotationKey

// nodeOf is the node the user of a request is, or "".
func nodeOf(u user) string { return nodeName(rbac.User{Name: u.Name, Groups: u.Groups}) }

func nodeForbidden(gr schema.GroupResource, name, format string, args ...any) error {
	return apierrors.NewForbidden(gr, name, fmt.Errorf(format, args...))
}

// restrictNodeRequest is the request half of NodeRestriction admission,
// as upstream's: a node may write and delete only its own Node and Lease,
// delete and write the status of only the pods bound to it. It reads the
// pod a request names; the object half (restrictNodeObject) checks what
// is written.
func (s *Server) restrictNodeRequest(ctx context.Context, req *request) error {
	node := nodeOf(req.user)
	if node == "" || req.verb == "get" || req.verb == "list" || req.verb == "watch" {
		return nil
	}
	gr := req.gr()
	switch {
	case req.res.Group == "" && req.res.Plural == "nodes":
		if req.verb == "deletecollection" || (req.name != "" && req.name != node) {
			return nodeForbidden(gr, req.name, "node %q is not allowed to modify node %q", node, req.name)
		}
	case req.res.Group == "" && req.res.Plural == "pods":
		switch {
		case req.verb == "deletecollection":
			return nodeForbidden(gr, "", "node %q may not delete a collection of pods", node)
		case req.sub == "" && req.verb == "create":
			return nil // the object half: mirror pods only
		case req.sub == "" && req.verb != "delete":
			return nodeForbidden(gr, req.name, "node %q may only write the status of pods", node)
		}
		obj, err := s.get(ctx, req.res, req.ns, req.name)
		if err != nil {
			return nil // the request itself answers 404
		}
		if p := obj.(*corev1.Pod); p.Spec.NodeName != node {
			if req.sub == "status" {
				return nodeForbidden(gr, req.name, "node %q can only update pod status for pods with spec.nodeName set to itself", node)
			}
			return nodeForbidden(gr, req.name, "node %q can only delete pods with spec.nodeName set to itself", node)
		}
	case req.res.Group == coordinationv1.GroupName && req.res.Plural == "leases":
		if req.ns != corev1.NamespaceNodeLease {
			return nodeForbidden(gr, req.name, "can only access node lease in %s namespace", corev1.NamespaceNodeLease)
		}
		if req.verb == "deletecollection" || (req.name != "" && req.name != node) {
			return nodeForbidden(gr, req.name, "can only access node lease with the same name as the requesting node")
		}
	}
	return nil
}

// restrictNodeObject is the object half of NodeRestriction admission: what
// a node creates or updates. old is nil on create.
func (s *Server) restrictNodeObject(ctx context.Context, res *Resource, obj, old runtime.Object) error {
	node := nodeOf(writeInfoFrom(ctx).user)
	if node == "" {
		return nil
	}
	gr := groupResource(res)
	switch o := obj.(type) {
	case *corev1.Node:
		if o.Name != node {
			return nodeForbidden(gr, o.Name, "node %q is not allowed to modify node %q", node, o.Name)
		}
		var oldLabels map[string]string
		if n, ok := old.(*corev1.Node); ok {
			oldLabels = n.Labels
			if !equality.Semantic.DeepEqual(n.Spec.Taints, o.Spec.Taints) {
				return nodeForbidden(gr, o.Name, "node %q is not allowed to modify taints", node)
			}
		}
		var bad []string
		for _, k := range slices.Sorted(maps.Keys(unionKeys(o.Labels, oldLabels))) {
			if !strings.HasPrefix(k, nodeRestrictionPrefix) {
				continue
			}
			nv, nok := o.Labels[k]
			ov, ook := oldLabels[k]
			if nok != ook || nv != ov {
				bad = append(bad, k)
			}
		}
		if len(bad) > 0 {
			return nodeForbidden(gr, o.Name, "is not allowed to modify labels: %s", strings.Join(bad, ", "))
		}
	case *corev1.Pod:
		if old != nil {
			return nil // status writes: checked on the request
		}
		if _, mirror := o.Annotations[mirrorPodAnnotation]; !mirror {
			return nodeForbidden(gr, o.Name, "pod does not have %q annotation, node %q can only create mirror pods", mirrorPodAnnotation, node)
		}
		if o.Spec.NodeName != node {
			return nodeForbidden(gr, o.Name, "node %q can only create pods with spec.nodeName set to itself", node)
		}
	case *coordinationv1.Lease:
		if o.Name != node || o.Namespace != corev1.NamespaceNodeLease {
			return nodeForbidden(gr, o.Name, "can only access node lease with the same name as the requesting node")
		}
	}
	return nil
}

func unionKeys(a, b map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// admitTokenRequest is NodeRestriction for TokenRequest: a node may ask
// only for tokens bound to a pod that runs on it, named with its UID.
func (s *Server) admitTokenRequest(u user, b *authenticationv1.BoundObjectReference, k *k8sClaims) error {
	node := nodeOf(u)
	if node == "" {
		return nil
	}
	gr := schema.GroupResource{Resource: "serviceaccounts"}
	if b == nil || b.Kind != "Pod" || k.Pod == nil {
		return nodeForbidden(gr, "", "node requested token not bound to a pod")
	}
	if b.UID == "" {
		return nodeForbidden(gr, "", "node requested token with a pod binding without a uid")
	}
	if k.Node == nil || k.Node.Name != node {
		return nodeForbidden(gr, "", "node requested token bound to a pod scheduled on a different node")
	}
	return nil
}

package apiserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// Namespace lifecycle, as upstream's namespace strategy and
// NamespaceLifecycle admission: a namespace is created with the
// "kubernetes" spec finalizer; deleting it marks it Terminating with a
// deletionTimestamp (rest.go, delete); the controller manager's namespace
// controller deletes its content and then removes the finalizer through
// namespaces/finalize, which removes the namespace. Creating objects in a
// terminating namespace is refused, and the system namespaces cannot be
// deleted at all.

// immortalNamespaces cannot be deleted. Upstream protects default,
// kube-system and kube-public, and recreates kube-node-lease after a
// delete; kforge, which does not recreate it, protects it too (node
// heartbeats live there).
var immortalNamespaces = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease}

// admit is the admission step after authorization: it refuses what
// upstream's admission plugins refuse before a handler runs.
func (s *Server) admit(req *request) error {
	if req.verb == "delete" && req.sub == "" && req.res.Group == "" && req.res.Plural == "namespaces" && slices.Contains(immortalNamespaces, req.name) {
		return apierrors.NewForbidden(groupResource(req.res), req.name, errors.New("this namespace may not be deleted"))
	}
	return nil
}

// namespaceTerminating is the refusal of a create in a terminating
// namespace, as upstream's NamespaceLifecycle admission words it, with the
// NamespaceTerminating cause controllers look for.
func namespaceTerminating(res *Resource, name, ns string) error {
	err := apierrors.NewForbidden(groupResource(res), name,
		fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
		Type:    corev1.NamespaceTerminatingCause,
		Message: fmt.Sprintf("namespace %s is being terminated", ns),
		Field:   "metadata.namespace",
	})
	return err
}

// ensureNamespaceFinalizer adds the "kubernetes" spec finalizer on create,
// as upstream: the namespace controller removes it once the namespace is
// empty.
func ensureNamespaceFinalizer(ns *corev1.Namespace) {
	if !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		ns.Spec.Finalizers = append(ns.Spec.Finalizers, corev1.FinalizerKubernetes)
	}
}

// afterDelete cleans up what an object held once it is gone from storage:
// a Service's ClusterIP, a Namespace's content.
func (s *Server) afterDelete(ctx context.Context, obj runtime.Object) {
	s.releaseClusterIP(ctx, obj)
	s.releaseNodePorts(ctx, asService(obj), nil)
	if ns, ok := obj.(*corev1.Namespace); ok && !dryRunFrom(ctx) {
		s.purgeNamespace(context.WithoutCancel(ctx), ns.Name)
	}
}

// purgeNamespace removes every object left in a namespace that is gone,
// so a namespace created again with the same name starts empty. The
// namespace controller leaves nothing behind; this catches namespaces
// finalized by hand while content remained, and namespaces stored without
// the finalizer (created before kforge set it), which are deleted at once.
func (s *Server) purgeNamespace(ctx context.Context, ns string) {
	for _, res := range s.reg.all() {
		if !res.Namespaced || res.Review != nil || res.StoredAs != nil {
			continue
		}
		list, err := s.store.List(ctx, res.KeyPrefix(ns), storage.ListOptions{})
		if err != nil {
			s.log.Warn("purging a deleted namespace", "namespace", ns, "resource", res.Plural, "err", err)
			continue
		}
		for _, kv := range list.Items {
			if _, err := s.store.Delete(ctx, kv.Key, kv.ModRevision); err != nil && !errors.Is(err, storage.ErrNotFound) {
				s.log.Warn("purging a deleted namespace", "key", kv.Key, "err", err)
				continue
			}
			if obj, err := decodeStored(res, kv); err == nil {
				s.releaseClusterIP(ctx, obj)
				s.releaseNodePorts(ctx, asService(obj), nil)
			}
		}
	}
}

package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// NamespaceFinalizer is the spec finalizer the apiserver puts on every
// namespace and this controller removes once the namespace is empty.
const NamespaceFinalizer = corev1.FinalizerKubernetes

const (
	// namespaceSettle is how long a namespace marked for deletion waits
	// before its first sync, as upstream: writes racing the deletion
	// (a controller creating a pod) have landed or been refused by then.
	namespaceSettle = 5 * time.Second
	// finalizerEstimate is how long content held by finalizers is
	// assumed to take, as upstream.
	finalizerEstimate = 15 * time.Second
)

// NamespaceController empties namespaces being deleted, as upstream's
// namespace controller: it deletes every namespaced object of every
// resource the server serves (found through discovery), pods first,
// honouring finalizers and grace periods; reports progress in the
// namespace's status conditions; and removes the "kubernetes" finalizer
// through namespaces/finalize when nothing is left, which lets the
// apiserver remove the namespace. Its queue holds namespace names.
type NamespaceController struct {
	*loop
	client     kubernetes.Interface
	meta       metadata.Interface
	namespaces corelisters.NamespaceLister
	// discover lists the namespaced resources the server serves
	// (discovery.ServerPreferredNamespacedResources); a partial answer
	// comes with an error.
	discover func() ([]*metav1.APIResourceList, error)
	settle   time.Duration
}

// NewNamespaceController wires the controller to the namespace informer.
func NewNamespaceController(client kubernetes.Interface, meta metadata.Interface, nsInf coreinformers.NamespaceInformer, log *slog.Logger, m *metrics) (*NamespaceController, error) {
	c := &NamespaceController{client: client, meta: meta, namespaces: nsInf.Lister(), settle: namespaceSettle,
		discover: func() ([]*metav1.APIResourceList, error) {
			return discoveryNamespaced(client)
		}}
	c.loop = newLoop(NameNamespace, log, m, c.sync, nsInf.Informer().HasSynced)
	enqueue := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok && ns.DeletionTimestamp != nil {
			c.queue.AddAfter(ns.Name, c.settle)
		}
	}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// contentRemaining means some content is still going (grace periods,
// finalizers): the namespace is synced again after about estimate.
type contentRemaining struct{ estimate time.Duration }

func (e *contentRemaining) Error() string {
	return fmt.Sprintf("some content remains in the namespace, estimate %s before it is removed", e.estimate)
}

func (c *NamespaceController) sync(ctx context.Context, name string) error {
	if _, err := c.namespaces.Get(name); apierrors.IsNotFound(err) {
		return nil
	}
	err := c.delete(ctx, name)
	var remaining *contentRemaining
	if errors.As(err, &remaining) {
		c.queue.AddAfter(name, remaining.estimate/2+time.Second)
		return nil
	}
	return err
}

// delete runs one pass over a namespace being deleted. It reads the
// namespace from the server, not the lister: several controllers (and
// the apiserver) edit a terminating namespace.
func (c *NamespaceController) delete(ctx context.Context, name string) error {
	nss := c.client.CoreV1().Namespaces()
	ns, err := nss.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.DeletionTimestamp == nil {
		return nil
	}
	if ns.Status.Phase != corev1.NamespaceTerminating {
		ns, err = c.updateNamespace(ctx, ns, func(n *corev1.Namespace) (*corev1.Namespace, error) {
			if n.Status.Phase == corev1.NamespaceTerminating {
				return n, nil
			}
			n = n.DeepCopy()
			n.Status.Phase = corev1.NamespaceTerminating
			return nss.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	if len(ns.Spec.Finalizers) == 0 {
		return nil // finalized: the apiserver removes it
	}
	estimate, err := c.deleteAllContent(ctx, ns)
	if err != nil {
		return err
	}
	if estimate > 0 {
		return &contentRemaining{estimate}
	}
	_, err = c.updateNamespace(ctx, ns, func(n *corev1.Namespace) (*corev1.Namespace, error) {
		n = n.DeepCopy()
		n.Spec.Finalizers = slices.DeleteFunc(n.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == NamespaceFinalizer })
		return nss.Finalize(ctx, n, metav1.UpdateOptions{})
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// updateNamespace applies fn, reading the namespace again after a
// conflict; a namespace recreated meanwhile (another UID) is an error.
func (c *NamespaceController) updateNamespace(ctx context.Context, ns *corev1.Namespace, fn func(*corev1.Namespace) (*corev1.Namespace, error)) (*corev1.Namespace, error) {
	var out *corev1.Namespace
	cur := ns
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var err error
		if out, err = fn(cur); !apierrors.IsConflict(err) {
			return err
		}
		latest, gerr := c.client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		if latest.UID != ns.UID {
			return fmt.Errorf("namespace %s was recreated while being deleted", ns.Name)
		}
		cur = latest
		return err
	})
	return out, err
}

// resourceContent is what one resource has left in the namespace.
type resourceContent struct {
	estimate   time.Duration
	remaining  int
	finalizers map[string]int
}

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// deleteAllContent deletes every object of every deletable namespaced
// resource in ns, pods first (the others wait until the pods are gone,
// so a pod never outlives what it mounts), updates the status
// conditions, and returns how long the rest will take (0: all gone).
func (c *NamespaceController) deleteAllContent(ctx context.Context, ns *corev1.Namespace) (time.Duration, error) {
	var conds conditionSet
	var errs []error
	lists, err := c.discover()
	if err != nil {
		// Partial discovery is not fatal: delete what was found.
		errs = append(errs, err)
		conds.discoveryFailed(err)
	}
	resources := deletableResources(lists)
	remaining := map[schema.GroupVersionResource]int{}
	finalizers := map[string]int{}
	var estimate time.Duration
	take := func(gvr schema.GroupVersionResource, verbs []string) {
		rc, err := c.deleteResource(ctx, ns, gvr, verbs)
		if err != nil {
			errs = append(errs, err)
			conds.contentFailed(err)
		}
		estimate = max(estimate, rc.estimate)
		if rc.remaining > 0 {
			remaining[gvr] = rc.remaining
			for f, n := range rc.finalizers {
				finalizers[f] += n
			}
		}
	}
	if verbs, ok := resources[podsGVR]; ok {
		take(podsGVR, verbs)
	}
	if remaining[podsGVR] == 0 {
		for _, gvr := range sortedGVRs(resources) {
			if gvr != podsGVR {
				take(gvr, resources[gvr])
			}
		}
	}
	conds.content(remaining, finalizers)
	if status := ns.Status.DeepCopy(); conds.apply(status) {
		n := ns.DeepCopy()
		n.Status = *status
		if _, err := c.client.CoreV1().Namespaces().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			c.log.Info("updating the conditions of a namespace being deleted", "namespace", ns.Name, "err", err)
		}
	}
	return estimate, errors.Join(errs...)
}

// deleteResource deletes one resource's objects in ns and reports what is
// left. Objects still there with finalizers, or pods within their grace
// period, are progress; anything else left is an error.
func (c *NamespaceController) deleteResource(ctx context.Context, ns *corev1.Namespace, gvr schema.GroupVersionResource, verbs []string) (resourceContent, error) {
	estimate, err := c.estimate(ctx, ns, gvr)
	if err != nil {
		return resourceContent{}, err
	}
	client := c.meta.Resource(gvr).Namespace(ns.Name)
	// Background propagation: the garbage collector must not hold the
	// dependents with an orphan finalizer; they are being deleted too.
	background := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &background}
	collection := slices.Contains(verbs, "deletecollection")
	if collection {
		err := client.DeleteCollection(ctx, opts, metav1.ListOptions{})
		if apierrors.IsMethodNotSupported(err) || apierrors.IsNotFound(err) {
			collection = false
		} else if err != nil {
			return resourceContent{estimate: estimate}, fmt.Errorf("deleting %s: %w", gvrString(gvr), err)
		}
	}
	if !slices.Contains(verbs, "list") {
		return resourceContent{estimate: estimate}, nil
	}
	if !collection {
		list, err := client.List(ctx, metav1.ListOptions{})
		if err != nil {
			return resourceContent{estimate: estimate}, fmt.Errorf("listing %s: %w", gvrString(gvr), err)
		}
		for _, item := range list.Items {
			if err := client.Delete(ctx, item.Name, opts); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err) {
				return resourceContent{estimate: estimate}, fmt.Errorf("deleting %s %s: %w", gvrString(gvr), item.Name, err)
			}
		}
	}
	left, err := client.List(ctx, metav1.ListOptions{})
	if err != nil {
		return resourceContent{estimate: estimate}, fmt.Errorf("listing %s: %w", gvrString(gvr), err)
	}
	if len(left.Items) == 0 {
		return resourceContent{}, nil
	}
	rc := resourceContent{estimate: estimate, remaining: len(left.Items), finalizers: map[string]int{}}
	for _, item := range left.Items {
		for _, f := range item.Finalizers {
			rc.finalizers[f]++
		}
	}
	switch {
	case estimate > 0:
		return rc, nil
	case len(rc.finalizers) > 0:
		rc.estimate = finalizerEstimate
		return rc, nil
	}
	return rc, fmt.Errorf("unexpected items still remain in namespace: %s for gvr: %s", ns.Name, gvrString(gvr))
}

// estimate is how long the namespace's pods may still take to stop: the
// longest grace period among those not yet finished, counted from the
// namespace's deletion; zero for other resources.
func (c *NamespaceController) estimate(ctx context.Context, ns *corev1.Namespace, gvr schema.GroupVersionResource) (time.Duration, error) {
	if gvr.GroupResource() != podsGVR.GroupResource() {
		return 0, nil
	}
	pods, err := c.client.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("listing pods: %w", err)
	}
	var grace int64
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if g := p.Spec.TerminationGracePeriodSeconds; g != nil && *g > grace {
			grace = *g
		}
	}
	est := time.Duration(grace) * time.Second
	if time.Since(ns.DeletionTimestamp.Time) >= est {
		return 0, nil
	}
	return est, nil
}

// deletableResources indexes the namespaced resources that can be
// deleted by their verbs; subresources are left out.
func deletableResources(lists []*metav1.APIResourceList) map[schema.GroupVersionResource][]string {
	out := map[schema.GroupVersionResource][]string{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if !r.Namespaced || strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "delete") {
				continue
			}
			out[gv.WithResource(r.Name)] = r.Verbs
		}
	}
	return out
}

func sortedGVRs(m map[schema.GroupVersionResource][]string) []schema.GroupVersionResource {
	out := make([]schema.GroupVersionResource, 0, len(m))
	for gvr := range m {
		out = append(out, gvr)
	}
	sort.Slice(out, func(i, j int) bool { return gvrString(out[i]) < gvrString(out[j]) })
	return out
}

func gvrString(gvr schema.GroupVersionResource) string {
	return gvr.Resource + "." + gvr.Group
}

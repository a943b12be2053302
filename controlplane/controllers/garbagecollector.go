package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// OrphanFinalizer on an owner being deleted asks the collector to
// release its dependents instead of deleting them.
const OrphanFinalizer = metav1.FinalizerOrphanDependents

const ownerUIDIndex = "ownerUID"

// gcKind is one resource the collector knows: as a dependent (it may
// delete it) and as an owner (it may look it up).
type gcKind struct {
	resource   string // "pods"
	apiVersion string // of an ownerReference to it
	kind       string
	informer   cache.SharedIndexInformer
	get        func(ctx context.Context, ns, name string) (runtime.Object, error)
	update     func(ctx context.Context, obj runtime.Object) error
	delete     func(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error
}

// GarbageCollector deletes dependents whose owners are all gone
// (background propagation) and releases the dependents of owners deleted
// with the orphan finalizer. It knows Pods, ReplicaSets, EndpointSlices,
// ControllerRevisions and Jobs as dependents and Deployments,
// ReplicaSets, Services, DaemonSets, StatefulSets, Jobs and CronJobs as
// owners; an owner of any other kind is taken to exist.
//
// Queue keys are "dep|RESOURCE|NS/NAME" (check a dependent) and
// "orphan|RESOURCE|NS/NAME" (release an owner's dependents).
type GarbageCollector struct {
	*loop
	client     kubernetes.Interface
	dependents []*gcKind
	owners     []*gcKind
}

// NewGarbageCollector wires the collector to the shared informers. It
// adds an owner-UID index to the dependents' informers, so it must run
// before the factory starts.
func NewGarbageCollector(client kubernetes.Interface, f informers.SharedInformerFactory, log *slog.Logger, m *metrics) (*GarbageCollector, error) {
	c := &GarbageCollector{client: client}
	pods := &gcKind{resource: "pods", apiVersion: "v1", kind: "Pod", informer: f.Core().V1().Pods().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.CoreV1().Pods(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			p := o.(*podT)
			_, err := client.CoreV1().Pods(p.Namespace).Update(ctx, p, metav1.UpdateOptions{})
			return err
		},
		delete: func(ctx context.Context, ns, n string, o metav1.DeleteOptions) error {
			return client.CoreV1().Pods(ns).Delete(ctx, n, o)
		}}
	rss := &gcKind{resource: "replicasets", apiVersion: "apps/v1", kind: "ReplicaSet", informer: f.Apps().V1().ReplicaSets().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.AppsV1().ReplicaSets(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			rs := o.(*rsT)
			_, err := client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
			return err
		},
		delete: func(ctx context.Context, ns, n string, o metav1.DeleteOptions) error {
			return client.AppsV1().ReplicaSets(ns).Delete(ctx, n, o)
		}}
	eps := &gcKind{resource: "endpointslices", apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", informer: f.Discovery().V1().EndpointSlices().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.DiscoveryV1().EndpointSlices(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			s := o.(*sliceT)
			_, err := client.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		delete: func(ctx context.Context, ns, n string, o metav1.DeleteOptions) error {
			return client.DiscoveryV1().EndpointSlices(ns).Delete(ctx, n, o)
		}}
	deps := &gcKind{resource: "deployments", apiVersion: "apps/v1", kind: "Deployment", informer: f.Apps().V1().Deployments().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.AppsV1().Deployments(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			d := o.(*deployT)
			_, err := client.AppsV1().Deployments(d.Namespace).Update(ctx, d, metav1.UpdateOptions{})
			return err
		}}
	svcs := &gcKind{resource: "services", apiVersion: "v1", kind: "Service", informer: f.Core().V1().Services().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.CoreV1().Services(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			s := o.(*svcT)
			_, err := client.CoreV1().Services(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
			return err
		}}
	dss := &gcKind{resource: "daemonsets", apiVersion: "apps/v1", kind: "DaemonSet", informer: f.Apps().V1().DaemonSets().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.AppsV1().DaemonSets(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			d := o.(*dsT)
			_, err := client.AppsV1().DaemonSets(d.Namespace).Update(ctx, d, metav1.UpdateOptions{})
			return err
		}}
	revs := &gcKind{resource: "controllerrevisions", apiVersion: "apps/v1", kind: "ControllerRevision", informer: f.Apps().V1().ControllerRevisions().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.AppsV1().ControllerRevisions(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			r := o.(*revT)
			_, err := client.AppsV1().ControllerRevisions(r.Namespace).Update(ctx, r, metav1.UpdateOptions{})
			return err
		},
		delete: func(ctx context.Context, ns, n string, o metav1.DeleteOptions) error {
			return client.AppsV1().ControllerRevisions(ns).Delete(ctx, n, o)
		}}
	jobs := &gcKind{resource: "jobs", apiVersion: "batch/v1", kind: "Job", informer: f.Batch().V1().Jobs().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.BatchV1().Jobs(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			j := o.(*jobT)
			_, err := client.BatchV1().Jobs(j.Namespace).Update(ctx, j, metav1.UpdateOptions{})
			return err
		},
		delete: func(ctx context.Context, ns, n string, o metav1.DeleteOptions) error {
			return client.BatchV1().Jobs(ns).Delete(ctx, n, o)
		}}
	cjs := &gcKind{resource: "cronjobs", apiVersion: "batch/v1", kind: "CronJob", informer: f.Batch().V1().CronJobs().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.BatchV1().CronJobs(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			cj := o.(*cronJobT)
			_, err := client.BatchV1().CronJobs(cj.Namespace).Update(ctx, cj, metav1.UpdateOptions{})
			return err
		}}
	c.dependents = []*gcKind{pods, rss, eps, revs, jobs}
	stss := &gcKind{resource: "statefulsets", apiVersion: "apps/v1", kind: "StatefulSet", informer: f.Apps().V1().StatefulSets().Informer(),
		get: func(ctx context.Context, ns, n string) (runtime.Object, error) {
			return client.AppsV1().StatefulSets(ns).Get(ctx, n, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o runtime.Object) error {
			s := o.(*stsT)
			_, err := client.AppsV1().StatefulSets(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
			return err
		}}
	c.owners = []*gcKind{deps, rss, svcs, dss, stss, jobs, cjs}

	var synced []cache.InformerSynced
	for _, k := range []*gcKind{pods, rss, eps, deps, svcs, dss, stss, revs, jobs, cjs} {
		synced = append(synced, k.informer.HasSynced)
	}
	c.loop = newLoop(NameGarbageCollector, log, m, c.sync, synced...)

	for _, k := range c.dependents {
		if err := k.informer.AddIndexers(cache.Indexers{ownerUIDIndex: indexByOwnerUID}); err != nil {
			return nil, fmt.Errorf("garbage collector: %w", err)
		}
		enq := func(obj any) {
			if o, err := meta.Accessor(obj); err == nil && len(o.GetOwnerReferences()) > 0 {
				c.queue.Add("dep|" + k.resource + "|" + o.GetNamespace() + "/" + o.GetName())
			}
		}
		if _, err := k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: enq, UpdateFunc: func(_, n any) { enq(n) },
		}); err != nil {
			return nil, err
		}
	}
	for _, k := range c.owners {
		if _, err := k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(_, n any) {
				if o, err := meta.Accessor(n); err == nil && o.GetDeletionTimestamp() != nil && slices.Contains(o.GetFinalizers(), OrphanFinalizer) {
					c.queue.Add("orphan|" + k.resource + "|" + o.GetNamespace() + "/" + o.GetName())
				}
			},
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				if o, err := meta.Accessor(obj); err == nil {
					c.enqueueDependents(o.GetUID())
				}
			},
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func indexByOwnerUID(obj any) ([]string, error) {
	o, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil
	}
	var uids []string
	for _, r := range o.GetOwnerReferences() {
		uids = append(uids, string(r.UID))
	}
	return uids, nil
}

func (c *GarbageCollector) enqueueDependents(uid types.UID) {
	for _, k := range c.dependents {
		objs, _ := k.informer.GetIndexer().ByIndex(ownerUIDIndex, string(uid))
		for _, obj := range objs {
			if o, err := meta.Accessor(obj); err == nil {
				c.queue.Add("dep|" + k.resource + "|" + o.GetNamespace() + "/" + o.GetName())
			}
		}
	}
}

func (c *GarbageCollector) sync(ctx context.Context, key string) error {
	parts := strings.SplitN(key, "|", 3)
	if len(parts) != 3 {
		return nil
	}
	ns, name, err := cache.SplitMetaNamespaceKey(parts[2])
	if err != nil {
		return nil
	}
	switch parts[0] {
	case "dep":
		for _, k := range c.dependents {
			if k.resource == parts[1] {
				return c.syncDependent(ctx, k, ns, name)
			}
		}
	case "orphan":
		for _, k := range c.owners {
			if k.resource == parts[1] {
				return c.syncOrphan(ctx, k, ns, name)
			}
		}
	}
	return nil
}

// syncDependent deletes a dependent when every owner it names is gone.
func (c *GarbageCollector) syncDependent(ctx context.Context, k *gcKind, ns, name string) error {
	obj, exists, err := k.informer.GetIndexer().GetByKey(ns + "/" + name)
	if err != nil || !exists {
		return err
	}
	o, err := meta.Accessor(obj)
	if err != nil || o.GetDeletionTimestamp() != nil || len(o.GetOwnerReferences()) == 0 {
		return nil
	}
	for _, ref := range o.GetOwnerReferences() {
		gone, err := c.ownerGone(ctx, ns, ref)
		if err != nil {
			return err
		}
		if !gone {
			return nil
		}
	}
	uid := o.GetUID()
	bg := metav1.DeletePropagationBackground
	c.log.Info("deleting a dependent whose owners are gone", "resource", k.resource, "namespace", ns, "name", name)
	err = k.delete(ctx, ns, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &bg})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// ownerGone reports whether ref's object no longer exists (or exists with
// another UID). The cache answers "present"; "absent" is confirmed with
// the apiserver, since a new owner may not be in the cache yet.
func (c *GarbageCollector) ownerGone(ctx context.Context, ns string, ref metav1.OwnerReference) (bool, error) {
	var k *gcKind
	for _, o := range c.owners {
		if o.kind == ref.Kind && o.apiVersion == ref.APIVersion {
			k = o
		}
	}
	if k == nil {
		return false, nil // a kind we cannot look up: never delete for it
	}
	if obj, ok, _ := k.informer.GetIndexer().GetByKey(ns + "/" + ref.Name); ok {
		if o, err := meta.Accessor(obj); err == nil && o.GetUID() == ref.UID {
			return false, nil
		}
	}
	live, err := k.get(ctx, ns, ref.Name)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	o, err := meta.Accessor(live)
	if err != nil {
		return false, err
	}
	return o.GetUID() != ref.UID, nil
}

// syncOrphan removes the owner's references from its dependents, then
// the orphan finalizer from the owner, which lets its deletion finish.
func (c *GarbageCollector) syncOrphan(ctx context.Context, k *gcKind, ns, name string) error {
	live, err := k.get(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	owner, err := meta.Accessor(live)
	if err != nil {
		return err
	}
	if owner.GetDeletionTimestamp() == nil || !slices.Contains(owner.GetFinalizers(), OrphanFinalizer) {
		return nil
	}
	uid := owner.GetUID()
	var errs []error
	for _, dk := range c.dependents {
		objs, _ := dk.informer.GetIndexer().ByIndex(ownerUIDIndex, string(uid))
		for _, obj := range objs {
			cp := obj.(runtime.Object).DeepCopyObject()
			o, _ := meta.Accessor(cp)
			o.SetOwnerReferences(slices.DeleteFunc(o.GetOwnerReferences(), func(r metav1.OwnerReference) bool { return r.UID == uid }))
			if err := dk.update(ctx, cp); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	owner.SetFinalizers(slices.DeleteFunc(owner.GetFinalizers(), func(f string) bool { return f == OrphanFinalizer }))
	if err := k.update(ctx, live); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

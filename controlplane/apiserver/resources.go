package apiserver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Resource is one row of the table of kinds the apiserver serves. A new
// kind is a new row: the REST handlers, discovery and watches are generic.
type Resource struct {
	Group, Version, Kind string
	Plural, Singular     string
	ShortNames           []string
	Categories           []string
	Namespaced           bool
	// Subresources served besides the main resource ("status", "scale",
	// "binding").
	Subresources []string
	// New makes an empty object; NewList an empty list.
	New, NewList func() runtime.Object
	// Fields adds kind-specific field-selector fields to metadata.name and
	// metadata.namespace.
	Fields func(obj runtime.Object) fields.Set
	// Review, when set, makes this a create-only kind that is answered,
	// never stored (SelfSubjectAccessReview and friends).
	Review func(s *Server, ctx context.Context, u user, obj runtime.Object) (runtime.Object, error)
	// StoredAs, when set, is the resource whose stored objects this one
	// serves in another version (events.k8s.io Events are core Events):
	// its keys are StoredAs's, and objects pass through ToStored and
	// FromStored on the way in and out.
	StoredAs             *Resource
	ToStored, FromStored func(runtime.Object) (runtime.Object, error)
	// TTL, when set, is how long an object lives after its last write
	// (Events: Options.EventTTL).
	TTL bool
	// Custom, when set, makes this one served version of a
	// CustomResourceDefinition (customresource.go): its objects are
	// unstructured, checked against the version's structural schema.
	Custom *customResource
	// Prepare, when set, fills what the server owns in a new (old nil) or
	// updated object before it is validated.
	Prepare func(obj, old runtime.Object)
	// Validate, when set, adds the kind's own checks to the common ones.
	Validate func(obj, old runtime.Object) field.ErrorList
}

// GroupVersion of the resource.
func (r *Resource) GroupVersion() schema.GroupVersion {
	return schema.GroupVersion{Group: r.Group, Version: r.Version}
}

// APIVersion is the apiVersion field of its objects.
func (r *Resource) APIVersion() string { return r.GroupVersion().String() }

// HasSubresource reports whether sub is served for this resource.
func (r *Resource) HasSubresource(sub string) bool {
	for _, s := range r.Subresources {
		if s == sub {
			return true
		}
	}
	return false
}

// keyGroup is the group's segment in etcd keys ("core" for the legacy group).
func (r *Resource) keyGroup() string {
	if r.StoredAs != nil {
		return r.StoredAs.keyGroup()
	}
	if r.Group == "" {
		return "core"
	}
	return r.Group
}

// KeyPrefix is the etcd prefix of every object of this resource, or of one
// namespace's objects when ns is set. It ends in "/".
func (r *Resource) KeyPrefix(ns string) string {
	plural := r.Plural
	if r.StoredAs != nil {
		plural = r.StoredAs.Plural
	}
	p := "/registry/" + r.keyGroup() + "/" + plural + "/"
	if r.Namespaced && ns != "" {
		p += ns + "/"
	}
	return p
}

// Key is the etcd key of one object.
func (r *Resource) Key(ns, name string) string {
	if r.Namespaced {
		return r.KeyPrefix(ns) + name
	}
	return r.KeyPrefix("") + name
}

func newOf[T any, PT interface {
	*T
	runtime.Object
}]() func() runtime.Object {
	return func() runtime.Object { return PT(new(T)) }
}

var all = []string{"all"}

// DefaultResources is the table of kinds kforge serves.
func DefaultResources() []*Resource {
	coreEvents := &Resource{Group: "", Version: "v1", Kind: "Event", Plural: "events", ShortNames: []string{"ev"}, Namespaced: true, TTL: true,
		New: newOf[corev1.Event](), NewList: newOf[corev1.EventList](),
		Fields: func(o runtime.Object) fields.Set {
			e := o.(*corev1.Event)
			r := e.InvolvedObject
			return fields.Set{"involvedObject.kind": r.Kind, "involvedObject.namespace": r.Namespace,
				"involvedObject.name": r.Name, "involvedObject.uid": string(r.UID),
				"involvedObject.apiVersion": r.APIVersion, "involvedObject.resourceVersion": r.ResourceVersion,
				"involvedObject.fieldPath": r.FieldPath, "reason": e.Reason, "reportingComponent": e.ReportingController,
				"source": e.Source.Component, "type": e.Type}
		}}
	return append([]*Resource{
		{Group: "", Version: "v1", Kind: "Namespace", Plural: "namespaces", ShortNames: []string{"ns"}, Subresources: []string{"status", "finalize"},
			New: newOf[corev1.Namespace](), NewList: newOf[corev1.NamespaceList](),
			Fields: func(o runtime.Object) fields.Set {
				return fields.Set{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
			}},
		{Group: "", Version: "v1", Kind: "Node", Plural: "nodes", ShortNames: []string{"no"}, Subresources: []string{"status", "proxy"},
			New: newOf[corev1.Node](), NewList: newOf[corev1.NodeList](),
			Fields: func(o runtime.Object) fields.Set {
				return fields.Set{"spec.unschedulable": boolString(o.(*corev1.Node).Spec.Unschedulable)}
			}},
		{Group: "", Version: "v1", Kind: "Pod", Plural: "pods", ShortNames: []string{"po"}, Categories: all, Namespaced: true,
			Subresources: []string{"status", "binding", "eviction", "log", "exec", "attach", "portforward"},
			New:          newOf[corev1.Pod](), NewList: newOf[corev1.PodList](),
			Fields: func(o runtime.Object) fields.Set {
				p := o.(*corev1.Pod)
				return fields.Set{"spec.nodeName": p.Spec.NodeName, "status.phase": string(p.Status.Phase),
					"spec.restartPolicy": string(p.Spec.RestartPolicy), "spec.schedulerName": p.Spec.SchedulerName,
					"spec.serviceAccountName": p.Spec.ServiceAccountName, "status.podIP": p.Status.PodIP}
			}},
		{Group: "", Version: "v1", Kind: "Service", Plural: "services", ShortNames: []string{"svc"}, Categories: all, Namespaced: true,
			Subresources: []string{"status"}, New: newOf[corev1.Service](), NewList: newOf[corev1.ServiceList](),
			Fields: func(o runtime.Object) fields.Set {
				return fields.Set{"spec.clusterIP": o.(*corev1.Service).Spec.ClusterIP, "spec.type": string(o.(*corev1.Service).Spec.Type)}
			}},
		{Group: "", Version: "v1", Kind: "Endpoints", Plural: "endpoints", ShortNames: []string{"ep"}, Namespaced: true,
			New: newOf[corev1.Endpoints](), NewList: newOf[corev1.EndpointsList]()},
		{Group: "", Version: "v1", Kind: "ConfigMap", Plural: "configmaps", ShortNames: []string{"cm"}, Namespaced: true,
			New: newOf[corev1.ConfigMap](), NewList: newOf[corev1.ConfigMapList]()},
		{Group: "", Version: "v1", Kind: "Secret", Plural: "secrets", Namespaced: true,
			New: newOf[corev1.Secret](), NewList: newOf[corev1.SecretList](),
			Fields: func(o runtime.Object) fields.Set {
				return fields.Set{"type": string(o.(*corev1.Secret).Type)}
			}},
		{Group: "", Version: "v1", Kind: "ServiceAccount", Plural: "serviceaccounts", ShortNames: []string{"sa"}, Namespaced: true,
			Subresources: []string{"token"}, New: newOf[corev1.ServiceAccount](), NewList: newOf[corev1.ServiceAccountList]()},
		coreEvents,
		{Group: "events.k8s.io", Version: "v1", Kind: "Event", Plural: "events", ShortNames: []string{"ev"}, Namespaced: true, TTL: true,
			New: newOf[eventsv1.Event](), NewList: newOf[eventsv1.EventList](),
			StoredAs: coreEvents, ToStored: eventToCore, FromStored: eventFromCore},
		{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice", Plural: "endpointslices", Namespaced: true,
			New: newOf[discoveryv1.EndpointSlice](), NewList: newOf[discoveryv1.EndpointSliceList]()},
		{Group: "apps", Version: "v1", Kind: "Deployment", Plural: "deployments", ShortNames: []string{"deploy"}, Categories: all, Namespaced: true,
			Subresources: []string{"status", "scale"}, New: newOf[appsv1.Deployment](), NewList: newOf[appsv1.DeploymentList]()},
		{Group: "apps", Version: "v1", Kind: "ReplicaSet", Plural: "replicasets", ShortNames: []string{"rs"}, Categories: all, Namespaced: true,
			Subresources: []string{"status", "scale"}, New: newOf[appsv1.ReplicaSet](), NewList: newOf[appsv1.ReplicaSetList]()},
		{Group: "apps", Version: "v1", Kind: "DaemonSet", Plural: "daemonsets", ShortNames: []string{"ds"}, Categories: all, Namespaced: true,
			Subresources: []string{"status"}, New: newOf[appsv1.DaemonSet](), NewList: newOf[appsv1.DaemonSetList]()},
		{Group: "apps", Version: "v1", Kind: "StatefulSet", Plural: "statefulsets", ShortNames: []string{"sts"}, Categories: all, Namespaced: true,
			Subresources: []string{"status", "scale"}, New: newOf[appsv1.StatefulSet](), NewList: newOf[appsv1.StatefulSetList]()},
		{Group: "apps", Version: "v1", Kind: "ControllerRevision", Plural: "controllerrevisions", Namespaced: true,
			New: newOf[appsv1.ControllerRevision](), NewList: newOf[appsv1.ControllerRevisionList]()},
		{Group: "batch", Version: "v1", Kind: "Job", Plural: "jobs", Categories: all, Namespaced: true,
			Subresources: []string{"status"}, New: newOf[batchv1.Job](), NewList: newOf[batchv1.JobList](),
			Fields: func(o runtime.Object) fields.Set {
				return fields.Set{"status.successful": fmt.Sprint(o.(*batchv1.Job).Status.Succeeded)}
			}},
		{Group: "batch", Version: "v1", Kind: "CronJob", Plural: "cronjobs", ShortNames: []string{"cj"}, Categories: all, Namespaced: true,
			Subresources: []string{"status"}, New: newOf[batchv1.CronJob](), NewList: newOf[batchv1.CronJobList]()},
		{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget", Plural: "poddisruptionbudgets", ShortNames: []string{"pdb"}, Namespaced: true,
			Subresources: []string{"status"}, New: newOf[policyv1.PodDisruptionBudget](), NewList: newOf[policyv1.PodDisruptionBudgetList]()},
		{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress", Plural: "ingresses", ShortNames: []string{"ing"}, Namespaced: true,
			Subresources: []string{"status"}, New: newOf[networkingv1.Ingress](), NewList: newOf[networkingv1.IngressList]()},
		{Group: "networking.k8s.io", Version: "v1", Kind: "IngressClass", Plural: "ingressclasses",
			New: newOf[networkingv1.IngressClass](), NewList: newOf[networkingv1.IngressClassList]()},
		{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease", Plural: "leases", Namespaced: true,
			New: newOf[coordinationv1.Lease](), NewList: newOf[coordinationv1.LeaseList]()},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role", Plural: "roles", Namespaced: true,
			New: newOf[rbacv1.Role](), NewList: newOf[rbacv1.RoleList]()},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole", Plural: "clusterroles",
			New: newOf[rbacv1.ClusterRole](), NewList: newOf[rbacv1.ClusterRoleList]()},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding", Plural: "rolebindings", Namespaced: true,
			New: newOf[rbacv1.RoleBinding](), NewList: newOf[rbacv1.RoleBindingList]()},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding", Plural: "clusterrolebindings",
			New: newOf[rbacv1.ClusterRoleBinding](), NewList: newOf[rbacv1.ClusterRoleBindingList]()},
	}, slices.Concat(reviewResources(), selfSubjectReviewResources(), tokenReviewResources(), subjectAccessReviewResources())...)
}

// scaleGVK is the kind of every /scale subresource.
var scaleGVK = autoscalingv1.SchemeGroupVersion.WithKind("Scale")

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// Registry indexes the resource table. The built-in rows are fixed; the
// rows of custom resources (crd.go) come and go with their
// CustomResourceDefinitions, so readers see one consistent snapshot.
type Registry struct {
	snap atomic.Pointer[registrySnapshot]
	mu   sync.Mutex // serializes writers
}

type registrySnapshot struct {
	list   []*Resource
	byPath map[string]*Resource // "group/version/plural"
	// generation counts changes, so what is built from the table
	// (OpenAPI) knows when to build again.
	generation int64
}

// NewRegistry indexes resources and fills the derived names.
func NewRegistry(rs []*Resource) *Registry {
	reg := &Registry{}
	reg.snap.Store(newSnapshot(rs, 0))
	return reg
}

func newSnapshot(rs []*Resource, gen int64) *registrySnapshot {
	s := &registrySnapshot{list: rs, byPath: map[string]*Resource{}, generation: gen}
	for _, r := range rs {
		if r.Singular == "" {
			r.Singular = strings.ToLower(r.Kind)
		}
		s.byPath[r.Group+"/"+r.Version+"/"+r.Plural] = r
	}
	return s
}

// all is the current table; callers must not change it.
func (reg *Registry) all() []*Resource { return reg.snap.Load().list }

// generation changes whenever the table does.
func (reg *Registry) generation() int64 { return reg.snap.Load().generation }

// replaceCustom swaps the rows of one custom resource group/plural
// (every version of a CustomResourceDefinition) for rows; no rows
// removes them.
func (reg *Registry) replaceCustom(group, plural string, rows []*Resource) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	cur := reg.snap.Load()
	var list []*Resource
	for _, r := range cur.list {
		if r.Custom != nil && r.Group == group && r.Plural == plural {
			continue
		}
		list = append(list, r)
	}
	list = append(list, rows...)
	reg.snap.Store(newSnapshot(list, cur.generation+1))
}

// Lookup finds a resource by group, version and plural name.
func (reg *Registry) Lookup(group, version, plural string) *Resource {
	return reg.snap.Load().byPath[group+"/"+version+"/"+plural]
}

// ByKind finds a resource by group and kind.
func (reg *Registry) ByKind(group, kind string) *Resource {
	for _, r := range reg.all() {
		if r.Group == group && r.Kind == kind {
			return r
		}
	}
	return nil
}

package apiserver

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
)

// tableGVK is what `kubectl get` asks for.
var tableGVK = metav1.SchemeGroupVersion.WithKind("Table")

// wantsTable reports whether the Accept header prefers a meta.k8s.io/v1
// Table (kubectl get sends "application/json;as=Table;v=v1;g=meta.k8s.io,...").
func wantsTable(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		params := map[string]string{}
		for _, p := range strings.Split(part, ";")[1:] {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok {
				params[k] = v
			}
		}
		if params["as"] == "Table" && params["g"] == "meta.k8s.io" && params["v"] == "v1" {
			return true
		}
	}
	return false
}

// column is one column of a kind's table and how to compute its cell.
type column struct {
	def  metav1.TableColumnDefinition
	cell func(obj runtime.Object, now time.Time) any
}

func col(name, typ string, priority int32, cell func(runtime.Object, time.Time) any) column {
	c := column{def: metav1.TableColumnDefinition{Name: name, Type: typ, Priority: priority}, cell: cell}
	if name == "Name" {
		c.def.Format = "name"
	}
	return c
}

var nameCol = col("Name", "string", 0, func(o runtime.Object, _ time.Time) any {
	m, _ := meta.Accessor(o)
	return m.GetName()
})

var ageCol = col("Age", "string", 0, func(o runtime.Object, now time.Time) any {
	m, _ := meta.Accessor(o)
	return age(m.GetCreationTimestamp(), now)
})

func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// typed adapts a cell function over a concrete type.
func typed[T runtime.Object](f func(T, time.Time) any) func(runtime.Object, time.Time) any {
	return func(o runtime.Object, now time.Time) any { return f(o.(T), now) }
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func containersAndImages(spec *corev1.PodSpec) (string, string) {
	var names, images []string
	for _, c := range spec.Containers {
		names, images = append(names, c.Name), append(images, c.Image)
	}
	return strings.Join(names, ","), strings.Join(images, ",")
}

func selectorString(sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || sel == nil {
		return "<none>"
	}
	return orNone(s.String())
}

func mapSelector(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// podStatus is the STATUS column kubectl users know, simplified: the
// first waiting or terminated container reason, else the phase, and
// Terminating for a pod being deleted.
func podStatus(p *corev1.Pod) (status string, ready, total int, restarts int32) {
	status = string(p.Status.Phase)
	if p.Status.Reason != "" {
		status = p.Status.Reason
	}
	total = len(p.Spec.Containers)
	for _, cs := range p.Status.ContainerStatuses {
		restarts += cs.RestartCount
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			status = cs.State.Waiting.Reason
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
			status = cs.State.Terminated.Reason
		case cs.Ready && cs.State.Running != nil:
			ready++
		}
	}
	if p.DeletionTimestamp != nil {
		status = "Terminating"
	}
	return status, ready, total, restarts
}

func servicePorts(s *corev1.Service) string {
	var out []string
	for _, p := range s.Spec.Ports {
		v := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort != 0 {
			v = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return "<none>"
	}
	return strings.Join(out, ",")
}

func externalIP(s *corev1.Service) string {
	var ips []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			ips = append(ips, in.IP)
		} else if in.Hostname != "" {
			ips = append(ips, in.Hostname)
		}
	}
	ips = append(ips, s.Spec.ExternalIPs...)
	switch {
	case len(ips) > 0:
		return strings.Join(ips, ",")
	case s.Spec.Type == corev1.ServiceTypeLoadBalancer:
		return "<pending>"
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		return s.Spec.ExternalName
	}
	return "<none>"
}

func nodeStatus(n *corev1.Node) string {
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			} else {
				status = "NotReady"
			}
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	return status
}

func nodeRoles(n *corev1.Node) string {
	var roles []string
	for k := range n.Labels {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	return orNone(strings.Join(roles, ","))
}

func nodeAddress(n *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range n.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

func endpointsString(e *corev1.Endpoints) string {
	var out []string
	for _, ss := range e.Subsets {
		for _, a := range ss.Addresses {
			if len(ss.Ports) == 0 {
				out = append(out, a.IP)
			}
			for _, p := range ss.Ports {
				out = append(out, a.IP+":"+strconv.Itoa(int(p.Port)))
			}
		}
	}
	if len(out) == 0 {
		return "<none>"
	}
	if len(out) > 3 {
		return strings.Join(out[:3], ",") + fmt.Sprintf(" + %d more...", len(out)-3)
	}
	return strings.Join(out, ",")
}

func subjects(subs []rbacv1.Subject, kind string) string {
	var out []string
	for _, s := range subs {
		if s.Kind == kind {
			n := s.Name
			if kind == rbacv1.ServiceAccountKind {
				n = s.Namespace + "/" + s.Name
			}
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}

// tableColumns is the table of each kind, keyed by "group/Kind", with
// upstream's columns (priority 1 shows with -o wide).
var tableColumns = map[string][]column{
	"/Pod": {nameCol,
		col("Ready", "string", 0, typed(func(p *corev1.Pod, _ time.Time) any {
			_, ready, total, _ := podStatus(p)
			return fmt.Sprintf("%d/%d", ready, total)
		})),
		col("Status", "string", 0, typed(func(p *corev1.Pod, _ time.Time) any { s, _, _, _ := podStatus(p); return s })),
		col("Restarts", "string", 0, typed(func(p *corev1.Pod, _ time.Time) any {
			_, _, _, r := podStatus(p)
			return strconv.Itoa(int(r))
		})),
		ageCol,
		col("IP", "string", 1, typed(func(p *corev1.Pod, _ time.Time) any { return orNone(p.Status.PodIP) })),
		col("Node", "string", 1, typed(func(p *corev1.Pod, _ time.Time) any { return orNone(p.Spec.NodeName) })),
		col("Nominated Node", "string", 1, typed(func(p *corev1.Pod, _ time.Time) any { return orNone(p.Status.NominatedNodeName) })),
		col("Readiness Gates", "string", 1, typed(func(p *corev1.Pod, _ time.Time) any { return "<none>" })),
	},
	"apps/Deployment": {nameCol,
		col("Ready", "string", 0, typed(func(d *appsv1.Deployment, _ time.Time) any {
			return fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, deref(d.Spec.Replicas))
		})),
		col("Up-to-date", "integer", 0, typed(func(d *appsv1.Deployment, _ time.Time) any { return d.Status.UpdatedReplicas })),
		col("Available", "integer", 0, typed(func(d *appsv1.Deployment, _ time.Time) any { return d.Status.AvailableReplicas })),
		ageCol,
		col("Containers", "string", 1, typed(func(d *appsv1.Deployment, _ time.Time) any {
			c, _ := containersAndImages(&d.Spec.Template.Spec)
			return c
		})),
		col("Images", "string", 1, typed(func(d *appsv1.Deployment, _ time.Time) any {
			_, i := containersAndImages(&d.Spec.Template.Spec)
			return i
		})),
		col("Selector", "string", 1, typed(func(d *appsv1.Deployment, _ time.Time) any { return selectorString(d.Spec.Selector) })),
	},
	"apps/ReplicaSet": {nameCol,
		col("Desired", "integer", 0, typed(func(r *appsv1.ReplicaSet, _ time.Time) any { return deref(r.Spec.Replicas) })),
		col("Current", "integer", 0, typed(func(r *appsv1.ReplicaSet, _ time.Time) any { return r.Status.Replicas })),
		col("Ready", "integer", 0, typed(func(r *appsv1.ReplicaSet, _ time.Time) any { return r.Status.ReadyReplicas })),
		ageCol,
		col("Containers", "string", 1, typed(func(r *appsv1.ReplicaSet, _ time.Time) any {
			c, _ := containersAndImages(&r.Spec.Template.Spec)
			return c
		})),
		col("Images", "string", 1, typed(func(r *appsv1.ReplicaSet, _ time.Time) any {
			_, i := containersAndImages(&r.Spec.Template.Spec)
			return i
		})),
		col("Selector", "string", 1, typed(func(r *appsv1.ReplicaSet, _ time.Time) any { return selectorString(r.Spec.Selector) })),
	},
	"apps/DaemonSet": {nameCol,
		col("Desired", "integer", 0, typed(func(d *appsv1.DaemonSet, _ time.Time) any { return d.Status.DesiredNumberScheduled })),
		col("Current", "integer", 0, typed(func(d *appsv1.DaemonSet, _ time.Time) any { return d.Status.CurrentNumberScheduled })),
		col("Ready", "integer", 0, typed(func(d *appsv1.DaemonSet, _ time.Time) any { return d.Status.NumberReady })),
		col("Up-to-date", "integer", 0, typed(func(d *appsv1.DaemonSet, _ time.Time) any { return d.Status.UpdatedNumberScheduled })),
		col("Available", "integer", 0, typed(func(d *appsv1.DaemonSet, _ time.Time) any { return d.Status.NumberAvailable })),
		col("Node Selector", "string", 0, typed(func(d *appsv1.DaemonSet, _ time.Time) any { return mapSelector(d.Spec.Template.Spec.NodeSelector) })),
		ageCol,
		col("Containers", "string", 1, typed(func(d *appsv1.DaemonSet, _ time.Time) any {
			c, _ := containersAndImages(&d.Spec.Template.Spec)
			return c
		})),
		col("Images", "string", 1, typed(func(d *appsv1.DaemonSet, _ time.Time) any {
			_, i := containersAndImages(&d.Spec.Template.Spec)
			return i
		})),
		col("Selector", "string", 1, typed(func(d *appsv1.DaemonSet, _ time.Time) any { return selectorString(d.Spec.Selector) })),
	},
	"/Service": {nameCol,
		col("Type", "string", 0, typed(func(s *corev1.Service, _ time.Time) any { return string(s.Spec.Type) })),
		col("Cluster-IP", "string", 0, typed(func(s *corev1.Service, _ time.Time) any { return orNone(s.Spec.ClusterIP) })),
		col("External-IP", "string", 0, typed(func(s *corev1.Service, _ time.Time) any { return externalIP(s) })),
		col("Port(s)", "string", 0, typed(func(s *corev1.Service, _ time.Time) any { return servicePorts(s) })),
		ageCol,
		col("Selector", "string", 1, typed(func(s *corev1.Service, _ time.Time) any { return mapSelector(s.Spec.Selector) })),
	},
	"/Node": {nameCol,
		col("Status", "string", 0, typed(func(n *corev1.Node, _ time.Time) any { return nodeStatus(n) })),
		col("Roles", "string", 0, typed(func(n *corev1.Node, _ time.Time) any { return nodeRoles(n) })),
		ageCol,
		col("Version", "string", 0, typed(func(n *corev1.Node, _ time.Time) any { return n.Status.NodeInfo.KubeletVersion })),
		col("Internal-IP", "string", 1, typed(func(n *corev1.Node, _ time.Time) any { return nodeAddress(n, corev1.NodeInternalIP) })),
		col("External-IP", "string", 1, typed(func(n *corev1.Node, _ time.Time) any { return nodeAddress(n, corev1.NodeExternalIP) })),
		col("OS-Image", "string", 1, typed(func(n *corev1.Node, _ time.Time) any { return orNone(n.Status.NodeInfo.OSImage) })),
		col("Kernel-Version", "string", 1, typed(func(n *corev1.Node, _ time.Time) any { return orNone(n.Status.NodeInfo.KernelVersion) })),
		col("Container-Runtime", "string", 1, typed(func(n *corev1.Node, _ time.Time) any { return orNone(n.Status.NodeInfo.ContainerRuntimeVersion) })),
	},
	"/Namespace": {nameCol,
		col("Status", "string", 0, typed(func(n *corev1.Namespace, _ time.Time) any { return string(n.Status.Phase) })),
		ageCol,
	},
	"/ConfigMap": {nameCol,
		col("Data", "integer", 0, typed(func(c *corev1.ConfigMap, _ time.Time) any { return len(c.Data) + len(c.BinaryData) })),
		ageCol,
	},
	"/Secret": {nameCol,
		col("Type", "string", 0, typed(func(s *corev1.Secret, _ time.Time) any { return string(s.Type) })),
		col("Data", "integer", 0, typed(func(s *corev1.Secret, _ time.Time) any { return len(s.Data) })),
		ageCol,
	},
	"/ServiceAccount": {nameCol,
		col("Secrets", "integer", 0, typed(func(s *corev1.ServiceAccount, _ time.Time) any { return len(s.Secrets) })),
		ageCol,
	},
	"/Endpoints": {nameCol,
		col("Endpoints", "string", 0, typed(func(e *corev1.Endpoints, _ time.Time) any { return endpointsString(e) })),
		ageCol,
	},
	"discovery.k8s.io/EndpointSlice": {nameCol,
		col("AddressType", "string", 0, typed(func(e *discoveryv1.EndpointSlice, _ time.Time) any { return string(e.AddressType) })),
		col("Ports", "string", 0, typed(func(e *discoveryv1.EndpointSlice, _ time.Time) any {
			var ps []string
			for _, p := range e.Ports {
				if p.Port != nil {
					ps = append(ps, strconv.Itoa(int(*p.Port)))
				}
			}
			return orNone(strings.Join(ps, ","))
		})),
		col("Endpoints", "string", 0, typed(func(e *discoveryv1.EndpointSlice, _ time.Time) any {
			var as []string
			for _, ep := range e.Endpoints {
				as = append(as, ep.Addresses...)
			}
			return orNone(strings.Join(as, ","))
		})),
		ageCol,
	},
	"/Event": {
		col("Last Seen", "string", 0, typed(func(e *corev1.Event, now time.Time) any {
			t := e.LastTimestamp
			if t.IsZero() {
				t = metav1.NewTime(e.EventTime.Time)
			}
			return age(t, now)
		})),
		col("Type", "string", 0, typed(func(e *corev1.Event, _ time.Time) any { return e.Type })),
		col("Reason", "string", 0, typed(func(e *corev1.Event, _ time.Time) any { return e.Reason })),
		col("Object", "string", 0, typed(func(e *corev1.Event, _ time.Time) any {
			return strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name
		})),
		col("Message", "string", 0, typed(func(e *corev1.Event, _ time.Time) any { return strings.TrimSpace(e.Message) })),
		col("Count", "integer", 1, typed(func(e *corev1.Event, _ time.Time) any { return e.Count })),
		col("Name", "string", 1, typed(func(e *corev1.Event, _ time.Time) any { return e.Name })),
	},
	"events.k8s.io/Event": {nameCol,
		col("Type", "string", 0, typed(func(e *eventsv1.Event, _ time.Time) any { return e.Type })),
		col("Reason", "string", 0, typed(func(e *eventsv1.Event, _ time.Time) any { return e.Reason })),
		col("Object", "string", 0, typed(func(e *eventsv1.Event, _ time.Time) any {
			return strings.ToLower(e.Regarding.Kind) + "/" + e.Regarding.Name
		})),
		col("Note", "string", 0, typed(func(e *eventsv1.Event, _ time.Time) any { return e.Note })),
		ageCol,
	},
	"networking.k8s.io/Ingress": {nameCol,
		col("Class", "string", 0, typed(func(i *networkingv1.Ingress, _ time.Time) any {
			if i.Spec.IngressClassName != nil {
				return *i.Spec.IngressClassName
			}
			return "<none>"
		})),
		col("Hosts", "string", 0, typed(func(i *networkingv1.Ingress, _ time.Time) any {
			var hs []string
			for _, r := range i.Spec.Rules {
				h := r.Host
				if h == "" {
					h = "*"
				}
				hs = append(hs, h)
			}
			if len(hs) == 0 {
				return "*"
			}
			return strings.Join(hs, ",")
		})),
		col("Address", "string", 0, typed(func(i *networkingv1.Ingress, _ time.Time) any {
			var as []string
			for _, in := range i.Status.LoadBalancer.Ingress {
				if in.IP != "" {
					as = append(as, in.IP)
				} else if in.Hostname != "" {
					as = append(as, in.Hostname)
				}
			}
			return strings.Join(as, ",")
		})),
		col("Ports", "string", 0, typed(func(i *networkingv1.Ingress, _ time.Time) any {
			if len(i.Spec.TLS) > 0 {
				return "80, 443"
			}
			return "80"
		})),
		ageCol,
	},
	"networking.k8s.io/IngressClass": {nameCol,
		col("Controller", "string", 0, typed(func(c *networkingv1.IngressClass, _ time.Time) any { return c.Spec.Controller })),
		col("Parameters", "string", 0, typed(func(c *networkingv1.IngressClass, _ time.Time) any {
			if p := c.Spec.Parameters; p != nil {
				return p.Kind + "/" + p.Name
			}
			return "<none>"
		})),
		ageCol,
	},
	"coordination.k8s.io/Lease": {nameCol,
		col("Holder", "string", 0, typed(func(l *coordinationv1.Lease, _ time.Time) any {
			if l.Spec.HolderIdentity != nil {
				return *l.Spec.HolderIdentity
			}
			return ""
		})),
		ageCol,
	},
	"rbac.authorization.k8s.io/Role":        {nameCol, createdAtCol},
	"rbac.authorization.k8s.io/ClusterRole": {nameCol, createdAtCol},
	"rbac.authorization.k8s.io/RoleBinding": {nameCol,
		col("Role", "string", 0, typed(func(b *rbacv1.RoleBinding, _ time.Time) any { return b.RoleRef.Kind + "/" + b.RoleRef.Name })),
		ageCol,
		col("Users", "string", 1, typed(func(b *rbacv1.RoleBinding, _ time.Time) any { return subjects(b.Subjects, rbacv1.UserKind) })),
		col("Groups", "string", 1, typed(func(b *rbacv1.RoleBinding, _ time.Time) any { return subjects(b.Subjects, rbacv1.GroupKind) })),
		col("ServiceAccounts", "string", 1, typed(func(b *rbacv1.RoleBinding, _ time.Time) any { return subjects(b.Subjects, rbacv1.ServiceAccountKind) })),
	},
	"rbac.authorization.k8s.io/ClusterRoleBinding": {nameCol,
		col("Role", "string", 0, typed(func(b *rbacv1.ClusterRoleBinding, _ time.Time) any { return b.RoleRef.Kind + "/" + b.RoleRef.Name })),
		ageCol,
		col("Users", "string", 1, typed(func(b *rbacv1.ClusterRoleBinding, _ time.Time) any { return subjects(b.Subjects, rbacv1.UserKind) })),
		col("Groups", "string", 1, typed(func(b *rbacv1.ClusterRoleBinding, _ time.Time) any { return subjects(b.Subjects, rbacv1.GroupKind) })),
		col("ServiceAccounts", "string", 1, typed(func(b *rbacv1.ClusterRoleBinding, _ time.Time) any {
			return subjects(b.Subjects, rbacv1.ServiceAccountKind)
		})),
	},
}

var createdAtCol = col("Created At", "date", 0, func(o runtime.Object, _ time.Time) any {
	m, _ := meta.Accessor(o)
	return m.GetCreationTimestamp().UTC().Format(time.RFC3339)
})

func columnsFor(res *Resource) []column {
	if res.Custom != nil {
		return res.Custom.columns
	}
	if c, ok := tableColumns[res.Group+"/"+res.Kind]; ok {
		return c
	}
	if c, ok := workloadColumns[res.Group+"/"+res.Kind]; ok {
		return c
	}
	return []column{nameCol, ageCol}
}

// toTable renders objects as a Table. includeObject is "Metadata" (the
// default: a PartialObjectMetadata per row, which -A and --show-labels
// read), "Object" or "None".
func toTable(res *Resource, objs []runtime.Object, includeObject string, withColumns bool, listMeta metav1.ListMeta) *metav1.Table {
	cols := columnsFor(res)
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: tableGVK.Kind, APIVersion: tableGVK.GroupVersion().String()}, ListMeta: listMeta}
	if withColumns {
		for _, c := range cols {
			t.ColumnDefinitions = append(t.ColumnDefinitions, c.def)
		}
	}
	now := time.Now()
	gvk := res.GroupVersion().WithKind(res.Kind)
	for _, o := range objs {
		row := metav1.TableRow{Cells: make([]any, len(cols))}
		for i, c := range cols {
			row.Cells[i] = c.cell(o, now)
		}
		switch metav1.IncludeObjectPolicy(includeObject) {
		case metav1.IncludeNone:
		case metav1.IncludeObject:
			o.GetObjectKind().SetGroupVersionKind(gvk)
			row.Object.Object = o
		default:
			pm := &metav1.PartialObjectMetadata{
				TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"},
			}
			if a, ok := o.(metav1.ObjectMetaAccessor); ok {
				if om, ok := a.GetObjectMeta().(*metav1.ObjectMeta); ok {
					pm.ObjectMeta = *om
				}
			} else if om, ok := objectMetaOf(o); ok {
				pm.ObjectMeta = om
			}
			row.Object.Object = pm
		}
		t.Rows = append(t.Rows, row)
	}
	if t.Rows == nil {
		t.Rows = []metav1.TableRow{}
	}
	return t
}

// asTable converts a get or list result when the client asked for a Table.
func asTable(r *http.Request, res *Resource, obj runtime.Object) (runtime.Object, error) {
	include := r.URL.Query().Get("includeObject")
	if meta.IsListType(obj) {
		items, err := meta.ExtractList(obj)
		if err != nil {
			return nil, err
		}
		lm, _ := meta.ListAccessor(obj)
		return toTable(res, items, include, true, metav1.ListMeta{ResourceVersion: lm.GetResourceVersion(),
			Continue: lm.GetContinue(), RemainingItemCount: lm.GetRemainingItemCount()}), nil
	}
	return toTable(res, []runtime.Object{obj}, include, true, metav1.ListMeta{}), nil
}

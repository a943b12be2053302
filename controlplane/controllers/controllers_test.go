package controllers

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
)

// fixture follows sample-controller's tests: objects go into the fake
// clientset (for writes) and into the informers' indexers (for reads);
// sync is called directly and the clientset's actions are checked.
type fixture struct {
	t       *testing.T
	client  *fake.Clientset
	factory informers.SharedInformerFactory
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	f := &fixture{t: t, client: fake.NewClientset(objs...)}
	f.factory = informers.NewSharedInformerFactory(f.client, 0)
	// The fake clientset does not implement generateName.
	f.client.PrependReactor("create", "pods", func(a core.Action) (bool, runtime.Object, error) {
		if p := a.(core.CreateAction).GetObject().(*corev1.Pod); p.Name == "" {
			p.Name = p.GenerateName + rand.String(5)
		}
		return false, nil, nil
	})
	return f
}

// load puts objects into the indexers of the informers the sync reads.
func (f *fixture) load(objs ...runtime.Object) {
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Pod:
			err = f.factory.Core().V1().Pods().Informer().GetIndexer().Add(o)
		case *appsv1.ReplicaSet:
			err = f.factory.Apps().V1().ReplicaSets().Informer().GetIndexer().Add(o)
		case *appsv1.Deployment:
			err = f.factory.Apps().V1().Deployments().Informer().GetIndexer().Add(o)
		case *corev1.Service:
			err = f.factory.Core().V1().Services().Informer().GetIndexer().Add(o)
		case *corev1.Namespace:
			err = f.factory.Core().V1().Namespaces().Informer().GetIndexer().Add(o)
		case *corev1.Node:
			err = f.factory.Core().V1().Nodes().Informer().GetIndexer().Add(o)
		case *corev1.ServiceAccount:
			err = f.factory.Core().V1().ServiceAccounts().Informer().GetIndexer().Add(o)
		case *discoveryv1.EndpointSlice:
			err = f.factory.Discovery().V1().EndpointSlices().Informer().GetIndexer().Add(o)
		default:
			f.t.Fatalf("load: %T", o)
		}
		if err != nil {
			f.t.Fatal(err)
		}
	}
}

// writes are the clientset's actions other than reads.
func (f *fixture) writes() []core.Action {
	var out []core.Action
	for _, a := range f.client.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		out = append(out, a)
	}
	return out
}

func (f *fixture) count(verb, resource, sub string) int {
	n := 0
	for _, a := range f.writes() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource && a.GetSubresource() == sub {
			n++
		}
	}
	return n
}

func labelsApp() map[string]string { return map[string]string{"app": "web"} }

func newRS(name string, n int32) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), Generation: 1},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labelsApp()},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labelsApp()},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			},
		},
	}
}

func newPod(name string, owner metav1.Object, ready bool, node string, age time.Duration) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), Labels: labelsApp(),
			CreationTimestamp: metav1.NewTime(time.Now().Add(-age))},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0." + name[len(name)-1:]},
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{ownerRef(owner, replicaSetKind)}
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))}}
	return p
}

func (f *fixture) rsController() *ReplicaSetController {
	c, err := NewReplicaSetController(f.client, f.factory.Apps().V1().ReplicaSets(), f.factory.Core().V1().Pods(), nil, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func TestReplicaSetCreatesMissingPods(t *testing.T) {
	rs := newRS("web", 3)
	f := newFixture(t, rs)
	f.load(rs)
	c := f.rsController()
	if err := c.sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	if n := f.count("create", "pods", ""); n != 3 {
		t.Fatalf("created %d pods, want 3: %v", n, f.writes())
	}
	for _, a := range f.writes() {
		if a.GetVerb() != "create" {
			continue
		}
		p := a.(core.CreateAction).GetObject().(*corev1.Pod)
		ref := metav1.GetControllerOf(p)
		if p.GenerateName != "web-" || ref == nil || ref.UID != rs.UID || !*ref.BlockOwnerDeletion || p.Labels["app"] != "web" {
			t.Errorf("pod %+v", p.ObjectMeta)
		}
	}
	// The informer has not shown the pods yet: a second sync must not
	// create more (expectations).
	f.client.ClearActions()
	if err := c.sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	if n := f.count("create", "pods", ""); n != 0 {
		t.Fatalf("a second sync created %d more pods", n)
	}
}

func TestReplicaSetDeletesSurplusPreferringUnscheduledNotReadyNewest(t *testing.T) {
	rs := newRS("web", 2)
	pods := []runtime.Object{
		newPod("p1", rs, true, "n1", 3*time.Hour),
		newPod("p2", rs, true, "n1", 2*time.Hour),
		newPod("p3", rs, false, "n1", 4*time.Hour), // not ready
		newPod("p4", rs, true, "", 5*time.Hour),    // unscheduled
		newPod("p5", rs, true, "n1", time.Hour),    // newest ready
	}
	f := newFixture(t, append(pods, rs)...)
	f.load(rs)
	f.load(pods...)
	c := f.rsController()
	if err := c.sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, a := range f.writes() {
		if a.GetVerb() == "delete" {
			deleted = append(deleted, a.(core.DeleteAction).GetName())
		}
	}
	if len(deleted) != 3 || deleted[0] != "p4" || deleted[1] != "p3" || deleted[2] != "p5" {
		t.Fatalf("deleted %v, want [p4 p3 p5]", deleted)
	}
}

func TestReplicaSetAdoptsOrphansAndWritesStatus(t *testing.T) {
	rs := newRS("web", 2)
	orphan := newPod("p1", nil, true, "n1", time.Hour)
	owned := newPod("p2", rs, false, "n1", time.Hour)
	f := newFixture(t, rs, orphan, owned)
	f.load(rs, orphan, owned)
	c := f.rsController()
	if err := c.sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	if f.count("update", "pods", "") != 1 || f.count("create", "pods", "") != 0 {
		t.Fatalf("want one adoption and no create: %v", f.writes())
	}
	var st *appsv1.ReplicaSetStatus
	for _, a := range f.writes() {
		if a.GetSubresource() == "status" {
			st = &a.(core.UpdateAction).GetObject().(*appsv1.ReplicaSet).Status
		}
	}
	if st == nil || st.Replicas != 2 || st.ReadyReplicas != 1 || st.AvailableReplicas != 1 || st.FullyLabeledReplicas != 2 || st.ObservedGeneration != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestReplicaSetGoneIsDone(t *testing.T) {
	f := newFixture(t)
	if err := f.rsController().sync(context.Background(), "default/missing"); err != nil || len(f.writes()) != 0 {
		t.Fatalf("err %v, writes %v", err, f.writes())
	}
}

func newDeployment(n int32, image string) *appsv1.Deployment {
	zero := intstr.FromInt32(0)
	one := intstr.FromInt32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "uid-d", Generation: 2},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labelsApp()},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labelsApp()},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}},
			},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &one, MaxUnavailable: &zero}},
		},
	}
}

func (f *fixture) deploymentController() *DeploymentController {
	c, err := NewDeploymentController(f.client, f.factory.Apps().V1().Deployments(), f.factory.Apps().V1().ReplicaSets(), nil, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// rsFor makes the ReplicaSet the controller would make for d's template.
func rsFor(d *appsv1.Deployment, name string, n, available int32, rev string) *appsv1.ReplicaSet {
	hash := ComputeHash(&d.Spec.Template, nil)
	t := d.Spec.Template.DeepCopy()
	t.Labels[PodTemplateHashLabel] = hash
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Labels:          t.Labels,
			Annotations:     map[string]string{RevisionAnnotation: rev, DesiredReplicasAnnotation: "3"},
			OwnerReferences: []metav1.OwnerReference{ownerRef(d, deploymentKind)}},
		Spec:   appsv1.ReplicaSetSpec{Replicas: &n, Selector: d.Spec.Selector, Template: *t},
		Status: appsv1.ReplicaSetStatus{Replicas: n, ReadyReplicas: available, AvailableReplicas: available},
	}
}

func TestDeploymentCreatesReplicaSet(t *testing.T) {
	d := newDeployment(3, "busybox:1")
	f := newFixture(t, d)
	f.load(d)
	if err := f.deploymentController().sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	var rs *appsv1.ReplicaSet
	for _, a := range f.writes() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "replicasets" {
			rs = a.(core.CreateAction).GetObject().(*appsv1.ReplicaSet)
		}
	}
	hash := ComputeHash(&d.Spec.Template, nil)
	if rs == nil || rs.Name != "web-"+hash || *rs.Spec.Replicas != 3 || rs.Labels[PodTemplateHashLabel] != hash ||
		rs.Spec.Template.Labels[PodTemplateHashLabel] != hash || rs.Spec.Selector.MatchLabels[PodTemplateHashLabel] != hash ||
		rs.Annotations[RevisionAnnotation] != "1" || !metav1.IsControlledBy(rs, d) {
		t.Fatalf("replica set %+v", rs)
	}
	if f.count("update", "deployments", "status") != 1 {
		t.Fatalf("no status update: %v", f.writes())
	}
}

func TestDeploymentRollingUpdateStepsWithinSurgeAndUnavailability(t *testing.T) {
	d := newDeployment(3, "busybox:2")
	oldD := newDeployment(3, "busybox:1")
	old := rsFor(oldD, "web-old", 3, 3, "1")
	f := newFixture(t, d, old)
	f.load(d, old)
	c := f.deploymentController()
	if err := c.sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	// maxSurge 1, maxUnavailable 0: the new set starts with 1 replica and
	// the old one keeps all 3 until a new pod is available.
	var created *appsv1.ReplicaSet
	for _, a := range f.writes() {
		if a.GetVerb() == "create" {
			created = a.(core.CreateAction).GetObject().(*appsv1.ReplicaSet)
		}
		if a.GetVerb() == "update" && a.GetResource().Resource == "replicasets" {
			if rs := a.(core.UpdateAction).GetObject().(*appsv1.ReplicaSet); rs.Name == "web-old" && *rs.Spec.Replicas != 3 {
				t.Fatalf("the old set was scaled to %d before any new pod was available", *rs.Spec.Replicas)
			}
		}
	}
	if created == nil || *created.Spec.Replicas != 1 || created.Annotations[RevisionAnnotation] != "2" {
		t.Fatalf("new set %+v", created)
	}

	// One new pod available: the old set may go down by one.
	newRS := rsFor(d, created.Name, 1, 1, "2")
	f2 := newFixture(t, d, old, newRS)
	f2.load(d, old, newRS)
	if err := f2.deploymentController().sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	var oldTo int32 = -1
	for _, a := range f2.writes() {
		if a.GetVerb() == "update" && a.GetResource().Resource == "replicasets" {
			if rs := a.(core.UpdateAction).GetObject().(*appsv1.ReplicaSet); rs.Name == "web-old" {
				oldTo = *rs.Spec.Replicas
			}
		}
	}
	if oldTo != 2 {
		t.Fatalf("old set scaled to %d, want 2: %v", oldTo, f2.writes())
	}
}

func TestDeploymentStatusAndRevisionHistory(t *testing.T) {
	d := newDeployment(3, "busybox:3")
	var objs []runtime.Object
	zero := int32(0)
	lim := int32(1)
	d.Spec.RevisionHistoryLimit = &lim
	for i, img := range []string{"busybox:1", "busybox:2"} {
		rs := rsFor(newDeployment(3, img), "web-old"+img[len(img)-1:], 0, 0, string(rune('1'+i)))
		rs.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Duration(10-i) * time.Hour))
		rs.Spec.Replicas = &zero
		objs = append(objs, rs)
	}
	cur := rsFor(d, "web-new", 3, 3, "3")
	objs = append(objs, cur, d)
	f := newFixture(t, objs...)
	f.load(objs...)
	if err := f.deploymentController().sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	var st *appsv1.DeploymentStatus
	for _, a := range f.writes() {
		if a.GetVerb() == "delete" {
			deleted = append(deleted, a.(core.DeleteAction).GetName())
		}
		if a.GetSubresource() == "status" {
			st = &a.(core.UpdateAction).GetObject().(*appsv1.Deployment).Status
		}
	}
	if len(deleted) != 1 || deleted[0] != "web-old1" {
		t.Errorf("deleted %v, want [web-old1]", deleted)
	}
	if st == nil || st.Replicas != 3 || st.UpdatedReplicas != 3 || st.AvailableReplicas != 3 || st.UnavailableReplicas != 0 || st.ObservedGeneration != 2 {
		t.Fatalf("status %+v", st)
	}
	conds := map[appsv1.DeploymentConditionType]appsv1.DeploymentCondition{}
	for _, c := range st.Conditions {
		conds[c.Type] = c
	}
	if c := conds[appsv1.DeploymentAvailable]; c.Status != corev1.ConditionTrue {
		t.Errorf("Available %+v", c)
	}
	if c := conds[appsv1.DeploymentProgressing]; c.Status != corev1.ConditionTrue || c.Reason != ReasonNewReplicaSetAvailble {
		t.Errorf("Progressing %+v", c)
	}
}

func TestDeploymentRecreateScalesOldDownFirst(t *testing.T) {
	d := newDeployment(3, "busybox:2")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	old := rsFor(newDeployment(3, "busybox:1"), "web-old", 3, 3, "1")
	f := newFixture(t, d, old)
	f.load(d, old)
	if err := f.deploymentController().sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	if f.count("create", "replicasets", "") != 0 || f.count("update", "replicasets", "") != 1 {
		t.Fatalf("want the old set scaled down and no new one yet: %v", f.writes())
	}
}

func TestComputeHashIsStableAndSafe(t *testing.T) {
	d := newDeployment(1, "busybox:1")
	a, b := ComputeHash(&d.Spec.Template, nil), ComputeHash(&d.Spec.Template, nil)
	one := int32(1)
	if a != b || a == ComputeHash(&d.Spec.Template, &one) || a == ComputeHash(&newDeployment(1, "busybox:2").Spec.Template, nil) {
		t.Fatalf("hashes %s %s", a, b)
	}
	for _, r := range a {
		if r == 'a' || r == 'e' || r == 'i' || r == 'o' || r == 'u' || r == '0' || r == '1' || r == '3' {
			t.Fatalf("hash %s uses an unsafe character", a)
		}
	}
}

func TestEndpointsAndSliceFromPods(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "uid-svc"},
		Spec: corev1.ServiceSpec{Selector: labelsApp(), Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}}},
	}
	ready := newPod("p1", nil, true, "n1", time.Hour)
	notReady := newPod("p2", nil, false, "n2", time.Hour)
	noIP := newPod("p3", nil, true, "n1", time.Hour)
	noIP.Status.PodIP = ""
	f := newFixture(t, svc)
	f.load(svc, ready, notReady, noIP)
	c, err := NewEndpointsController(f.client, f.factory.Core().V1().Services(), f.factory.Core().V1().Pods(),
		f.factory.Core().V1().Endpoints(), f.factory.Discovery().V1().EndpointSlices(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.sync(context.Background(), "default/web"); err != nil {
		t.Fatal(err)
	}
	var ep *corev1.Endpoints
	var slice *discoveryv1.EndpointSlice
	for _, a := range f.writes() {
		switch o := a.(core.CreateAction).GetObject().(type) {
		case *corev1.Endpoints:
			ep = o
		case *discoveryv1.EndpointSlice:
			slice = o
		}
	}
	if ep == nil || len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 1 || ep.Subsets[0].Addresses[0].IP != "10.244.0.1" ||
		len(ep.Subsets[0].NotReadyAddresses) != 1 || ep.Subsets[0].Ports[0].Port != 8080 ||
		*ep.Subsets[0].Addresses[0].NodeName != "n1" || ep.Subsets[0].Addresses[0].TargetRef.Name != "p1" {
		t.Fatalf("endpoints %+v", ep)
	}
	if slice == nil || slice.Labels[discoveryv1.LabelServiceName] != "web" || slice.Labels[discoveryv1.LabelManagedBy] != ManagedBy ||
		len(slice.Endpoints) != 2 || !*slice.Endpoints[0].Conditions.Ready || *slice.Endpoints[1].Conditions.Ready ||
		*slice.Ports[0].Port != 8080 || !metav1.IsControlledBy(slice, svc) {
		t.Fatalf("slice %+v", slice)
	}
}

func TestServiceAccountCreatedOnce(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}
	f := newFixture(t, ns)
	f.load(ns)
	c, err := NewServiceAccountController(f.client, f.factory.Core().V1().Namespaces(), f.factory.Core().V1().ServiceAccounts(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.sync(context.Background(), "team"); err != nil || f.count("create", "serviceaccounts", "") != 1 {
		t.Fatalf("err %v, writes %v", err, f.writes())
	}
	f.load(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "team"}})
	f.client.ClearActions()
	if err := c.sync(context.Background(), "team"); err != nil || len(f.writes()) != 0 {
		t.Fatalf("second sync: err %v, writes %v", err, f.writes())
	}
}

func TestGarbageCollectorDeletesOrphanedDependents(t *testing.T) {
	d := newDeployment(1, "busybox:1")
	orphaned := rsFor(d, "web-gone", 1, 1, "1") // its deployment is gone
	live := newRS("web-live", 1)
	pod := newPod("p1", live, true, "n1", time.Hour)
	f := newFixture(t, orphaned, live, pod)
	f.load(orphaned, live, pod)
	gc, err := NewGarbageCollector(f.client, f.factory, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gc.sync(ctx, "dep|replicasets|default/web-gone"); err != nil {
		t.Fatal(err)
	}
	if err := gc.sync(ctx, "dep|pods|default/p1"); err != nil {
		t.Fatal(err)
	}
	ws := f.writes()
	if len(ws) != 1 || ws[0].GetVerb() != "delete" || ws[0].(core.DeleteAction).GetName() != "web-gone" {
		t.Fatalf("writes %v", ws)
	}
}

package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"kforge.dev/kforge/controlplane/controllers"
	"kforge.dev/kforge/controlplane/local/localtest"
)

// startLocal runs kforge local up (etcd, apiserver and, in-process, the
// controller manager) and returns an admin client.
func startLocal(t *testing.T) kubernetes.Interface {
	t.Helper()
	cs, _ := startLocalIn(t)
	return cs
}

// startLocalIn is startLocal that also returns the local control plane's
// folder (its configs and PKI).
func startLocalIn(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	cp := localtest.Start(t)
	return cp.Client(t), cp.Dir
}

// eventually polls cond every 100ms until it returns nil or the deadline.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fakeKubelet stands in for node agents in namespace ns: it binds
// unscheduled pods to node-1, reports them Running and Ready with a pod
// IP, and finishes graceful deletions. It records the fewest ready,
// non-terminating pods it saw once started.
type fakeKubelet struct {
	minReady atomic.Int32
	track    atomic.Bool
	ip       atomic.Int32
}

func (k *fakeKubelet) run(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	k.minReady.Store(1 << 20)
	for ctx.Err() == nil {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		var ready int32
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp != nil {
				zero := int64(0)
				_ = cs.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
				continue
			}
			if p.Spec.NodeName == "" {
				err := cs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
					ObjectMeta: metav1.ObjectMeta{Name: p.Name, UID: p.UID},
					Target:     corev1.ObjectReference{Kind: "Node", Name: "node-1"},
				}, metav1.CreateOptions{})
				if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					t.Logf("bind %s: %v", p.Name, err)
				}
				continue
			}
			if isReady(p) {
				ready++
				continue
			}
			p.Status.Phase = corev1.PodRunning
			p.Status.PodIP = fmt.Sprintf("10.244.0.%d", k.ip.Add(1))
			p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
			now := metav1.Now()
			p.Status.Conditions = []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			}
			if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil &&
				!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				t.Logf("status %s: %v", p.Name, err)
			}
		}
		if k.track.Load() && ready < k.minReady.Load() {
			k.minReady.Store(ready)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func condition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func TestControllersOnARealAPIServer(t *testing.T) {
	cs := startLocal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const ns = "default"
	apps := cs.AppsV1().Deployments(ns)

	// A new namespace gets a default ServiceAccount.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A Deployment with 3 replicas: a ReplicaSet and 3 pods, owned.
	three := int32(3)
	grace := int64(0)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &three,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{
					Name: "web", Image: "busybox:1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
	d, err := apps.Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var firstRS appsv1.ReplicaSet
	eventually(t, "a ReplicaSet and 3 owned pods", 20*time.Second, func() error {
		rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(rss.Items) != 1 || !metav1.IsControlledBy(&rss.Items[0], d) {
			return fmt.Errorf("%d replica sets", len(rss.Items))
		}
		firstRS = rss.Items[0]
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		owned := 0
		for i := range pods.Items {
			if metav1.IsControlledBy(&pods.Items[i], &firstRS) {
				owned++
			}
		}
		if owned != 3 || len(pods.Items) != 3 {
			return fmt.Errorf("%d pods, %d owned", len(pods.Items), owned)
		}
		return nil
	})
	if firstRS.Labels[controllers.PodTemplateHashLabel] == "" || firstRS.Annotations[controllers.RevisionAnnotation] != "1" {
		t.Errorf("replica set labels %v annotations %v", firstRS.Labels, firstRS.Annotations)
	}

	// Pods become Running and Ready: the deployment is available.
	kubelet := &fakeKubelet{}
	kctx, kcancel := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	kwg.Go(func() { kubelet.run(kctx, t, cs, ns) })
	defer func() { kcancel(); kwg.Wait() }()
	eventually(t, "3 available, Available=True", 20*time.Second, func() error {
		got, err := apps.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := condition(got, appsv1.DeploymentAvailable)
		if got.Status.AvailableReplicas != 3 || c == nil || c.Status != corev1.ConditionTrue || got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("status %+v", got.Status)
		}
		return nil
	})

	// A Service selecting the pods gets Endpoints and an EndpointSlice.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "endpoints with 3 ready addresses", 20*time.Second, func() error {
		ep, err := cs.CoreV1().Endpoints(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 3 || ep.Subsets[0].Ports[0].Port != 8080 {
			return fmt.Errorf("subsets %+v", ep.Subsets)
		}
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return err
		}
		if len(slices.Items) != 1 || len(slices.Items[0].Endpoints) != 3 ||
			slices.Items[0].Labels[discoveryv1.LabelManagedBy] != controllers.ManagedBy {
			return fmt.Errorf("slices %+v", slices.Items)
		}
		return nil
	})

	// Change the image: a second ReplicaSet; availability never drops
	// below replicas - maxUnavailable (3 - 0 with the 25% defaults).
	got, err := apps.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const maxUnavailable = 0 // 25% of 3, rounded down
	w, err := apps.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "web").String(), ResourceVersion: got.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	minAvailable := atomic.Int32{}
	minAvailable.Store(got.Status.AvailableReplicas)
	var wwg sync.WaitGroup
	wwg.Go(func() {
		for ev := range w.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok && d.Status.AvailableReplicas < minAvailable.Load() {
				minAvailable.Store(d.Status.AvailableReplicas)
			}
		}
	})
	kubelet.track.Store(true)
	got.Spec.Template.Spec.Containers[0].Image = "busybox:2"
	if _, err := apps.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rollout completes", 30*time.Second, func() error {
		got, err := apps.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := condition(got, appsv1.DeploymentProgressing)
		st := got.Status
		if st.ObservedGeneration != got.Generation || st.UpdatedReplicas != 3 || st.Replicas != 3 || st.AvailableReplicas != 3 ||
			c == nil || c.Reason != controllers.ReasonNewReplicaSetAvailble {
			return fmt.Errorf("status %+v", st)
		}
		rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(rss.Items) != 2 {
			return fmt.Errorf("%d replica sets", len(rss.Items))
		}
		for _, rs := range rss.Items {
			if rs.UID == firstRS.UID && (*rs.Spec.Replicas != 0 || rs.Status.Replicas != 0) {
				return fmt.Errorf("old replica set at %d/%d", *rs.Spec.Replicas, rs.Status.Replicas)
			}
		}
		return nil
	})
	kubelet.track.Store(false)
	w.Stop()
	wwg.Wait()
	if m := minAvailable.Load(); m < int32(3-maxUnavailable) {
		t.Errorf("the deployment reported %d available during the rollout, want >= %d", m, 3-maxUnavailable)
	}
	if m := kubelet.minReady.Load(); m < int32(3-maxUnavailable) {
		t.Errorf("only %d ready pods during the rollout, want >= %d", m, 3-maxUnavailable)
	}

	// Scale to 1 through the scale subresource: pods are deleted.
	if _, err := apps.UpdateScale(ctx, "web", &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 1},
	}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one pod left, one endpoint", 20*time.Second, func() error {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(pods.Items) != 1 {
			return fmt.Errorf("%d pods", len(pods.Items))
		}
		ep, err := cs.CoreV1().Endpoints(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 1 || ep.Subsets[0].Addresses[0].IP != pods.Items[0].Status.PodIP {
			return fmt.Errorf("subsets %+v", ep.Subsets)
		}
		return nil
	})

	eventually(t, "a default ServiceAccount in the new namespace", 10*time.Second, func() error {
		_, err := cs.CoreV1().ServiceAccounts("team").Get(ctx, "default", metav1.GetOptions{})
		return err
	})

	// Deleting the Deployment removes its ReplicaSets and pods (GC).
	if err := apps.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the GC removes replica sets and pods", 20*time.Second, func() error {
		rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(rss.Items)+len(pods.Items) != 0 {
			return fmt.Errorf("%d replica sets, %d pods", len(rss.Items), len(pods.Items))
		}
		return nil
	})
}

// kubectl delete --cascade=orphan: the apiserver holds the owner with the
// orphan finalizer, the garbage collector releases the dependents, and
// the owner goes while its ReplicaSet stays.
func TestOrphanDeletionKeepsDependents(t *testing.T) {
	cs := startLocal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const ns = "default"
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "keep"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "keep"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "keep"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deployment's replica set", 20*time.Second, func() error {
		rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(rss.Items) != 1 {
			return fmt.Errorf("%v replica sets (%v)", len(rss.Items), err)
		}
		return nil
	})
	orphan := metav1.DeletePropagationOrphan
	if err := cs.AppsV1().Deployments(ns).Delete(ctx, "keep", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deployment gone, its replica set kept and released", 20*time.Second, func() error {
		if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "keep", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("the deployment is still there")
		}
		rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(rss.Items) != 1 {
			return fmt.Errorf("%d replica sets (%v)", len(rss.Items), err)
		}
		if len(rss.Items[0].OwnerReferences) != 0 {
			return fmt.Errorf("the replica set still has owners %v", rss.Items[0].OwnerReferences)
		}
		return nil
	})
}

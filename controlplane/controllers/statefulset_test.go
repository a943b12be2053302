package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

func newStatefulSet(name string, replicas int32, policy appsv1.PodManagementPolicyType) *appsv1.StatefulSet {
	grace := int64(0)
	lbl := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas, ServiceName: name, PodManagementPolicy: policy,
			Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{Name: "c", Image: "busybox:1",
						VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
			}},
		},
	}
}

// setPods maps the names of the live pods of set name to the pods.
func setPods(ctx context.Context, cs kubernetes.Interface, ns, name string) (map[string]*corev1.Pod, error) {
	l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return nil, err
	}
	out := map[string]*corev1.Pod{}
	for i := range l.Items {
		if l.Items[i].DeletionTimestamp == nil {
			out[l.Items[i].Name] = &l.Items[i]
		}
	}
	return out, nil
}

func podNames(m map[string]*corev1.Pod) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// setPodPhase plays the kubelet for one pod: it binds it to a node if
// the scheduler has not, and sets its phase, Ready when Running.
func setPodPhase(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, phase corev1.PodPhase) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName == "" {
			if err := cs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name, UID: p.UID},
				Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}, metav1.CreateOptions{}); err != nil {
				return err
			}
			if p, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		p.Status.Phase = phase
		h := fnv.New32a()
		h.Write([]byte(name))
		p.Status.PodIP = fmt.Sprintf("10.244.%d.%d", h.Sum32()%250, 1+h.Sum32()/250%250)
		ready := corev1.ConditionFalse
		if phase == corev1.PodRunning {
			ready = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready, LastTransitionTime: metav1.Now()}}
		_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("pod %s to %s: %v", name, phase, err)
	}
}

// waitPods waits until the live pods of set name are exactly names.
func waitPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, names ...string) map[string]*corev1.Pod {
	t.Helper()
	var got map[string]*corev1.Pod
	eventually(t, fmt.Sprintf("pods %v", names), 20*time.Second, func() error {
		var err error
		if got, err = setPods(ctx, cs, ns, name); err != nil {
			return err
		}
		if have := podNames(got); !slices.Equal(have, names) {
			return fmt.Errorf("pods %v", have)
		}
		return nil
	})
	return got
}

func waitSet(t *testing.T, cs kubernetes.Interface, ns, name, what string, cond func(*appsv1.StatefulSet) error) *appsv1.StatefulSet {
	t.Helper()
	var got *appsv1.StatefulSet
	eventually(t, what, 20*time.Second, func() error {
		s, err := cs.AppsV1().StatefulSets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("observed generation %d of %d", s.Status.ObservedGeneration, s.Generation)
		}
		got = s
		return cond(s)
	})
	return got
}

// tableOf decodes a meta.k8s.io Table: the names of its default
// columns and its rows' cells.
func tableOf(t *testing.T, raw []byte) ([]string, [][]any) {
	t.Helper()
	var tbl metav1.Table
	if err := json.Unmarshal(raw, &tbl); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range tbl.ColumnDefinitions {
		if c.Priority == 0 {
			cols = append(cols, c.Name)
		}
	}
	var rows [][]any
	for _, r := range tbl.Rows {
		rows = append(rows, r.Cells)
	}
	return cols, rows
}

func wantStatus(replicas, ready, current, updated int32) func(*appsv1.StatefulSet) error {
	return func(s *appsv1.StatefulSet) error {
		st := s.Status
		if st.Replicas != replicas || st.ReadyReplicas != ready || st.CurrentReplicas != current || st.UpdatedReplicas != updated {
			return fmt.Errorf("status replicas %d ready %d current %d updated %d", st.Replicas, st.ReadyReplicas, st.CurrentReplicas, st.UpdatedReplicas)
		}
		return nil
	}
}

func setImage(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, image string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"c","image":%q}]}}}}`, image)
	if _, err := cs.AppsV1().StatefulSets(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestStatefulSet: the apps/v1 StatefulSet API (defaults, immutable
// fields, table, scale) and its controller on a real apiserver, the test
// playing the kubelet: ordered creation and scale-down, a rolling update
// from the highest ordinal with a partition, failed-pod replacement,
// Parallel and OnDelete, revision history, the disruption budget's scale
// and garbage collection.
func TestStatefulSet(t *testing.T) {
	cs := startLocal(t)
	ctx := context.Background()
	ns := "sts"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
		Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, headless, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sets := cs.AppsV1().StatefulSets(ns)
	set, err := sets.Create(ctx, newStatefulSet("web", 3, ""), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("api", func(t *testing.T) {
		if set.Spec.PodManagementPolicy != appsv1.OrderedReadyPodManagement || set.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType ||
			*set.Spec.UpdateStrategy.RollingUpdate.Partition != 0 || *set.Spec.RevisionHistoryLimit != 10 || set.Generation != 1 ||
			set.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
			t.Errorf("defaults: %+v generation %d", set.Spec, set.Generation)
		}
		bad := set.DeepCopy()
		bad.Spec.ServiceName = "other"
		if _, err := sets.Update(ctx, bad, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "updates to statefulset spec for fields other than") {
			t.Errorf("serviceName change: %v, want 422", err)
		}
		bad = newStatefulSet("bad", 1, "Sometimes")
		if _, err := sets.Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("podManagementPolicy Sometimes: %v, want 422", err)
		}
		// Containers mount claim templates; a mount of neither a volume
		// nor a claim template is refused.
		bad = newStatefulSet("bad", 1, "")
		bad.Spec.VolumeClaimTemplates = nil
		if _, err := sets.Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "volumeMounts[0].name") {
			t.Errorf("mount of nothing: %v, want 422", err)
		}
		sc, err := sets.GetScale(ctx, "web", metav1.GetOptions{})
		if err != nil || sc.Spec.Replicas != 3 || sc.Status.Selector != "app=web" {
			t.Errorf("scale: %+v %v", sc, err)
		}
		raw, err := cs.AppsV1().RESTClient().Get().Namespace(ns).Resource("statefulsets").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cols, rows := tableOf(t, raw)
		if !slices.Equal(cols, []string{"Name", "Ready", "Age"}) || len(rows) != 1 {
			t.Errorf("table columns %v, rows %v", cols, rows)
		}
	})

	t.Run("ordered creation", func(t *testing.T) {
		// Until web-0 is Running and Ready, it is the only pod.
		waitSet(t, cs, ns, "web", "one pod", wantStatus(1, 0, 1, 1))
		pods := waitPods(ctx, t, cs, ns, "web", "web-0")
		p := pods["web-0"]
		s, _ := sets.Get(ctx, "web", metav1.GetOptions{})
		if p.Spec.Hostname != "web-0" || p.Spec.Subdomain != "web" || p.Labels[appsv1.StatefulSetPodNameLabel] != "web-0" ||
			p.Labels[appsv1.PodIndexLabel] != "0" || p.Labels[appsv1.StatefulSetRevisionLabel] != s.Status.UpdateRevision ||
			!metav1.IsControlledBy(p, s) {
			t.Errorf("pod identity: hostname %q subdomain %q labels %v", p.Spec.Hostname, p.Spec.Subdomain, p.Labels)
		}
		if i := slices.IndexFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "data" }); i < 0 || p.Spec.Volumes[i].EmptyDir == nil {
			t.Errorf("claim template volume: %+v", p.Spec.Volumes)
		}
		setPodPhase(ctx, t, cs, ns, "web-0", corev1.PodRunning)
		waitSet(t, cs, ns, "web", "two pods", wantStatus(2, 1, 2, 2))
		waitPods(ctx, t, cs, ns, "web", "web-0", "web-1")
		setPodPhase(ctx, t, cs, ns, "web-1", corev1.PodRunning)
		waitPods(ctx, t, cs, ns, "web", "web-0", "web-1", "web-2")
		setPodPhase(ctx, t, cs, ns, "web-2", corev1.PodRunning)
		s = waitSet(t, cs, ns, "web", "three ready", wantStatus(3, 3, 3, 3))
		if s.Status.CurrentRevision != s.Status.UpdateRevision || s.Status.AvailableReplicas != 3 {
			t.Errorf("status %+v", s.Status)
		}
		// The headless Service's endpoints carry the pods' hostnames,
		// which cluster DNS serves as web-0.web.NS.svc.
		eventually(t, "endpoint hostnames", 20*time.Second, func() error {
			l, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
			if err != nil {
				return err
			}
			var hosts []string
			for _, sl := range l.Items {
				for _, e := range sl.Endpoints {
					if e.Hostname != nil {
						hosts = append(hosts, *e.Hostname)
					}
				}
			}
			sort.Strings(hosts)
			if !slices.Equal(hosts, []string{"web-0", "web-1", "web-2"}) {
				return fmt.Errorf("hostnames %v", hosts)
			}
			return nil
		})
	})

	t.Run("disruption budget counts the scale", func(t *testing.T) {
		maxUn := intstr.FromInt32(1)
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &maxUn, Selector: set.Spec.Selector}}
		if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "budget status", 20*time.Second, func() error {
			b, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if s := b.Status; s.ExpectedPods != 3 || s.DesiredHealthy != 2 || s.CurrentHealthy != 3 || s.DisruptionsAllowed != 1 {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		if err := cs.PolicyV1().PodDisruptionBudgets(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("rolling update with partition", func(t *testing.T) {
		old, _ := sets.Get(ctx, "web", metav1.GetOptions{})
		oldRev := old.Status.UpdateRevision
		// A partition of 2 holds web-0 and web-1 at the old revision.
		if _, err := sets.Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		setImage(ctx, t, cs, ns, "web", "busybox:2")
		s := waitSet(t, cs, ns, "web", "web-2 replaced", wantStatus(3, 2, 2, 1))
		newRev := s.Status.UpdateRevision
		if newRev == oldRev || s.Status.CurrentRevision != oldRev {
			t.Fatalf("revisions: current %s update %s, old %s", s.Status.CurrentRevision, newRev, oldRev)
		}
		pods := waitPods(ctx, t, cs, ns, "web", "web-0", "web-1", "web-2")
		for name, want := range map[string]string{"web-0": oldRev, "web-1": oldRev, "web-2": newRev} {
			if got := pods[name].Labels[appsv1.StatefulSetRevisionLabel]; got != want {
				t.Errorf("%s at %s, want %s", name, got, want)
			}
		}
		setPodPhase(ctx, t, cs, ns, "web-2", corev1.PodRunning)
		waitSet(t, cs, ns, "web", "partition reached", wantStatus(3, 3, 2, 1))

		// Without the partition web-1 goes next, and web-0 only once
		// web-1 is ready again.
		if _, err := sets.Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitSet(t, cs, ns, "web", "web-1 replaced", wantStatus(3, 2, 1, 2))
		pods = waitPods(ctx, t, cs, ns, "web", "web-0", "web-1", "web-2")
		if got := pods["web-0"].Labels[appsv1.StatefulSetRevisionLabel]; got != oldRev {
			t.Errorf("web-0 replaced while web-1 is not ready: %s", got)
		}
		setPodPhase(ctx, t, cs, ns, "web-1", corev1.PodRunning)
		waitSet(t, cs, ns, "web", "web-0 replaced", wantStatus(3, 2, 0, 3))
		setPodPhase(ctx, t, cs, ns, "web-0", corev1.PodRunning)
		s = waitSet(t, cs, ns, "web", "rolled out", wantStatus(3, 3, 3, 3))
		if s.Status.CurrentRevision != newRev {
			t.Errorf("current revision %s, want %s", s.Status.CurrentRevision, newRev)
		}
		revs, err := cs.AppsV1().ControllerRevisions(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(revs.Items) != 2 {
			t.Fatalf("revisions: %v %v", revs, err)
		}
		// kubectl rollout undo skips a revision whose data equals, byte
		// for byte, the patch it builds from the live object this way.
		live, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(live, &obj); err != nil {
			t.Fatal(err)
		}
		tmpl := obj["spec"].(map[string]any)["template"].(map[string]any)
		tmpl["$patch"] = "replace"
		want, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
		for _, r := range revs.Items {
			if !metav1.IsControlledBy(&r, s) || (r.Name == newRev) != (r.Revision == 2) {
				t.Errorf("revision %s: number %d, owners %v", r.Name, r.Revision, r.OwnerReferences)
			}
			if r.Name == newRev && string(r.Data.Raw) != string(want) {
				t.Errorf("revision data\n%s\nkubectl's patch of the live object\n%s", r.Data.Raw, want)
			}
		}
	})

	t.Run("failed pod is recreated", func(t *testing.T) {
		before, err := cs.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		setPodPhase(ctx, t, cs, ns, "web-1", corev1.PodFailed)
		eventually(t, "web-1 recreated", 20*time.Second, func() error {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.UID == before.UID {
				return fmt.Errorf("still the failed pod")
			}
			return nil
		})
		setPodPhase(ctx, t, cs, ns, "web-1", corev1.PodRunning)
		waitSet(t, cs, ns, "web", "three ready again", wantStatus(3, 3, 3, 3))
	})

	t.Run("history limit", func(t *testing.T) {
		if _, err := sets.Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"revisionHistoryLimit":0}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "only the revision in use", 20*time.Second, func() error {
			revs, err := cs.AppsV1().ControllerRevisions(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return err
			}
			if len(revs.Items) != 1 {
				return fmt.Errorf("%d revisions", len(revs.Items))
			}
			return nil
		})
		raw, err := cs.AppsV1().RESTClient().Get().Namespace(ns).Resource("controllerrevisions").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cols, rows := tableOf(t, raw)
		if !slices.Equal(cols, []string{"Name", "Controller", "Revision", "Age"}) || len(rows) != 1 ||
			rows[0][1] != "statefulset.apps/web" || rows[0][2] != float64(2) {
			t.Errorf("table columns %v, rows %v", cols, rows)
		}
	})

	t.Run("ordered scale down", func(t *testing.T) {
		w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		sc := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 1}}
		if _, err := sets.UpdateScale(ctx, "web", sc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var deleted []string
		timeout := time.After(20 * time.Second)
		for len(deleted) < 2 {
			select {
			case ev := <-w.ResultChan():
				if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Deleted {
					deleted = append(deleted, p.Name)
				}
			case <-timeout:
				t.Fatalf("deleted %v after 20s", deleted)
			}
		}
		if !slices.Equal(deleted, []string{"web-2", "web-1"}) {
			t.Errorf("deleted %v, want web-2 then web-1", deleted)
		}
		waitSet(t, cs, ns, "web", "one replica", wantStatus(1, 1, 1, 1))
	})

	t.Run("parallel and on delete", func(t *testing.T) {
		p := newStatefulSet("par", 3, appsv1.ParallelPodManagement)
		p.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
		if _, err := sets.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// All three at once, none of them ready.
		waitPods(ctx, t, cs, ns, "par", "par-0", "par-1", "par-2")
		for _, n := range []string{"par-0", "par-1", "par-2"} {
			setPodPhase(ctx, t, cs, ns, n, corev1.PodRunning)
		}
		waitSet(t, cs, ns, "par", "three ready", wantStatus(3, 3, 3, 3))
		setImage(ctx, t, cs, ns, "par", "busybox:2")
		s := waitSet(t, cs, ns, "par", "new revision, no pod replaced", func(s *appsv1.StatefulSet) error {
			if s.Status.UpdateRevision == s.Status.CurrentRevision {
				return fmt.Errorf("one revision")
			}
			return wantStatus(3, 3, 3, 0)(s)
		})
		before := waitPods(ctx, t, cs, ns, "par", "par-0", "par-1", "par-2")
		if err := cs.CoreV1().Pods(ns).Delete(ctx, "par-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "par-1 recreated at the update revision", 20*time.Second, func() error {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, "par-1", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.UID == before["par-1"].UID || p.Labels[appsv1.StatefulSetRevisionLabel] != s.Status.UpdateRevision {
				return fmt.Errorf("par-1 %s at %s", p.UID, p.Labels[appsv1.StatefulSetRevisionLabel])
			}
			return nil
		})
		after := waitPods(ctx, t, cs, ns, "par", "par-0", "par-1", "par-2")
		for _, n := range []string{"par-0", "par-2"} {
			if after[n].UID != before[n].UID {
				t.Errorf("%s replaced under OnDelete", n)
			}
		}
	})

	t.Run("garbage collection", func(t *testing.T) {
		if err := sets.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pods and revisions collected", 20*time.Second, func() error {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return err
			}
			revs, err := cs.AppsV1().ControllerRevisions(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return err
			}
			if len(pods.Items)+len(revs.Items) > 0 {
				return fmt.Errorf("%d pods, %d revisions", len(pods.Items), len(revs.Items))
			}
			return nil
		})
	})
}

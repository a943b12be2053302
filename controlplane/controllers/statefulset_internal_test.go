package controllers

import (
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestParentAndOrdinal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent string
		ord    int
		ok     bool
	}{
		{"web-0", "web", 0, true},
		{"my-db-12", "my-db", 12, true},
		{"web-01", "", 0, false},
		{"web--1", "web-", 1, true}, // as upstream's NAME-ORDINAL pattern; no set has that name
		{"web", "", 0, false},
		{"-3", "", 0, false},
		{"web-x", "", 0, false},
	} {
		p, o, ok := parentAndOrdinal(tc.name)
		if p != tc.parent || o != tc.ord || ok != tc.ok {
			t.Errorf("%s: %q %d %v, want %q %d %v", tc.name, p, o, ok, tc.parent, tc.ord, tc.ok)
		}
	}
}

// TestStatefulSetPlan: one sync's creations and deletions for each pod
// management policy and update strategy.
func TestStatefulSetPlan(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &StatefulSetController{now: func() time.Time { return now }}
	set := func(replicas int32, policy appsv1.PodManagementPolicyType, strategy appsv1.StatefulSetUpdateStrategy) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "u"},
			Spec: appsv1.StatefulSetSpec{Replicas: &replicas, PodManagementPolicy: policy, UpdateStrategy: strategy, ServiceName: "web"}}
	}
	rolling := func(partition int32, maxUnavailable int) appsv1.StatefulSetUpdateStrategy {
		mu := intstr.FromInt(maxUnavailable)
		return appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType,
			RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: &partition, MaxUnavailable: &mu}}
	}
	onDelete := appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
	// pod makes web-ORD at revision rev in phase (Running means Ready).
	pod := func(ord int, rev string, phase corev1.PodPhase) *corev1.Pod {
		s := set(1, "", onDelete)
		p := statefulPod(s, &s.Spec.Template, rev, ord)
		p.Status.Phase = phase
		if phase == corev1.PodRunning {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		return p
	}
	running := func(rev string, ords ...int) []*corev1.Pod {
		var out []*corev1.Pod
		for _, o := range ords {
			out = append(out, pod(o, rev, corev1.PodRunning))
		}
		return out
	}
	for _, tc := range []struct {
		name             string
		set              *appsv1.StatefulSet
		pods             []*corev1.Pod
		creates, deletes []string
	}{
		{"ordered: the next pod once the previous is ready", set(3, "", rolling(0, 1)), running("new", 0), []string{"web-1"}, nil},
		{"ordered: nothing while a pod is pending", set(3, "", rolling(0, 1)), []*corev1.Pod{pod(0, "new", corev1.PodPending)}, nil, nil},
		{"parallel: every missing pod", set(3, appsv1.ParallelPodManagement, rolling(0, 1)), nil, []string{"web-0", "web-1", "web-2"}, nil},
		{"ordered: scale down from the highest, one at a time", set(1, "", rolling(0, 1)), running("new", 0, 1, 2), nil, []string{"web-2"}},
		{"ordered: no scale down while a replica is unhealthy", set(2, "", rolling(0, 1)),
			append(running("new", 1, 2), pod(0, "new", corev1.PodPending)), nil, nil},
		{"parallel: scale down at once", set(1, appsv1.ParallelPodManagement, rolling(0, 1)), running("new", 0, 1, 2), nil, []string{"web-2", "web-1"}},
		{"ordered: a failed pod is deleted, nothing after it", set(3, "", rolling(0, 1)),
			append(running("new", 0), pod(1, "new", corev1.PodFailed)), nil, []string{"web-1"}},
		{"rolling: the highest old pod", set(3, "", rolling(0, 1)), running("old", 0, 1, 2), nil, []string{"web-2"}},
		{"rolling: maxUnavailable 2", set(4, "", rolling(0, 2)), running("old", 0, 1, 2, 3), nil, []string{"web-3", "web-2"}},
		{"rolling: not below the partition", set(4, "", rolling(3, 4)), running("old", 0, 1, 2, 3), nil, []string{"web-3"}},
		{"rolling: done above the partition", set(4, "", rolling(3, 4)), append(running("old", 0, 1, 2), running("new", 3)...), nil, nil},
		{"on delete: old pods stay", set(2, "", onDelete), running("old", 0, 1), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			curTmpl := tc.set.Spec.Template.DeepCopy()
			p := c.plan(tc.set, tc.pods, curTmpl, "old", "new")
			var creates, deletes []string
			for _, x := range p.creates {
				creates = append(creates, x.Name)
			}
			for _, x := range p.deletes {
				deletes = append(deletes, x.Name)
			}
			if !slices.Equal(creates, tc.creates) || !slices.Equal(deletes, tc.deletes) {
				t.Errorf("creates %v deletes %v, want %v and %v", creates, deletes, tc.creates, tc.deletes)
			}
		})
	}
	// Below the partition a new pod keeps the current revision.
	p := c.plan(set(3, appsv1.ParallelPodManagement, rolling(2, 1)), nil, &corev1.PodTemplateSpec{}, "old", "new")
	var revs []string
	for _, x := range p.creates {
		revs = append(revs, podRevision(x))
	}
	if !slices.Equal(revs, []string{"old", "old", "new"}) {
		t.Errorf("revisions of new pods %v, want old old new", revs)
	}
}

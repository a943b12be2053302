package controllers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestNodePlacement(t *testing.T) {
	node := func(lbls map[string]string, taints ...corev1.Taint) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: lbls}, Spec: corev1.NodeSpec{Taints: taints}}
	}
	plain := &corev1.PodSpec{}
	addDaemonTolerations(plain)
	selective := &corev1.PodSpec{NodeSelector: map[string]string{"role": "worker"}}
	addDaemonTolerations(selective)
	for _, tc := range []struct {
		name      string
		spec      *corev1.PodSpec
		node      *corev1.Node
		run, stay bool
	}{
		{"plain node", plain, node(nil), true, true},
		{"selector mismatch", selective, node(map[string]string{"role": "db"}), false, false},
		{"selector match", selective, node(map[string]string{"role": "worker"}), true, true},
		{"cordoned: tolerated", plain, node(nil, corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}), true, true},
		{"unreachable: tolerated", plain, node(nil, corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}), true, true},
		{"not ready yet: waits", plain, node(nil, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}), false, true},
		{"user NoExecute: leaves", plain, node(nil, corev1.Taint{Key: "x", Effect: corev1.TaintEffectNoExecute}), false, false},
	} {
		run, stay := nodePlacement(tc.spec, tc.node)
		if run != tc.run || stay != tc.stay {
			t.Errorf("%s: run %v stay %v, want %v %v", tc.name, run, stay, tc.run, tc.stay)
		}
	}
}

func TestDSSurgeAndUnavailable(t *testing.T) {
	ds := func(surge, unavail *intstr.IntOrString) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
			Type: appsv1.RollingUpdateDaemonSetStrategyType, RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: surge, MaxUnavailable: unavail}}}}
	}
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int32) *intstr.IntOrString { v := intstr.FromInt32(n); return &v }
	for _, tc := range []struct {
		name          string
		ds            *appsv1.DaemonSet
		wanted        int
		surge, unavai int
	}{
		{"defaults", &appsv1.DaemonSet{}, 10, 0, 1},
		{"25% of 10 rounds up", ds(nil, pct("25%")), 10, 0, 3},
		{"surge only", ds(num(1), num(0)), 3, 1, 0},
		{"zero and zero is one unavailable", ds(num(0), num(0)), 3, 0, 1},
	} {
		s, u := dsSurgeAndUnavailable(tc.ds, tc.wanted)
		if s != tc.surge || u != tc.unavai {
			t.Errorf("%s: %d %d, want %d %d", tc.name, s, u, tc.surge, tc.unavai)
		}
	}
}

func TestDaemonSetPlanSurge(t *testing.T) {
	c := &DaemonSetController{now: time.Now}
	one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
	ds := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
		Type: appsv1.RollingUpdateDaemonSetStrategyType, RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: &one, MaxUnavailable: &zero}}}}
	pod := func(name, node, hash string, ready bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{appsv1.DefaultDaemonSetUniqueLabelKey: hash}},
			Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if ready {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		return p
	}
	nodes := []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n2"}}}
	// Both nodes run the old template: one new pod beside an old one.
	p := c.plan(ds, "new", nodes, map[string][]*corev1.Pod{"n1": {pod("a", "n1", "old", true)}, "n2": {pod("b", "n2", "old", true)}})
	if len(p.creates) != 1 || p.creates[0] != "n1" || len(p.deletes) != 0 {
		t.Errorf("first step: creates %v deletes %d, want a surge pod on n1 only", p.creates, len(p.deletes))
	}
	// The surge pod is not ready yet: nothing else happens.
	p = c.plan(ds, "new", nodes, map[string][]*corev1.Pod{"n1": {pod("a", "n1", "old", true), pod("c", "n1", "new", false)},
		"n2": {pod("b", "n2", "old", true)}})
	if len(p.creates) != 0 || len(p.deletes) != 0 {
		t.Errorf("while surging: creates %v deletes %d, want nothing", p.creates, len(p.deletes))
	}
	// It is ready: the old pod on n1 goes.
	p = c.plan(ds, "new", nodes, map[string][]*corev1.Pod{"n1": {pod("a", "n1", "old", true), pod("c", "n1", "new", true)},
		"n2": {pod("b", "n2", "old", true)}})
	if len(p.deletes) != 1 || p.deletes[0].Name != "a" {
		t.Errorf("after the surge pod is ready: deletes %v, want a", p.deletes)
	}
}

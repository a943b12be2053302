package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWantTaints(t *testing.T) {
	ready := func(s corev1.ConditionStatus) corev1.NodeCondition {
		return corev1.NodeCondition{Type: corev1.NodeReady, Status: s}
	}
	ns := func(k string) corev1.Taint { return corev1.Taint{Key: k, Effect: corev1.TaintEffectNoSchedule} }
	ne := func(k string) corev1.Taint { return corev1.Taint{Key: k, Effect: corev1.TaintEffectNoExecute} }
	for _, tc := range []struct {
		name          string
		conds         []corev1.NodeCondition
		unschedulable bool
		want          []corev1.Taint
	}{
		{"never reported", nil, false, []corev1.Taint{ns(corev1.TaintNodeNotReady)}},
		{"ready", []corev1.NodeCondition{ready(corev1.ConditionTrue)}, false, nil},
		{"not ready", []corev1.NodeCondition{ready(corev1.ConditionFalse)}, false,
			[]corev1.Taint{ns(corev1.TaintNodeNotReady), ne(corev1.TaintNodeNotReady)}},
		{"unknown", []corev1.NodeCondition{ready(corev1.ConditionUnknown)}, false,
			[]corev1.Taint{ns(corev1.TaintNodeUnreachable), ne(corev1.TaintNodeUnreachable)}},
		{"cordoned, disk pressure", []corev1.NodeCondition{ready(corev1.ConditionTrue),
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionTrue}}, true,
			[]corev1.Taint{ns(corev1.TaintNodeDiskPressure), ns(corev1.TaintNodeUnschedulable)}},
	} {
		n := &corev1.Node{Spec: corev1.NodeSpec{Unschedulable: tc.unschedulable}, Status: corev1.NodeStatus{Conditions: tc.conds}}
		got := wantTaints(n)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if !got[i].MatchTaint(&tc.want[i]) {
				t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
			}
		}
	}
}

func TestEvictionTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	added := metav1.NewTime(now.Add(-10 * time.Second))
	unreachable := []corev1.Taint{{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute, TimeAdded: &added}}
	secs := func(s int64) *int64 { return &s }
	tol := func(key string, s *int64) corev1.Toleration {
		return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: s}
	}
	for _, tc := range []struct {
		name   string
		tols   []corev1.Toleration
		taints []corev1.Taint
		at     time.Time
		evict  bool
	}{
		{"no toleration: at once", nil, unreachable, time.Time{}, true},
		{"for ever", []corev1.Toleration{tol(corev1.TaintNodeUnreachable, nil)}, unreachable, time.Time{}, false},
		{"300 s after the taint", []corev1.Toleration{tol(corev1.TaintNodeUnreachable, secs(300))}, unreachable, added.Add(300 * time.Second), true},
		{"the shortest wins", []corev1.Toleration{tol(corev1.TaintNodeUnreachable, secs(300)), tol("", secs(5))}, unreachable, added.Add(5 * time.Second), true},
		{"NoSchedule taints never evict", nil, []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoSchedule}}, time.Time{}, false},
		{"a second untolerated taint: at once", []corev1.Toleration{tol(corev1.TaintNodeUnreachable, nil)},
			append([]corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoExecute}}, unreachable...), time.Time{}, true},
	} {
		p := &corev1.Pod{Spec: corev1.PodSpec{Tolerations: tc.tols}}
		at, evict := evictionTime(p, tc.taints, now)
		if evict != tc.evict || !at.Equal(tc.at) {
			t.Errorf("%s: %v %v, want %v %v", tc.name, at, evict, tc.at, tc.evict)
		}
	}
}

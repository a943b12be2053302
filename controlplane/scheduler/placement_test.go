package scheduler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

const zoneKey = "topology.kubernetes.io/zone"

// zonedNodes creates n Ready nodes, node i in zone-(i%3).
func zonedNodes(t *testing.T, cs kubernetes.Interface, prefix string, n int) map[string]string {
	t.Helper()
	zones := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		createNode(t, cs, name, "4", "8Gi")
		zones[name] = fmt.Sprintf("zone-%d", i%3)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Labels[zoneKey] = zones[name]
			_, err = cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return zones
}

func conditionOf(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodScheduled {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// The placement rules on a real apiserver: a zone spread constraint, a
// required hostname anti-affinity (with upstream's message for the pods
// that fit nowhere), a required pod affinity, scheduling gates and a pod
// whose nodeName is set.
func TestPlacementRules(t *testing.T) {
	cs, dir := upControlPlane(t)
	ctx := context.Background()
	// Six nodes, two per zone; the spread pods are small enough that
	// resources never decide.
	zones := zonedNodes(t, cs, "n", 6)
	startScheduler(t, dir, "one")

	// 6 replicas, maxSkew 1 over 3 zones: 2/2/2, even though the
	// resource scores alone would not care.
	for i := range 6 {
		p := newPod(fmt.Sprintf("spread-%d", i), testScheduler, "10m")
		p.Labels = map[string]string{"app": "spread"}
		p.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: zoneKey, WhenUnsatisfiable: corev1.DoNotSchedule,
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "spread"}},
		}}
		createPod(t, cs, p)
	}
	perZone := map[string]int{}
	for i := range 6 {
		perZone[zones[boundNode(t, cs, fmt.Sprintf("spread-%d", i), 20*time.Second)]]++
	}
	if perZone["zone-0"] != 2 || perZone["zone-1"] != 2 || perZone["zone-2"] != 2 {
		t.Errorf("spread pods per zone %v, want 2/2/2", perZone)
	}

	// Required anti-affinity on the hostname: one per node, the 7th and
	// 8th stay Pending with upstream's message.
	anti := func(name string) *corev1.Pod {
		p := newPod(name, testScheduler, "10m")
		p.Labels = map[string]string{"app": "anti"}
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "anti"}},
				TopologyKey:   "kubernetes.io/hostname",
			}},
		}}
		return p
	}
	for i := range 8 {
		createPod(t, cs, anti(fmt.Sprintf("anti-%d", i)))
	}
	want := "0/6 nodes are available: 6 node(s) didn't match pod anti-affinity rules."
	var bound []string
	var pending int
	waitFor(t, 30*time.Second, "six anti pods bound and two unschedulable", func() (bool, error) {
		bound, pending = nil, 0
		for i := range 8 {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, fmt.Sprintf("anti-%d", i), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Spec.NodeName != "" {
				bound = append(bound, p.Spec.NodeName)
			} else if c := conditionOf(p); c != nil && c.Reason == corev1.PodReasonUnschedulable {
				if c.Message != want {
					return false, fmt.Errorf("message %q", c.Message)
				}
				pending++
			}
		}
		return len(bound) == 6 && pending == 2, nil
	})
	seen := map[string]bool{}
	for _, n := range bound {
		if seen[n] {
			t.Errorf("two anti pods on %s (%v)", n, bound)
		}
		seen[n] = true
	}

	// Required pod affinity to a zone: lands in the zone of its target.
	aff := newPod("with-affinity", testScheduler, "10m")
	aff.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "target"}},
			TopologyKey:   zoneKey,
		}},
	}}
	createPod(t, cs, aff)
	waitFor(t, 15*time.Second, "with-affinity Unschedulable (no target yet)", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "with-affinity", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		c := conditionOf(p)
		return p.Spec.NodeName == "" && c != nil && c.Message == "0/6 nodes are available: 6 node(s) didn't match pod affinity rules.", nil
	})
	target := newPod("target", testScheduler, "10m")
	target.Labels = map[string]string{"app": "target"}
	target.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "n-4"}
	createPod(t, cs, target)
	if n := boundNode(t, cs, "with-affinity", 30*time.Second); zones[n] != zones["n-4"] {
		t.Errorf("with-affinity on %s (%s), want %s", n, zones[n], zones["n-4"])
	}

	// Scheduling gates: the pod waits with SchedulingGated until the gate
	// goes, then it is placed.
	gated := newPod("gated", testScheduler, "10m")
	gated.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/wait"}}
	createPod(t, cs, gated)
	waitFor(t, 15*time.Second, "gated to be SchedulingGated", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "gated", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		c := conditionOf(p)
		return c != nil && c.Reason == "SchedulingGated" && p.Spec.NodeName == "", nil
	})
	p, err := cs.CoreV1().Pods(ns).Get(ctx, "gated", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.SchedulingGates = nil
	if _, err := cs.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	boundNode(t, cs, "gated", 20*time.Second)

	// A pod created with nodeName is left alone (the apiserver marks it
	// scheduled; the scheduler writes no condition of its own).
	pre := newPod("preset", testScheduler, "10m")
	pre.Spec.NodeName = "n-1"
	createPod(t, cs, pre)
	createPod(t, cs, newPod("marker", testScheduler, "10m"))
	boundNode(t, cs, "marker", 20*time.Second)
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, "preset", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "n-1" || conditionOf(p) != nil && conditionOf(p).Status != corev1.ConditionTrue {
		t.Errorf("preset pod touched: %v %+v", err, p.Status.Conditions)
	}
}

package controllers

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
)

func TestNamespaceConditions(t *testing.T) {
	get := func(st *corev1.NamespaceStatus, typ corev1.NamespaceConditionType) corev1.NamespaceCondition {
		for _, c := range st.Conditions {
			if c.Type == typ {
				return c
			}
		}
		t.Fatalf("no %s condition in %+v", typ, st.Conditions)
		return corev1.NamespaceCondition{}
	}

	// A first pass with problems sets every type, failing ones True.
	var st corev1.NamespaceStatus
	var s conditionSet
	s.discoveryFailed(&discovery.ErrGroupDiscoveryFailed{Groups: map[schema.GroupVersion]error{{Group: "metrics.k8s.io", Version: "v1beta1"}: errors.New("503")}})
	s.contentFailed(errors.New("b failed"))
	s.contentFailed(errors.New("a failed"))
	s.content(map[schema.GroupVersionResource]int{{Group: "apps", Version: "v1", Resource: "deployments"}: 1, {Version: "v1", Resource: "configmaps"}: 2},
		map[string]int{"example.com/hold": 2, "orphan": 1})
	if !s.apply(&st) || len(st.Conditions) != 5 {
		t.Fatalf("first apply: %+v", st.Conditions)
	}
	for typ, want := range map[corev1.NamespaceConditionType][3]string{
		corev1.NamespaceDeletionDiscoveryFailure: {"True", "DiscoveryFailed", "Discovery failed for some groups, 1 failing: unable to retrieve the complete list of server APIs: metrics.k8s.io/v1beta1: 503"},
		corev1.NamespaceDeletionGVParsingFailure: {"False", "ParsedGroupVersions", "All legacy kube types successfully parsed"},
		corev1.NamespaceDeletionContentFailure:   {"True", "ContentDeletionFailed", "Failed to delete all resource types, 2 remaining: a failed, b failed"},
		corev1.NamespaceContentRemaining:         {"True", "SomeResourcesRemain", "Some resources are remaining: configmaps. has 2 resource instances, deployments.apps has 1 resource instances"},
		corev1.NamespaceFinalizersRemaining:      {"True", "SomeFinalizersRemain", "Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances, orphan in 1 resource instances"},
	} {
		c := get(&st, typ)
		if string(c.Status) != want[0] || c.Reason != want[1] || c.Message != want[2] {
			t.Errorf("%s: %s %s %q, want %v", typ, c.Status, c.Reason, c.Message, want)
		}
	}

	// The same problems again: nothing changes, times stay.
	before := get(&st, corev1.NamespaceContentRemaining).LastTransitionTime
	again := conditionSet{failing: s.failing, contentErrors: s.contentErrors}
	if again.apply(&st) {
		t.Fatal("the same pass reported a change")
	}

	// Another count keeps the transition time; all clear moves it.
	time.Sleep(1100 * time.Millisecond) // metav1.Time has whole seconds
	var fewer conditionSet
	fewer.content(map[schema.GroupVersionResource]int{{Version: "v1", Resource: "configmaps"}: 1}, nil)
	if !fewer.apply(&st) {
		t.Fatal("a new count reported no change")
	}
	if c := get(&st, corev1.NamespaceContentRemaining); c.LastTransitionTime != before || c.Message != "Some resources are remaining: configmaps. has 1 resource instances" {
		t.Fatalf("after a new count: %+v (was at %v)", c, before)
	}
	var clear conditionSet
	if !clear.apply(&st) {
		t.Fatal("all clear reported no change")
	}
	c := get(&st, corev1.NamespaceContentRemaining)
	if c.Status != corev1.ConditionFalse || c.Reason != "ContentRemoved" || c.LastTransitionTime == before || c.LastTransitionTime.Before(&metav1.Time{Time: before.Add(time.Second)}) {
		t.Fatalf("after all clear: %+v", c)
	}
}

package controllers

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
)

// discoveryNamespaced lists the namespaced resources the server serves,
// one version per group.
func discoveryNamespaced(client kubernetes.Interface) ([]*metav1.APIResourceList, error) {
	return discovery.ServerPreferredNamespacedResources(client.Discovery())
}

// The conditions a namespace being deleted carries, with upstream's types,
// reasons and messages (clients and people match on them). Each is True
// while its problem lasts and False, with an "ok" reason, otherwise.
var (
	namespaceConditionTypes = []corev1.NamespaceConditionType{
		corev1.NamespaceDeletionDiscoveryFailure,
		corev1.NamespaceDeletionGVParsingFailure,
		corev1.NamespaceDeletionContentFailure,
		corev1.NamespaceContentRemaining,
		corev1.NamespaceFinalizersRemaining,
	}
	namespaceOK = map[corev1.NamespaceConditionType][2]string{ // reason, message
		corev1.NamespaceDeletionDiscoveryFailure: {"ResourcesDiscovered", "All resources successfully discovered"},
		corev1.NamespaceDeletionGVParsingFailure: {"ParsedGroupVersions", "All legacy kube types successfully parsed"},
		corev1.NamespaceDeletionContentFailure:   {"ContentDeleted", "All content successfully deleted, may be waiting on finalization"},
		corev1.NamespaceContentRemaining:         {"ContentRemoved", "All content successfully removed"},
		corev1.NamespaceFinalizersRemaining:      {"ContentHasNoFinalizers", "All content-preserving finalizers finished"},
	}
)

// conditionSet collects one pass's problems.
type conditionSet struct {
	failing       []corev1.NamespaceCondition
	contentErrors []string
}

func (s *conditionSet) add(t corev1.NamespaceConditionType, reason, msg string) {
	s.failing = append(s.failing, corev1.NamespaceCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: msg})
}

func (s *conditionSet) discoveryFailed(err error) {
	msg := err.Error()
	var gerr *discovery.ErrGroupDiscoveryFailed
	if errors.As(err, &gerr) {
		msg = fmt.Sprintf("Discovery failed for some groups, %d failing: %v", len(gerr.Groups), err)
	}
	s.add(corev1.NamespaceDeletionDiscoveryFailure, "DiscoveryFailed", msg)
}

func (s *conditionSet) contentFailed(err error) {
	s.contentErrors = append(s.contentErrors, err.Error())
}

// content records what remains: objects per resource, and objects per
// finalizer holding them.
func (s *conditionSet) content(remaining map[schema.GroupVersionResource]int, finalizers map[string]int) {
	var rs, fs []string
	for gvr, n := range remaining {
		if n > 0 {
			rs = append(rs, fmt.Sprintf("%s.%s has %d resource instances", gvr.Resource, gvr.Group, n))
		}
	}
	for f, n := range finalizers {
		if n > 0 {
			fs = append(fs, fmt.Sprintf("%s in %d resource instances", f, n))
		}
	}
	sort.Strings(rs)
	sort.Strings(fs)
	if len(rs) > 0 {
		s.add(corev1.NamespaceContentRemaining, "SomeResourcesRemain", "Some resources are remaining: "+strings.Join(rs, ", "))
	}
	if len(fs) > 0 {
		s.add(corev1.NamespaceFinalizersRemaining, "SomeFinalizersRemain", "Some content in the namespace has finalizers remaining: "+strings.Join(fs, ", "))
	}
}

// apply sets every condition type on status (the failing variant or the
// ok one) and reports whether anything changed. A transition time moves
// only when a condition's status does.
func (s *conditionSet) apply(status *corev1.NamespaceStatus) bool {
	failing := s.failing
	if len(s.contentErrors) > 0 {
		msgs := append([]string{}, s.contentErrors...)
		sort.Strings(msgs)
		failing = append(failing, corev1.NamespaceCondition{Type: corev1.NamespaceDeletionContentFailure, Status: corev1.ConditionTrue,
			Reason: "ContentDeletionFailed", Message: fmt.Sprintf("Failed to delete all resource types, %d remaining: %s", len(msgs), strings.Join(msgs, ", "))})
	}
	changed := false
	now := metav1.Now()
	for _, t := range namespaceConditionTypes {
		want := corev1.NamespaceCondition{Type: t, Status: corev1.ConditionFalse, Reason: namespaceOK[t][0], Message: namespaceOK[t][1]}
		for _, f := range failing {
			if f.Type == t {
				want = f
			}
		}
		want.LastTransitionTime = now
		i := -1
		for j := range status.Conditions {
			if status.Conditions[j].Type == t {
				i = j
			}
		}
		switch {
		case i < 0:
			status.Conditions = append(status.Conditions, want)
			changed = true
		case status.Conditions[i].Status != want.Status:
			status.Conditions[i] = want
			changed = true
		case status.Conditions[i].Reason != want.Reason || status.Conditions[i].Message != want.Message:
			status.Conditions[i].Reason, status.Conditions[i].Message = want.Reason, want.Message
			changed = true
		}
	}
	return changed
}

package apiserver

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// DefaultTolerationSeconds is how long a pod stays bound to a node that
// turned not-ready or unreachable before the node lifecycle controller
// evicts it, unless the pod says otherwise: upstream's
// DefaultTolerationSeconds admission plugin default.
const DefaultTolerationSeconds int64 = 300

// admitCreate runs the mutating admission steps upstream's apiserver
// runs on create for the kinds kforge serves:
//
//   - TaintNodesByCondition: a new Node carries
//     node.kubernetes.io/not-ready:NoSchedule until the node lifecycle
//     controller sees it Ready, so no pod lands on a node that has not
//     reported yet.
//   - DefaultTolerationSeconds: a new Pod tolerates the not-ready and
//     unreachable NoExecute taints for 300 s, unless it already has a
//     toleration for them (any toleration with that key or an empty key,
//     and effect NoExecute or empty).
func admitCreate(obj runtime.Object) {
	switch o := obj.(type) {
	case *corev1.Node:
		addNotReadyTaint(o)
	case *corev1.Pod:
		addDefaultTolerations(&o.Spec)
	}
}

func addNotReadyTaint(n *corev1.Node) {
	t := corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}
	for i := range n.Spec.Taints {
		if n.Spec.Taints[i].MatchTaint(&t) {
			return
		}
	}
	n.Spec.Taints = append(n.Spec.Taints, t)
}

func addDefaultTolerations(s *corev1.PodSpec) {
	notReady, unreachable := false, false
	for _, t := range s.Tolerations {
		if t.Effect != corev1.TaintEffectNoExecute && t.Effect != "" {
			continue
		}
		switch t.Key {
		case "":
			notReady, unreachable = true, true
		case corev1.TaintNodeNotReady:
			notReady = true
		case corev1.TaintNodeUnreachable:
			unreachable = true
		}
	}
	if !notReady {
		s.Tolerations = append(s.Tolerations, defaultToleration(corev1.TaintNodeNotReady))
	}
	if !unreachable {
		s.Tolerations = append(s.Tolerations, defaultToleration(corev1.TaintNodeUnreachable))
	}
}

func defaultToleration(key string) corev1.Toleration {
	secs := DefaultTolerationSeconds
	return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists,
		Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &secs}
}

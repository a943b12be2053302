package nodeagent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func admitPodWith(cpu, mem string, hostPorts ...corev1.ContainerPort) *corev1.Pod {
	req := corev1.ResourceList{}
	if cpu != "" {
		req[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		req[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "c", Resources: corev1.ResourceRequirements{Requests: req}, Ports: hostPorts}}}}
}

func TestCheckAdmission(t *testing.T) {
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1900m"),
		corev1.ResourceMemory: resource.MustParse("1Gi"),
		corev1.ResourcePods:   resource.MustParse("3"),
	}
	web := corev1.ContainerPort{ContainerPort: 8080, HostPort: 80}
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		others     []*corev1.Pod
		wantReason string
		wantMsg    string
	}{
		{name: "fits", pod: admitPodWith("500m", "100Mi"), others: []*corev1.Pod{admitPodWith("1", "512Mi")}},
		{name: "exactly fills the node", pod: admitPodWith("900m", "512Mi"), others: []*corev1.Pod{admitPodWith("1", "512Mi")}},
		{name: "no requests always fit", pod: admitPodWith("", ""), others: []*corev1.Pod{admitPodWith("1900m", "1Gi")}},
		{name: "cpu", pod: admitPodWith("1", ""), others: []*corev1.Pod{admitPodWith("1", "")},
			wantReason: "OutOfcpu", wantMsg: "Node didn't have enough resource: cpu, requested: 1000, used: 1000, capacity: 1900"},
		{name: "memory", pod: admitPodWith("", "1Gi"), others: []*corev1.Pod{admitPodWith("", "1Mi")},
			wantReason: "OutOfmemory", wantMsg: "Node didn't have enough resource: memory, requested: 1073741824, used: 1048576, capacity: 1073741824"},
		{name: "pods", pod: admitPodWith("", ""), others: []*corev1.Pod{admitPodWith("", ""), admitPodWith("", ""), admitPodWith("", "")},
			wantReason: "OutOfpods", wantMsg: "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"},
		{name: "a resource the node does not have", pod: func() *corev1.Pod {
			p := admitPodWith("", "")
			p.Spec.Containers[0].Resources.Requests["example.com/gpu"] = resource.MustParse("1")
			return p
		}(), wantReason: "OutOfexample.com/gpu"},
		{name: "host port taken", pod: admitPodWith("", "", web), others: []*corev1.Pod{admitPodWith("", "", web)},
			wantReason: "NodePorts", wantMsg: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"},
		{name: "host port on every address against one address", pod: admitPodWith("", "", web),
			others: []*corev1.Pod{admitPodWith("", "", corev1.ContainerPort{ContainerPort: 1, HostPort: 80, HostIP: "198.18.0.21"})}, wantReason: "NodePorts"},
		{name: "same port, other protocol", pod: admitPodWith("", "", web),
			others: []*corev1.Pod{admitPodWith("", "", corev1.ContainerPort{ContainerPort: 1, HostPort: 80, Protocol: corev1.ProtocolUDP})}},
		{name: "same port, two addresses", pod: admitPodWith("", "", corev1.ContainerPort{ContainerPort: 1, HostPort: 80, HostIP: "198.18.0.22"}),
			others: []*corev1.Pod{admitPodWith("", "", corev1.ContainerPort{ContainerPort: 1, HostPort: 80, HostIP: "198.18.0.21"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := checkAdmission(tc.pod, tc.others, alloc)
			switch {
			case tc.wantReason == "" && r != nil:
				t.Fatalf("rejected: %+v", r)
			case tc.wantReason != "" && r == nil:
				t.Fatalf("admitted, want %s", tc.wantReason)
			case r != nil && (r.reason != tc.wantReason || (tc.wantMsg != "" && r.message != tc.wantMsg)):
				t.Fatalf("rejection %+v, want %s %q", r, tc.wantReason, tc.wantMsg)
			}
		})
	}
}

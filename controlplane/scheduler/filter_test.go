package scheduler

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func readyNode(name, cpu, mem string, pods int) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse(cpu),
				corev1.ResourceMemory: resource.MustParse(mem),
				corev1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
}

func podReq(name, cpu, mem string) *corev1.Pod {
	c := corev1.Container{Name: "c", Image: "busybox"}
	if cpu != "" || mem != "" {
		c.Resources.Requests = corev1.ResourceList{}
		if cpu != "" {
			c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse(mem)
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
	}
}

func TestFilterNodeState(t *testing.T) {
	noCond := readyNode("n", "1", "1Gi", 10)
	noCond.Status.Conditions = nil
	notReady := readyNode("n", "1", "1Gi", 10)
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	cordoned := readyNode("n", "1", "1Gi", 10)
	cordoned.Spec.Unschedulable = true
	tolUnsched := podReq("p", "", "")
	tolUnsched.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists}}
	for _, tc := range []struct {
		name string
		node *corev1.Node
		pod  *corev1.Pod
		want []string
	}{
		{"ready", readyNode("n", "1", "1Gi", 10), podReq("p", "", ""), nil},
		{"no conditions is not ready", noCond, podReq("p", "", ""), []string{reasonNotReady}},
		{"ready false", notReady, podReq("p", "", ""), []string{reasonNotReady}},
		{"cordoned", cordoned, podReq("p", "", ""), []string{reasonUnschedulable}},
		{"cordoned but tolerated", cordoned, tolUnsched, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := filter(tc.pod, newNodeInfo(tc.node)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("filter = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTaintsAndTolerations(t *testing.T) {
	taint := func(k, v string, e corev1.TaintEffect) corev1.Taint { return corev1.Taint{Key: k, Value: v, Effect: e} }
	for _, tc := range []struct {
		name   string
		taints []corev1.Taint
		tols   []corev1.Toleration
		bad    bool
	}{
		{"no taints", nil, nil, false},
		{"NoSchedule untolerated", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoSchedule)}, nil, true},
		{"NoExecute untolerated", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoExecute)}, nil, true},
		{"PreferNoSchedule never filters", []corev1.Taint{taint("x", "y", corev1.TaintEffectPreferNoSchedule)}, nil, false},
		{"Equal matches key and value", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoSchedule)},
			[]corev1.Toleration{{Key: "x", Operator: corev1.TolerationOpEqual, Value: "y"}}, false},
		{"empty operator is Equal", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoSchedule)},
			[]corev1.Toleration{{Key: "x", Value: "y", Effect: corev1.TaintEffectNoSchedule}}, false},
		{"Equal wrong value", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoSchedule)},
			[]corev1.Toleration{{Key: "x", Operator: corev1.TolerationOpEqual, Value: "z"}}, true},
		{"Exists ignores value", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoSchedule)},
			[]corev1.Toleration{{Key: "x", Operator: corev1.TolerationOpExists}}, false},
		{"empty key Exists tolerates everything", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoExecute), taint("a", "", corev1.TaintEffectNoSchedule)},
			[]corev1.Toleration{{Operator: corev1.TolerationOpExists}}, false},
		{"effect must match", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoExecute)},
			[]corev1.Toleration{{Key: "x", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}, true},
		{"one of two taints tolerated", []corev1.Taint{taint("x", "y", corev1.TaintEffectNoSchedule), taint("a", "b", corev1.TaintEffectNoSchedule)},
			[]corev1.Toleration{{Key: "x", Operator: corev1.TolerationOpExists}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := readyNode("n", "1", "1Gi", 10)
			n.Spec.Taints = tc.taints
			p := podReq("p", "", "")
			p.Spec.Tolerations = tc.tols
			got := filter(p, newNodeInfo(n))
			if bad := len(got) > 0; bad != tc.bad {
				t.Errorf("filter = %q, want filtered=%v", got, tc.bad)
			}
		})
	}
	n := readyNode("n", "1", "1Gi", 10)
	n.Spec.Taints = []corev1.Taint{taint("x", "y", corev1.TaintEffectNoSchedule)}
	if got := filter(podReq("p", "", ""), newNodeInfo(n)); !reflect.DeepEqual(got, []string{"node(s) had untolerated taint {x: y}"}) {
		t.Errorf("reason %q", got)
	}
}

func TestNodeSelectorAndAffinity(t *testing.T) {
	node := readyNode("node-a", "1", "1Gi", 10)
	node.Labels["zone"] = "a"
	node.Labels["gen"] = "5"
	expr := func(k string, op corev1.NodeSelectorOperator, v ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: k, Operator: op, Values: v}
	}
	aff := func(terms ...corev1.NodeSelectorTerm) *corev1.Affinity {
		return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}
	}
	exprs := func(rs ...corev1.NodeSelectorRequirement) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: rs}
	}
	for _, tc := range []struct {
		name     string
		selector map[string]string
		affinity *corev1.Affinity
		want     bool
	}{
		{"nothing", nil, nil, true},
		{"selector matches", map[string]string{"zone": "a"}, nil, true},
		{"selector differs", map[string]string{"zone": "b"}, nil, false},
		{"selector missing label", map[string]string{"disk": "ssd"}, nil, false},
		{"In", nil, aff(exprs(expr("zone", corev1.NodeSelectorOpIn, "a", "b"))), true},
		{"In miss", nil, aff(exprs(expr("zone", corev1.NodeSelectorOpIn, "b"))), false},
		{"NotIn", nil, aff(exprs(expr("zone", corev1.NodeSelectorOpNotIn, "b"))), true},
		{"NotIn miss", nil, aff(exprs(expr("zone", corev1.NodeSelectorOpNotIn, "a"))), false},
		{"NotIn absent label matches", nil, aff(exprs(expr("disk", corev1.NodeSelectorOpNotIn, "ssd"))), true},
		{"Exists", nil, aff(exprs(expr("zone", corev1.NodeSelectorOpExists))), true},
		{"Exists miss", nil, aff(exprs(expr("disk", corev1.NodeSelectorOpExists))), false},
		{"DoesNotExist", nil, aff(exprs(expr("disk", corev1.NodeSelectorOpDoesNotExist))), true},
		{"DoesNotExist miss", nil, aff(exprs(expr("zone", corev1.NodeSelectorOpDoesNotExist))), false},
		{"Gt", nil, aff(exprs(expr("gen", corev1.NodeSelectorOpGt, "4"))), true},
		{"Lt miss", nil, aff(exprs(expr("gen", corev1.NodeSelectorOpLt, "4"))), false},
		{"expressions are ANDed", nil, aff(exprs(expr("zone", corev1.NodeSelectorOpIn, "a"), expr("disk", corev1.NodeSelectorOpExists))), false},
		{"terms are ORed", nil, aff(exprs(expr("disk", corev1.NodeSelectorOpExists)), exprs(expr("zone", corev1.NodeSelectorOpIn, "a"))), true},
		{"empty term matches nothing", nil, aff(corev1.NodeSelectorTerm{}), false},
		{"matchFields metadata.name", nil, aff(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{expr("metadata.name", corev1.NodeSelectorOpIn, "node-a")}}), true},
		{"matchFields other name", nil, aff(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{expr("metadata.name", corev1.NodeSelectorOpIn, "node-b")}}), false},
		{"selector and affinity both apply", map[string]string{"zone": "b"}, aff(exprs(expr("zone", corev1.NodeSelectorOpExists))), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := podReq("p", "", "")
			p.Spec.NodeSelector = tc.selector
			p.Spec.Affinity = tc.affinity
			got := filter(p, newNodeInfo(node))
			if ok := len(got) == 0; ok != tc.want {
				t.Errorf("filter = %q, want fits=%v", got, tc.want)
			}
			if !tc.want && !reflect.DeepEqual(got, []string{reasonAffinity}) {
				t.Errorf("reason %q", got)
			}
		})
	}
}

func TestResourceFit(t *testing.T) {
	bound := func(p *corev1.Pod, node string, phase corev1.PodPhase) *corev1.Pod {
		p.Spec.NodeName = node
		p.Status.Phase = phase
		return p
	}
	sidecar := corev1.ContainerRestartPolicyAlways
	bigInit := podReq("init", "100m", "")
	bigInit.Spec.InitContainers = []corev1.Container{{Name: "i", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("900m")}}}}
	withSidecar := podReq("sc", "500m", "")
	withSidecar.Spec.InitContainers = []corev1.Container{{Name: "s", RestartPolicy: &sidecar, Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("300m")}}}}
	for _, tc := range []struct {
		name     string
		existing []*corev1.Pod
		pod      *corev1.Pod
		maxPods  int
		want     []string
	}{
		{"empty node", nil, podReq("p", "500m", "512Mi"), 10, nil},
		{"exactly full", []*corev1.Pod{bound(podReq("a", "500m", "512Mi"), "n", corev1.PodRunning)}, podReq("p", "500m", "512Mi"), 10, nil},
		{"cpu short", []*corev1.Pod{bound(podReq("a", "600m", ""), "n", corev1.PodRunning)}, podReq("p", "500m", ""), 10, []string{"Insufficient cpu"}},
		{"memory short", []*corev1.Pod{bound(podReq("a", "", "800Mi"), "n", corev1.PodPending)}, podReq("p", "", "300Mi"), 10, []string{"Insufficient memory"}},
		{"both short", nil, podReq("p", "2", "2Gi"), 10, []string{"Insufficient cpu", "Insufficient memory"}},
		{"terminated pods hold nothing", []*corev1.Pod{bound(podReq("a", "1", "1Gi"), "n", corev1.PodSucceeded), bound(podReq("b", "1", "1Gi"), "n", corev1.PodFailed)}, podReq("p", "1", "1Gi"), 10, nil},
		{"pods on other nodes do not count", []*corev1.Pod{bound(podReq("a", "1", "1Gi"), "other", corev1.PodRunning)}, podReq("p", "1", "1Gi"), 10, nil},
		{"too many pods", []*corev1.Pod{bound(podReq("a", "", ""), "n", corev1.PodRunning)}, podReq("p", "", ""), 1, []string{reasonTooManyPods}},
		{"init container larger than containers", []*corev1.Pod{bound(podReq("a", "200m", ""), "n", corev1.PodRunning)}, bigInit, 10, []string{"Insufficient cpu"}},
		{"sidecar adds to containers", []*corev1.Pod{bound(podReq("a", "300m", ""), "n", corev1.PodRunning)}, withSidecar, 10, []string{"Insufficient cpu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := readyNode("n", "1", "1Gi", tc.maxPods)
			infos := buildNodeInfos([]*corev1.Node{n}, tc.existing)
			if got := filter(tc.pod, infos["n"]); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("filter = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHostPorts(t *testing.T) {
	withPort := func(name string, port int32, proto corev1.Protocol, ip string) *corev1.Pod {
		p := podReq(name, "", "")
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: port, Protocol: proto, HostIP: ip}}
		return p
	}
	for _, tc := range []struct {
		name     string
		existing *corev1.Pod
		pod      *corev1.Pod
		conflict bool
	}{
		{"same port", withPort("a", 8080, "", ""), withPort("p", 8080, corev1.ProtocolTCP, ""), true},
		{"other port", withPort("a", 8080, "", ""), withPort("p", 8081, "", ""), false},
		{"other protocol", withPort("a", 53, corev1.ProtocolUDP, ""), withPort("p", 53, corev1.ProtocolTCP, ""), false},
		{"wildcard vs specific IP", withPort("a", 80, "", "0.0.0.0"), withPort("p", 80, "", "10.0.0.1"), true},
		{"two different IPs", withPort("a", 80, "", "10.0.0.2"), withPort("p", 80, "", "10.0.0.1"), false},
		{"container port only", podReq("a", "", ""), withPort("p", 0, "", ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.existing.Spec.NodeName = "n"
			infos := buildNodeInfos([]*corev1.Node{readyNode("n", "1", "1Gi", 10)}, []*corev1.Pod{tc.existing})
			got := filter(tc.pod, infos["n"])
			if c := reflect.DeepEqual(got, []string{reasonPorts}); c != tc.conflict {
				t.Errorf("filter = %q, want conflict=%v", got, tc.conflict)
			}
		})
	}
}

func TestFailureMessage(t *testing.T) {
	got := failureMessage(3, map[string]int{"node(s) had untolerated taint {x: y}": 1, "Insufficient cpu": 2})
	want := "0/3 nodes are available: 1 node(s) had untolerated taint {x: y}, 2 Insufficient cpu."
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestPickNode(t *testing.T) {
	owner := func(p *corev1.Pod, uid string) *corev1.Pod {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: types.UID(uid), Controller: &yes}}
		return p
	}
	on := func(p *corev1.Pod, node string) *corev1.Pod { p.Spec.NodeName = node; return p }
	nodes := []*corev1.Node{readyNode("a", "4", "8Gi", 110), readyNode("b", "4", "8Gi", 110), readyNode("c", "4", "8Gi", 110)}
	feasible := func(pods ...*corev1.Pod) []*nodeInfo {
		infos := buildNodeInfos(nodes, pods)
		return []*nodeInfo{infos["a"], infos["b"], infos["c"]}
	}
	for _, tc := range []struct {
		name     string
		existing []*corev1.Pod
		pod      *corev1.Pod
		start    int
		want     string
	}{
		{"equal nodes, start 0", nil, podReq("p", "1", "1Gi"), 0, "a"},
		{"equal nodes rotate", nil, podReq("p", "1", "1Gi"), 1, "b"},
		{"equal nodes rotate wraps", nil, podReq("p", "1", "1Gi"), 5, "c"},
		{"least allocated wins", []*corev1.Pod{on(podReq("x", "2", "4Gi"), "a"), on(podReq("y", "1", "1Gi"), "b")}, podReq("p", "1", "1Gi"), 0, "c"},
		{"balanced beats lopsided", []*corev1.Pod{on(podReq("x", "3", "0"), "a"), on(podReq("y", "1500m", "3Gi"), "b"), on(podReq("z", "1500m", "3Gi"), "c")}, podReq("p", "100m", "100Mi"), 0, "b"},
		{"spread siblings", []*corev1.Pod{on(owner(podReq("x", "100m", "100Mi"), "rs1"), "a"), on(owner(podReq("y", "100m", "100Mi"), "rs1"), "b"), on(podReq("z", "100m", "100Mi"), "c")},
			owner(podReq("p", "100m", "100Mi"), "rs1"), 0, "c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pickNode(tc.pod, feasible(tc.existing...), tc.start)
			if got.node.Name != tc.want {
				t.Errorf("picked %s, want %s", got.node.Name, tc.want)
			}
		})
	}
	if pickNode(podReq("p", "", ""), nil, 0) != nil {
		t.Error("picked a node from none")
	}
}

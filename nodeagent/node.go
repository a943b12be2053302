package nodeagent

import (
	"context"
	"fmt"
	"os"
	goruntime "runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Well-known node labels the agent sets.
const (
	labelHostname   = "kubernetes.io/hostname"
	labelOS         = "kubernetes.io/os"
	labelArch       = "kubernetes.io/arch"
	labelRoleWorker = "node-role.kubernetes.io/worker"
)

// nodeLabels are the labels the agent owns on its Node.
func nodeLabels(cfg *Config) map[string]string {
	l := map[string]string{
		labelHostname:   cfg.NodeName,
		labelOS:         goruntime.GOOS,
		labelArch:       goruntime.GOARCH,
		labelRoleWorker: "",
	}
	for k, v := range cfg.NodeLabels {
		l[k] = v
	}
	return l
}

// registerNode creates the agent's Node, or brings an existing one's
// labels up to date. It returns the Node as stored.
func (a *Agent) registerNode(ctx context.Context) (*corev1.Node, error) {
	nodes := a.client.CoreV1().Nodes()
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Labels: nodeLabels(a.cfg)},
	}
	if a.cfg.PodCIDRSource == PodCIDRStatic {
		want.Spec.PodCIDR = a.cfg.PodCIDR
		want.Spec.PodCIDRs = []string{a.cfg.PodCIDR}
	}
	n, err := nodes.Create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		a.log.Info("registered the node")
		return n, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("registering node %s: %w", a.cfg.NodeName, err)
	}
	n, err = nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("registering node %s: %w", a.cfg.NodeName, err)
	}
	changed := false
	n = n.DeepCopy()
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for k, v := range want.Labels {
		if cur, ok := n.Labels[k]; !ok || cur != v {
			n.Labels[k] = v
			changed = true
		}
	}
	if want.Spec.PodCIDR != "" && n.Spec.PodCIDR == "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = want.Spec.PodCIDR, want.Spec.PodCIDRs
		changed = true
	}
	if !changed {
		return n, nil
	}
	n, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("updating node %s: %w", a.cfg.NodeName, err)
	}
	return n, nil
}

// nodeStatus is the status the agent reports, transition and heartbeat
// times carried over from old where the condition did not change.
func nodeStatus(cfg *Config, h hostFacts, runtimeVersion string, runtimeErr error, networkReady bool, version string, old *corev1.NodeStatus, now time.Time) corev1.NodeStatus {
	capacity := h.capacity(cfg.MaxPods)
	st := corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: allocatable(capacity, cfg.Reserved),
		Phase:       corev1.NodeRunning,
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: cfg.NodeAddress},
			{Type: corev1.NodeHostName, Address: cfg.NodeName},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: cfg.serverPort}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               h.machineID,
			SystemUUID:              h.machineID,
			BootID:                  h.bootID,
			KernelVersion:           h.kernel,
			OSImage:                 h.osImage,
			ContainerRuntimeVersion: "containerd://" + runtimeVersion,
			KubeletVersion:          version,
			OperatingSystem:         goruntime.GOOS,
			Architecture:            goruntime.GOARCH,
		},
	}
	if old != nil {
		st.Images = old.Images
		st.VolumesInUse, st.VolumesAttached = old.VolumesInUse, old.VolumesAttached
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now)}
		if old != nil {
			for _, o := range old.Conditions {
				if o.Type == t && o.Status == s {
					c.LastTransitionTime = o.LastTransitionTime
				}
			}
		}
		return c
	}
	memPressure := h.memTotal > 0 && h.memAvailable < memoryPressureBytes
	diskPressure := h.diskTotal > 0 && float64(h.diskAvailable) < diskPressureRatio*float64(h.diskTotal)
	pidPressure := h.pidMax > 0 && float64(h.pids) > pidPressureRatio*float64(h.pidMax)
	pressure := func(t corev1.NodeConditionType, on bool, yes, yesMsg, no, noMsg string) corev1.NodeCondition {
		if on {
			return cond(t, corev1.ConditionTrue, yes, yesMsg)
		}
		return cond(t, corev1.ConditionFalse, no, noMsg)
	}
	st.Conditions = []corev1.NodeCondition{
		pressure(corev1.NodeMemoryPressure, memPressure,
			"KubeletHasInsufficientMemory", "kubelet has insufficient memory available",
			"KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		pressure(corev1.NodeDiskPressure, diskPressure,
			"KubeletHasDiskPressure", "kubelet has disk pressure",
			"KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		pressure(corev1.NodePIDPressure, pidPressure,
			"KubeletHasInsufficientPID", "kubelet has insufficient PID available",
			"KubeletHasSufficientPID", "kubelet has sufficient PID available"),
	}
	if networkReady {
		st.Conditions = append(st.Conditions, cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "PodCIDRAssigned", "the pod network is configured for the node's pod CIDR"))
	} else {
		st.Conditions = append(st.Conditions, cond(corev1.NodeNetworkUnavailable, corev1.ConditionTrue, "NoPodCIDR", "waiting for the node's pod CIDR"))
	}
	switch {
	case runtimeErr != nil:
		st.Conditions = append(st.Conditions, cond(corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady", "container runtime is down: "+runtimeErr.Error()))
	case !networkReady:
		st.Conditions = append(st.Conditions, cond(corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady", "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:no pod CIDR yet"))
	default:
		st.Conditions = append(st.Conditions, cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"))
	}
	return st
}

// statusWorthWriting reports whether st differs from old in anything but
// heartbeat times, or old's heartbeat is older than every.
func statusWorthWriting(old, st *corev1.NodeStatus, every time.Duration, now time.Time) bool {
	strip := func(s *corev1.NodeStatus) *corev1.NodeStatus {
		c := s.DeepCopy()
		for i := range c.Conditions {
			c.Conditions[i].LastHeartbeatTime = metav1.Time{}
		}
		return c
	}
	if !equality.Semantic.DeepEqual(strip(old), strip(st)) {
		return true
	}
	for _, c := range old.Conditions {
		if c.Type == corev1.NodeReady {
			return now.Sub(c.LastHeartbeatTime.Time) >= every
		}
	}
	return true
}

// updateNodeStatus computes the node's status and writes it when it
// changed or StatusReportInterval has passed. It also hands a new pod
// CIDR to the network.
func (a *Agent) updateNodeStatus(ctx context.Context) error {
	n, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// Deleted under us (kubectl delete node): register again, as the
		// kubelet does on its next status update.
		n, err = a.registerNode(ctx)
	}
	if err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	a.setPodCIDR(n)
	rv, rerr := a.rt.version(ctx)
	if rerr == nil {
		a.runtimeVersion.Store(rv)
	} else if v, ok := a.runtimeVersion.Load().(string); ok {
		rv = v
	}
	now := time.Now()
	st := nodeStatus(a.cfg, readHost(a.cfg.RootDir), rv, rerr, a.net.ready(), a.version, &n.Status, now)
	a.nodeReady.Store(rerr == nil && a.net.ready())
	a.allocatable.Store(st.Allocatable)
	if !statusWorthWriting(&n.Status, &st, a.cfg.StatusReportInterval, now) {
		return nil
	}
	n = n.DeepCopy()
	n.Status = st
	if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

// setPodCIDR configures the pod network once the node has a pod CIDR.
func (a *Agent) setPodCIDR(n *corev1.Node) {
	cidr := n.Spec.PodCIDR
	if a.cfg.PodCIDRSource == PodCIDRStatic {
		cidr = a.cfg.PodCIDR
	}
	if cidr == "" {
		return
	}
	if err := a.net.setPodCIDR(cidr); err != nil {
		a.log.Error("configuring the pod network", "podCIDR", cidr, "err", err)
		return
	}
	if a.podCIDR.Swap(cidr) != cidr {
		a.log.Info("pod network ready", "podCIDR", cidr)
		a.enqueueAll() // pods waiting for the network
	}
}

// renewLease creates or renews the node's Lease in kube-node-lease, owned
// by the Node so it goes when the Node does.
func (a *Agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(a.cfg.LeaseDuration / time.Second)
	l, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("lease: %w", err)
		}
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: corev1.NamespaceNodeLease,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &a.cfg.NodeName, LeaseDurationSeconds: &dur, RenewTime: &now},
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("lease: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	l = l.DeepCopy()
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &a.cfg.NodeName, &dur, &now
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	return nil
}

// defaultNodeName is the host name, lower-cased as node names must be.
func defaultNodeName() string {
	h, _ := os.Hostname()
	b := []byte(h)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

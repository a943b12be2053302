package nodeagent

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Container states as the agent records them.
const (
	stateCreated = "created" // made in containerd, never started
	stateRunning = "running"
	stateExited  = "exited"
)

// containerRecord is one containerd container of a pod: what its labels
// and its task say.
type containerRecord struct {
	ID           string
	PodUID       string
	PodName      string
	PodNamespace string
	Name         string // the spec container's name
	Init         bool
	Attempt      int // 0 for the first run; the pod's restartCount
	Image        string
	ImageID      string
	State        string
	CreatedAt    time.Time
	StartedAt    time.Time
	FinishedAt   time.Time
	ExitCode     int
	Reason       string // set when the agent knows better than the exit code (StartError, OOMKilled)
	Message      string
}

// containerView is what the agent knows of one spec container.
type containerView struct {
	latest   *containerRecord // nil before the first create
	previous *containerRecord // the attempt before latest, for lastState
	// waiting explains why the container is not running: ContainerCreating,
	// CrashLoopBackOff, CreateContainerConfigError, ErrImagePull, ...
	waiting *corev1.ContainerStateWaiting
	ready   bool // the readiness probe passes (true without a probe)
	started bool // the startup probe passed (true without a probe)
}

// podView is the runtime side of one pod.
type podView struct {
	sandboxReady bool
	podIP        string
	init         map[string]containerView
	containers   map[string]containerView
}

// computeStatus is the pod's status from the runtime's view, as the
// kubelet reports it. Transition times carry over from old conditions
// whose status did not change.
func computeStatus(pod *corev1.Pod, v podView, hostIP string, now time.Time) corev1.PodStatus {
	old := pod.Status
	st := corev1.PodStatus{
		HostIP:    hostIP,
		StartTime: old.StartTime,
		QOSClass:  podQOS(pod),
	}
	if hostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	if st.StartTime == nil {
		t := metav1.NewTime(now)
		st.StartTime = &t
	}
	if v.podIP != "" {
		st.PodIP = v.podIP
		st.PodIPs = []corev1.PodIP{{IP: v.podIP}}
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, containerStatus(&c, v.init[c.Name]))
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, containerStatus(&c, v.containers[c.Name]))
	}

	initialized := true
	initFailed := false
	for _, cs := range st.InitContainerStatuses {
		if t := cs.State.Terminated; t == nil || t.ExitCode != 0 {
			initialized = false
			if t != nil && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				initFailed = true
			}
		}
	}
	containersReady := initialized && len(st.ContainerStatuses) > 0
	for _, cs := range st.ContainerStatuses {
		if !cs.Ready {
			containersReady = false
		}
	}
	st.Phase = podPhase(pod, st.ContainerStatuses, initialized)
	if initFailed {
		st.Phase = corev1.PodFailed
	}
	if (st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed) && containersReady {
		containersReady = false
	}

	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: metav1.NewTime(now)}
		for _, o := range old.Conditions {
			if o.Type == t && o.Status == s {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		return c
	}
	notReady := "ContainersNotReady"
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		notReady = "PodCompleted"
	}
	initReason := "ContainersNotInitialized"
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		initReason = "PodCompleted"
	}
	scheduled := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now)}
	for _, o := range old.Conditions {
		if o.Type == corev1.PodScheduled {
			scheduled = o
			scheduled.Status, scheduled.Reason, scheduled.Message = corev1.ConditionTrue, "", ""
		}
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, v.sandboxReady, ""),
		cond(corev1.PodInitialized, initialized || len(pod.Spec.InitContainers) == 0, initReason),
		cond(corev1.ContainersReady, containersReady, notReady),
		cond(corev1.PodReady, containersReady, notReady),
		scheduled,
	}
	if st.Conditions[1].Status == corev1.ConditionTrue {
		st.Conditions[1].Reason = ""
	}
	// Keep any condition another writer owns (readiness gates, DisruptionTarget).
	for _, o := range old.Conditions {
		switch o.Type {
		case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled:
		default:
			st.Conditions = append(st.Conditions, o)
		}
	}
	return st
}

// containerStatus is one container's status from its view.
func containerStatus(c *corev1.Container, v containerView) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	if r := v.latest; r != nil {
		cs.ContainerID = "containerd://" + r.ID
		cs.RestartCount = int32(r.Attempt)
		if r.Image != "" {
			cs.Image = r.Image
		}
		cs.ImageID = r.ImageID
		switch r.State {
		case stateRunning:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(r.StartedAt)}
			cs.Ready = v.ready
		case stateExited:
			cs.State.Terminated = terminated(r)
		}
		if p := v.previous; p != nil && p.State == stateExited {
			cs.LastTerminationState.Terminated = terminated(p)
		}
	}
	if v.waiting != nil && cs.State.Running == nil {
		// A waiting container shows its last run as lastState.
		if cs.State.Terminated != nil {
			cs.LastTerminationState.Terminated = cs.State.Terminated
			cs.State.Terminated = nil
		}
		cs.State.Waiting = v.waiting.DeepCopy()
	}
	if cs.State.Running == nil && cs.State.Terminated == nil && cs.State.Waiting == nil {
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	started := cs.State.Running != nil && v.started
	cs.Started = &started
	return cs
}

func terminated(r *containerRecord) *corev1.ContainerStateTerminated {
	reason := r.Reason
	if reason == "" {
		reason = "Completed"
		if r.ExitCode != 0 {
			reason = "Error"
		}
	}
	return &corev1.ContainerStateTerminated{
		ExitCode:    int32(r.ExitCode),
		Reason:      reason,
		Message:     r.Message,
		StartedAt:   metav1.NewTime(r.StartedAt),
		FinishedAt:  metav1.NewTime(r.FinishedAt),
		ContainerID: "containerd://" + r.ID,
	}
}

// podPhase follows the kubelet's rules: a container still waiting for its
// first run keeps the pod Pending; one waiting to restart counts as
// stopped, and whether stopped containers make the pod Running,
// Succeeded or Failed depends on restartPolicy.
func podPhase(pod *corev1.Pod, statuses []corev1.ContainerStatus, initialized bool) corev1.PodPhase {
	if !initialized {
		return corev1.PodPending
	}
	var running, waiting, stopped, succeeded int
	for _, cs := range statuses {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil:
			if cs.LastTerminationState.Terminated != nil {
				stopped++
			} else {
				waiting++
			}
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		switch pod.Spec.RestartPolicy {
		case corev1.RestartPolicyNever:
			if stopped == succeeded {
				return corev1.PodSucceeded
			}
			return corev1.PodFailed
		case corev1.RestartPolicyOnFailure:
			if stopped == succeeded {
				return corev1.PodSucceeded
			}
			return corev1.PodRunning
		default:
			return corev1.PodRunning
		}
	}
	return corev1.PodPending
}

// podQOS is the pod's quality-of-service class, by upstream's rules:
// Guaranteed when every container limits cpu and memory and requests
// equal limits, BestEffort when nothing is requested or limited,
// Burstable otherwise.
func podQOS(pod *corev1.Pod) corev1.PodQOSClass {
	all := append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
	any, guaranteed := false, true
	for _, c := range all {
		for _, rn := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[rn]
			lim, hasLim := c.Resources.Limits[rn]
			if (hasReq && !req.IsZero()) || (hasLim && !lim.IsZero()) {
				any = true
			}
			if !hasLim || lim.IsZero() {
				guaranteed = false
			} else if hasReq && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// statusChanged reports whether writing st would change what the
// apiserver holds.
func statusChanged(old, st *corev1.PodStatus) bool {
	return !equality.Semantic.DeepEqual(old, st)
}

// Crash-loop backoff: upstream's 10 s doubling to 5 min, forgotten once a
// container has run for 10 minutes.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
)

// restartDelay is how long after it exited the container whose last run
// was attempt r.Attempt (0 for the first) waits before its next start:
// 10 s, 20 s, 40 s, ... up to 5 min. A run that lasted backoffReset or
// more restarts at once.
func restartDelay(r *containerRecord) time.Duration {
	if r.State != stateExited {
		return 0
	}
	if !r.StartedAt.IsZero() && r.FinishedAt.Sub(r.StartedAt) >= backoffReset {
		return 0
	}
	d := backoffInitial
	for i := 0; i < r.Attempt && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// shouldRestart says whether an exited container is started again under
// the pod's restartPolicy.
func shouldRestart(pod *corev1.Pod, r *containerRecord) bool {
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return r.ExitCode != 0
	}
	return true
}

package nodeagent

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func statusPod(policy corev1.RestartPolicy, names ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"}}
	p.Spec.RestartPolicy = policy
	for _, n := range names {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: "img"})
	}
	return p
}

func running(name string, attempt int) *containerRecord {
	return &containerRecord{ID: name + "-id", Name: name, Attempt: attempt, State: stateRunning, StartedAt: t0, Image: "docker.io/library/img:latest", ImageID: "docker.io/library/img:latest@sha256:ab"}
}

func exited(name string, attempt, code int) *containerRecord {
	return &containerRecord{ID: name + "-old", Name: name, Attempt: attempt, State: stateExited, ExitCode: code, StartedAt: t0, FinishedAt: t0.Add(time.Second)}
}

func condition(st corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func TestComputeStatusPhasesAndConditions(t *testing.T) {
	crashLoop := &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
	for _, tc := range []struct {
		name       string
		policy     corev1.RestartPolicy
		views      map[string]containerView
		sandbox    bool
		phase      corev1.PodPhase
		ready      corev1.ConditionStatus
		sandboxCnd corev1.ConditionStatus
	}{
		{"no sandbox yet", corev1.RestartPolicyAlways, map[string]containerView{"a": {}}, false,
			corev1.PodPending, corev1.ConditionFalse, corev1.ConditionFalse},
		{"running and ready", corev1.RestartPolicyAlways, map[string]containerView{"a": {latest: running("a", 0), ready: true, started: true}}, true,
			corev1.PodRunning, corev1.ConditionTrue, corev1.ConditionTrue},
		{"running, probe not passed", corev1.RestartPolicyAlways, map[string]containerView{"a": {latest: running("a", 0), started: true}}, true,
			corev1.PodRunning, corev1.ConditionFalse, corev1.ConditionTrue},
		{"one of two not created", corev1.RestartPolicyAlways, map[string]containerView{"a": {latest: running("a", 0), ready: true}, "b": {}}, true,
			corev1.PodPending, corev1.ConditionFalse, corev1.ConditionTrue},
		{"crash loop keeps Running", corev1.RestartPolicyAlways, map[string]containerView{"a": {latest: exited("a", 2, 1), waiting: crashLoop}}, true,
			corev1.PodRunning, corev1.ConditionFalse, corev1.ConditionTrue},
		{"Never: all succeeded", corev1.RestartPolicyNever, map[string]containerView{"a": {latest: exited("a", 0, 0)}, "b": {latest: exited("b", 0, 0)}}, true,
			corev1.PodSucceeded, corev1.ConditionFalse, corev1.ConditionTrue},
		{"Never: one failed", corev1.RestartPolicyNever, map[string]containerView{"a": {latest: exited("a", 0, 0)}, "b": {latest: exited("b", 0, 2)}}, true,
			corev1.PodFailed, corev1.ConditionFalse, corev1.ConditionTrue},
		{"OnFailure: failed one restarts", corev1.RestartPolicyOnFailure, map[string]containerView{"a": {latest: exited("a", 0, 2)}}, true,
			corev1.PodRunning, corev1.ConditionFalse, corev1.ConditionTrue},
		{"OnFailure: succeeded", corev1.RestartPolicyOnFailure, map[string]containerView{"a": {latest: exited("a", 3, 0)}}, true,
			corev1.PodSucceeded, corev1.ConditionFalse, corev1.ConditionTrue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for n := range tc.views {
				names = append(names, n)
			}
			if len(names) == 2 && names[0] > names[1] {
				names[0], names[1] = names[1], names[0]
			}
			pod := statusPod(tc.policy, names...)
			st := computeStatus(pod, podView{sandboxReady: tc.sandbox, podIP: "198.19.7.5", containers: tc.views}, "198.18.0.21", t0)
			if st.Phase != tc.phase {
				t.Errorf("phase %s, want %s", st.Phase, tc.phase)
			}
			if got := condition(st, corev1.PodReady); got != tc.ready {
				t.Errorf("Ready %s, want %s", got, tc.ready)
			}
			if got := condition(st, corev1.ContainersReady); got != tc.ready {
				t.Errorf("ContainersReady %s, want %s", got, tc.ready)
			}
			if got := condition(st, corev1.PodReadyToStartContainers); got != tc.sandboxCnd {
				t.Errorf("PodReadyToStartContainers %s, want %s", got, tc.sandboxCnd)
			}
			if condition(st, corev1.PodScheduled) != corev1.ConditionTrue || condition(st, corev1.PodInitialized) != corev1.ConditionTrue {
				t.Errorf("conditions %+v", st.Conditions)
			}
			if st.PodIP != "198.19.7.5" || st.HostIP != "198.18.0.21" || st.StartTime == nil || st.QOSClass != corev1.PodQOSBestEffort {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestContainerStatusStates(t *testing.T) {
	c := &corev1.Container{Name: "a", Image: "img"}

	cs := containerStatus(c, containerView{})
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != "ContainerCreating" || *cs.Started || cs.Ready {
		t.Errorf("before the first run: %+v", cs)
	}

	cs = containerStatus(c, containerView{latest: running("a", 2), previous: exited("a", 1, 137), ready: true, started: true})
	if cs.State.Running == nil || !cs.Ready || !*cs.Started || cs.RestartCount != 2 || cs.ContainerID != "containerd://a-id" ||
		cs.Image != "docker.io/library/img:latest" || cs.ImageID == "" {
		t.Errorf("running: %+v", cs)
	}
	if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 137 || lt.Reason != "Error" || lt.ContainerID != "containerd://a-old" {
		t.Errorf("lastState: %+v", cs.LastTerminationState)
	}

	// Backing off: waiting, with the run that just ended as lastState.
	cs = containerStatus(c, containerView{latest: exited("a", 1, 3), previous: exited("a", 0, 3),
		waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 20s"}})
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" || cs.State.Terminated != nil ||
		cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 3 || cs.RestartCount != 1 {
		t.Errorf("crash loop: %+v", cs)
	}

	// A start failure keeps its reason.
	r := exited("a", 0, 128)
	r.Reason, r.Message = "StartError", `exec: "nope": executable file not found in $PATH`
	cs = containerStatus(c, containerView{latest: r})
	if cs.State.Terminated == nil || cs.State.Terminated.Reason != "StartError" || cs.State.Terminated.Message == "" {
		t.Errorf("start error: %+v", cs)
	}
}

func TestComputeStatusKeepsTransitionTimes(t *testing.T) {
	pod := statusPod(corev1.RestartPolicyAlways, "a")
	v := podView{sandboxReady: true, containers: map[string]containerView{"a": {latest: running("a", 0), ready: true, started: true}}}
	first := computeStatus(pod, v, "", t0)
	pod.Status = first
	second := computeStatus(pod, v, "", t0.Add(time.Minute))
	if statusChanged(&first, &second) {
		t.Errorf("an unchanged pod's status changed:\n%+v\n%+v", first, second)
	}
	v.containers["a"] = containerView{latest: running("a", 0), started: true}
	third := computeStatus(pod, v, "", t0.Add(2*time.Minute))
	for _, c := range third.Conditions {
		if c.Type == corev1.PodReady && !c.LastTransitionTime.Time.Equal(t0.Add(2*time.Minute)) {
			t.Errorf("Ready turned False but kept its transition time %v", c.LastTransitionTime)
		}
		if c.Type == corev1.PodReadyToStartContainers && !c.LastTransitionTime.Time.Equal(t0) {
			t.Errorf("an unchanged condition got a new transition time %v", c.LastTransitionTime)
		}
	}
}

func TestComputeStatusInitContainers(t *testing.T) {
	pod := statusPod(corev1.RestartPolicyAlways, "a")
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "img"}}
	rec := exited("init", 0, 0)
	rec.Init = true
	st := computeStatus(pod, podView{sandboxReady: true, init: map[string]containerView{"init": {latest: running("init", 0)}},
		containers: map[string]containerView{"a": {}}}, "", t0)
	if st.Phase != corev1.PodPending || condition(st, corev1.PodInitialized) != corev1.ConditionFalse {
		t.Errorf("init running: phase %s, conditions %+v", st.Phase, st.Conditions)
	}
	st = computeStatus(pod, podView{sandboxReady: true, init: map[string]containerView{"init": {latest: rec}},
		containers: map[string]containerView{"a": {latest: running("a", 0), ready: true, started: true}}}, "", t0)
	if st.Phase != corev1.PodRunning || condition(st, corev1.PodInitialized) != corev1.ConditionTrue || condition(st, corev1.PodReady) != corev1.ConditionTrue {
		t.Errorf("init done: phase %s, conditions %+v", st.Phase, st.Conditions)
	}
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	st = computeStatus(pod, podView{sandboxReady: true, init: map[string]containerView{"init": {latest: exited("init", 0, 1)}},
		containers: map[string]containerView{"a": {}}}, "", t0)
	if st.Phase != corev1.PodFailed {
		t.Errorf("failed init with restartPolicy Never: phase %s", st.Phase)
	}
}

func TestPodQOS(t *testing.T) {
	rl := func(cpu, mem string) corev1.ResourceList {
		l := corev1.ResourceList{}
		if cpu != "" {
			l[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			l[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		return l
	}
	for _, tc := range []struct {
		name     string
		req, lim corev1.ResourceList
		want     corev1.PodQOSClass
	}{
		{"nothing", nil, nil, corev1.PodQOSBestEffort},
		{"limits only (requests default to them)", nil, rl("1", "1Gi"), corev1.PodQOSGuaranteed},
		{"requests equal limits", rl("500m", "1Gi"), rl("500m", "1Gi"), corev1.PodQOSGuaranteed},
		{"requests below limits", rl("100m", "1Gi"), rl("500m", "1Gi"), corev1.PodQOSBurstable},
		{"memory limit only", nil, rl("", "1Gi"), corev1.PodQOSBurstable},
		{"request only", rl("100m", ""), nil, corev1.PodQOSBurstable},
	} {
		pod := statusPod(corev1.RestartPolicyAlways, "a")
		pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: tc.req, Limits: tc.lim}
		if got := podQOS(pod); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestRestartDelay(t *testing.T) {
	for _, tc := range []struct {
		attempt int
		ran     time.Duration
		want    time.Duration
	}{
		{0, time.Second, 10 * time.Second},
		{1, time.Second, 20 * time.Second},
		{2, time.Second, 40 * time.Second},
		{4, time.Second, 160 * time.Second},
		{5, time.Second, 5 * time.Minute},
		{50, time.Second, 5 * time.Minute},
		{7, 10 * time.Minute, 0}, // ran long enough: the backoff is forgotten
	} {
		r := &containerRecord{State: stateExited, Attempt: tc.attempt, StartedAt: t0, FinishedAt: t0.Add(tc.ran)}
		if got := restartDelay(r); got != tc.want {
			t.Errorf("attempt %d after %s: %s, want %s", tc.attempt, tc.ran, got, tc.want)
		}
	}
	if got := restartDelay(running("a", 3)); got != 0 {
		t.Errorf("a running container waits %s", got)
	}
}

func TestShouldRestart(t *testing.T) {
	ok, fail := exited("a", 0, 0), exited("a", 0, 1)
	for _, tc := range []struct {
		policy         corev1.RestartPolicy
		okRun, failRun bool
	}{
		{corev1.RestartPolicyAlways, true, true},
		{corev1.RestartPolicyOnFailure, false, true},
		{corev1.RestartPolicyNever, false, false},
	} {
		pod := statusPod(tc.policy, "a")
		if shouldRestart(pod, ok) != tc.okRun || shouldRestart(pod, fail) != tc.failRun {
			t.Errorf("%s: success→%v failure→%v", tc.policy, shouldRestart(pod, ok), shouldRestart(pod, fail))
		}
	}
}

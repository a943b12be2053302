package nodeagent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"kforge.dev/kforge/internal/atomicfile"
)

var everything = labels.Everything()

// syncPod brings one pod (namespace/name) to its wanted state: running
// its containers, terminating it when it is being deleted, or cleaning up
// after it when it is gone. Level-triggered: it reads the pod from the
// informer and the containers from containerd each time.
func (a *Agent) syncPod(ctx context.Context, key string) (err error) {
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
		}
		a.metrics.syncs.WithLabelValues(result).Inc()
	}()
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && pod.Spec.NodeName != a.cfg.NodeName) {
		return a.killStale(ctx, ns, name, "")
	}
	if err != nil {
		return err
	}
	// A pod recreated under the same name has a new UID: the old one's
	// containers go.
	if err := a.killStale(ctx, ns, name, pod.UID); err != nil {
		return err
	}
	if pod.DeletionTimestamp != nil {
		return a.terminatePod(ctx, pod)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return a.finishPod(ctx, pod)
	}
	if r := a.admitPod(pod); r != nil {
		return a.rejectPod(ctx, pod, r)
	}
	return a.runPod(ctx, key, pod)
}

// runtimePods groups the agent's containers by pod UID.
func (a *Agent) runtimePods(ctx context.Context) (map[types.UID][]*containerRecord, error) {
	recs, err := a.rt.listContainers(ctx, "")
	if err != nil {
		return nil, err
	}
	out := map[types.UID][]*containerRecord{}
	for _, r := range recs {
		out[types.UID(r.PodUID)] = append(out[types.UID(r.PodUID)], r)
	}
	return out, nil
}

// killStale removes the containers and sandboxes of pods called ns/name
// whose UID is not keep. It reads labels only (no task state), as it runs
// on every sync.
func (a *Agent) killStale(ctx context.Context, ns, name string, keep types.UID) error {
	stale, err := a.rt.containersNamed(ctx, ns, name, string(keep))
	if err != nil {
		return err
	}
	var errs []error
	uids := map[types.UID]bool{}
	for id, uid := range stale {
		uids[types.UID(uid)] = true
		a.probes.removeContainer(id)
		if err := a.rt.stop(ctx, id, 0); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, a.rt.remove(ctx, id))
	}
	for _, uid := range a.sandboxUIDs() {
		if uid == keep {
			continue
		}
		if uids[uid] {
			errs = append(errs, a.removePodRuntime(ctx, uid, nil, nil, 0))
		} else if sb, err := a.loadSandbox(uid); err == nil && sb.Namespace == ns && sb.Name == name {
			errs = append(errs, a.removePodRuntime(ctx, uid, nil, nil, 0))
		}
	}
	return errors.Join(errs...)
}

// sandboxUIDs lists the pods that have a folder.
func (a *Agent) sandboxUIDs() []types.UID {
	entries, err := os.ReadDir(filepath.Join(a.cfg.RootDir, "pods"))
	if err != nil {
		return nil
	}
	out := make([]types.UID, 0, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, types.UID(e.Name()))
		}
	}
	return out
}

// removePodRuntime stops a pod's containers (grace each), deletes them,
// and tears its sandbox down.
func (a *Agent) removePodRuntime(ctx context.Context, uid types.UID, pod *corev1.Pod, recs []*containerRecord, grace time.Duration) error {
	a.probes.removePod(uid)
	a.tokens.forgetPod(uid)
	if err := a.stopAll(ctx, recs, grace); err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		errs = append(errs, a.rt.remove(ctx, r.ID))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return a.teardownSandbox(ctx, uid, pod)
}

// stopAll stops the running containers in parallel.
func (a *Agent) stopAll(ctx context.Context, recs []*containerRecord, grace time.Duration) error {
	var wg sync.WaitGroup
	errs := make([]error, len(recs))
	for i, r := range recs {
		if r.State != stateRunning {
			continue
		}
		wg.Go(func() { errs[i] = a.rt.stop(ctx, r.ID, grace) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// cleanupOrphans removes containers and sandboxes of pods the node no
// longer has (deleted while the agent was down, or bound elsewhere).
func (a *Agent) cleanupOrphans(ctx context.Context) error {
	pods, err := a.pods.List(everything)
	if err != nil {
		return err
	}
	known := map[types.UID]bool{}
	for _, p := range pods {
		known[p.UID] = true
	}
	byUID, err := a.runtimePods(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for uid, recs := range byUID {
		if !known[uid] {
			a.log.Info("removing an orphaned pod's containers", "uid", uid, "pod", recs[0].PodNamespace+"/"+recs[0].PodName)
			errs = append(errs, a.removePodRuntime(ctx, uid, nil, recs, 0))
		}
	}
	for _, uid := range a.sandboxUIDs() {
		if !known[uid] && byUID[uid] == nil {
			a.log.Info("removing an orphaned sandbox", "uid", uid)
			errs = append(errs, a.removePodRuntime(ctx, uid, nil, nil, 0))
		}
	}
	return errors.Join(errs...)
}

// terminatePod runs a deleted pod down: SIGTERM, SIGKILL after its grace
// period, the final status, the sandbox torn down, and then the delete
// with grace 0 that lets the apiserver remove the object.
func (a *Agent) terminatePod(ctx context.Context, pod *corev1.Pod) error {
	grace := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if g := pod.DeletionGracePeriodSeconds; g != nil && time.Duration(*g)*time.Second < grace {
		grace = time.Duration(*g) * time.Second
	}
	recs, err := a.rt.listContainers(ctx, string(pod.UID))
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.State == stateRunning {
			a.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Killing", "Kill", "Stopping container %s", r.Name)
		}
	}
	if err := a.stopWithHooks(ctx, pod, recs, grace); err != nil {
		return err
	}
	if recs, err = a.rt.listContainers(ctx, string(pod.UID)); err != nil {
		return err
	}
	sb, _ := a.loadSandbox(pod.UID) // for the address in the last status
	a.writeStatus(ctx, pod, a.viewOf(pod, sb, recs, map[string]*corev1.ContainerStateWaiting{}))
	if err := a.removePodRuntime(ctx, pod.UID, pod, recs, 0); err != nil {
		return err
	}
	zero := int64(0)
	err = a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("finalizing the deletion of %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	a.mu.Lock()
	delete(a.readySeen, string(pod.UID))
	a.mu.Unlock()
	return nil
}

// finishPod handles a pod in a terminal phase: nothing may run, and its
// address goes back to the pool. The containers stay for their status
// until the pod is deleted.
func (a *Agent) finishPod(ctx context.Context, pod *corev1.Pod) error {
	recs, err := a.rt.listContainers(ctx, string(pod.UID))
	if err != nil {
		return err
	}
	a.probes.removePod(pod.UID)
	if err := a.stopAll(ctx, recs, 0); err != nil {
		return err
	}
	if sb, err := a.loadSandbox(pod.UID); err == nil && !sb.HostNetwork && sb.NetNS != "" {
		if err := a.net.del(ctx, pod, string(pod.UID), sb.NetNS); err != nil {
			return err
		}
		if err := removeNetNS(sb.NetNS); err != nil {
			return err
		}
		// Keep the record (and the address for status) without the namespace.
		sb.NetNS = ""
		data, err := json.Marshal(sb)
		if err != nil {
			return err
		}
		return atomicfile.Write(filepath.Join(a.podDir(pod.UID), sandboxFile), data, 0o600)
	}
	return nil
}

// runPod makes the pod's sandbox, volumes and containers, and writes its
// status.
func (a *Agent) runPod(ctx context.Context, key string, pod *corev1.Pod) error {
	recs, err := a.rt.listContainers(ctx, string(pod.UID))
	if err != nil {
		return err
	}
	waiting := map[string]*corev1.ContainerStateWaiting{}
	sb, err := a.ensureSandbox(ctx, pod)
	if err != nil {
		a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "FailedCreatePodSandBox", "CreatePodSandbox", "Failed to create pod sandbox: %v", err)
		a.writeStatus(ctx, pod, a.viewOf(pod, nil, recs, waiting))
		return err
	}
	objects := &apiObjects{ctx: ctx, a: a}
	volStart := time.Now()
	volumes, err := a.setupVolumes(pod, sb, objects)
	if err != nil {
		a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "FailedMount", "MountVolume", "%v", err)
		a.writeStatus(ctx, pod, a.viewOf(pod, sb, recs, waiting))
		return err
	}
	a.metrics.since(opVolumes, volStart)
	var requeue time.Duration
	after := func(d time.Duration) {
		if d > 0 && (requeue == 0 || d < requeue) {
			requeue = d
		}
	}
	var errs []error

	// Init containers run one at a time, each to success, before the rest.
	initialized := true
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		latest, _ := latestTwo(recs, c.Name, true)
		if latest != nil && latest.State == stateExited && latest.ExitCode == 0 {
			continue
		}
		initialized = false
		if latest != nil && latest.State == stateRunning {
			break
		}
		if latest != nil && latest.State != stateRunning {
			if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				break // the pod fails
			}
			if d := time.Until(latest.FinishedAt.Add(restartDelay(latest))); d > 0 {
				waiting[initKey(c.Name)] = backoffWaiting(c.Name, pod, restartDelay(latest))
				after(d)
				break
			}
		}
		if err := a.startContainer(ctx, pod, sb, c, true, latest, volumes, waiting); err != nil {
			errs = append(errs, err)
		}
		break
	}

	if initialized {
		for i := range pod.Spec.Containers {
			c := &pod.Spec.Containers[i]
			latest, _ := latestTwo(recs, c.Name, false)
			switch {
			case latest == nil:
			case latest.State == stateRunning:
				if a.probes.livenessFailed(latest.ID) {
					a.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Killing", "Kill", "Container %s failed liveness probe, will be restarted", c.Name)
					a.probes.removeContainer(latest.ID)
					if err := a.stopContainer(ctx, pod, latest, podGrace(pod)); err != nil {
						errs = append(errs, err)
					}
					a.queue.Add(key)
				} else {
					a.probes.ensure(pod, c, latest.ID, sb)
				}
				continue
			case latest.State == stateCreated:
				// Made but never started (the agent stopped in between):
				// start a fresh one.
			default:
				if !shouldRestart(pod, latest) {
					continue
				}
				if d := time.Until(latest.FinishedAt.Add(restartDelay(latest))); d > 0 {
					waiting[c.Name] = backoffWaiting(c.Name, pod, restartDelay(latest))
					a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "BackOff", "Restart", "Back-off restarting failed container %s in pod %s", c.Name, pod.Name)
					after(d)
					continue
				}
			}
			if err := a.startContainer(ctx, pod, sb, c, false, latest, volumes, waiting); err != nil {
				errs = append(errs, err)
			}
		}
	}

	if recs, err = a.rt.listContainers(ctx, string(pod.UID)); err != nil {
		return err
	}
	a.pruneOld(ctx, recs)
	a.writeStatus(ctx, pod, a.viewOf(pod, sb, recs, waiting))
	if requeue > 0 {
		a.queue.AddAfter(key, requeue)
	}
	for k, w := range waiting {
		if w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff" || w.Reason == "CreateContainerConfigError" {
			_ = k
			a.queue.AddAfter(key, 5*time.Second)
			break
		}
	}
	return errors.Join(errs...)
}

// initKey keys init containers apart from containers of the same name in
// the waiting map.
func initKey(name string) string { return "init:" + name }

func backoffWaiting(name string, pod *corev1.Pod, d time.Duration) *corev1.ContainerStateWaiting {
	return &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", d, name, pod.Name, pod.Namespace, pod.UID)}
}

func podGrace(pod *corev1.Pod) time.Duration {
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
}

// latestTwo picks a spec container's newest record and the one before.
func latestTwo(recs []*containerRecord, name string, init bool) (latest, previous *containerRecord) {
	for _, r := range recs { // sorted by attempt
		if r.Name != name || r.Init != init {
			continue
		}
		previous, latest = latest, r
	}
	return latest, previous
}

// pruneOld removes each container's records older than the two newest:
// the current run and the one lastState reports.
func (a *Agent) pruneOld(ctx context.Context, recs []*containerRecord) {
	count := map[string]int{}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		k := strconv.FormatBool(r.Init) + "/" + r.Name
		count[k]++
		if count[k] > 2 && r.State != stateRunning {
			if err := a.rt.remove(ctx, r.ID); err != nil {
				a.log.Warn("removing an old container", "id", r.ID, "err", err)
			}
		}
	}
}

// viewOf builds the pod's runtime view for status.
func (a *Agent) viewOf(pod *corev1.Pod, sb *sandbox, recs []*containerRecord, waiting map[string]*corev1.ContainerStateWaiting) podView {
	v := podView{init: map[string]containerView{}, containers: map[string]containerView{}}
	if sb != nil {
		v.sandboxReady = sb.HostNetwork || fileExists(sb.NetNS)
		v.podIP = sb.IP
	}
	for _, c := range pod.Spec.InitContainers {
		latest, prev := latestTwo(recs, c.Name, true)
		v.init[c.Name] = containerView{latest: latest, previous: prev, waiting: waiting[initKey(c.Name)], ready: latest != nil && latest.State == stateExited && latest.ExitCode == 0, started: false}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		latest, prev := latestTwo(recs, c.Name, false)
		cv := containerView{latest: latest, previous: prev, waiting: waiting[c.Name]}
		if latest != nil && latest.State == stateRunning {
			cv.ready, cv.started = a.probes.status(latest.ID, c)
		}
		v.containers[c.Name] = cv
	}
	return v
}

// writeStatus writes the pod's status when it changed (best effort: a
// failure is logged and the next sync tries again).
func (a *Agent) writeStatus(ctx context.Context, pod *corev1.Pod, v podView) {
	st := computeStatus(pod, v, a.cfg.NodeAddress, time.Now())
	if !statusChanged(&pod.Status, &st) {
		return
	}
	p := pod.DeepCopy()
	p.Status = st
	start := time.Now()
	_, err := a.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	a.metrics.since(opStatusUpdate, start)
	if err != nil {
		if apierrors.IsConflict(err) {
			// The informer's copy was stale; try again with the fresh one.
			a.queue.AddAfter(pod.Namespace+"/"+pod.Name, 200*time.Millisecond)
			return
		}
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			a.log.Warn("writing pod status", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		}
		return
	}
	if isReady(&st) {
		a.mu.Lock()
		first := !a.readySeen[string(pod.UID)]
		a.readySeen[string(pod.UID)] = true
		a.mu.Unlock()
		if first {
			a.metrics.startLatency.Observe(time.Since(pod.CreationTimestamp.Time).Seconds())
		}
	}
}

func isReady(st *corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// startContainer creates and starts one container, recording why it
// could not in waiting (and in an event).
func (a *Agent) startContainer(ctx context.Context, pod *corev1.Pod, sb *sandbox, c *corev1.Container, init bool, latest *containerRecord, volumes map[string]string, waiting map[string]*corev1.ContainerStateWaiting) error {
	wkey := c.Name
	if init {
		wkey = initKey(c.Name)
	}
	attempt := 0
	if latest != nil {
		attempt = latest.Attempt + 1
	}
	policy := pullPolicy(c)
	pullStart := time.Now()
	img, pulled, err := a.rt.ensureImage(ctx, c.Image, policy, func() credentials {
		return pullSecretCredentials(pod, func(ns, name string) (*corev1.Secret, error) {
			return a.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		})
	}, pullSecretsKey(pod), func() {
		pullStart = time.Now()
		a.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Pulling", "Pull", "Pulling image %q", c.Image)
	})
	if err != nil {
		if policy == corev1.PullNever && errors.Is(err, errImageMissing) {
			msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
			waiting[wkey] = &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: msg}
			a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "ErrImageNeverPull", "Pull", "%s", msg)
			return nil // retried on the pod's requeue, not an agent error
		}
		a.mu.Lock()
		a.pullErrors[c.Image]++
		n := a.pullErrors[c.Image]
		a.mu.Unlock()
		reason := "ErrImagePull"
		if n > 1 {
			reason = "ImagePullBackOff"
		}
		waiting[wkey] = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
		a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "Failed", "Pull", "Failed to pull image %q: %v", c.Image, err)
		return nil // retried on the pod's requeue (5 s), not an agent error
	}
	a.metrics.since(opImage, pullStart)
	a.mu.Lock()
	delete(a.pullErrors, c.Image)
	a.mu.Unlock()
	if pulled {
		a.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Pulled", "Pull", "Successfully pulled image %q in %s", c.Image, time.Since(pullStart).Round(time.Millisecond))
	} else {
		a.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Pulled", "Pull", "Container image %q already present on machine", c.Image)
	}

	specStart := time.Now()
	opts, err := a.containerSpec(ctx, pod, sb, c, img, volumes)
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			waiting[wkey] = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}
			a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "Failed", "CreateContainer", "Error: %v", err)
			return nil
		}
		return err
	}
	a.metrics.since(opSpec, specStart)
	id := newContainerID()
	l := map[string]string{
		labelPodUID: string(pod.UID), labelPodName: pod.Name, labelPodNamespace: pod.Namespace,
		labelContainer: c.Name, labelAttempt: strconv.Itoa(attempt),
		labelImageRef: img.Name(), labelImageID: img.Name() + "@" + img.Target().Digest.String(),
	}
	if init {
		l[labelInit] = "true"
	}
	logPath := logPathFor(a.cfg.PodLogDir, pod.Namespace, pod.Name, string(pod.UID), c.Name, attempt)
	if c.TTY {
		opts = append(opts, oci.WithTTY)
	}
	rec, err := a.rt.createAndStart(ctx, img, containerSpec{id: id, labels: l, specOps: opts, logPath: logPath,
		stdin: c.Stdin, stdinOnce: c.Stdin && c.StdinOnce, tty: c.TTY})
	if err != nil {
		var se *startError
		if errors.As(err, &se) {
			a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "Failed", "StartContainer", "Error: failed to start container %q: %v", c.Name, err)
			return nil
		}
		waiting[wkey] = &corev1.ContainerStateWaiting{Reason: "CreateContainerError", Message: err.Error()}
		a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "Failed", "CreateContainer", "Error: %v", err)
		return err
	}
	a.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Created", "CreateContainer", "Created container %s", c.Name)
	a.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "Started", "StartContainer", "Started container %s", c.Name)
	if !init && rec.State == stateRunning {
		if err := a.postStart(ctx, pod, c, rec.ID, sb); err != nil {
			return nil // the event says why; the restart policy decides what follows
		}
		a.probes.ensure(pod, c, rec.ID, sb)
	}
	return nil
}

func newContainerID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// containerSpec is the OCI spec options for one container: the image's
// config, then the pod's command, environment, mounts, namespaces,
// security context and the resources the host can enforce.
func (a *Agent) containerSpec(ctx context.Context, pod *corev1.Pod, sb *sandbox, c *corev1.Container, img client.Image, volumes map[string]string) ([]oci.SpecOpts, error) {
	ispec, err := img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	allocatable := corev1.ResourceList{}
	env, err := containerEnv(envInput{
		pod: pod, container: c, services: a.serviceList(pod.Namespace), objects: &apiObjects{ctx: ctx, a: a},
		podIP: sb.IP, hostIP: a.cfg.NodeAddress, allocatable: allocatable,
	})
	if err != nil {
		return nil, err
	}
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	args := containerArgs(c, ispec.Config.Entrypoint, ispec.Config.Cmd, vals)
	if len(args) == 0 {
		return nil, &configError{msg: "no command: the pod and the image give none"}
	}
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithProcessArgs(args...),
		oci.WithEnv(env),
		oci.WithHostname(podHostname(pod)),
	}
	if c.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(c.WorkingDir))
	}
	if sb.HostNetwork {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace))
	} else {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: sb.NetNS}))
	}
	dir := a.podDir(pod.UID)
	mounts := []specs.Mount{
		bindMount("/etc/hosts", filepath.Join(dir, "etc-hosts"), false),
		bindMount("/etc/resolv.conf", filepath.Join(dir, "resolv.conf"), false),
		bindMount("/etc/hostname", filepath.Join(dir, "hostname"), false),
	}
	for _, vm := range c.VolumeMounts {
		src, ok := volumes[vm.Name]
		if !ok {
			return nil, &configError{msg: fmt.Sprintf("volumeMount %s: no volume of that name", vm.Name)}
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, expandVars(vm.SubPath, vals))
			if err := os.MkdirAll(src, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return nil, &configError{msg: fmt.Sprintf("volumeMount %s: subPath: %v", vm.Name, err)}
			}
		}
		mounts = append(mounts, bindMount(vm.MountPath, src, vm.ReadOnly))
	}
	opts = append(opts, oci.WithMounts(mounts))
	opts = append(opts, a.securityOpts(c)...)
	opts = append(opts, a.resourceOpts(pod, c)...)
	return opts, nil
}

// containerArgs is the process's argv by upstream's rules: command
// replaces the image's entrypoint (and drops its cmd), args replace its
// cmd; $(VAR) references expand.
func containerArgs(c *corev1.Container, entrypoint, cmd []string, vals map[string]string) []string {
	expand := func(list []string) []string {
		out := make([]string, len(list))
		for i, s := range list {
			out[i] = expandVars(s, vals)
		}
		return out
	}
	command, args := expand(c.Command), expand(c.Args)
	switch {
	case len(command) > 0:
		return append(command, args...)
	case len(args) > 0:
		return append(append([]string(nil), entrypoint...), args...)
	}
	return append(append([]string(nil), entrypoint...), cmd...)
}

func bindMount(dst, src string, ro bool) specs.Mount {
	mode := "rw"
	if ro {
		mode = "ro"
	}
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", mode}}
}

// securityOpts maps the container's securityContext (and the pod's) to
// spec options.
func (a *Agent) securityOpts(c *corev1.Container) []oci.SpecOpts {
	var opts []oci.SpecOpts
	sc := c.SecurityContext
	if sc == nil {
		return nil
	}
	if sc.Privileged != nil && *sc.Privileged {
		opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
	}
	if sc.RunAsUser != nil {
		if sc.RunAsGroup != nil {
			opts = append(opts, oci.WithUIDGID(uint32(*sc.RunAsUser), uint32(*sc.RunAsGroup)))
		} else {
			opts = append(opts, oci.WithUserID(uint32(*sc.RunAsUser)))
		}
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		opts = append(opts, oci.WithNoNewPrivileges)
	}
	if caps := sc.Capabilities; caps != nil {
		conv := func(cs []corev1.Capability) []string {
			out := make([]string, 0, len(cs))
			for _, c := range cs {
				s := strings.ToUpper(string(c))
				if !strings.HasPrefix(s, "CAP_") {
					s = "CAP_" + s
				}
				out = append(out, s)
			}
			return out
		}
		if len(caps.Add) > 0 {
			opts = append(opts, oci.WithAddedCapabilities(conv(caps.Add)))
		}
		if len(caps.Drop) > 0 {
			opts = append(opts, oci.WithDroppedCapabilities(conv(caps.Drop)))
		}
	}
	return opts
}

// resourceOpts sets cgroup limits the host can enforce. A limit whose
// controller is missing (the lab's cgroups have no cpu controller: runc
// fails writing cpu.weight) is left out, with a warning event.
func (a *Agent) resourceOpts(pod *corev1.Pod, c *corev1.Container) []oci.SpecOpts {
	var opts []oci.SpecOpts
	var skipped []string
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && !q.IsZero() {
		if a.cgroups["memory"] {
			opts = append(opts, oci.WithMemoryLimit(uint64(q.Value())))
		} else {
			skipped = append(skipped, "memory limit")
		}
	}
	req, hasReq := c.Resources.Requests[corev1.ResourceCPU]
	lim, hasLim := c.Resources.Limits[corev1.ResourceCPU]
	if hasReq || hasLim {
		if a.cgroups["cpu"] {
			if hasReq {
				opts = append(opts, oci.WithCPUShares(milliCPUToShares(req.MilliValue())))
			}
			if hasLim && !lim.IsZero() {
				const period = 100000
				opts = append(opts, oci.WithCPUCFS(lim.MilliValue()*period/1000, period))
			}
		} else {
			skipped = append(skipped, "cpu request/limit")
		}
	}
	if len(skipped) > 0 {
		a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "ResourcesNotEnforced", "CreateContainer",
			"Container %s: the node's cgroups cannot enforce %s (controller missing); running without", c.Name, strings.Join(skipped, ", "))
	}
	return opts
}

// milliCPUToShares is upstream's conversion (1000m = 1024 shares, at
// least 2).
func milliCPUToShares(m int64) uint64 {
	s := m * 1024 / 1000
	if s < 2 {
		s = 2
	}
	return uint64(s)
}

// serviceList is the Services whose variables a pod in ns gets.
func (a *Agent) serviceList(ns string) []*corev1.Service {
	var out []*corev1.Service
	if s, err := a.services.Services(ns).List(everything); err == nil {
		out = append(out, s...)
	}
	if ns != metav1.NamespaceDefault {
		if k, err := a.services.Services(metav1.NamespaceDefault).Get("kubernetes"); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// apiObjects reads ConfigMaps and Secrets from the apiserver.
type apiObjects struct {
	ctx context.Context
	a   *Agent
}

func (o *apiObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return o.a.client.CoreV1().ConfigMaps(ns).Get(o.ctx, name, metav1.GetOptions{})
}

func (o *apiObjects) Secret(ns, name string) (*corev1.Secret, error) {
	return o.a.client.CoreV1().Secrets(ns).Get(o.ctx, name, metav1.GetOptions{})
}

// serviceAccountToken is a token bound to the pod, from the TokenRequest
// API or, while fresh, from the agent's cache.
func (a *Agent) serviceAccountToken(pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	key := tokenKey{pod: pod.UID, account: sa, audience: p.Audience}
	if p.ExpirationSeconds != nil {
		key.expiration = *p.ExpirationSeconds
	}
	return a.tokens.get(key, func() (string, time.Time, error) { return a.requestToken(pod, sa, p) })
}

// requestToken asks the TokenRequest API for a token of sa bound to the
// pod, and returns it with its expiry.
func (a *Agent) requestToken(pod *corev1.Pod, sa string, p *corev1.ServiceAccountTokenProjection) (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		tr.Spec.Audiences = []string{p.Audience}
	}
	out, err := a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, err
	}
	return out.Status.Token, out.Status.ExpirationTimestamp.Time, nil
}

package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Container lifecycle hooks, as the kubelet runs them: postStart right
// after the container starts (the container counts as started only once
// it returns; when it fails the container is killed and its restart
// policy applies), preStop before a running container is stopped, within
// the pod's grace period (the stop signal then gets what is left of it,
// at least minStopGrace). A handler is a command run in the container, an
// HTTP GET to the pod (any answer counts as success, as upstream), or a
// sleep.

const (
	// postStartTimeout bounds a postStart hook, which the kubelet leaves
	// unbounded, so a hung hook cannot hold a pod worker forever.
	postStartTimeout = 2 * time.Minute
	// minStopGrace is what the stop signal gets after a preStop hook that
	// used up the grace period, as the kubelet's minimum.
	minStopGrace = 2 * time.Second
)

// runHook runs handler h for the running container id of c.
func (a *Agent) runHook(ctx context.Context, h *corev1.LifecycleHandler, id string, c *corev1.Container, sb *sandbox, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case h.Exec != nil:
		code, out, err := a.rt.exec(ctx, id, h.Exec.Command, timeout)
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("command %q exited with %d: %s", strings.Join(h.Exec.Command, " "), code, out)
		}
		return nil
	case h.HTTPGet != nil:
		if sb == nil {
			return errors.New("the pod has no sandbox to send the HTTP hook to")
		}
		_, err := httpGetPod(ctx, h.HTTPGet, timeout, c, sb, "kube-lifecycle/1.37")
		return err
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case h.TCPSocket != nil:
		return errors.New("tcpSocket lifecycle handlers are deprecated and not run")
	}
	return errors.New("the lifecycle handler has no action")
}

// postStart runs c's postStart hook, if any, on its new container id.
// On failure it records FailedPostStartHook, kills the container and
// returns the error.
func (a *Agent) postStart(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, sb *sandbox) error {
	if c.Lifecycle == nil || c.Lifecycle.PostStart == nil {
		return nil
	}
	err := a.runHook(ctx, c.Lifecycle.PostStart, id, c, sb, postStartTimeout)
	if err == nil {
		return nil
	}
	a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "FailedPostStartHook", "PostStartHook",
		"PostStartHook failed for container %s: %v", c.Name, err)
	if serr := a.rt.stop(ctx, id, podGrace(pod)); serr != nil {
		return errors.Join(err, serr)
	}
	return fmt.Errorf("postStart hook of %s: %w", c.Name, err)
}

// stopWithHooks stops the running containers of pod in parallel, each
// after its preStop hook, within grace.
func (a *Agent) stopWithHooks(ctx context.Context, pod *corev1.Pod, recs []*containerRecord, grace time.Duration) error {
	var wg sync.WaitGroup
	errs := make([]error, len(recs))
	for i, r := range recs {
		if r.State != stateRunning {
			continue
		}
		wg.Go(func() { errs[i] = a.stopContainer(ctx, pod, r, grace) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopContainer runs the container's preStop hook (if its spec has one and
// grace allows) and then stops it with what is left of grace.
func (a *Agent) stopContainer(ctx context.Context, pod *corev1.Pod, r *containerRecord, grace time.Duration) error {
	var c *corev1.Container
	if !r.Init {
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == r.Name {
				c = &pod.Spec.Containers[i]
			}
		}
	}
	if c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil && grace > 0 {
		start := time.Now()
		sb, _ := a.loadSandbox(pod.UID)
		if err := a.runHook(ctx, c.Lifecycle.PreStop, r.ID, c, sb, grace); err != nil {
			a.recorder.Eventf(pod, nil, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook",
				"PreStopHook failed for container %s: %v", c.Name, err)
		}
		grace = max(grace-time.Since(start), minStopGrace)
	}
	return a.rt.stop(ctx, r.ID, grace)
}

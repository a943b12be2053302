package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Cordon marks the Node unschedulable; changed is false when it already
// was. A Node that does not exist is apierrors.IsNotFound.
func Cordon(ctx context.Context, client kubernetes.Interface, node string) (changed bool, err error) {
	n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	if n.Spec.Unschedulable {
		return false, nil
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"unschedulable": true}})
	if _, err := client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return false, fmt.Errorf("cordoning node %s: %w", node, err)
	}
	return true, nil
}

// Drainer empties a node the way `kubectl drain --ignore-daemonsets
// --delete-emptydir-data` does: every pod on it is evicted through the
// Eviction API (pods/eviction), so a PodDisruptionBudget can refuse with
// 429 Too Many Requests, which is retried with backoff until Timeout;
// pods of a DaemonSet (their controller would put them back) and mirror
// pods are left alone. Drain returns once every evicted pod is gone.
type Drainer struct {
	Client kubernetes.Interface
	// Timeout bounds the whole drain; DefaultDrainTimeout when 0.
	Timeout time.Duration
	// GracePeriod overrides each pod's termination grace period when
	// not nil.
	GracePeriod *int64
	// Force deletes each evicted pod at once with a zero grace period:
	// for a node whose agent is gone and will never confirm a pod's end.
	Force bool
	// Progress receives one line per event worth telling (a refusal, a
	// retry, a pod gone); nil discards them.
	Progress func(msg string)
	// Backoff is the first wait after a 429, doubled up to MaxBackoff;
	// 1s and 10s when 0.
	Backoff, MaxBackoff time.Duration
	// Poll is how often a pod's deletion is checked; 1s when 0.
	Poll time.Duration
}

// DefaultDrainTimeout bounds a drain when Drainer.Timeout is 0.
const DefaultDrainTimeout = 5 * time.Minute

// DrainResult says what a drain did.
type DrainResult struct {
	// Evicted are the pods evicted and gone, as namespace/name.
	Evicted []string
	// Ignored are the pods left on the node (DaemonSet and mirror pods),
	// with why.
	Ignored map[string]string
	// Refusals counts the 429 answers that were retried.
	Refusals int
}

func (d *Drainer) progress(format string, args ...any) {
	if d.Progress != nil {
		d.Progress(fmt.Sprintf(format, args...))
	}
}

// Drain evicts the pods of node and waits until they are gone. On timeout
// the error names every pod still there and why; the node stays cordoned
// and a second Drain carries on.
func (d *Drainer) Drain(ctx context.Context, node string) (*DrainResult, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultDrainTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	list, err := d.Client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", node, err)
	}
	res := &DrainResult{Ignored: map[string]string{}}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.Spec.NodeName != node { // a server that ignores the selector
			continue
		}
		if why := ignoredPod(&p); why != "" {
			res.Ignored[p.Namespace+"/"+p.Name] = why
			continue
		}
		pods = append(pods, p)
	}
	var mu sync.Mutex
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			refusals, err := d.evictAndWait(ctx, &pods[i])
			mu.Lock()
			defer mu.Unlock()
			res.Refusals += refusals
			if err != nil {
				errs[i] = err
				return
			}
			res.Evicted = append(res.Evicted, pods[i].Namespace+"/"+pods[i].Name)
		}()
	}
	wg.Wait()
	sort.Strings(res.Evicted)
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("draining node %s: not done after %s (the node stays cordoned; run again to carry on): %w", node, timeout, err)
		}
		return res, fmt.Errorf("draining node %s: %w", node, err)
	}
	return res, nil
}

// ignoredPod says why a drain leaves the pod alone, or "".
func ignoredPod(p *corev1.Pod) string {
	if _, ok := p.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return "mirror pod"
	}
	if c := metav1.GetControllerOf(p); c != nil && c.Kind == "DaemonSet" {
		return "DaemonSet " + c.Name
	}
	return ""
}

// evictAndWait evicts one pod, retrying 429s with backoff, and waits until
// it is gone (deleted, or replaced by a pod of another UID).
func (d *Drainer) evictAndWait(ctx context.Context, p *corev1.Pod) (refusals int, err error) {
	id := p.Namespace + "/" + p.Name
	backoff, maxBackoff := d.Backoff, d.MaxBackoff
	if backoff <= 0 {
		backoff = time.Second
	}
	if maxBackoff <= 0 {
		maxBackoff = 10 * time.Second
	}
	grace := d.GracePeriod
	if d.Force {
		zero := int64(0)
		grace = &zero
	}
	ev := &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: grace, Preconditions: &metav1.Preconditions{UID: &p.UID}},
	}
	start := time.Now()
	for {
		err := d.Client.PolicyV1().Evictions(p.Namespace).Evict(ctx, ev)
		switch {
		case err == nil:
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// Gone already, or a new pod of the same name: not ours.
			return refusals, nil
		case apierrors.IsTooManyRequests(err):
			refusals++
			d.progress("%s: eviction refused (%s); retrying in %s (%s so far)", id, oneLine(err.Error()), backoff, time.Since(start).Round(time.Second))
			select {
			case <-ctx.Done():
				return refusals, fmt.Errorf("pod %s: eviction still refused: %s", id, oneLine(err.Error()))
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		default:
			return refusals, fmt.Errorf("evicting pod %s: %w", id, err)
		}
		break
	}
	d.progress("%s: evicted", id)
	if d.Force {
		// Nothing on the node will confirm the end of its containers.
		err := d.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64), Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return refusals, fmt.Errorf("deleting pod %s: %w", id, err)
		}
	}
	poll := d.Poll
	if poll <= 0 {
		poll = time.Second
	}
	for {
		cur, err := d.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) || (err == nil && cur.UID != p.UID):
			d.progress("%s: gone after %s", id, time.Since(start).Round(100*time.Millisecond))
			return refusals, nil
		case err != nil && ctx.Err() == nil:
			// A transient error (an apiserver restarting): ask again.
		}
		select {
		case <-ctx.Done():
			return refusals, fmt.Errorf("pod %s: evicted but still there", id)
		case <-time.After(poll):
		}
	}
}

// podNames lists ids for messages.
func podNames(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

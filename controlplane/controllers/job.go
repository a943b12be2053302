package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	batchinformers "k8s.io/client-go/informers/batch/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
)

var jobKind = schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}

const (
	// JobTrackingFinalizer is on every pod a Job creates until the Job
	// has counted the pod's outcome in its status.
	JobTrackingFinalizer = batchv1.JobTrackingFinalizer
	// jobCompletionIndex is the annotation and label with an Indexed
	// Job pod's index.
	jobCompletionIndex = batchv1.JobCompletionIndexAnnotation
	// Default exponential backoff before a failed Job pod is replaced,
	// as upstream: 10s doubling up to 6 minutes.
	jobBackoffBase = 10 * time.Second
	jobBackoffMax  = 6 * time.Minute
)

// JobController runs each Job's pods to completion: it keeps up to
// spec.parallelism pods running until spec.completions succeeded (or, in
// Indexed mode, every index did), counts failures against backoffLimit,
// enforces activeDeadlineSeconds and suspend, and counts each pod's
// outcome exactly once through the batch.kubernetes.io/job-tracking
// finalizer and status.uncountedTerminatedPods.
type JobController struct {
	*loop
	client   kubernetes.Interface
	jobs     batchlisters.JobLister
	pods     corelisters.PodLister
	exp      *expectations
	now      func() time.Time
	recorder events.EventRecorder
	// backoffBase and backoffMax bound the delay before a failed pod is
	// replaced: backoffBase·2^(failures-1), at most backoffMax.
	backoffBase, backoffMax time.Duration
}

// NewJobController wires the controller to the shared informers.
func NewJobController(client kubernetes.Interface, jobInf batchinformers.JobInformer, podInf coreinformers.PodInformer, log *slog.Logger, m *metrics) (*JobController, error) {
	c := &JobController{client: client, jobs: jobInf.Lister(), pods: podInf.Lister(), exp: newExpectations(),
		now: time.Now, recorder: noEvents, backoffBase: jobBackoffBase, backoffMax: jobBackoffMax}
	c.loop = newLoop(NameJob, log, m, c.sync, jobInf.Informer().HasSynced, podInf.Informer().HasSynced)
	if _, err := jobInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if key, ok := jobKeyOf(obj.(*corev1.Pod)); ok {
				c.exp.creationObserved(key)
				c.queue.Add(key)
			}
		},
		UpdateFunc: func(o, n any) {
			op, np := o.(*corev1.Pod), n.(*corev1.Pod)
			if op.ResourceVersion == np.ResourceVersion {
				return
			}
			if key, ok := jobKeyOf(np); ok {
				if np.DeletionTimestamp != nil && op.DeletionTimestamp == nil {
					c.exp.deletionObserved(key, np.Namespace+"/"+np.Name)
				}
				c.queue.Add(key)
			}
		},
		DeleteFunc: func(obj any) {
			p, ok := obj.(*corev1.Pod)
			if !ok {
				t, ok := obj.(cache.DeletedFinalStateUnknown)
				if !ok {
					return
				}
				if p, ok = t.Obj.(*corev1.Pod); !ok {
					return
				}
			}
			if key, ok := jobKeyOf(p); ok {
				c.exp.deletionObserved(key, p.Namespace+"/"+p.Name)
				c.queue.Add(key)
			}
		},
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// jobKeyOf is the key of the Job that controls p.
func jobKeyOf(p *corev1.Pod) (string, bool) {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != jobKind.Kind || ref.APIVersion != jobKind.GroupVersion().String() {
		return "", false
	}
	return p.Namespace + "/" + ref.Name, true
}

func hasFinalizer(p *corev1.Pod, f string) bool {
	for _, x := range p.Finalizers {
		if x == f {
			return true
		}
	}
	return false
}

// jobCondition returns the Job's condition of type t that is True, or nil.
func jobCondition(j *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range j.Status.Conditions {
		if j.Status.Conditions[i].Type == t && j.Status.Conditions[i].Status == corev1.ConditionTrue {
			return &j.Status.Conditions[i]
		}
	}
	return nil
}

// JobFinished reports whether j has a True Complete or Failed condition,
// and when it got it.
func JobFinished(j *batchv1.Job) (bool, time.Time) {
	for _, t := range []batchv1.JobConditionType{batchv1.JobComplete, batchv1.JobFailed} {
		if c := jobCondition(j, t); c != nil {
			return true, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}

// setJobCondition sets condition t to status, keeping the transition time
// when the status does not change; it reports whether anything changed.
func setJobCondition(st *batchv1.JobStatus, t batchv1.JobConditionType, status corev1.ConditionStatus, reason, msg string, now time.Time) bool {
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status == status && c.Reason == reason && c.Message == msg {
			return false
		}
		if c.Status != status {
			c.LastTransitionTime = metav1.NewTime(now)
		}
		c.Status, c.Reason, c.Message, c.LastProbeTime = status, reason, msg, metav1.NewTime(now)
		return true
	}
	st.Conditions = append(st.Conditions, batchv1.JobCondition{Type: t, Status: status, Reason: reason, Message: msg,
		LastProbeTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now)})
	return true
}

func (c *JobController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	shared, err := c.jobs.Jobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.forget(key)
		return c.releaseOrphans(ctx, ns, name, "")
	}
	if err != nil {
		return err
	}
	job := shared.DeepCopy()
	pods, err := c.ownedPods(job)
	if err != nil {
		return err
	}
	if job.DeletionTimestamp != nil {
		// Deletion goes on without the Job's counting: let the pods go.
		return c.releaseOrphans(ctx, ns, name, job.UID)
	}
	if done, _ := JobFinished(job); done {
		return c.removeFinalizers(ctx, withFinalizer(pods))
	}
	return c.syncJob(ctx, key, job, pods)
}

// ownedPods are the pods job controls.
func (c *JobController) ownedPods(job *batchv1.Job) ([]*corev1.Pod, error) {
	all, err := c.pods.Pods(job.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for _, p := range all {
		if ref := metav1.GetControllerOf(p); ref != nil && ref.UID == job.UID {
			out = append(out, p)
		}
	}
	return out, nil
}

func withFinalizer(pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if hasFinalizer(p, JobTrackingFinalizer) {
			out = append(out, p)
		}
	}
	return out
}

// releaseOrphans removes the tracking finalizer from the pods of a Job
// that is gone or being deleted (all pods controlled by a Job of that
// name but another uid than keep).
func (c *JobController) releaseOrphans(ctx context.Context, ns, name string, keep types.UID) error {
	all, err := c.pods.Pods(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var todo []*corev1.Pod
	for _, p := range all {
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.Kind != jobKind.Kind || ref.Name != name || !hasFinalizer(p, JobTrackingFinalizer) {
			continue
		}
		if keep == "" || ref.UID == keep {
			todo = append(todo, p)
		}
	}
	return c.removeFinalizers(ctx, todo)
}

// removeFinalizerPatch drops the tracking finalizer, as upstream's patch.
var removeFinalizerPatch = []byte(`{"metadata":{"$deleteFromPrimitiveList/finalizers":["` + JobTrackingFinalizer + `"]}}`)

func (c *JobController) removeFinalizers(ctx context.Context, pods []*corev1.Pod) error {
	var errs []error
	for _, p := range pods {
		_, err := c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, removeFinalizerPatch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("removing the finalizer of pod %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// podIndex is an Indexed Job pod's completion index, or -1.
func podIndex(p *corev1.Pod, completions int32) int {
	v, ok := p.Annotations[jobCompletionIndex]
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 || i >= int(completions) {
		return -1
	}
	return i
}

func indexed(job *batchv1.Job) bool {
	return job.Spec.CompletionMode != nil && *job.Spec.CompletionMode == batchv1.IndexedCompletion
}

// podFailed: Failed, or (unless the Job replaces only Failed pods) being
// deleted before it succeeded, which counts as a failure as upstream.
func podFailed(p *corev1.Pod, job *batchv1.Job) bool {
	if p.Status.Phase == corev1.PodFailed {
		return true
	}
	if job.Spec.PodReplacementPolicy != nil && *job.Spec.PodReplacementPolicy == batchv1.Failed {
		return false
	}
	return p.DeletionTimestamp != nil && p.Status.Phase != corev1.PodSucceeded
}

// syncJob is one pass over a Job that has not finished.
func (c *JobController) syncJob(ctx context.Context, key string, job *batchv1.Job, pods []*corev1.Pod) error {
	now := c.now()
	st := job.Status.DeepCopy()
	if st.UncountedTerminatedPods == nil {
		st.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	}
	completions := int32(0)
	if job.Spec.Completions != nil {
		completions = *job.Spec.Completions
	}
	uncounted := map[types.UID]bool{}
	for _, u := range st.UncountedTerminatedPods.Succeeded {
		uncounted[u] = true
	}
	for _, u := range st.UncountedTerminatedPods.Failed {
		uncounted[u] = true
	}

	// 1. Record the outcome of finished pods that still carry the
	// finalizer in uncountedTerminatedPods, so it survives a crash
	// between removing the finalizer and counting.
	var finished []*corev1.Pod // finished, with the finalizer
	newUncounted := false
	for _, p := range pods {
		if !hasFinalizer(p, JobTrackingFinalizer) {
			continue
		}
		switch {
		case p.Status.Phase == corev1.PodSucceeded:
			finished = append(finished, p)
			if !uncounted[p.UID] {
				st.UncountedTerminatedPods.Succeeded = append(st.UncountedTerminatedPods.Succeeded, p.UID)
				uncounted[p.UID], newUncounted = true, true
			}
		case podFailed(p, job):
			finished = append(finished, p)
			if !uncounted[p.UID] {
				st.UncountedTerminatedPods.Failed = append(st.UncountedTerminatedPods.Failed, p.UID)
				uncounted[p.UID], newUncounted = true, true
			}
		}
	}
	if newUncounted {
		job.Status = *st
		got, err := c.client.BatchV1().Jobs(job.Namespace).UpdateStatus(ctx, job, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		job = got
		st = job.Status.DeepCopy()
	}
	// 2. Release them.
	if err := c.removeFinalizers(ctx, finished); err != nil {
		return err
	}
	// 3. Count them: every uncounted pod has no finalizer now.
	byUID := map[types.UID]*corev1.Pod{}
	for _, p := range pods {
		byUID[p.UID] = p
	}
	completed := parseIndexes(st.CompletedIndexes, completions)
	for _, u := range st.UncountedTerminatedPods.Succeeded {
		st.Succeeded++
		if p := byUID[u]; p != nil && indexed(job) {
			if i := podIndex(p, completions); i >= 0 {
				completed[i] = true
			}
		}
	}
	st.Failed += int32(len(st.UncountedTerminatedPods.Failed))
	st.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	if indexed(job) {
		st.CompletedIndexes = formatIndexes(completed)
	}

	var active, terminating []*corev1.Pod
	var lastFailure time.Time

	var ready int32
	for _, p := range pods {
		switch {
		case p.DeletionTimestamp != nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed:
			terminating = append(terminating, p)
		case p.Status.Phase == corev1.PodSucceeded:
		case p.Status.Phase == corev1.PodFailed:
			if t := podFinishTime(p); t.After(lastFailure) {
				lastFailure = t
			}
		default:
			active = append(active, p)
			if podReady(p) {
				ready++
			}
		}
	}

	st.Active = int32(len(active))
	suspended := job.Spec.Suspend != nil && *job.Spec.Suspend
	finishing := jobCondition(job, batchv1.JobFailureTarget) != nil || jobCondition(job, batchv1.JobSuccessCriteriaMet) != nil
	var manageErr error
	if !finishing {
		backoff := int32(6)
		if job.Spec.BackoffLimit != nil {
			backoff = *job.Spec.BackoffLimit
		}
		deadlineExceeded := false
		if ads := job.Spec.ActiveDeadlineSeconds; ads != nil && st.StartTime != nil && !suspended {
			end := st.StartTime.Add(time.Duration(*ads) * time.Second)
			if !now.Before(end) {
				deadlineExceeded = true
			} else {
				c.queue.AddAfter(key, end.Sub(now))
			}
		}
		switch {
		case st.Failed > backoff:
			setJobCondition(st, batchv1.JobFailureTarget, corev1.ConditionTrue, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit", now)
			finishing = true
		case deadlineExceeded:
			setJobCondition(st, batchv1.JobFailureTarget, corev1.ConditionTrue, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline", now)
			finishing = true
		case jobSucceeded(job, st, completed, completions, len(active)):
			setJobCondition(st, batchv1.JobSuccessCriteriaMet, corev1.ConditionTrue, batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods", now)
			finishing = true
		}
	}
	switch {
	case finishing:
		// Stop what still runs; the final condition waits until no pod
		// is left running or terminating, as upstream since 1.31.
		if len(active) > 0 {
			manageErr = c.deletePods(ctx, key, job, active)
			terminating = append(terminating, active...)
			active, st.Active = nil, 0
		}
		if len(terminating) == 0 {
			if ft := findCondition(st, batchv1.JobFailureTarget); ft != nil {
				setJobCondition(st, batchv1.JobFailed, corev1.ConditionTrue, ft.Reason, ft.Message, now)
				c.recorder.Eventf(job, nil, corev1.EventTypeWarning, ft.Reason, "Finish", ft.Message)
			} else {
				reason, msg := batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods"
				if sc := findCondition(st, batchv1.JobSuccessCriteriaMet); sc != nil {
					reason, msg = sc.Reason, sc.Message
				}
				setJobCondition(st, batchv1.JobComplete, corev1.ConditionTrue, reason, msg, now)
				st.CompletionTime = &metav1.Time{Time: now}
				c.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Completed", "Finish", "Job completed")
			}
		}
	case suspended:
		if len(active) > 0 {
			manageErr = c.deletePods(ctx, key, job, active)
			terminating = append(terminating, active...)
			active, st.Active = nil, 0
		}
		if setJobCondition(st, batchv1.JobSuspended, corev1.ConditionTrue, "JobSuspended", "Job suspended", now) {
			c.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Suspended", "Suspend", "Job suspended")
		}
	default:
		if findCondition(st, batchv1.JobSuspended) != nil && findCondition(st, batchv1.JobSuspended).Status == corev1.ConditionTrue {
			setJobCondition(st, batchv1.JobSuspended, corev1.ConditionFalse, "JobResumed", "Job resumed", now)
			// The deadline counts from the resume, as upstream.
			st.StartTime = &metav1.Time{Time: now}
			c.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Resumed", "Resume", "Job resumed")
		}
		if st.StartTime == nil {
			st.StartTime = &metav1.Time{Time: now}
			if ads := job.Spec.ActiveDeadlineSeconds; ads != nil {
				c.queue.AddAfter(key, time.Duration(*ads)*time.Second)
			}
		}
		if c.exp.satisfied(key) {
			var wait time.Duration
			if st.Failed > 0 && !lastFailure.IsZero() {
				if d := c.backoff(st.Failed); lastFailure.Add(d).After(now) {
					wait = lastFailure.Add(d).Sub(now)
				}
			}
			var created int
			created, manageErr = c.manage(ctx, key, job, active, completed, completions, st.Succeeded, wait)
			st.Active += int32(created)
		}
	}
	st.Ready = &ready
	n := int32(len(terminating))
	st.Terminating = &n
	if !jobStatusEqual(&job.Status, st) {
		job.Status = *st
		if _, err := c.client.BatchV1().Jobs(job.Namespace).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return errors.Join(manageErr, err)
		}
	}
	return manageErr
}

func findCondition(st *batchv1.JobStatus, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

func jobStatusEqual(a, b *batchv1.JobStatus) bool {
	return fmt.Sprintf("%+v", *a) == fmt.Sprintf("%+v", *b)
}

// jobSucceeded: completions reached (NonIndexed), every index done
// (Indexed), or, without completions, one pod succeeded and none runs.
func jobSucceeded(job *batchv1.Job, st *batchv1.JobStatus, completed map[int]bool, completions int32, active int) bool {
	if indexed(job) {
		return int32(len(completed)) >= completions
	}
	if job.Spec.Completions == nil {
		return st.Succeeded > 0 && active == 0
	}
	return st.Succeeded >= completions
}

func (c *JobController) backoff(failures int32) time.Duration {
	d := c.backoffBase
	for i := int32(1); i < failures && d < c.backoffMax; i++ {
		d *= 2
	}
	return min(d, c.backoffMax)
}

// podFinishTime is when a finished pod's last container ended, else its
// last condition change, else its creation.
func podFinishTime(p *corev1.Pod) time.Time {
	var t time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Terminated != nil && cs.State.Terminated.FinishedAt.After(t) {
			t = cs.State.Terminated.FinishedAt.Time
		}
	}
	if !t.IsZero() {
		return t
	}
	for _, c := range p.Status.Conditions {
		if c.LastTransitionTime.After(t) {
			t = c.LastTransitionTime.Time
		}
	}
	if t.IsZero() {
		t = p.CreationTimestamp.Time
	}
	return t
}

// manage creates or deletes pods so that the wanted number runs; it
// returns how many it created. wait, when not zero, is the backoff left
// before replacements may be created.
func (c *JobController) manage(ctx context.Context, key string, job *batchv1.Job, active []*corev1.Pod, completed map[int]bool, completions, succeeded int32, wait time.Duration) (int, error) {
	parallelism := int32(1)
	if job.Spec.Parallelism != nil {
		parallelism = *job.Spec.Parallelism
	}
	var want int32
	switch {
	case indexed(job):
		want = min(parallelism, completions-int32(len(completed)))
	case job.Spec.Completions == nil:
		want = parallelism
		if succeeded > 0 {
			want = int32(len(active)) // let the others finish; start none
		}
	default:
		want = min(parallelism, completions-succeeded)
	}
	want = max(want, 0)
	var excess []*corev1.Pod
	var toCreate []int // indexes (-1 for NonIndexed)
	if indexed(job) {
		held := map[int]bool{}
		for _, p := range active {
			i := podIndex(p, completions)
			if i < 0 || held[i] || completed[i] {
				excess = append(excess, p)
				continue
			}
			held[i] = true
		}
		n := int32(len(active) - len(excess))
		for i := 0; i < int(completions) && n < want; i++ {
			if !held[i] && !completed[i] {
				toCreate = append(toCreate, i)
				n++
			}
		}
		if n > want {
			keep := active[:0:0]
			for _, p := range active {
				if !contains(excess, p) {
					keep = append(keep, p)
				}
			}
			sort.Slice(keep, func(a, b int) bool { return podIndex(keep[a], completions) > podIndex(keep[b], completions) })
			excess = append(excess, keep[:n-want]...)
		}
	} else {
		diff := int(want) - len(active)
		if diff > 0 {
			for range diff {
				toCreate = append(toCreate, -1)
			}
		} else if diff < 0 {
			excess = podsToDelete(active, -diff)
		}
	}
	var errs []error
	if len(excess) > 0 {
		errs = append(errs, c.deletePods(ctx, key, job, excess))
	}
	if len(toCreate) == 0 {
		return 0, errors.Join(errs...)
	}
	if wait > 0 {
		c.queue.AddAfter(key, wait)
		return 0, errors.Join(errs...)
	}
	toCreate = toCreate[:min(len(toCreate), burstReplicas)]
	c.exp.expectCreations(key, len(toCreate))
	created := 0
	for _, i := range toCreate {
		p, err := c.createPod(ctx, job, i)
		if err != nil {
			c.exp.creationObserved(key)
			c.recorder.Eventf(job, nil, corev1.EventTypeWarning, "FailedCreate", "Create", "Error creating: %v", err)
			errs = append(errs, err)
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				break
			}
			continue
		}
		created++
		c.recorder.Eventf(job, nil, corev1.EventTypeNormal, "SuccessfulCreate", "Create", "Created pod: %s", p.Name)
	}
	return created, errors.Join(errs...)
}

func contains(ps []*corev1.Pod, p *corev1.Pod) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// deletePods deletes pods the Job no longer wants. Their finalizer goes
// first: a pod the controller removes is not an outcome to count.
func (c *JobController) deletePods(ctx context.Context, key string, job *batchv1.Job, pods []*corev1.Pod) error {
	keys := make([]string, len(pods))
	for i, p := range pods {
		keys[i] = p.Namespace + "/" + p.Name
	}
	c.exp.expectDeletions(key, keys)
	var errs []error
	for i, p := range pods {
		err := c.removeFinalizers(ctx, []*corev1.Pod{p})
		if err == nil {
			err = c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
		}
		if err != nil {
			c.exp.deletionObserved(key, keys[i])
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		c.recorder.Eventf(job, nil, corev1.EventTypeNormal, "SuccessfulDelete", "Delete", "Deleted pod: %s", p.Name)
	}
	return errors.Join(errs...)
}

// createPod makes one pod from the template: the tracking finalizer, the
// controller reference and, for an Indexed Job, the index (annotation,
// label, JOB_COMPLETION_INDEX and the hostname JOB-INDEX).
func (c *JobController) createPod(ctx context.Context, job *batchv1.Job, index int) (*corev1.Pod, error) {
	t := job.Spec.Template.DeepCopy()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    job.Name + "-",
			Namespace:       job.Namespace,
			Labels:          t.Labels,
			Annotations:     t.Annotations,
			Finalizers:      append(t.Finalizers, JobTrackingFinalizer),
			OwnerReferences: []metav1.OwnerReference{ownerRef(job, jobKind)},
		},
		Spec: t.Spec,
	}
	if index >= 0 {
		idx := strconv.Itoa(index)
		p.GenerateName = job.Name + "-" + idx + "-"
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Annotations[jobCompletionIndex], p.Labels[jobCompletionIndex] = idx, idx
		if p.Spec.Hostname == "" {
			p.Spec.Hostname = job.Name + "-" + idx
		}
		env := corev1.EnvVar{Name: "JOB_COMPLETION_INDEX", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + jobCompletionIndex + "']"}}}
		for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for i := range cs {
				cs[i].Env = append(cs[i].Env, env)
			}
		}
	}
	return c.client.CoreV1().Pods(job.Namespace).Create(ctx, p, metav1.CreateOptions{})
}

// parseIndexes reads an interval list such as "1,3-5" below n.
func parseIndexes(s string, n int32) map[int]bool {
	out := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for i := a; i <= b && i < int(n); i++ {
			out[i] = true
		}
	}
	return out
}

// formatIndexes writes indexes as upstream's completedIndexes: sorted,
// each run of consecutive indexes as "a-b".
func formatIndexes(set map[int]bool) string {
	idx := make([]int, 0, len(set))
	for i := range set {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var parts []string
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, strconv.Itoa(idx[i]))
		default:
			parts = append(parts, strconv.Itoa(idx[i])+"-"+strconv.Itoa(idx[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

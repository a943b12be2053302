package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	batchinformers "k8s.io/client-go/informers/batch/v1"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
)

var cronJobKind = schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "CronJob"}

// cronJobScheduledAnnotation records on each Job the time it was
// scheduled for, as upstream.
const cronJobScheduledAnnotation = batchv1.CronJobScheduledTimestampAnnotation

// CronJobController creates a Job for each time a CronJob's schedule
// fires (in spec.timeZone, else UTC), honouring suspend,
// startingDeadlineSeconds and concurrencyPolicy, keeps status.active,
// lastScheduleTime and lastSuccessfulTime, and deletes finished Jobs
// beyond the history limits.
type CronJobController struct {
	*loop
	client   kubernetes.Interface
	cronJobs batchlisters.CronJobLister
	jobs     batchlisters.JobLister
	now      func() time.Time
	recorder events.EventRecorder
}

// NewCronJobController wires the controller to the shared informers.
func NewCronJobController(client kubernetes.Interface, cjInf batchinformers.CronJobInformer, jobInf batchinformers.JobInformer, log *slog.Logger, m *metrics) (*CronJobController, error) {
	c := &CronJobController{client: client, cronJobs: cjInf.Lister(), jobs: jobInf.Lister(), now: time.Now, recorder: noEvents}
	c.loop = newLoop(NameCronJob, log, m, c.sync, cjInf.Informer().HasSynced, jobInf.Informer().HasSynced)
	if _, err := cjInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	onJob := func(obj any) {
		j, ok := obj.(*batchv1.Job)
		if !ok {
			t, ok := obj.(cache.DeletedFinalStateUnknown)
			if !ok {
				return
			}
			if j, ok = t.Obj.(*batchv1.Job); !ok {
				return
			}
		}
		if ref := metav1.GetControllerOf(j); ref != nil && ref.Kind == cronJobKind.Kind && ref.APIVersion == cronJobKind.GroupVersion().String() {
			c.queue.Add(j.Namespace + "/" + ref.Name)
		}
	}
	if _, err := jobInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onJob, UpdateFunc: func(_, n any) { onJob(n) }, DeleteFunc: onJob,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// CronJobSchedule parses a CronJob's schedule and time zone.
func CronJobSchedule(cj *batchv1.CronJob) (cron.Schedule, *time.Location, error) {
	loc := time.UTC
	if cj.Spec.TimeZone != nil {
		l, err := time.LoadLocation(*cj.Spec.TimeZone)
		if err != nil {
			return nil, nil, fmt.Errorf("time zone %q: %w", *cj.Spec.TimeZone, err)
		}
		loc = l
	}
	s, err := cron.ParseStandard(cj.Spec.Schedule)
	if err != nil {
		return nil, nil, fmt.Errorf("schedule %q: %w", cj.Spec.Schedule, err)
	}
	return s, loc, nil
}

// lastSchedule is the latest time sched fires after earliest and not after
// now, or the zero time. It looks back in growing windows, so a schedule
// that fired every minute for a year costs a few hundred steps, not
// half a million.
func lastSchedule(sched cron.Schedule, earliest, now time.Time) time.Time {
	for _, w := range []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 366 * 24 * time.Hour, 5 * 366 * 24 * time.Hour} {
		start := now.Add(-w)
		if start.Before(earliest) {
			start = earliest
		}
		t := sched.Next(start)
		if t.After(now) {
			if !start.After(earliest) {
				return time.Time{}
			}
			continue
		}
		var last time.Time
		for !t.After(now) && !t.IsZero() {
			last, t = t, sched.Next(t)
		}
		return last
	}
	return time.Time{}
}

// cronJobJobName is the Job for the schedule time t: the minutes since
// the epoch after the CronJob's name, as upstream.
func cronJobJobName(cj *batchv1.CronJob, t time.Time) string {
	return fmt.Sprintf("%s-%d", cj.Name, t.Unix()/60)
}

func jobRef(j *batchv1.Job) corev1.ObjectReference {
	return corev1.ObjectReference{Kind: "Job", APIVersion: "batch/v1", Namespace: j.Namespace, Name: j.Name,
		UID: j.UID, ResourceVersion: j.ResourceVersion}
}

func (c *CronJobController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	shared, err := c.cronJobs.CronJobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	cj := shared.DeepCopy()
	all, err := c.jobs.Jobs(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var owned []*batchv1.Job
	for _, j := range all {
		if ref := metav1.GetControllerOf(j); ref != nil && ref.UID == cj.UID {
			owned = append(owned, j)
		}
	}
	st := cj.Status.DeepCopy()
	st.Active = nil
	var succeeded, failed []*batchv1.Job
	for _, j := range owned {
		switch {
		case jobCondition(j, batchv1.JobComplete) != nil:
			succeeded = append(succeeded, j)
			if ct := j.Status.CompletionTime; ct != nil && (st.LastSuccessfulTime == nil || st.LastSuccessfulTime.Before(ct)) {
				st.LastSuccessfulTime = ct.DeepCopy()
			}
		case jobCondition(j, batchv1.JobFailed) != nil:
			failed = append(failed, j)
		default:
			if j.DeletionTimestamp == nil {
				st.Active = append(st.Active, jobRef(j))
			}
		}
	}
	var errs []error
	if cj.DeletionTimestamp == nil {
		errs = append(errs, c.pruneHistory(ctx, succeeded, cj.Spec.SuccessfulJobsHistoryLimit, 3))
		errs = append(errs, c.pruneHistory(ctx, failed, cj.Spec.FailedJobsHistoryLimit, 1))
		if cj.Spec.Suspend == nil || !*cj.Spec.Suspend {
			errs = append(errs, c.schedule(ctx, key, cj, st))
		}
	}
	sort.Slice(st.Active, func(a, b int) bool { return st.Active[a].Name < st.Active[b].Name })
	if !equalCronJobStatus(&cj.Status, st) {
		cj.Status = *st
		if _, err := c.client.BatchV1().CronJobs(ns).UpdateStatus(ctx, cj, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func equalCronJobStatus(a, b *batchv1.CronJobStatus) bool {
	if len(a.Active) != len(b.Active) || !a.LastScheduleTime.Equal(b.LastScheduleTime) || !a.LastSuccessfulTime.Equal(b.LastSuccessfulTime) {
		return false
	}
	for i := range a.Active {
		if a.Active[i].UID != b.Active[i].UID {
			return false
		}
	}
	return true
}

// schedule starts the Job of the latest missed schedule time, if any and
// if the policies allow, and queues the CronJob for its next time.
func (c *CronJobController) schedule(ctx context.Context, key string, cj *batchv1.CronJob, st *batchv1.CronJobStatus) error {
	sched, loc, err := CronJobSchedule(cj)
	if err != nil {
		c.recorder.Eventf(cj, nil, corev1.EventTypeWarning, "UnparseableSchedule", "Schedule", "unparseable schedule: %v", err)
		return nil // the user must fix it; retrying will not help
	}
	now := c.now().In(loc)
	if next := sched.Next(now); !next.IsZero() {
		// A little after the time, so the next pass finds it due.
		c.queue.AddAfter(key, next.Sub(now)+100*time.Millisecond)
	}
	earliest := cj.CreationTimestamp.Time
	if st.LastScheduleTime != nil {
		earliest = st.LastScheduleTime.Time
	}
	if d := cj.Spec.StartingDeadlineSeconds; d != nil {
		if w := now.Add(-time.Duration(*d) * time.Second); w.After(earliest) {
			earliest = w
		}
	}
	due := lastSchedule(sched, earliest.In(loc), now)
	if due.IsZero() {
		return nil
	}
	if d := cj.Spec.StartingDeadlineSeconds; d != nil && due.Add(time.Duration(*d)*time.Second).Before(now) {
		c.recorder.Eventf(cj, nil, corev1.EventTypeWarning, "MissSchedule", "Schedule", "Missed scheduled time to start a job: %s", due.UTC().Format(time.RFC1123Z))
		return nil
	}
	name := cronJobJobName(cj, due)
	for _, a := range st.Active {
		if a.Name == name {
			return nil
		}
	}
	switch cj.Spec.ConcurrencyPolicy {
	case batchv1.ForbidConcurrent:
		if len(st.Active) > 0 {
			c.recorder.Eventf(cj, nil, corev1.EventTypeNormal, "JobAlreadyActive", "Schedule", "Not starting job because prior execution is running and concurrency policy is Forbid")
			return nil
		}
	case batchv1.ReplaceConcurrent:
		bg := metav1.DeletePropagationBackground
		for _, a := range st.Active {
			err := c.client.BatchV1().Jobs(a.Namespace).Delete(ctx, a.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("replacing job %s: %w", a.Name, err)
			}
			c.recorder.Eventf(cj, nil, corev1.EventTypeNormal, "SuccessfulDelete", "Delete", "Deleted job %v", a.Name)
		}
		st.Active = nil
	}
	t := cj.Spec.JobTemplate.DeepCopy()
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: cj.Namespace, Labels: t.Labels, Annotations: t.Annotations,
			OwnerReferences: []metav1.OwnerReference{ownerRef(cj, cronJobKind)}},
		Spec: t.Spec,
	}
	if j.Annotations == nil {
		j.Annotations = map[string]string{}
	}
	j.Annotations[cronJobScheduledAnnotation] = due.Format(time.RFC3339)
	got, err := c.client.BatchV1().Jobs(cj.Namespace).Create(ctx, j, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		// Made by an earlier pass whose status write was lost.
		got, err = c.client.BatchV1().Jobs(cj.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ref := metav1.GetControllerOf(got); ref == nil || ref.UID != cj.UID {
			return nil
		}
	case err != nil:
		c.recorder.Eventf(cj, nil, corev1.EventTypeWarning, "FailedCreate", "Create", "Error creating job: %v", err)
		return err
	default:
		c.recorder.Eventf(cj, nil, corev1.EventTypeNormal, "SuccessfulCreate", "Create", "Created job %v", got.Name)
	}
	if done, _ := JobFinished(got); !done {
		st.Active = append(st.Active, jobRef(got))
	}
	st.LastScheduleTime = &metav1.Time{Time: due}
	return nil
}

// pruneHistory deletes the oldest of finished beyond limit (def when
// unset).
func (c *CronJobController) pruneHistory(ctx context.Context, finished []*batchv1.Job, limit *int32, def int32) error {
	n := def
	if limit != nil {
		n = *limit
	}
	if int32(len(finished)) <= n {
		return nil
	}
	start := func(j *batchv1.Job) time.Time {
		if j.Status.StartTime != nil {
			return j.Status.StartTime.Time
		}
		return j.CreationTimestamp.Time
	}
	sort.Slice(finished, func(a, b int) bool { return start(finished[a]).Before(start(finished[b])) })
	bg := metav1.DeletePropagationBackground
	var errs []error
	for _, j := range finished[:len(finished)-int(n)] {
		err := c.client.BatchV1().Jobs(j.Namespace).Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: &bg,
			Preconditions: &metav1.Preconditions{UID: &j.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

package controllers

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	core "k8s.io/client-go/testing"
)

// cronFixture is a CronJobController on a fake clientset with a fake
// clock; its informers' indexers hold what sync reads.
type cronFixture struct {
	*fixture
	c   *CronJobController
	now time.Time
}

func newCronFixture(t *testing.T, now time.Time, cj *batchv1.CronJob, jobs ...*batchv1.Job) *cronFixture {
	objs := []runtime.Object{cj}
	for _, j := range jobs {
		objs = append(objs, j)
	}
	f := &cronFixture{fixture: newFixture(t, objs...), now: now}
	c, err := NewCronJobController(f.client, f.factory.Batch().V1().CronJobs(), f.factory.Batch().V1().Jobs(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return f.now }
	f.c = c
	if err := f.factory.Batch().V1().CronJobs().Informer().GetIndexer().Add(cj); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if err := f.factory.Batch().V1().Jobs().Informer().GetIndexer().Add(j); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *cronFixture) sync() {
	f.t.Helper()
	if err := f.c.sync(context.Background(), "default/nightly"); err != nil {
		f.t.Fatal(err)
	}
}

func (f *cronFixture) created() []*batchv1.Job {
	var out []*batchv1.Job
	for _, a := range f.writes() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "jobs" {
			out = append(out, a.(core.CreateAction).GetObject().(*batchv1.Job))
		}
	}
	return out
}

func (f *cronFixture) status() batchv1.CronJobStatus {
	var st batchv1.CronJobStatus
	for _, a := range f.writes() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			st = a.(core.UpdateAction).GetObject().(*batchv1.CronJob).Status
		}
	}
	return st
}

var t0 = time.Date(2026, 3, 1, 10, 0, 30, 0, time.UTC)

func newCronJob(schedule string) *batchv1.CronJob {
	f, three, one := false, int32(3), int32(1)
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: "default", UID: "uid-cj", CreationTimestamp: metav1.NewTime(t0)},
		Spec: batchv1.CronJobSpec{Schedule: schedule, ConcurrencyPolicy: batchv1.AllowConcurrent, Suspend: &f,
			SuccessfulJobsHistoryLimit: &three, FailedJobsHistoryLimit: &one,
			JobTemplate: batchv1.JobTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "nightly"}},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}}}}}},
	}
}

func cronJobChild(cj *batchv1.CronJob, name string, started time.Time, done batchv1.JobConditionType) *batchv1.Job {
	j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(started), OwnerReferences: []metav1.OwnerReference{ownerRef(cj, cronJobKind)}},
		Status: batchv1.JobStatus{StartTime: &metav1.Time{Time: started}}}
	if done != "" {
		j.Status.Conditions = []batchv1.JobCondition{{Type: done, Status: corev1.ConditionTrue}}
		ct := metav1.NewTime(started.Add(time.Second))
		j.Status.CompletionTime = &ct
	}
	return j
}

func TestCronJobSchedulesTheLatestMissedTime(t *testing.T) {
	f := newCronFixture(t, t0.Add(2*time.Minute+5*time.Second), newCronJob("* * * * *"))
	f.sync()
	jobs := f.created()
	if len(jobs) != 1 {
		t.Fatalf("created %d jobs, want 1 (only the latest of two missed times)", len(jobs))
	}
	due := time.Date(2026, 3, 1, 10, 2, 0, 0, time.UTC)
	j := jobs[0]
	if j.Name != "nightly-"+itoa(due.Unix()/60) || j.Annotations[batchv1.CronJobScheduledTimestampAnnotation] != due.Format(time.RFC3339) ||
		j.Labels["app"] != "nightly" || metav1.GetControllerOf(j).UID != "uid-cj" {
		t.Errorf("job %s annotations %v labels %v", j.Name, j.Annotations, j.Labels)
	}
	st := f.status()
	if st.LastScheduleTime == nil || !st.LastScheduleTime.Time.Equal(due) || len(st.Active) != 1 || st.Active[0].Name != j.Name {
		t.Errorf("status %+v", st)
	}
}

func TestCronJobTimeZone(t *testing.T) {
	cj := newCronJob("0 9 * * *")
	tz := "Asia/Tokyo"
	cj.Spec.TimeZone = &tz
	cj.CreationTimestamp = metav1.NewTime(time.Date(2026, 2, 28, 23, 0, 0, 0, time.UTC))
	// 09:00 in Tokyo is 00:00 UTC.
	f := newCronFixture(t, time.Date(2026, 3, 1, 0, 0, 10, 0, time.UTC), cj)
	f.sync()
	if jobs := f.created(); len(jobs) != 1 || jobs[0].Annotations[batchv1.CronJobScheduledTimestampAnnotation] != "2026-03-01T09:00:00+09:00" {
		t.Fatalf("created %v", jobs)
	}
	// In UTC the same schedule is not due yet.
	f = newCronFixture(t, time.Date(2026, 3, 1, 0, 0, 10, 0, time.UTC), newCronJob("0 9 * * *"))
	f.sync()
	if jobs := f.created(); len(jobs) != 0 {
		t.Fatalf("UTC schedule created %d jobs", len(jobs))
	}
}

func TestCronJobPolicies(t *testing.T) {
	now := t0.Add(75 * time.Second) // due at 10:01:00
	for _, tc := range []struct {
		name    string
		edit    func(*batchv1.CronJob)
		active  bool
		creates int
		deletes int
	}{
		{"allow runs beside an active job", func(*batchv1.CronJob) {}, true, 1, 0},
		{"forbid waits for the active job", func(c *batchv1.CronJob) { c.Spec.ConcurrencyPolicy = batchv1.ForbidConcurrent }, true, 0, 0},
		{"replace deletes the active job", func(c *batchv1.CronJob) { c.Spec.ConcurrencyPolicy = batchv1.ReplaceConcurrent }, true, 1, 1},
		{"suspend", func(c *batchv1.CronJob) { s := true; c.Spec.Suspend = &s }, false, 0, 0},
		{"startingDeadlineSeconds passed", func(c *batchv1.CronJob) { d := int64(10); c.Spec.StartingDeadlineSeconds = &d }, false, 0, 0},
		{"startingDeadlineSeconds not passed", func(c *batchv1.CronJob) { d := int64(60); c.Spec.StartingDeadlineSeconds = &d }, false, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cj := newCronJob("* * * * *")
			tc.edit(cj)
			var jobs []*batchv1.Job
			if tc.active {
				jobs = append(jobs, cronJobChild(cj, "nightly-old", t0, ""))
				cj.Status.Active = []corev1.ObjectReference{jobRef(jobs[0])}
			}
			f := newCronFixture(t, now, cj, jobs...)
			f.sync()
			if got := len(f.created()); got != tc.creates {
				t.Errorf("created %d jobs, want %d", got, tc.creates)
			}
			if got := f.count("delete", "jobs", ""); got != tc.deletes {
				t.Errorf("deleted %d jobs, want %d", got, tc.deletes)
			}
		})
	}
}

func TestCronJobHistoryLimits(t *testing.T) {
	cj := newCronJob("0 0 1 1 *")
	cj.Status.LastScheduleTime = &metav1.Time{Time: t0}
	var jobs []*batchv1.Job
	for i, done := range []batchv1.JobConditionType{batchv1.JobComplete, batchv1.JobComplete, batchv1.JobFailed, batchv1.JobComplete,
		batchv1.JobComplete, batchv1.JobFailed, batchv1.JobComplete} {
		jobs = append(jobs, cronJobChild(cj, "nightly-"+itoa(int64(i)), t0.Add(-time.Duration(10-i)*time.Hour), done))
	}
	f := newCronFixture(t, t0, cj, jobs...)
	f.sync()
	var deleted []string
	for _, a := range f.writes() {
		if a.GetVerb() == "delete" {
			deleted = append(deleted, a.(core.DeleteAction).GetName())
		}
	}
	slices.Sort(deleted)
	// Five succeeded (keep the newest 3), two failed (keep the newest 1).
	if want := []string{"nightly-0", "nightly-1", "nightly-2"}; !slices.Equal(deleted, want) {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
	if st := f.status(); st.LastSuccessfulTime == nil || !st.LastSuccessfulTime.Time.Equal(jobs[6].Status.CompletionTime.Time) {
		t.Errorf("lastSuccessfulTime %v", st.LastSuccessfulTime)
	}
}

func TestLastScheduleLooksFarBack(t *testing.T) {
	sched, _, err := CronJobSchedule(newCronJob("*/5 * * * *"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2027, 3, 1, 10, 7, 0, 0, time.UTC)
	if got := lastSchedule(sched, now.Add(-400*24*time.Hour), now); !got.Equal(time.Date(2027, 3, 1, 10, 5, 0, 0, time.UTC)) {
		t.Errorf("got %v", got)
	}
	yearly, _, _ := CronJobSchedule(newCronJob("0 0 1 1 *"))
	if got := lastSchedule(yearly, now.Add(-400*24*time.Hour), now); !got.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("yearly: got %v", got)
	}
	if got := lastSchedule(yearly, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), now); !got.IsZero() {
		t.Errorf("nothing after the last schedule: got %v", got)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func newJob(name string, completions, parallelism *int32) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.JobSpec{
			Completions: completions, Parallelism: parallelism,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "c", Image: "busybox:1"}},
			}},
		},
	}
}

func i32(v int32) *int32 { return &v }

// jobPods lists the pods of job j that have not been deleted.
func jobPods(ctx context.Context, cs kubernetes.Interface, ns string, j *batchv1.Job) ([]corev1.Pod, error) {
	l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/controller-uid=" + string(j.UID)})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// finishPods plays the kubelet: it sets the phase of every running pod of
// j to phase, at most n of them (all when n < 0).
func finishPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, j *batchv1.Job, phase corev1.PodPhase, n int) int {
	t.Helper()
	pods, err := jobPods(ctx, cs, ns, j)
	if err != nil {
		t.Fatal(err)
	}
	done := 0
	for i := range pods {
		p := &pods[i]
		if n >= 0 && done >= n {
			break
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
			continue
		}
		// The scheduler writes the pod's status too: retry on conflict.
		for attempt := 0; ; attempt++ {
			p.Status.Phase = phase
			_, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			if err == nil {
				break
			}
			if !apierrors.IsConflict(err) || attempt == 10 {
				t.Fatalf("finishing pod %s: %v", p.Name, err)
			}
			if p, err = cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
				t.Fatalf("finishing pod %s: %v", p.Name, err)
			}
		}
		done++
	}
	return done
}

func condTypes(j *batchv1.Job) []string {
	var out []string
	for _, c := range j.Status.Conditions {
		if c.Status == corev1.ConditionTrue {
			out = append(out, string(c.Type)+"/"+c.Reason)
		}
	}
	return out
}

func waitJob(t *testing.T, cs kubernetes.Interface, ns, name, what string, cond func(*batchv1.Job) error) *batchv1.Job {
	t.Helper()
	var got *batchv1.Job
	eventually(t, what, 20*time.Second, func() error {
		j, err := cs.BatchV1().Jobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got = j
		return cond(j)
	})
	return got
}

func TestJob(t *testing.T) {
	cs := startLocal(t)
	ctx := context.Background()
	ns := "jobs"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("completions and parallelism", func(t *testing.T) {
		j, err := cs.BatchV1().Jobs(ns).Create(ctx, newJob("three", i32(3), i32(2)), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if j.Spec.Selector == nil || j.Spec.Selector.MatchLabels["batch.kubernetes.io/controller-uid"] != string(j.UID) ||
			j.Spec.Template.Labels["job-name"] != "three" || *j.Spec.BackoffLimit != 6 || *j.Spec.CompletionMode != batchv1.NonIndexedCompletion {
			t.Fatalf("defaults: selector %v, template labels %v", j.Spec.Selector, j.Spec.Template.Labels)
		}
		eventually(t, "two pods", 20*time.Second, func() error {
			pods, err := jobPods(ctx, cs, ns, j)
			if err != nil {
				return err
			}
			if len(pods) != 2 {
				return fmt.Errorf("%d pods", len(pods))
			}
			for _, p := range pods {
				if !slices.Contains(p.Finalizers, batchv1.JobTrackingFinalizer) || p.Labels["batch.kubernetes.io/job-name"] != "three" ||
					metav1.GetControllerOf(&p) == nil || metav1.GetControllerOf(&p).UID != j.UID {
					return fmt.Errorf("pod %s: finalizers %v labels %v", p.Name, p.Finalizers, p.Labels)
				}
			}
			return nil
		})
		waitJob(t, cs, ns, "three", "active 2", func(j *batchv1.Job) error {
			if j.Status.Active != 2 || j.Status.StartTime == nil {
				return fmt.Errorf("status %+v", j.Status)
			}
			return nil
		})
		// Parallelism holds: finishing both leaves one completion to go.
		finishPods(ctx, t, cs, ns, j, corev1.PodSucceeded, -1)
		waitJob(t, cs, ns, "three", "2 succeeded, 1 active", func(j *batchv1.Job) error {
			if j.Status.Succeeded != 2 || j.Status.Active != 1 {
				return fmt.Errorf("status %+v", j.Status)
			}
			return nil
		})
		eventually(t, "finish the third", 20*time.Second, func() error {
			if finishPods(ctx, t, cs, ns, j, corev1.PodSucceeded, -1) == 0 {
				return fmt.Errorf("no running pod yet")
			}
			return nil
		})
		done := waitJob(t, cs, ns, "three", "Complete", func(j *batchv1.Job) error {
			if jobDone(j) != batchv1.JobComplete {
				return fmt.Errorf("conditions %v", condTypes(j))
			}
			return nil
		})
		if done.Status.Succeeded != 3 || done.Status.Failed != 0 || done.Status.Active != 0 || done.Status.CompletionTime == nil {
			t.Errorf("final status %+v", done.Status)
		}
		if got := condTypes(done); !slices.Equal(got, []string{"SuccessCriteriaMet/CompletionsReached", "Complete/CompletionsReached"}) {
			t.Errorf("conditions %v", got)
		}
		pods, _ := jobPods(ctx, cs, ns, j)
		for _, p := range pods {
			if len(p.Finalizers) != 0 {
				t.Errorf("pod %s keeps finalizers %v", p.Name, p.Finalizers)
			}
		}
		if len(pods) != 3 {
			t.Errorf("%d pods, want 3 (none extra)", len(pods))
		}
	})

	t.Run("backoffLimit", func(t *testing.T) {
		jb := newJob("fails", nil, nil)
		jb.Spec.BackoffLimit = i32(0)
		j, err := cs.BatchV1().Jobs(ns).Create(ctx, jb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "fail the pod", 20*time.Second, func() error {
			if finishPods(ctx, t, cs, ns, j, corev1.PodFailed, -1) == 0 {
				return fmt.Errorf("no pod yet")
			}
			return nil
		})
		done := waitJob(t, cs, ns, "fails", "Failed", func(j *batchv1.Job) error {
			if jobDone(j) != batchv1.JobFailed {
				return fmt.Errorf("conditions %v", condTypes(j))
			}
			return nil
		})
		if got := condTypes(done); !slices.Equal(got, []string{"FailureTarget/BackoffLimitExceeded", "Failed/BackoffLimitExceeded"}) || done.Status.Failed != 1 {
			t.Errorf("conditions %v, failed %d", got, done.Status.Failed)
		}
	})

	t.Run("indexed", func(t *testing.T) {
		jb := newJob("idx", i32(3), i32(3))
		mode := batchv1.IndexedCompletion
		jb.Spec.CompletionMode = &mode
		j, err := cs.BatchV1().Jobs(ns).Create(ctx, jb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "three indexed pods", 20*time.Second, func() error {
			pods, err := jobPods(ctx, cs, ns, j)
			if err != nil {
				return err
			}
			if len(pods) != 3 {
				return fmt.Errorf("%d pods", len(pods))
			}
			var idx []string
			for _, p := range pods {
				i := p.Annotations[batchv1.JobCompletionIndexAnnotation]
				idx = append(idx, i)
				if p.Spec.Hostname != "idx-"+i || p.Labels[batchv1.JobCompletionIndexAnnotation] != i {
					return fmt.Errorf("pod %s: hostname %q, labels %v", p.Name, p.Spec.Hostname, p.Labels)
				}
				if e := p.Spec.Containers[0].Env; len(e) != 1 || e[0].Name != "JOB_COMPLETION_INDEX" || e[0].ValueFrom == nil {
					return fmt.Errorf("pod %s env %v", p.Name, e)
				}
			}
			slices.Sort(idx)
			if !slices.Equal(idx, []string{"0", "1", "2"}) {
				return fmt.Errorf("indexes %v", idx)
			}
			return nil
		})
		finishPods(ctx, t, cs, ns, j, corev1.PodSucceeded, -1)
		done := waitJob(t, cs, ns, "idx", "Complete", func(j *batchv1.Job) error {
			if jobDone(j) != batchv1.JobComplete {
				return fmt.Errorf("conditions %v", condTypes(j))
			}
			return nil
		})
		if done.Status.CompletedIndexes != "0-2" || done.Status.Succeeded != 3 {
			t.Errorf("completedIndexes %q, succeeded %d", done.Status.CompletedIndexes, done.Status.Succeeded)
		}
	})

	t.Run("suspend and resume", func(t *testing.T) {
		jb := newJob("later", i32(1), i32(1))
		jb.Spec.Suspend = ptrBool(true)
		j, err := cs.BatchV1().Jobs(ns).Create(ctx, jb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, cs, ns, "later", "Suspended", func(j *batchv1.Job) error {
			if !slices.Contains(condTypes(j), "Suspended/JobSuspended") {
				return fmt.Errorf("conditions %v", condTypes(j))
			}
			return nil
		})
		if pods, _ := jobPods(ctx, cs, ns, j); len(pods) != 0 {
			t.Fatalf("a suspended job has %d pods", len(pods))
		}
		j, _ = cs.BatchV1().Jobs(ns).Get(ctx, "later", metav1.GetOptions{})
		j.Spec.Suspend = ptrBool(false)
		if _, err := cs.BatchV1().Jobs(ns).Update(ctx, j, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitJob(t, cs, ns, "later", "resumed", func(j *batchv1.Job) error {
			if j.Status.Active != 1 || slices.Contains(condTypes(j), "Suspended/JobSuspended") {
				return fmt.Errorf("active %d, conditions %v", j.Status.Active, condTypes(j))
			}
			return nil
		})
	})

	t.Run("activeDeadlineSeconds", func(t *testing.T) {
		jb := newJob("deadline", nil, nil)
		jb.Spec.ActiveDeadlineSeconds = ptrInt64(1)
		j, err := cs.BatchV1().Jobs(ns).Create(ctx, jb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		done := waitJob(t, cs, ns, "deadline", "Failed", func(j *batchv1.Job) error {
			if jobDone(j) != batchv1.JobFailed {
				return fmt.Errorf("conditions %v", condTypes(j))
			}
			return nil
		})
		if got := condTypes(done); !slices.Contains(got, "Failed/DeadlineExceeded") {
			t.Errorf("conditions %v", got)
		}
		if pods, _ := jobPods(ctx, cs, ns, j); len(pods) != 0 {
			t.Errorf("%d pods left after the deadline", len(pods))
		}
	})

	t.Run("ttlSecondsAfterFinished", func(t *testing.T) {
		jb := newJob("short-lived", nil, nil)
		jb.Spec.TTLSecondsAfterFinished = i32(0)
		j, err := cs.BatchV1().Jobs(ns).Create(ctx, jb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "finish the pod", 20*time.Second, func() error {
			if finishPods(ctx, t, cs, ns, j, corev1.PodSucceeded, -1) == 0 {
				return fmt.Errorf("no pod yet")
			}
			return nil
		})
		eventually(t, "job and pods deleted", 20*time.Second, func() error {
			_, err := cs.BatchV1().Jobs(ns).Get(ctx, "short-lived", metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("job still there (%v)", err)
			}
			if pods, _ := jobPods(ctx, cs, ns, j); len(pods) != 0 {
				return fmt.Errorf("%d pods left", len(pods))
			}
			return nil
		})
	})

	t.Run("deleting a running job releases its pods", func(t *testing.T) {
		j, err := cs.BatchV1().Jobs(ns).Create(ctx, newJob("doomed", i32(2), i32(2)), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "pods", 20*time.Second, func() error {
			if pods, _ := jobPods(ctx, cs, ns, j); len(pods) != 2 {
				return fmt.Errorf("%d pods", len(pods))
			}
			return nil
		})
		bg := metav1.DeletePropagationBackground
		if err := cs.BatchV1().Jobs(ns).Delete(ctx, "doomed", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pods gone", 20*time.Second, func() error {
			if pods, _ := jobPods(ctx, cs, ns, j); len(pods) != 0 {
				return fmt.Errorf("%d pods left: %v", len(pods), pods[0].Finalizers)
			}
			return nil
		})
	})

	t.Run("cronjob API and create job --from", func(t *testing.T) {
		cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "nightly"}, Spec: batchv1.CronJobSpec{
			Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: newJob("", nil, nil).Spec}}}
		got, err := cs.BatchV1().CronJobs(ns).Create(ctx, cj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.ConcurrencyPolicy != batchv1.AllowConcurrent || *got.Spec.SuccessfulJobsHistoryLimit != 3 ||
			*got.Spec.FailedJobsHistoryLimit != 1 || *got.Spec.Suspend || *got.Spec.JobTemplate.Spec.BackoffLimit != 6 {
			t.Errorf("defaults: %+v", got.Spec)
		}
		for _, bad := range []func(*batchv1.CronJob){
			func(c *batchv1.CronJob) { c.Spec.Schedule = "CRON_TZ=Europe/Paris 0 3 * * *" },
			func(c *batchv1.CronJob) { c.Spec.Schedule = "61 * * * *" },
			func(c *batchv1.CronJob) { tz := "Mars/Olympus"; c.Spec.TimeZone = &tz },
			func(c *batchv1.CronJob) { c.Name = "a-name-that-is-longer-than-fifty-two-characters-in-all" },
			func(c *batchv1.CronJob) { c.Spec.ConcurrencyPolicy = "Sometimes" },
		} {
			c := cj.DeepCopy()
			c.Name = "bad"
			bad(c)
			if _, err := cs.BatchV1().CronJobs(ns).Create(ctx, c, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
				t.Errorf("%s %q: %v, want 422", c.Name, c.Spec.Schedule, err)
			}
		}
		// kubectl create job --from=cronjob/nightly: the template, the
		// instantiate annotation and the CronJob as controller.
		yes := true
		manual := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "nightly-manual",
			Annotations:     map[string]string{"cronjob.kubernetes.io/instantiate": "manual"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: got.Name, UID: got.UID, Controller: &yes}}},
			Spec: got.Spec.JobTemplate.Spec}
		mj, err := cs.BatchV1().Jobs(ns).Create(ctx, manual, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the manual job's pod", 20*time.Second, func() error {
			if finishPods(ctx, t, cs, ns, mj, corev1.PodSucceeded, -1) == 0 {
				return fmt.Errorf("no pod yet")
			}
			return nil
		})
		waitJob(t, cs, ns, "nightly-manual", "Complete", func(j *batchv1.Job) error {
			if jobDone(j) != batchv1.JobComplete {
				return fmt.Errorf("conditions %v", condTypes(j))
			}
			return nil
		})
		eventually(t, "lastSuccessfulTime", 20*time.Second, func() error {
			c, err := cs.BatchV1().CronJobs(ns).Get(ctx, "nightly", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if c.Status.LastSuccessfulTime == nil {
				return fmt.Errorf("status %+v", c.Status)
			}
			return nil
		})
	})

	t.Run("validation", func(t *testing.T) {
		bad := newJob("always", nil, nil)
		bad.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
		if _, err := cs.BatchV1().Jobs(ns).Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("restartPolicy Always: %v, want 422", err)
		}
		mode := batchv1.IndexedCompletion
		bad = newJob("indexed-no-completions", nil, i32(2))
		bad.Spec.CompletionMode = &mode
		if _, err := cs.BatchV1().Jobs(ns).Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("Indexed without completions: %v, want 422", err)
		}
		j, err := cs.BatchV1().Jobs(ns).Get(ctx, "three", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		j.Spec.Template.Spec.Containers[0].Image = "busybox:2"
		if _, err := cs.BatchV1().Jobs(ns).Update(ctx, j, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("template change: %v, want 422", err)
		}
		j, _ = cs.BatchV1().Jobs(ns).Get(ctx, "three", metav1.GetOptions{})
		j.Spec.Selector.MatchLabels["x"] = "y"
		if _, err := cs.BatchV1().Jobs(ns).Update(ctx, j, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("selector change: %v, want 422", err)
		}
	})
}

func ptrBool(b bool) *bool    { return &b }
func ptrInt64(v int64) *int64 { return &v }

// jobDone is the final condition of j, or "".
func jobDone(j *batchv1.Job) batchv1.JobConditionType {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return c.Type
		}
	}
	return ""
}

package apiserver

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/robfig/cron/v3"
)

// This file holds what upstream's registry strategies do for Jobs,
// CronJobs, StatefulSets and PodDisruptionBudgets: defaults, the
// generated Job selector, validation (with the fields that are immutable)
// and the kubectl table columns (with ControllerRevision's).

// Labels a Job's generated selector and its pods carry, as upstream.
const (
	jobControllerUIDLabel       = "batch.kubernetes.io/controller-uid"
	jobNameLabel                = "batch.kubernetes.io/job-name"
	legacyJobControllerUIDLabel = "controller-uid"
	legacyJobNameLabel          = "job-name"
)

// defaultWorkloadKinds applies the defaults of the kinds in this file on
// create (old nil) and update. The status of a new object is reset.
func defaultWorkloadKinds(obj, old runtime.Object) {
	defaultClusterKinds(obj)
	switch o := obj.(type) {
	case *batchv1.Job:
		if old == nil {
			o.Status = batchv1.JobStatus{}
			// The Job's labels default to its template's, before the
			// generated selector labels are added (defaulting comes
			// before the strategy upstream too).
			if len(o.Labels) == 0 && len(o.Spec.Template.Labels) > 0 {
				o.Labels = map[string]string{}
				for k, v := range o.Spec.Template.Labels {
					o.Labels[k] = v
				}
			}
			generateJobSelector(o)
		}
		defaultJobSpec(&o.Spec)
	case *batchv1.CronJob:
		if old == nil {
			o.Status = batchv1.CronJobStatus{}
		}
		s := &o.Spec
		if s.ConcurrencyPolicy == "" {
			s.ConcurrencyPolicy = batchv1.AllowConcurrent
		}
		if s.Suspend == nil {
			s.Suspend = ptr(false)
		}
		if s.SuccessfulJobsHistoryLimit == nil {
			s.SuccessfulJobsHistoryLimit = ptr(int32(3))
		}
		if s.FailedJobsHistoryLimit == nil {
			s.FailedJobsHistoryLimit = ptr(int32(1))
		}
		defaultJobSpec(&s.JobTemplate.Spec)
	case *appsv1.StatefulSet:
		if old == nil {
			o.Status = appsv1.StatefulSetStatus{}
		}
		defaultStatefulSet(o)
	case *policyv1.PodDisruptionBudget:
		if old == nil {
			o.Status = policyv1.PodDisruptionBudgetStatus{}
		}
	}
}

// defaultJobSpec is upstream's SetDefaults_Job.
func defaultJobSpec(s *batchv1.JobSpec) {
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions, s.Parallelism = ptr(int32(1)), ptr(int32(1))
	}
	if s.Parallelism == nil {
		s.Parallelism = ptr(int32(1))
	}
	if s.BackoffLimit == nil {
		s.BackoffLimit = ptr(int32(6))
	}
	if s.CompletionMode == nil {
		s.CompletionMode = ptr(batchv1.NonIndexedCompletion)
	}
	if s.Suspend == nil {
		s.Suspend = ptr(false)
	}
	if s.PodReplacementPolicy == nil {
		p := batchv1.TerminatingOrFailed
		if s.PodFailurePolicy != nil {
			p = batchv1.Failed
		}
		s.PodReplacementPolicy = &p
	}
	if s.ManualSelector == nil {
		s.ManualSelector = ptr(false)
	}
	defaultPodSpec(&s.Template.Spec)
}

// generateJobSelector gives a Job without a manual selector the selector
// on its own uid, and its template the labels that match it.
func generateJobSelector(j *batchv1.Job) {
	if j.Spec.ManualSelector != nil && *j.Spec.ManualSelector {
		return
	}
	uid := string(j.UID)
	if j.Spec.Template.Labels == nil {
		j.Spec.Template.Labels = map[string]string{}
	}
	l := j.Spec.Template.Labels
	l[legacyJobControllerUIDLabel], l[jobControllerUIDLabel] = uid, uid
	l[legacyJobNameLabel], l[jobNameLabel] = j.Name, j.Name
	if j.Spec.Selector == nil {
		j.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{jobControllerUIDLabel: uid}}
	}
}

func defaultStatefulSet(s *appsv1.StatefulSet) {
	if s.Spec.Replicas == nil {
		s.Spec.Replicas = ptr(int32(1))
	}
	if s.Spec.PodManagementPolicy == "" {
		s.Spec.PodManagementPolicy = appsv1.OrderedReadyPodManagement
	}
	u := &s.Spec.UpdateStrategy
	if u.Type == "" {
		u.Type = appsv1.RollingUpdateStatefulSetStrategyType
	}
	if u.Type == appsv1.RollingUpdateStatefulSetStrategyType {
		if u.RollingUpdate == nil {
			u.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{}
		}
		if u.RollingUpdate.Partition == nil {
			u.RollingUpdate.Partition = ptr(int32(0))
		}
	}
	if s.Spec.RevisionHistoryLimit == nil {
		s.Spec.RevisionHistoryLimit = ptr(int32(10))
	}
	if s.Spec.PersistentVolumeClaimRetentionPolicy == nil {
		s.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{}
	}
	rp := s.Spec.PersistentVolumeClaimRetentionPolicy
	if rp.WhenDeleted == "" {
		rp.WhenDeleted = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	if rp.WhenScaled == "" {
		rp.WhenScaled = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	for i := range s.Spec.VolumeClaimTemplates {
		c := &s.Spec.VolumeClaimTemplates[i]
		if c.Spec.VolumeMode == nil {
			c.Spec.VolumeMode = ptr(corev1.PersistentVolumeFilesystem)
		}
	}
	defaultPodSpec(&s.Spec.Template.Spec)
}

// validateWorkloadKinds validates the kinds of this file; old is nil on
// create.
func validateWorkloadKinds(obj, old runtime.Object) field.ErrorList {
	switch o := obj.(type) {
	case *batchv1.Job:
		errs := validateJobSpec(&o.Spec, field.NewPath("spec"), true)
		if old != nil {
			errs = append(errs, validateJobUpdate(o, old.(*batchv1.Job))...)
		}
		return errs
	case *batchv1.CronJob:
		var prev *batchv1.CronJob
		if old != nil {
			prev = old.(*batchv1.CronJob)
		}
		return validateCronJob(o, prev)
	case *appsv1.StatefulSet:
		errs := validateStatefulSet(o)
		if old != nil {
			errs = append(errs, validateStatefulSetUpdate(o, old.(*appsv1.StatefulSet))...)
		}
		return errs
	case *policyv1.PodDisruptionBudget:
		return validatePDB(o)
	}
	return nil
}

func nonNegative(p *field.Path, v *int32) field.ErrorList {
	if v != nil && *v < 0 {
		return field.ErrorList{field.Invalid(p, *v, "must be greater than or equal to 0")}
	}
	return nil
}

// validateJobSpec follows upstream's ValidateJobSpec; withSelector is
// false for a CronJob's job template, which has no selector yet.
func validateJobSpec(s *batchv1.JobSpec, p *field.Path, withSelector bool) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, nonNegative(p.Child("parallelism"), s.Parallelism)...)
	errs = append(errs, nonNegative(p.Child("completions"), s.Completions)...)
	errs = append(errs, nonNegative(p.Child("backoffLimit"), s.BackoffLimit)...)
	if s.ActiveDeadlineSeconds != nil && *s.ActiveDeadlineSeconds <= 0 {
		errs = append(errs, field.Invalid(p.Child("activeDeadlineSeconds"), *s.ActiveDeadlineSeconds, "must be greater than 0"))
	}
	if s.TTLSecondsAfterFinished != nil && *s.TTLSecondsAfterFinished < 0 {
		errs = append(errs, field.Invalid(p.Child("ttlSecondsAfterFinished"), *s.TTLSecondsAfterFinished, "must be greater than or equal to 0"))
	}
	if s.CompletionMode != nil {
		switch *s.CompletionMode {
		case batchv1.NonIndexedCompletion:
		case batchv1.IndexedCompletion:
			if s.Completions == nil {
				errs = append(errs, field.Required(p.Child("completions"), fmt.Sprintf("when completion mode is %s", batchv1.IndexedCompletion)))
			}
		default:
			errs = append(errs, field.NotSupported(p.Child("completionMode"), *s.CompletionMode, []string{string(batchv1.NonIndexedCompletion), string(batchv1.IndexedCompletion)}))
		}
	}
	if s.PodReplacementPolicy != nil {
		switch *s.PodReplacementPolicy {
		case batchv1.TerminatingOrFailed, batchv1.Failed:
		default:
			errs = append(errs, field.NotSupported(p.Child("podReplacementPolicy"), *s.PodReplacementPolicy, []string{string(batchv1.Failed), string(batchv1.TerminatingOrFailed)}))
		}
	}
	if withSelector {
		switch sel, err := metav1.LabelSelectorAsSelector(s.Selector); {
		case s.Selector == nil:
			errs = append(errs, field.Required(p.Child("selector"), ""))
		case err != nil:
			errs = append(errs, field.Invalid(p.Child("selector"), s.Selector, err.Error()))
		case !sel.Matches(labelsSet(s.Template.Labels)):
			errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), s.Template.Labels, "`selector` does not match template `labels`"))
		}
	}
	tp := p.Child("template", "spec")
	errs = append(errs, validatePodSpec(&s.Template.Spec, tp)...)
	switch s.Template.Spec.RestartPolicy {
	case corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(tp.Child("restartPolicy"), s.Template.Spec.RestartPolicy, []string{string(corev1.RestartPolicyOnFailure), string(corev1.RestartPolicyNever)}))
	}
	return errs
}

// validateJobUpdate is upstream's ValidateJobSpecUpdate: the selector,
// the template (but for a suspended Job that never started), the
// completion mode and, but for an elastic Indexed Job, completions are
// immutable.
func validateJobUpdate(j, old *batchv1.Job) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	errs = append(errs, apivalidation.ValidateImmutableField(j.Spec.Selector, old.Spec.Selector, p.Child("selector"))...)
	suspendedNeverStarted := old.Spec.Suspend != nil && *old.Spec.Suspend && old.Status.StartTime == nil
	if !suspendedNeverStarted {
		errs = append(errs, apivalidation.ValidateImmutableField(j.Spec.Template, old.Spec.Template, p.Child("template"))...)
	}
	errs = append(errs, apivalidation.ValidateImmutableField(j.Spec.CompletionMode, old.Spec.CompletionMode, p.Child("completionMode"))...)
	elastic := j.Spec.CompletionMode != nil && *j.Spec.CompletionMode == batchv1.IndexedCompletion &&
		j.Spec.Completions != nil && j.Spec.Parallelism != nil && *j.Spec.Completions == *j.Spec.Parallelism &&
		old.Spec.Completions != nil && old.Spec.Parallelism != nil && *old.Spec.Completions == *old.Spec.Parallelism
	if !elastic {
		errs = append(errs, apivalidation.ValidateImmutableField(j.Spec.Completions, old.Spec.Completions, p.Child("completions"))...)
	}
	return errs
}

// cronJobNameMax leaves room for the 11 characters of the scheduled time
// in the names of its Jobs, as upstream.
const cronJobNameMax = 52

// validateCronJob follows upstream's ValidateCronJobCreate/Update.
func validateCronJob(c *batchv1.CronJob, old *batchv1.CronJob) field.ErrorList {
	var errs field.ErrorList
	if len(c.Name) > cronJobNameMax {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), c.Name, fmt.Sprintf("must be no more than %d characters", cronJobNameMax)))
	}
	p := field.NewPath("spec")
	s := &c.Spec
	if s.Schedule == "" {
		errs = append(errs, field.Required(p.Child("schedule"), ""))
	} else {
		if old == nil || old.Spec.Schedule != s.Schedule {
			if strings.Contains(s.Schedule, "TZ") {
				errs = append(errs, field.Invalid(p.Child("schedule"), s.Schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
			}
		}
		if _, err := cron.ParseStandard(s.Schedule); err != nil {
			errs = append(errs, field.Invalid(p.Child("schedule"), s.Schedule, err.Error()))
		}
	}
	if s.TimeZone != nil {
		if tz := *s.TimeZone; tz == "" || strings.EqualFold(tz, "Local") {
			errs = append(errs, field.Invalid(p.Child("timeZone"), tz, "unknown time zone "+tz))
		} else if _, err := time.LoadLocation(tz); err != nil {
			errs = append(errs, field.Invalid(p.Child("timeZone"), tz, err.Error()))
		}
	}
	switch s.ConcurrencyPolicy {
	case batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent:
	default:
		errs = append(errs, field.NotSupported(p.Child("concurrencyPolicy"), s.ConcurrencyPolicy, []string{"Allow", "Forbid", "Replace"}))
	}
	if s.StartingDeadlineSeconds != nil && *s.StartingDeadlineSeconds < 0 {
		errs = append(errs, field.Invalid(p.Child("startingDeadlineSeconds"), *s.StartingDeadlineSeconds, "must be greater than or equal to 0"))
	}
	errs = append(errs, nonNegative(p.Child("successfulJobsHistoryLimit"), s.SuccessfulJobsHistoryLimit)...)
	errs = append(errs, nonNegative(p.Child("failedJobsHistoryLimit"), s.FailedJobsHistoryLimit)...)
	jp := p.Child("jobTemplate", "spec")
	manual := s.JobTemplate.Spec.ManualSelector != nil && *s.JobTemplate.Spec.ManualSelector
	errs = append(errs, validateJobSpec(&s.JobTemplate.Spec, jp, manual)...)
	return errs
}

// validateStatefulSet follows upstream's ValidateStatefulSetSpec. The
// template's pod spec is validated with each volume claim template as a
// volume of its name, since containers mount the claims (upstream leaves
// the template's pod spec unchecked for that reason; the union is what its
// pods will hold).
func validateStatefulSet(s *appsv1.StatefulSet) field.ErrorList {
	p := field.NewPath("spec")
	tmpl := s.Spec.Template.DeepCopy()
	for _, c := range s.Spec.VolumeClaimTemplates {
		if !slices.ContainsFunc(tmpl.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == c.Name }) {
			tmpl.Spec.Volumes = append(tmpl.Spec.Volumes, corev1.Volume{Name: c.Name,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name}}})
		}
	}
	errs := validateWorkload(s.Spec.Selector, tmpl, s.Spec.Replicas)
	switch s.Spec.PodManagementPolicy {
	case appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement:
	default:
		errs = append(errs, field.NotSupported(p.Child("podManagementPolicy"), s.Spec.PodManagementPolicy, []string{"OrderedReady", "Parallel"}))
	}
	up := p.Child("updateStrategy")
	switch s.Spec.UpdateStrategy.Type {
	case appsv1.OnDeleteStatefulSetStrategyType:
		if s.Spec.UpdateStrategy.RollingUpdate != nil {
			errs = append(errs, field.Invalid(up.Child("rollingUpdate"), s.Spec.UpdateStrategy.RollingUpdate, "only allowed for updateStrategy 'RollingUpdate'"))
		}
	case appsv1.RollingUpdateStatefulSetStrategyType:
		if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil {
			errs = append(errs, nonNegative(up.Child("rollingUpdate", "partition"), ru.Partition)...)
			if ru.MaxUnavailable != nil {
				errs = append(errs, validatePositiveIntOrPercent(*ru.MaxUnavailable, up.Child("rollingUpdate", "maxUnavailable"), false)...)
			}
		}
	default:
		errs = append(errs, field.NotSupported(up.Child("type"), s.Spec.UpdateStrategy.Type, []string{"OnDelete", "RollingUpdate"}))
	}
	if s.Spec.MinReadySeconds < 0 {
		errs = append(errs, field.Invalid(p.Child("minReadySeconds"), s.Spec.MinReadySeconds, "must be greater than or equal to 0"))
	}
	if o := s.Spec.Ordinals; o != nil && o.Start < 0 {
		errs = append(errs, field.Invalid(p.Child("ordinals", "start"), o.Start, "must be greater than or equal to 0"))
	}
	if s.Spec.ServiceName != "" {
		for _, msg := range validation.IsDNS1123Label(s.Spec.ServiceName) {
			errs = append(errs, field.Invalid(p.Child("serviceName"), s.Spec.ServiceName, msg))
		}
	}
	for i, c := range s.Spec.VolumeClaimTemplates {
		cp := p.Child("volumeClaimTemplates").Index(i)
		for _, msg := range validation.IsDNS1123Subdomain(c.Name) {
			errs = append(errs, field.Invalid(cp.Child("metadata", "name"), c.Name, msg))
		}
		if len(c.Spec.AccessModes) == 0 {
			errs = append(errs, field.Required(cp.Child("spec", "accessModes"), "at least 1 access mode is required"))
		}
		if _, ok := c.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
			errs = append(errs, field.Required(cp.Child("spec", "resources").Key(string(corev1.ResourceStorage)), ""))
		}
	}
	return errs
}

// statefulSetUpdateForbidden is upstream's message for a StatefulSet
// update that changes more than it may.
const statefulSetUpdateForbidden = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"

func validateStatefulSetUpdate(s, old *appsv1.StatefulSet) field.ErrorList {
	cp := old.Spec.DeepCopy()
	cp.Replicas, cp.Ordinals, cp.Template = s.Spec.Replicas, s.Spec.Ordinals, s.Spec.Template
	cp.UpdateStrategy, cp.RevisionHistoryLimit = s.Spec.UpdateStrategy, s.Spec.RevisionHistoryLimit
	cp.PersistentVolumeClaimRetentionPolicy, cp.MinReadySeconds = s.Spec.PersistentVolumeClaimRetentionPolicy, s.Spec.MinReadySeconds
	if !reflect.DeepEqual(*cp, s.Spec) {
		return field.ErrorList{field.Forbidden(field.NewPath("spec"), statefulSetUpdateForbidden)}
	}
	return nil
}

// validatePositiveIntOrPercent checks a count or a percentage (at most
// 100%); zero is allowed when allowZero.
func validatePositiveIntOrPercent(v intstr.IntOrString, p *field.Path, allowZero bool) field.ErrorList {
	n := 0
	switch v.Type {
	case intstr.Int:
		n = v.IntValue()
	case intstr.String:
		s, ok := strings.CutSuffix(v.StrVal, "%")
		if _, err := fmt.Sscanf(s, "%d", &n); !ok || err != nil || fmt.Sprint(n) != s {
			return field.ErrorList{field.Invalid(p, v, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')")}
		}
		if n > 100 {
			return field.ErrorList{field.Invalid(p, v, "must not be greater than 100%")}
		}
	}
	if n < 0 {
		return field.ErrorList{field.Invalid(p, v, "must be greater than or equal to 0")}
	}
	if n == 0 && !allowZero {
		return field.ErrorList{field.Invalid(p, v, "must not be 0")}
	}
	return nil
}

// validatePDB follows upstream's ValidatePodDisruptionBudgetSpec.
func validatePDB(b *policyv1.PodDisruptionBudget) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	if b.Spec.MinAvailable != nil && b.Spec.MaxUnavailable != nil {
		errs = append(errs, field.Invalid(p, b.Spec, "minAvailable and maxUnavailable cannot be both set"))
	}
	if b.Spec.MinAvailable != nil {
		errs = append(errs, validatePositiveIntOrPercent(*b.Spec.MinAvailable, p.Child("minAvailable"), true)...)
	}
	if b.Spec.MaxUnavailable != nil {
		errs = append(errs, validatePositiveIntOrPercent(*b.Spec.MaxUnavailable, p.Child("maxUnavailable"), true)...)
	}
	if b.Spec.Selector != nil {
		if _, err := metav1.LabelSelectorAsSelector(b.Spec.Selector); err != nil {
			errs = append(errs, field.Invalid(p.Child("selector"), b.Spec.Selector, err.Error()))
		}
	}
	if up := b.Spec.UnhealthyPodEvictionPolicy; up != nil {
		switch *up {
		case policyv1.IfHealthyBudget, policyv1.AlwaysAllow:
		default:
			errs = append(errs, field.NotSupported(p.Child("unhealthyPodEvictionPolicy"), *up, []string{string(policyv1.AlwaysAllow), string(policyv1.IfHealthyBudget)}))
		}
	}
	return errs
}

// jobStatus is kubectl's STATUS column of a Job.
func jobStatus(j *batchv1.Job) string {
	if j.DeletionTimestamp != nil {
		return "Terminating"
	}
	status := "Running"
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return "Complete"
		case batchv1.JobFailed:
			return "Failed"
		case batchv1.JobSuspended:
			status = "Suspended"
		case batchv1.JobFailureTarget:
			status = "FailureTarget"
		case batchv1.JobSuccessCriteriaMet:
			status = "SuccessCriteriaMet"
		}
	}
	return status
}

func jobCompletions(j *batchv1.Job) string {
	switch {
	case j.Spec.Completions != nil:
		return fmt.Sprintf("%d/%d", j.Status.Succeeded, *j.Spec.Completions)
	case j.Spec.Parallelism != nil && *j.Spec.Parallelism > 1:
		return fmt.Sprintf("%d/1 of %d", j.Status.Succeeded, *j.Spec.Parallelism)
	}
	return fmt.Sprintf("%d/1", j.Status.Succeeded)
}

func jobDuration(j *batchv1.Job, now time.Time) string {
	switch {
	case j.Status.StartTime == nil:
		return ""
	case j.Status.CompletionTime == nil:
		return duration.HumanDuration(now.Sub(j.Status.StartTime.Time))
	}
	return duration.HumanDuration(j.Status.CompletionTime.Sub(j.Status.StartTime.Time))
}

func intOrStringOrNA(v *intstr.IntOrString) string {
	if v == nil {
		return "N/A"
	}
	return v.String()
}

// revisionController is kubectl's CONTROLLER column of a
// ControllerRevision: kind.group/name of its controller.
func revisionController(r *appsv1.ControllerRevision) string {
	ref := metav1.GetControllerOf(r)
	if ref == nil {
		return "<none>"
	}
	gk := schema.FromAPIVersionAndKind(ref.APIVersion, ref.Kind).GroupKind()
	return strings.ToLower(gk.String()) + "/" + ref.Name
}

// podTemplateColumns are the -o wide CONTAINERS, IMAGES and SELECTOR
// columns of a workload.
func podTemplateColumns[T runtime.Object](spec func(T) *corev1.PodSpec, sel func(T) *metav1.LabelSelector) []column {
	cols := []column{
		col("Containers", "string", 1, typed(func(o T, _ time.Time) any { c, _ := containersAndImages(spec(o)); return c })),
		col("Images", "string", 1, typed(func(o T, _ time.Time) any { _, i := containersAndImages(spec(o)); return i })),
	}
	if sel != nil {
		cols = append(cols, col("Selector", "string", 1, typed(func(o T, _ time.Time) any { return selectorString(sel(o)) })))
	}
	return cols
}

// workloadColumns are the tables of this file's kinds, as kubectl prints
// them.
var workloadColumns = map[string][]column{
	"batch/Job": append([]column{nameCol,
		col("Status", "string", 0, typed(func(j *batchv1.Job, _ time.Time) any { return jobStatus(j) })),
		col("Completions", "string", 0, typed(func(j *batchv1.Job, _ time.Time) any { return jobCompletions(j) })),
		col("Duration", "string", 0, typed(func(j *batchv1.Job, now time.Time) any { return jobDuration(j, now) })),
		ageCol,
	}, podTemplateColumns(func(j *batchv1.Job) *corev1.PodSpec { return &j.Spec.Template.Spec },
		func(j *batchv1.Job) *metav1.LabelSelector { return j.Spec.Selector })...),
	"batch/CronJob": append([]column{nameCol,
		col("Schedule", "string", 0, typed(func(c *batchv1.CronJob, _ time.Time) any { return c.Spec.Schedule })),
		col("Timezone", "string", 0, typed(func(c *batchv1.CronJob, _ time.Time) any {
			if c.Spec.TimeZone == nil {
				return "<none>"
			}
			return *c.Spec.TimeZone
		})),
		col("Suspend", "boolean", 0, typed(func(c *batchv1.CronJob, _ time.Time) any { return c.Spec.Suspend != nil && *c.Spec.Suspend })),
		col("Active", "integer", 0, typed(func(c *batchv1.CronJob, _ time.Time) any { return len(c.Status.Active) })),
		col("Last Schedule", "string", 0, typed(func(c *batchv1.CronJob, now time.Time) any {
			if c.Status.LastScheduleTime == nil {
				return "<none>"
			}
			return age(*c.Status.LastScheduleTime, now)
		})),
		ageCol,
	}, podTemplateColumns(func(c *batchv1.CronJob) *corev1.PodSpec { return &c.Spec.JobTemplate.Spec.Template.Spec },
		func(c *batchv1.CronJob) *metav1.LabelSelector { return c.Spec.JobTemplate.Spec.Selector })...),
	"apps/StatefulSet": append([]column{nameCol,
		col("Ready", "string", 0, typed(func(s *appsv1.StatefulSet, _ time.Time) any {
			return fmt.Sprintf("%d/%d", s.Status.ReadyReplicas, deref(s.Spec.Replicas))
		})),
		ageCol,
	}, podTemplateColumns[*appsv1.StatefulSet](func(s *appsv1.StatefulSet) *corev1.PodSpec { return &s.Spec.Template.Spec }, nil)...),
	"apps/ControllerRevision": {nameCol,
		col("Controller", "string", 0, typed(func(r *appsv1.ControllerRevision, _ time.Time) any { return revisionController(r) })),
		col("Revision", "integer", 0, typed(func(r *appsv1.ControllerRevision, _ time.Time) any { return r.Revision })),
		ageCol,
	},
	"policy/PodDisruptionBudget": {nameCol,
		col("Min Available", "string", 0, typed(func(b *policyv1.PodDisruptionBudget, _ time.Time) any { return intOrStringOrNA(b.Spec.MinAvailable) })),
		col("Max Unavailable", "string", 0, typed(func(b *policyv1.PodDisruptionBudget, _ time.Time) any { return intOrStringOrNA(b.Spec.MaxUnavailable) })),
		col("Allowed Disruptions", "integer", 0, typed(func(b *policyv1.PodDisruptionBudget, _ time.Time) any { return b.Status.DisruptionsAllowed })),
		ageCol,
	},
}

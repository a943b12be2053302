package apiserver

import (
	"context"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prepareForCreate resets what a client may not set on create and applies
// the defaults upstream's apiserver applies (controllers dereference them).
func (s *Server) prepareForCreate(ctx context.Context, res *Resource, obj runtime.Object) error {
	if res.Prepare != nil {
		res.Prepare(obj, nil)
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		o.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
		setNamespaceNameLabel(o)
		ensureNamespaceFinalizer(o)
	case *corev1.Pod:
		o.Status = corev1.PodStatus{Phase: corev1.PodPending}
		defaultPodSpec(&o.Spec)
		if o.Spec.NodeName != "" {
			o.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		}
	case *appsv1.Deployment:
		o.Status = appsv1.DeploymentStatus{}
		defaultDeployment(o)
	case *appsv1.ReplicaSet:
		o.Status = appsv1.ReplicaSetStatus{}
		if o.Spec.Replicas == nil {
			o.Spec.Replicas = ptr(int32(1))
		}
		defaultPodSpec(&o.Spec.Template.Spec)
	case *appsv1.DaemonSet:
		o.Status = appsv1.DaemonSetStatus{}
		defaultPodSpec(&o.Spec.Template.Spec)
		defaultDaemonSetStrategy(o)
		if o.Spec.RevisionHistoryLimit == nil {
			o.Spec.RevisionHistoryLimit = ptr(int32(10))
		}
	case *corev1.Service:
		o.Status = corev1.ServiceStatus{}
		if err := s.defaultService(ctx, o); err != nil {
			return err
		}
	case *corev1.Secret:
		if o.Type == "" {
			o.Type = corev1.SecretTypeOpaque
		}
		mergeStringData(o)
	case *rbacv1.RoleBinding:
		defaultSubjects(o.Subjects)
	case *rbacv1.ClusterRoleBinding:
		defaultSubjects(o.Subjects)
	default:
		defaultWorkloadKinds(obj, nil)
	}
	return nil
}

// mergeStringData folds a Secret's write-only stringData into data (its
// keys win) and drops it, as upstream's conversion of v1 Secrets does:
// stringData is never stored or returned.
func mergeStringData(s *corev1.Secret) {
	if len(s.StringData) == 0 {
		s.StringData = nil
		return
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

// defaultSubjects fills a User or Group subject's apiGroup, as upstream's
// rbac defaulting (SetDefaults_Subject).
func defaultSubjects(subjects []rbacv1.Subject) {
	for i := range subjects {
		if subjects[i].APIGroup == "" && (subjects[i].Kind == rbacv1.UserKind || subjects[i].Kind == rbacv1.GroupKind) {
			subjects[i].APIGroup = rbacv1.GroupName
		}
	}
}

// prepareForUpdate keeps immutable fields and re-applies defaults that a
// full PUT may have dropped.
func (s *Server) prepareForUpdate(ctx context.Context, res *Resource, obj, old runtime.Object) error {
	if res.Prepare != nil {
		res.Prepare(obj, old)
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		setNamespaceNameLabel(o)
		// Spec finalizers change only through namespaces/finalize, as
		// upstream; a plain update keeps the stored ones.
		if writeInfoFrom(ctx).sub != "finalize" {
			o.Spec.Finalizers = old.(*corev1.Namespace).Spec.Finalizers
		}
	case *corev1.Pod:
		defaultPodSpec(&o.Spec)
	case *appsv1.Deployment:
		defaultDeployment(o)
	case *appsv1.ReplicaSet:
		if o.Spec.Replicas == nil {
			o.Spec.Replicas = ptr(int32(1))
		}
		defaultPodSpec(&o.Spec.Template.Spec)
	case *appsv1.DaemonSet:
		defaultPodSpec(&o.Spec.Template.Spec)
		defaultDaemonSetStrategy(o)
	case *corev1.Service:
		prev := old.(*corev1.Service)
		defaultServicePorts(o)
		if o.Spec.Type == "" {
			o.Spec.Type = corev1.ServiceTypeClusterIP
		}
		if o.Spec.SessionAffinity == "" {
			o.Spec.SessionAffinity = corev1.ServiceAffinityNone
		}
		return s.serviceTypeChange(ctx, o, prev)
	case *corev1.Secret:
		if o.Type == "" {
			o.Type = old.(*corev1.Secret).Type
		}
		mergeStringData(o)
	case *rbacv1.RoleBinding:
		defaultSubjects(o.Subjects)
	case *rbacv1.ClusterRoleBinding:
		defaultSubjects(o.Subjects)
	default:
		defaultWorkloadKinds(obj, old)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func defaultPodSpec(s *corev1.PodSpec) {
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(corev1.DefaultTerminationGracePeriodSeconds))
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	if s.ServiceAccountName == "" {
		s.ServiceAccountName = "default"
	}
	for _, cs := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range cs {
			c := &cs[i]
			if c.TerminationMessagePath == "" {
				c.TerminationMessagePath = corev1.TerminationMessagePathDefault
			}
			if c.TerminationMessagePolicy == "" {
				c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
			}
			if c.ImagePullPolicy == "" {
				c.ImagePullPolicy = corev1.PullIfNotPresent
				if img := c.Image; !strings.Contains(img[strings.LastIndex(img, "/")+1:], ":") || strings.HasSuffix(img, ":latest") {
					c.ImagePullPolicy = corev1.PullAlways
				}
			}
			for j := range c.Ports {
				if c.Ports[j].Protocol == "" {
					c.Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	}
}

func defaultDeployment(d *appsv1.Deployment) {
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = ptr(int32(1))
	}
	if d.Spec.Strategy.Type == "" {
		d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if d.Spec.Strategy.RollingUpdate == nil {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		q := intstr.FromString("25%")
		if d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = &q
		}
		if d.Spec.Strategy.RollingUpdate.MaxSurge == nil {
			d.Spec.Strategy.RollingUpdate.MaxSurge = &q
		}
	}
	if d.Spec.RevisionHistoryLimit == nil {
		d.Spec.RevisionHistoryLimit = ptr(int32(10))
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		d.Spec.ProgressDeadlineSeconds = ptr(int32(600))
	}
	defaultPodSpec(&d.Spec.Template.Spec)
}

// defaultService fills the type and allocates a ClusterIP.
func (s *Server) defaultService(ctx context.Context, svc *corev1.Service) error {
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if svc.Spec.SessionAffinity == "" {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	defaultServicePorts(svc)
	if err := s.allocateClusterIP(ctx, svc); err != nil {
		return err
	}
	if err := s.allocateNodePorts(ctx, svc, nil); err != nil {
		s.releaseClusterIP(ctx, svc)
		return err
	}
	return nil
}

func defaultServicePorts(svc *corev1.Service) {
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
}

func labelsSet(m map[string]string) labels.Set { return labels.Set(m) }

// setNamespaceNameLabel keeps kubernetes.io/metadata.name, which namespace
// selectors (NetworkPolicy, webhooks) rely on, equal to the name.
func setNamespaceNameLabel(ns *corev1.Namespace) {
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[corev1.LabelMetadataName] = ns.Name
}

// tracksGeneration says whether metadata.generation counts spec changes
// for this kind, as upstream's strategies do for workloads, pods and
// ingresses (not for config, namespaces, nodes or services).
func tracksGeneration(res *Resource) bool {
	if res.Custom != nil {
		return true
	}
	switch res.Group + "/" + res.Kind {
	case "/Pod", "apps/Deployment", "apps/ReplicaSet", "apps/DaemonSet", "networking.k8s.io/Ingress",
		"batch/Job", "batch/CronJob", "apps/StatefulSet", "policy/PodDisruptionBudget",
		"apiextensions.k8s.io/CustomResourceDefinition":
		return true
	}
	return false
}

// defaultDaemonSetStrategy is upstream's: RollingUpdate with
// maxUnavailable 1 and maxSurge 0.
func defaultDaemonSetStrategy(ds *appsv1.DaemonSet) {
	u := &ds.Spec.UpdateStrategy
	if u.Type == "" {
		u.Type = appsv1.RollingUpdateDaemonSetStrategyType
	}
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		return
	}
	if u.RollingUpdate == nil {
		u.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
	}
	if u.RollingUpdate.MaxUnavailable == nil {
		one := intstr.FromInt32(1)
		u.RollingUpdate.MaxUnavailable = &one
	}
	if u.RollingUpdate.MaxSurge == nil {
		zero := intstr.FromInt32(0)
		u.RollingUpdate.MaxSurge = &zero
	}
}

package apiserver

import (
	"context"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// prepareForCreate resets what a client may not set on create and applies
// the defaults upstream's apiserver applies (controllers dereference them).
func (s *Server) prepareForCreate(ctx context.Context, res *Resource, obj runtime.Object) error {
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
		if o.Spec.UpdateStrategy.Type == "" {
			o.Spec.UpdateStrategy.Type = appsv1.RollingUpdateDaemonSetStrategyType
		}
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
	}
	return nil
}

// prepareForUpdate keeps immutable fields and re-applies defaults that a
// full PUT may have dropped.
func (s *Server) prepareForUpdate(ctx context.Context, res *Resource, obj, old runtime.Object) error {
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
	case *corev1.Service:
		prev := old.(*corev1.Service)
		if o.Spec.ClusterIP == "" {
			o.Spec.ClusterIP, o.Spec.ClusterIPs = prev.Spec.ClusterIP, prev.Spec.ClusterIPs
		}
		defaultServicePorts(o)
		if o.Spec.Type == "" {
			o.Spec.Type = corev1.ServiceTypeClusterIP
		}
		if o.Spec.SessionAffinity == "" {
			o.Spec.SessionAffinity = corev1.ServiceAffinityNone
		}
	case *corev1.Secret:
		if o.Type == "" {
			o.Type = old.(*corev1.Secret).Type
		}
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
	return s.allocateClusterIP(ctx, svc)
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

// validateObject checks names, labels and the fields whose absence would
// break a controller. old is nil on create.
func validateObject(res *Resource, obj, old runtime.Object) field.ErrorList {
	m, _ := meta.Accessor(obj)
	var errs field.ErrorList
	mp := field.NewPath("metadata")
	name := m.GetName()
	switch {
	case name == "":
		errs = append(errs, field.Required(mp.Child("name"), "name or generateName is required"))
	default:
		var msgs []string
		switch obj.(type) {
		case *corev1.Namespace:
			msgs = validation.IsDNS1123Label(name)
		case *corev1.Service:
			msgs = validation.IsDNS1035Label(name)
		case *rbacv1.Role, *rbacv1.ClusterRole, *rbacv1.RoleBinding, *rbacv1.ClusterRoleBinding:
			if strings.ContainsAny(name, "/%") || name == "." || name == ".." {
				msgs = []string{`may not contain '/' or '%' and may not be '.' or '..'`}
			}
		default:
			msgs = validation.IsDNS1123Subdomain(name)
		}
		for _, msg := range msgs {
			errs = append(errs, field.Invalid(mp.Child("name"), name, msg))
		}
	}
	errs = append(errs, metav1validation.ValidateLabels(m.GetLabels(), mp.Child("labels"))...)
	for k := range m.GetAnnotations() {
		for _, msg := range validation.IsQualifiedName(strings.ToLower(k)) {
			errs = append(errs, field.Invalid(mp.Child("annotations"), k, msg))
		}
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		errs = append(errs, validatePodSpec(&o.Spec, field.NewPath("spec"))...)
		if old != nil {
			if prev := old.(*corev1.Pod); prev.Spec.NodeName != "" && prev.Spec.NodeName != o.Spec.NodeName {
				errs = append(errs, field.Forbidden(field.NewPath("spec", "nodeName"), "may not be changed once set"))
			}
		}
	case *appsv1.Deployment:
		errs = append(errs, validateSelector(o.Spec.Selector, o.Spec.Template.Labels, field.NewPath("spec"))...)
		errs = append(errs, validatePodSpec(&o.Spec.Template.Spec, field.NewPath("spec", "template", "spec"))...)
		if o.Spec.Replicas != nil && *o.Spec.Replicas < 0 {
			errs = append(errs, field.Invalid(field.NewPath("spec", "replicas"), *o.Spec.Replicas, "must be greater than or equal to 0"))
		}
	case *appsv1.ReplicaSet:
		errs = append(errs, validateSelector(o.Spec.Selector, o.Spec.Template.Labels, field.NewPath("spec"))...)
		errs = append(errs, validatePodSpec(&o.Spec.Template.Spec, field.NewPath("spec", "template", "spec"))...)
	case *appsv1.DaemonSet:
		errs = append(errs, validateSelector(o.Spec.Selector, o.Spec.Template.Labels, field.NewPath("spec"))...)
		errs = append(errs, validatePodSpec(&o.Spec.Template.Spec, field.NewPath("spec", "template", "spec"))...)
	case *corev1.Service:
		for i, p := range o.Spec.Ports {
			if p.Port < 1 || p.Port > 65535 {
				errs = append(errs, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("port"), p.Port, "must be between 1 and 65535, inclusive"))
			}
		}
		if old != nil {
			if prev := old.(*corev1.Service); prev.Spec.ClusterIP != "" && prev.Spec.ClusterIP != o.Spec.ClusterIP {
				errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIP"), o.Spec.ClusterIP, "field is immutable"))
			}
		}
	}
	return errs
}

func validatePodSpec(s *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), "at least one container is required"))
	}
	names := map[string]bool{}
	for i, c := range s.Containers {
		cp := p.Child("containers").Index(i)
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			errs = append(errs, field.Invalid(cp.Child("name"), c.Name, msg))
		}
		if names[c.Name] {
			errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
		}
		names[c.Name] = true
		if c.Image == "" {
			errs = append(errs, field.Required(cp.Child("image"), ""))
		}
	}
	switch s.RestartPolicy {
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(p.Child("restartPolicy"), s.RestartPolicy, []string{"Always", "OnFailure", "Never"}))
	}
	return errs
}

func validateSelector(sel *metav1.LabelSelector, tmplLabels map[string]string, p *field.Path) field.ErrorList {
	if sel == nil {
		return field.ErrorList{field.Required(p.Child("selector"), "")}
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return field.ErrorList{field.Invalid(p.Child("selector"), sel, err.Error())}
	}
	if s.Empty() {
		return field.ErrorList{field.Invalid(p.Child("selector"), sel, "empty selector is invalid for a workload")}
	}
	if !s.Matches(labelsSet(tmplLabels)) {
		return field.ErrorList{field.Invalid(p.Child("template", "metadata", "labels"), tmplLabels, "`selector` does not match template `labels`")}
	}
	return nil
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
	switch res.Group + "/" + res.Kind {
	case "/Pod", "apps/Deployment", "apps/ReplicaSet", "apps/DaemonSet", "networking.k8s.io/Ingress":
		return true
	}
	return false
}

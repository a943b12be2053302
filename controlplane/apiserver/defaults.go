package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/apiserver/storage"
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

// defaultService fills the type and allocates a ClusterIP from the service
// CIDR (the first address belongs to the "kubernetes" Service).
func (s *Server) defaultService(ctx context.Context, svc *corev1.Service) error {
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if svc.Spec.SessionAffinity == "" {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	defaultServicePorts(svc)
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	if s.cfg.ServiceCIDR == "" {
		return nil
	}
	prefix, err := netip.ParsePrefix(s.cfg.ServiceCIDR)
	if err != nil {
		return apierrors.NewInternalError(fmt.Errorf("service CIDR %q: %w", s.cfg.ServiceCIDR, err))
	}
	used := map[netip.Addr]bool{}
	svcRes := s.reg.Lookup("", "v1", "services")
	lr, err := s.store.List(ctx, svcRes.KeyPrefix(""), storageListAll)
	if err != nil {
		return storageError(err, groupResource(svcRes), svc.Name)
	}
	for _, kv := range lr.Items {
		o, err := decodeStored(svcRes, kv)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(o.(*corev1.Service).Spec.ClusterIP); err == nil {
			used[a] = true
		}
	}
	if svc.Spec.ClusterIP != "" {
		a, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !prefix.Contains(a) {
			return apierrors.NewInvalid(svcRes.GroupVersion().WithKind("Service").GroupKind(), svc.Name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "clusterIP"), svc.Spec.ClusterIP, "must be an address in the service CIDR "+prefix.String())})
		}
		ok := !used[a]
		if ok {
			if ok, err = s.reserveClusterIP(ctx, a, svc); err != nil {
				return err
			}
		}
		if !ok {
			return apierrors.NewInvalid(svcRes.GroupVersion().WithKind("Service").GroupKind(), svc.Name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "clusterIP"), svc.Spec.ClusterIP, "provided IP is already allocated")})
		}
	} else {
		first := prefix.Masked().Addr().Next()
		start := first.Next()
		if svc.Namespace == metav1.NamespaceDefault && svc.Name == "kubernetes" {
			start = first
		}
		for a := start; prefix.Contains(a) && a.Next().IsValid() && prefix.Contains(a.Next()); a = a.Next() {
			if used[a] {
				continue
			}
			// The listing is only a hint: the reservation decides, so two
			// concurrent creates never get the same address.
			ok, err := s.reserveClusterIP(ctx, a, svc)
			if err != nil {
				return err
			}
			if ok {
				svc.Spec.ClusterIP = a.String()
				break
			}
		}
		if svc.Spec.ClusterIP == "" {
			return apierrors.NewInternalError(fmt.Errorf("no ClusterIP left in %s", prefix))
		}
	}
	svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	fam := corev1.IPv4Protocol
	if netip.MustParseAddr(svc.Spec.ClusterIP).Is6() {
		fam = corev1.IPv6Protocol
	}
	svc.Spec.IPFamilies = []corev1.IPFamily{fam}
	svc.Spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicySingleStack)
	svc.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
	return nil
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

var storageListAll = storage.ListOptions{}

func labelsSet(m map[string]string) labels.Set { return labels.Set(m) }

// clusterIPKey is where a ClusterIP's reservation is kept; its value names
// the Service holding it.
func clusterIPKey(ip string) string { return "/registry/kforge.dev/serviceips/" + ip }

// reserveClusterIP claims an address in one etcd transaction; false means
// another Service holds it. A dry run claims nothing.
func (s *Server) reserveClusterIP(ctx context.Context, a netip.Addr, svc *corev1.Service) (bool, error) {
	if dryRunFrom(ctx) {
		_, err := s.store.Get(ctx, clusterIPKey(a.String()))
		return errors.Is(err, storage.ErrNotFound), nil
	}
	_, err := s.store.Create(ctx, clusterIPKey(a.String()), []byte(svc.Namespace+"/"+svc.Name))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, storage.ErrAlreadyExists):
		return false, nil
	}
	return false, apierrors.NewInternalError(err)
}

// releaseClusterIP frees a deleted (or never created) Service's address.
func (s *Server) releaseClusterIP(ctx context.Context, obj runtime.Object) {
	svc, ok := obj.(*corev1.Service)
	if !ok || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || dryRunFrom(ctx) {
		return
	}
	if _, err := s.store.Delete(context.WithoutCancel(ctx), clusterIPKey(svc.Spec.ClusterIP), 0); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.log.Warn("releasing a ClusterIP", "ip", svc.Spec.ClusterIP, "err", err)
	}
}

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

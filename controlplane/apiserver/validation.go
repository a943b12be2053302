package apiserver

import (
	"fmt"
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"kforge.dev/kforge/internal/ingressvalidation"
)

// validateObject is the validation upstream's registry strategies run
// before a write: object metadata for every kind, then the kind's own
// rules; old is nil on create. The errors become a 422 Invalid whose
// details.causes name each field.
func validateObject(res *Resource, obj, old runtime.Object) field.ErrorList {
	m, err := meta.Accessor(obj)
	if err != nil {
		return field.ErrorList{field.InternalError(field.NewPath("metadata"), err)}
	}
	mp := field.NewPath("metadata")
	// Names, generateName, namespace, labels, annotations (256 KiB in
	// all), owner references and finalizers, as upstream's
	// ValidateObjectMeta(Accessor) with the kind's name rule.
	errs := apivalidation.ValidateObjectMetaAccessor(m, res.Namespaced, nameRule(obj), mp)
	if old != nil {
		if om, err := meta.Accessor(old); err == nil {
			errs = append(errs, apivalidation.ValidateObjectMetaAccessorUpdate(m, om, mp)...)
		}
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		errs = append(errs, validatePodSpec(&o.Spec, field.NewPath("spec"))...)
		if old != nil {
			errs = append(errs, validatePodUpdate(o, old.(*corev1.Pod))...)
		}
	case *appsv1.Deployment:
		errs = append(errs, validateWorkload(o.Spec.Selector, &o.Spec.Template, o.Spec.Replicas)...)
		if old != nil {
			errs = append(errs, immutableSelector(o.Spec.Selector, old.(*appsv1.Deployment).Spec.Selector)...)
		}
	case *appsv1.ReplicaSet:
		errs = append(errs, validateWorkload(o.Spec.Selector, &o.Spec.Template, o.Spec.Replicas)...)
		if old != nil {
			errs = append(errs, immutableSelector(o.Spec.Selector, old.(*appsv1.ReplicaSet).Spec.Selector)...)
		}
	case *appsv1.DaemonSet:
		errs = append(errs, validateWorkload(o.Spec.Selector, &o.Spec.Template, nil)...)
		if old != nil {
			errs = append(errs, immutableSelector(o.Spec.Selector, old.(*appsv1.DaemonSet).Spec.Selector)...)
		}
	case *corev1.Service:
		errs = append(errs, validateService(o)...)
		if old != nil {
			errs = append(errs, validateServiceUpdate(o, old.(*corev1.Service))...)
		}
	case *corev1.ConfigMap:
		errs = append(errs, validateDataKeys(keysOf(o.Data, o.BinaryData), field.NewPath("data"))...)
		if old != nil {
			prev := old.(*corev1.ConfigMap)
			errs = append(errs, validateImmutableData(prev.Immutable, o.Immutable, !reflect.DeepEqual(prev.Data, o.Data) || !reflect.DeepEqual(prev.BinaryData, o.BinaryData))...)
		}
	case *corev1.Secret:
		errs = append(errs, validateDataKeys(keysOf(nil, o.Data), field.NewPath("data"))...)
		if old != nil {
			prev := old.(*corev1.Secret)
			errs = append(errs, validateImmutableData(prev.Immutable, o.Immutable, !reflect.DeepEqual(prev.Data, o.Data))...)
			if prev.Type != o.Type {
				errs = append(errs, field.Invalid(field.NewPath("type"), o.Type, "field is immutable"))
			}
		}
	case *rbacv1.Role:
		errs = append(errs, validatePolicyRules(o.Rules, true)...)
	case *rbacv1.ClusterRole:
		errs = append(errs, validatePolicyRules(o.Rules, false)...)
	case *rbacv1.RoleBinding:
		errs = append(errs, validateBinding(o.RoleRef, o.Subjects, true)...)
		if old != nil {
			errs = append(errs, immutableRoleRef(o.RoleRef, old.(*rbacv1.RoleBinding).RoleRef)...)
		}
	case *rbacv1.ClusterRoleBinding:
		errs = append(errs, validateBinding(o.RoleRef, o.Subjects, false)...)
		if old != nil {
			errs = append(errs, immutableRoleRef(o.RoleRef, old.(*rbacv1.ClusterRoleBinding).RoleRef)...)
		}
	case *networkingv1.Ingress:
		errs = append(errs, ingressvalidation.Validate(o)...)
	default:
		errs = append(errs, validateWorkloadKinds(obj, old)...)
		errs = append(errs, validateClusterKinds(obj, old)...)
	}
	if res.Validate != nil {
		errs = append(errs, res.Validate(obj, old)...)
	}
	return errs
}

// nameRule is the name check of each kind, as upstream's: DNS labels for
// namespaces, RFC 1035 labels for services, path segments for RBAC
// objects, DNS subdomains for the rest.
func nameRule(obj runtime.Object) apivalidation.ValidateNameFunc {
	switch obj.(type) {
	case *corev1.Namespace:
		return apivalidation.NameIsDNSLabel
	case *corev1.Service:
		return apivalidation.NameIsDNS1035Label
	case *rbacv1.Role, *rbacv1.ClusterRole, *rbacv1.RoleBinding, *rbacv1.ClusterRoleBinding:
		return path.ValidatePathSegmentName
	}
	return apivalidation.NameIsDNSSubdomain
}

// validatePodSpec follows the parts of upstream's ValidatePodSpec
// (pkg/apis/core/validation) that controllers rely on: containers with
// unique DNS-label names and an image, valid ports, a known restart
// policy.
func validatePodSpec(s *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), "must have at least one container"))
	}
	names := map[string]bool{}
	for _, set := range []struct {
		name string
		cs   []corev1.Container
	}{{"initContainers", s.InitContainers}, {"containers", s.Containers}} {
		for i, c := range set.cs {
			cp := p.Child(set.name).Index(i)
			if c.Name == "" {
				errs = append(errs, field.Required(cp.Child("name"), ""))
			}
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				errs = append(errs, field.Invalid(cp.Child("name"), c.Name, msg))
			}
			if names[c.Name] {
				errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
			}
			names[c.Name] = true
			if strings.TrimSpace(c.Image) == "" {
				errs = append(errs, field.Required(cp.Child("image"), ""))
			}
			for j, port := range c.Ports {
				pp := cp.Child("ports").Index(j)
				for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
					errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
				}
				errs = append(errs, validateProtocol(port.Protocol, pp.Child("protocol"))...)
			}
		}
	}
	switch s.RestartPolicy {
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(p.Child("restartPolicy"), s.RestartPolicy, []string{"Always", "OnFailure", "Never"}))
	}
	return append(errs, validatePodSpecDetail(s, p)...)
}

// podUpdateForbidden is upstream's message for a pod update that changes
// more than it may.
const podUpdateForbidden = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"

// validatePodUpdate follows upstream's ValidatePodUpdate: a pod's spec is
// immutable but for container images, activeDeadlineSeconds, added
// tolerations, terminationGracePeriodSeconds and removed scheduling gates.
// spec.nodeName is set by pods/binding only (or at creation), never by
// an update, as upstream.
func validatePodUpdate(pod, old *corev1.Pod) field.ErrorList {
	sp := field.NewPath("spec")
	var errs field.ErrorList
	// Copy the fields that may change from the new spec into the old one;
	// any other difference is forbidden.
	mutable := old.Spec.DeepCopy()
	if len(mutable.Containers) == len(pod.Spec.Containers) {
		for i := range mutable.Containers {
			mutable.Containers[i].Image = pod.Spec.Containers[i].Image
		}
	}
	if len(mutable.InitContainers) == len(pod.Spec.InitContainers) {
		for i := range mutable.InitContainers {
			mutable.InitContainers[i].Image = pod.Spec.InitContainers[i].Image
		}
	}
	mutable.ActiveDeadlineSeconds = pod.Spec.ActiveDeadlineSeconds
	mutable.TerminationGracePeriodSeconds = pod.Spec.TerminationGracePeriodSeconds
	if hasAll(pod.Spec.Tolerations, old.Spec.Tolerations) {
		mutable.Tolerations = pod.Spec.Tolerations
	}
	if hasAll(old.Spec.SchedulingGates, pod.Spec.SchedulingGates) {
		mutable.SchedulingGates = pod.Spec.SchedulingGates
	}
	if !reflect.DeepEqual(*mutable, pod.Spec) {
		errs = append(errs, field.Forbidden(sp, podUpdateForbidden))
	}
	return errs
}

// hasAll reports whether every element of sub is in all.
func hasAll[T any](all, sub []T) bool {
	for _, s := range sub {
		found := false
		for _, a := range all {
			if reflect.DeepEqual(a, s) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// validateWorkload checks a Deployment's, ReplicaSet's or DaemonSet's
// selector (required, non-empty, matching the template's labels), its
// template's pod spec and its replicas, as upstream's apps validation.
func validateWorkload(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, replicas *int32) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	switch s, err := metav1.LabelSelectorAsSelector(sel); {
	case sel == nil:
		errs = append(errs, field.Required(p.Child("selector"), ""))
	case err != nil:
		errs = append(errs, field.Invalid(p.Child("selector"), sel, err.Error()))
	case s.Empty():
		errs = append(errs, field.Invalid(p.Child("selector"), sel, "empty selector is invalid for deployment"))
	case !s.Matches(labelsSet(tmpl.Labels)):
		errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
	}
	errs = append(errs, validatePodSpec(&tmpl.Spec, p.Child("template", "spec"))...)
	if tmpl.Spec.RestartPolicy != "" && tmpl.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(p.Child("template", "spec", "restartPolicy"), tmpl.Spec.RestartPolicy, []string{string(corev1.RestartPolicyAlways)}))
	}
	if replicas != nil && *replicas < 0 {
		errs = append(errs, field.Invalid(p.Child("replicas"), *replicas, "must be greater than or equal to 0"))
	}
	return errs
}

// immutableSelector is upstream's rule for apps/v1 workloads: the
// selector never changes after creation.
func immutableSelector(sel, old *metav1.LabelSelector) field.ErrorList {
	return apivalidation.ValidateImmutableField(sel, old, field.NewPath("spec", "selector"))
}

func validateProtocol(p corev1.Protocol, fp *field.Path) field.ErrorList {
	switch p {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		return nil
	case "":
		return field.ErrorList{field.Required(fp, "")}
	}
	return field.ErrorList{field.NotSupported(fp, p, []string{"SCTP", "TCP", "UDP"})}
}

// validateService follows upstream's ValidateService: a known type, ports
// 1-65535 unique by port and protocol, named when there are several,
// target ports that are numbers 1-65535 or IANA names, and an
// ExternalName service with a DNS name and no cluster IPs.
func validateService(svc *corev1.Service) field.ErrorList {
	sp := field.NewPath("spec")
	var errs field.ErrorList
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
		if len(svc.Spec.Ports) == 0 && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			errs = append(errs, field.Required(sp.Child("ports"), ""))
		}
	case corev1.ServiceTypeExternalName:
		if svc.Spec.ClusterIP != "" || len(svc.Spec.ClusterIPs) > 0 {
			errs = append(errs, field.Forbidden(sp.Child("clusterIPs"), "may not be set for ExternalName services"))
		}
		if svc.Spec.ExternalName == "" {
			errs = append(errs, field.Required(sp.Child("externalName"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Subdomain(strings.TrimSuffix(svc.Spec.ExternalName, ".")) {
				errs = append(errs, field.Invalid(sp.Child("externalName"), svc.Spec.ExternalName, msg))
			}
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("type"), svc.Spec.Type, []string{"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"}))
	}
	names := map[string]bool{}
	seen := map[string]bool{}
	for i, p := range svc.Spec.Ports {
		pp := sp.Child("ports").Index(i)
		if len(svc.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), ""))
		} else if p.Name != "" {
			for _, msg := range validation.IsDNS1123Label(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			if names[p.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names[p.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
		}
		errs = append(errs, validateProtocol(p.Protocol, pp.Child("protocol"))...)
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if seen[key] {
			errs = append(errs, field.Duplicate(pp, key))
		}
		seen[key] = true
		switch p.TargetPort.Type {
		case intstr.Int:
			if p.TargetPort.IntVal != 0 {
				for _, msg := range validation.IsValidPortNum(int(p.TargetPort.IntVal)) {
					errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.IntVal, msg))
				}
			}
		case intstr.String:
			for _, msg := range validation.IsValidPortName(p.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.StrVal, msg))
			}
		}
	}
	return errs
}

// validateServiceUpdate follows upstream's ValidateServiceUpdate: the
// cluster IP does not change once set, unless the service changes to or
// from ExternalName (which releases or allocates one).
func validateServiceUpdate(svc, old *corev1.Service) field.ErrorList {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || old.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	var errs field.ErrorList
	sp := field.NewPath("spec")
	if old.Spec.ClusterIP != "" && svc.Spec.ClusterIP != old.Spec.ClusterIP {
		errs = append(errs, field.Invalid(sp.Child("clusterIP"), svc.Spec.ClusterIP, "field is immutable"))
	}
	if len(old.Spec.ClusterIPs) > 0 && (len(svc.Spec.ClusterIPs) == 0 || svc.Spec.ClusterIPs[0] != old.Spec.ClusterIPs[0]) {
		errs = append(errs, field.Invalid(sp.Child("clusterIPs").Index(0), svc.Spec.ClusterIPs, "may not change once set"))
	}
	return errs
}

func keysOf(a map[string]string, b map[string][]byte) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		out = append(out, k)
	}
	return out
}

// validateDataKeys is upstream's rule for ConfigMap and Secret keys: each
// a valid config key (letters, digits, '-', '_', '.').
func validateDataKeys(keys []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range keys {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(p, k, msg))
		}
	}
	return errs
}

// validateImmutableData is upstream's rule for ConfigMaps and Secrets
// marked immutable: neither the data nor the mark may change.
func validateImmutableData(oldImmutable, newImmutable *bool, dataChanged bool) field.ErrorList {
	if oldImmutable == nil || !*oldImmutable {
		return nil
	}
	var errs field.ErrorList
	if newImmutable == nil || !*newImmutable {
		errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
	}
	if dataChanged {
		errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
	}
	return errs
}

// validatePolicyRules follows upstream's rbac ValidatePolicyRule: every
// rule has verbs; a resource rule has apiGroups and resources, a
// nonResourceURLs rule (cluster roles only) has neither.
func validatePolicyRules(rules []rbacv1.PolicyRule, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	for i, r := range rules {
		p := field.NewPath("rules").Index(i)
		if len(r.Verbs) == 0 {
			errs = append(errs, field.Required(p.Child("verbs"), "verbs must contain at least one value"))
		}
		if len(r.NonResourceURLs) > 0 {
			if namespaced {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "namespaced rules cannot apply to non-resource URLs"))
			}
			if len(r.APIGroups) > 0 || len(r.Resources) > 0 || len(r.ResourceNames) > 0 {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "rules cannot apply to both regular resources and non-resource URLs"))
			}
			continue
		}
		if len(r.APIGroups) == 0 {
			errs = append(errs, field.Required(p.Child("apiGroups"), "resource rules must supply at least one api group"))
		}
		if len(r.Resources) == 0 {
			errs = append(errs, field.Required(p.Child("resources"), "resource rules must supply at least one resource"))
		}
	}
	return errs
}

// validateBinding follows upstream's rbac ValidateRoleBinding: a roleRef
// to a Role (namespaced bindings only) or ClusterRole by a valid name, and
// subjects of a known kind with a name.
func validateBinding(ref rbacv1.RoleRef, subjects []rbacv1.Subject, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	rp := field.NewPath("roleRef")
	if ref.APIGroup != rbacv1.GroupName {
		errs = append(errs, field.NotSupported(rp.Child("apiGroup"), ref.APIGroup, []string{rbacv1.GroupName}))
	}
	kinds := []string{"ClusterRole"}
	if namespaced {
		kinds = []string{"ClusterRole", "Role"}
	}
	if ref.Kind != "ClusterRole" && !(namespaced && ref.Kind == "Role") {
		errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, kinds))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), ""))
	} else {
		for _, msg := range path.ValidatePathSegmentName(ref.Name, false) {
			errs = append(errs, field.Invalid(rp.Child("name"), ref.Name, msg))
		}
	}
	for i, s := range subjects {
		sp := field.NewPath("subjects").Index(i)
		if s.Name == "" {
			errs = append(errs, field.Required(sp.Child("name"), ""))
		}
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			if s.APIGroup != "" {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{""}))
			}
			if !namespaced && s.Namespace == "" {
				errs = append(errs, field.Required(sp.Child("namespace"), ""))
			}
		case rbacv1.UserKind, rbacv1.GroupKind:
			if s.APIGroup != rbacv1.GroupName {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{rbacv1.GroupName}))
			}
		default:
			errs = append(errs, field.NotSupported(sp.Child("kind"), s.Kind, []string{rbacv1.ServiceAccountKind, rbacv1.UserKind, rbacv1.GroupKind}))
		}
	}
	return errs
}

// immutableRoleRef is upstream's ValidateRoleBindingUpdate rule: a
// binding's roleRef cannot change (delete and recreate it instead).
func immutableRoleRef(ref, old rbacv1.RoleRef) field.ErrorList {
	if ref != old {
		return field.ErrorList{field.Invalid(field.NewPath("roleRef"), ref, "cannot change roleRef")}
	}
	return nil
}

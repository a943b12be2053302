package apiserver

import (
	"fmt"
	"path"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validatePodSpecDetail checks what upstream's ValidatePodSpec checks
// beyond container names, images and ports (validatePodSpec): volumes and
// their mounts, environment variables, resources, probes and hooks, host
// ports, DNS policy, pull policy and deadlines. Each rule follows the
// upstream function named above it (k8s.io/kubernetes
// pkg/apis/core/validation), with upstream's field paths and messages.
func validatePodSpecDetail(s *corev1.PodSpec, p *field.Path) field.ErrorList {
	errs, volumes := validateVolumes(s.Volumes, p.Child("volumes"))
	for _, set := range []struct {
		name string
		cs   []corev1.Container
	}{{"initContainers", s.InitContainers}, {"containers", s.Containers}} {
		for i := range set.cs {
			c := &set.cs[i]
			cp := p.Child(set.name).Index(i)
			errs = append(errs, validateVolumeMounts(c.VolumeMounts, volumes, cp.Child("volumeMounts"))...)
			errs = append(errs, validateEnv(c.Env, cp.Child("env"))...)
			errs = append(errs, validateResources(&c.Resources, cp.Child("resources"))...)
			errs = append(errs, validateContainerPorts(c.Ports, s.HostNetwork, cp.Child("ports"))...)
			errs = append(errs, validatePullPolicy(c.ImagePullPolicy, cp.Child("imagePullPolicy"))...)
			restartable := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
			if set.name == "containers" || restartable {
				errs = append(errs, validateProbe(c.LivenessProbe, true, cp.Child("livenessProbe"))...)
				errs = append(errs, validateProbe(c.ReadinessProbe, false, cp.Child("readinessProbe"))...)
				errs = append(errs, validateProbe(c.StartupProbe, true, cp.Child("startupProbe"))...)
			} else {
				// validateInitContainers: a regular init container runs to
				// completion, so probes mean nothing for it.
				for _, pr := range []struct {
					name string
					set  bool
				}{{"livenessProbe", c.LivenessProbe != nil}, {"readinessProbe", c.ReadinessProbe != nil}, {"startupProbe", c.StartupProbe != nil}} {
					if pr.set {
						errs = append(errs, field.Forbidden(cp.Child(pr.name), "may not be set for init containers without restartPolicy=Always"))
					}
				}
			}
			if c.Lifecycle != nil {
				errs = append(errs, validateHandler(c.Lifecycle.PostStart, cp.Child("lifecycle", "postStart"))...)
				errs = append(errs, validateHandler(c.Lifecycle.PreStop, cp.Child("lifecycle", "preStop"))...)
			}
		}
	}
	// validateDNSPolicy and validatePodDNSConfig.
	switch s.DNSPolicy {
	case "", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault:
	case corev1.DNSNone:
		if s.DNSConfig == nil || len(s.DNSConfig.Nameservers) == 0 {
			errs = append(errs, field.Required(p.Child("dnsConfig", "nameservers"), "must provide at least one DNS nameserver when DNSPolicy is None"))
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("dnsPolicy"), s.DNSPolicy,
			[]string{string(corev1.DNSClusterFirst), string(corev1.DNSClusterFirstWithHostNet), string(corev1.DNSDefault), string(corev1.DNSNone)}))
	}
	// ValidatePodSpec: activeDeadlineSeconds.
	if d := s.ActiveDeadlineSeconds; d != nil && (*d < 1 || *d > 2147483647) {
		errs = append(errs, field.Invalid(p.Child("activeDeadlineSeconds"), *d, "must be between 1 and 2147483647, inclusive"))
	}
	if g := s.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		errs = append(errs, field.Invalid(p.Child("terminationGracePeriodSeconds"), *g, "must be greater than or equal to 0"))
	}
	return errs
}

// volumeSourceCount counts the sources set in a VolumeSource, which has
// one pointer field per kind.
func volumeSourceCount(vs *corev1.VolumeSource) int {
	n := 0
	v := reflect.ValueOf(vs).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			n++
		}
	}
	return n
}

// validateVolumes follows upstream's ValidateVolumes: unique DNS-label
// names, exactly one source, and the required fields of the common ones.
// It returns the volume names for the mounts to refer to.
func validateVolumes(vols []corev1.Volume, p *field.Path) (field.ErrorList, sets.Set[string]) {
	var errs field.ErrorList
	names := sets.New[string]()
	for i := range vols {
		v := &vols[i]
		vp := p.Index(i)
		switch {
		case v.Name == "":
			errs = append(errs, field.Required(vp.Child("name"), ""))
		case names.Has(v.Name):
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		default:
			for _, msg := range validation.IsDNS1123Label(v.Name) {
				errs = append(errs, field.Invalid(vp.Child("name"), v.Name, msg))
			}
		}
		names.Insert(v.Name)
		switch n := volumeSourceCount(&v.VolumeSource); {
		case n == 0:
			errs = append(errs, field.Required(vp, "must specify a volume type"))
		case n > 1:
			errs = append(errs, field.Forbidden(vp, "may not specify more than 1 volume type"))
		}
		switch {
		case v.HostPath != nil:
			if v.HostPath.Path == "" {
				errs = append(errs, field.Required(vp.Child("hostPath", "path"), ""))
			}
		case v.Secret != nil:
			if v.Secret.SecretName == "" {
				errs = append(errs, field.Required(vp.Child("secret", "secretName"), ""))
			}
			errs = append(errs, validateKeyToPaths(v.Secret.Items, vp.Child("secret", "items"))...)
		case v.ConfigMap != nil:
			if v.ConfigMap.Name == "" {
				errs = append(errs, field.Required(vp.Child("configMap", "name"), ""))
			}
			errs = append(errs, validateKeyToPaths(v.ConfigMap.Items, vp.Child("configMap", "items"))...)
		case v.EmptyDir != nil:
			if l := v.EmptyDir.SizeLimit; l != nil && l.Sign() < 0 {
				errs = append(errs, field.Invalid(vp.Child("emptyDir", "sizeLimit"), l.String(), "must be greater than or equal to 0"))
			}
		}
	}
	return errs, names
}

// validateKeyToPaths: keys required, paths relative without "..", as
// upstream's validateKeyToPath and validateLocalDescendingPath.
func validateKeyToPaths(items []corev1.KeyToPath, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, it := range items {
		ip := p.Index(i)
		if it.Key == "" {
			errs = append(errs, field.Required(ip.Child("key"), ""))
		}
		if it.Path == "" {
			errs = append(errs, field.Required(ip.Child("path"), ""))
		}
		errs = append(errs, validateLocalDescendingPath(it.Path, ip.Child("path"))...)
	}
	return errs
}

// validateLocalDescendingPath follows upstream's: relative, and no ".."
// element.
func validateLocalDescendingPath(target string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if path.IsAbs(target) {
		errs = append(errs, field.Invalid(p, target, "must be a relative path"))
	}
	for _, part := range strings.Split(target, "/") {
		if part == ".." {
			errs = append(errs, field.Invalid(p, target, "must not contain '..'"))
			break
		}
	}
	return errs
}

// validateVolumeMounts follows upstream's ValidateVolumeMounts: a mount
// names a volume of the pod, has a unique mount path and a relative
// subPath.
func validateVolumeMounts(mounts []corev1.VolumeMount, volumes sets.Set[string], p *field.Path) field.ErrorList {
	var errs field.ErrorList
	paths := sets.New[string]()
	for i, m := range mounts {
		mp := p.Index(i)
		if m.Name == "" {
			errs = append(errs, field.Required(mp.Child("name"), ""))
		} else if !volumes.Has(m.Name) {
			errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
		}
		if m.MountPath == "" {
			errs = append(errs, field.Required(mp.Child("mountPath"), ""))
		} else if paths.Has(m.MountPath) {
			errs = append(errs, field.Invalid(mp.Child("mountPath"), m.MountPath, "must be unique"))
		}
		paths.Insert(m.MountPath)
		if m.SubPath != "" {
			errs = append(errs, validateLocalDescendingPath(m.SubPath, mp.Child("subPath"))...)
		}
	}
	return errs
}

// validateEnv follows upstream's ValidateEnv (relaxed names, GA since
// 1.34): a name of printable ASCII without '=', and at most one of value
// and valueFrom, valueFrom with exactly one source.
func validateEnv(env []corev1.EnvVar, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, e := range env {
		ep := p.Index(i)
		if e.Name == "" {
			errs = append(errs, field.Required(ep.Child("name"), ""))
		} else {
			for _, msg := range validation.IsRelaxedEnvVarName(e.Name) {
				errs = append(errs, field.Invalid(ep.Child("name"), e.Name, msg))
			}
		}
		if e.ValueFrom == nil {
			continue
		}
		vp := ep.Child("valueFrom")
		n := 0
		if e.ValueFrom.FieldRef != nil {
			n++
			if e.ValueFrom.FieldRef.FieldPath == "" {
				errs = append(errs, field.Required(vp.Child("fieldRef", "fieldPath"), ""))
			}
		}
		if e.ValueFrom.ResourceFieldRef != nil {
			n++
			if e.ValueFrom.ResourceFieldRef.Resource == "" {
				errs = append(errs, field.Required(vp.Child("resourceFieldRef", "resource"), ""))
			}
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			n++
			if r.Key == "" {
				errs = append(errs, field.Required(vp.Child("configMapKeyRef", "key"), ""))
			}
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			n++
			if r.Key == "" {
				errs = append(errs, field.Required(vp.Child("secretKeyRef", "key"), ""))
			}
		}
		if e.ValueFrom.FileKeyRef != nil {
			n++
		}
		switch {
		case n == 0:
			errs = append(errs, field.Invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef` or `fileKeyRef`"))
		case n > 1:
			errs = append(errs, field.Invalid(vp, "", "may not have more than one field specified at a time"))
		case e.Value != "":
			errs = append(errs, field.Invalid(vp, "", "may not be specified when `value` is not empty"))
		}
	}
	return errs
}

// validateResources follows upstream's ValidateContainerResourceRequirements:
// quantities are not negative, a request does not exceed its limit, and
// hugepages and extended resources have both.
func validateResources(r *corev1.ResourceRequirements, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	check := func(list corev1.ResourceList, lp *field.Path) {
		for name, q := range list {
			if q.Sign() < 0 {
				errs = append(errs, field.Invalid(lp.Key(string(name)), q.String(), "must be greater than or equal to 0"))
			}
		}
	}
	check(r.Limits, p.Child("limits"))
	check(r.Requests, p.Child("requests"))
	for name, req := range r.Requests {
		lim, ok := r.Limits[name]
		if ok && req.Cmp(lim) > 0 {
			errs = append(errs, field.Invalid(p.Child("requests").Key(string(name)), req.String(),
				fmt.Sprintf("must be less than or equal to %s limit of %s", name, lim.String())))
		}
	}
	return errs
}

// validateContainerPorts follows upstream's validateContainerPorts for
// what validatePodSpec leaves: port names, host ports, and host network
// pods whose hostPort must equal the containerPort.
func validateContainerPorts(ports []corev1.ContainerPort, hostNetwork bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i, port := range ports {
		pp := p.Index(i)
		if port.Name != "" {
			for _, msg := range validation.IsValidPortName(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if names.Has(port.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names.Insert(port.Name)
		}
		if port.HostPort != 0 {
			for _, msg := range validation.IsValidPortNum(int(port.HostPort)) {
				errs = append(errs, field.Invalid(pp.Child("hostPort"), port.HostPort, msg))
			}
			if hostNetwork && port.HostPort != port.ContainerPort {
				errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, "must match `hostPort` when `hostNetwork` is true"))
			}
		}
	}
	return errs
}

func validatePullPolicy(pp corev1.PullPolicy, p *field.Path) field.ErrorList {
	switch pp {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		return nil
	}
	return field.ErrorList{field.NotSupported(p, pp, []string{string(corev1.PullAlways), string(corev1.PullIfNotPresent), string(corev1.PullNever)})}
}

// validateProbe follows upstream's validateProbe (and the liveness and
// startup rule that successThreshold is 1): one handler, no negative
// timings.
func validateProbe(pr *corev1.Probe, successMustBeOne bool, p *field.Path) field.ErrorList {
	if pr == nil {
		return nil
	}
	errs := validateHandlerCount(pr.Exec != nil, pr.HTTPGet != nil, pr.TCPSocket != nil, pr.GRPC != nil, false, p)
	if pr.HTTPGet != nil {
		errs = append(errs, validateHTTPGet(pr.HTTPGet, p.Child("httpGet"))...)
	}
	for _, f := range []struct {
		name string
		v    int32
	}{{"initialDelaySeconds", pr.InitialDelaySeconds}, {"timeoutSeconds", pr.TimeoutSeconds}, {"periodSeconds", pr.PeriodSeconds},
		{"successThreshold", pr.SuccessThreshold}, {"failureThreshold", pr.FailureThreshold}} {
		if f.v < 0 {
			errs = append(errs, field.Invalid(p.Child(f.name), f.v, "must be greater than or equal to 0"))
		}
	}
	if g := pr.TerminationGracePeriodSeconds; g != nil && *g <= 0 {
		errs = append(errs, field.Invalid(p.Child("terminationGracePeriodSeconds"), *g, "must be greater than 0"))
	}
	if successMustBeOne && pr.SuccessThreshold != 0 && pr.SuccessThreshold != 1 {
		errs = append(errs, field.Invalid(p.Child("successThreshold"), pr.SuccessThreshold, "must be 1"))
	}
	return errs
}

// validateHandler follows upstream's validateLifecycleHandler.
func validateHandler(h *corev1.LifecycleHandler, p *field.Path) field.ErrorList {
	if h == nil {
		return nil
	}
	errs := validateHandlerCount(h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, false, h.Sleep != nil, p)
	if h.HTTPGet != nil {
		errs = append(errs, validateHTTPGet(h.HTTPGet, p.Child("httpGet"))...)
	}
	if h.Sleep != nil && h.Sleep.Seconds < 0 {
		errs = append(errs, field.Invalid(p.Child("sleep", "seconds"), h.Sleep.Seconds, "must be non-negative"))
	}
	return errs
}

func validateHandlerCount(exec, httpGet, tcp, grpc, sleep bool, p *field.Path) field.ErrorList {
	n := 0
	for _, b := range []bool{exec, httpGet, tcp, grpc, sleep} {
		if b {
			n++
		}
	}
	switch {
	case n == 0:
		return field.ErrorList{field.Required(p, "must specify a handler type")}
	case n > 1:
		return field.ErrorList{field.Forbidden(p, "may not specify more than 1 handler type")}
	}
	return nil
}

// validateHTTPGet follows upstream's validateHTTPGetAction: a port, and a
// scheme of HTTP or HTTPS.
func validateHTTPGet(g *corev1.HTTPGetAction, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if g.Port.IntValue() == 0 && g.Port.StrVal == "" {
		errs = append(errs, field.Required(p.Child("port"), ""))
	} else if g.Port.StrVal == "" {
		for _, msg := range validation.IsValidPortNum(g.Port.IntValue()) {
			errs = append(errs, field.Invalid(p.Child("port"), g.Port.IntValue(), msg))
		}
	}
	switch g.Scheme {
	case "", corev1.URISchemeHTTP, corev1.URISchemeHTTPS:
	default:
		errs = append(errs, field.NotSupported(p.Child("scheme"), g.Scheme, []string{string(corev1.URISchemeHTTP), string(corev1.URISchemeHTTPS)}))
	}
	return errs
}

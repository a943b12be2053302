package nodeagent

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
)

// objectSource reads the ConfigMaps and Secrets pods refer to.
type objectSource interface {
	ConfigMap(namespace, name string) (*corev1.ConfigMap, error)
	Secret(namespace, name string) (*corev1.Secret, error)
}

// configError is a container's configuration that cannot be resolved
// (yet): upstream's CreateContainerConfigError.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// envInput is everything a container's environment is resolved from.
type envInput struct {
	pod         *corev1.Pod
	container   *corev1.Container
	services    []*corev1.Service // the pod's namespace's and default/kubernetes
	objects     objectSource
	podIP       string
	hostIP      string
	allocatable corev1.ResourceList // the node's, for limits a container leaves unset
}

// containerEnv resolves a container's environment in upstream's order:
// the service variables, then envFrom, then env (a later entry wins), with
// $(VAR) references expanded against the variables defined before them.
func containerEnv(in envInput) ([]string, error) {
	var order []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range serviceEnv(in.pod, in.services) {
		set(kv[0], kv[1])
	}
	ns := in.pod.Namespace
	for _, from := range in.container.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := in.objects.ConfigMap(ns, from.ConfigMapRef.Name)
			if err != nil {
				if optional(from.ConfigMapRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, lookupError("configmap", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(cm.Data) {
				set(from.Prefix+k, cm.Data[k])
			}
		case from.SecretRef != nil:
			s, err := in.objects.Secret(ns, from.SecretRef.Name)
			if err != nil {
				if optional(from.SecretRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, lookupError("secret", from.SecretRef.Name, err)
			}
			keys := make([]string, 0, len(s.Data))
			for k := range s.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				set(from.Prefix+k, string(s.Data[k]))
			}
		}
	}
	for _, e := range in.container.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, vals))
			continue
		}
		v, ok, err := envValueFrom(in, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out, nil
}

func optional(b *bool) bool { return b != nil && *b }

func lookupError(kind, name string, err error) error {
	if apierrors.IsNotFound(err) {
		return &configError{msg: fmt.Sprintf("%s %q not found", kind, name)}
	}
	return fmt.Errorf("%s %q: %w", kind, name, err)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// envValueFrom resolves one valueFrom; ok is false when an optional
// source is missing (the variable is then left out, as upstream does).
func envValueFrom(in envInput, src *corev1.EnvVarSource) (string, bool, error) {
	ns := in.pod.Namespace
	switch {
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := in.objects.ConfigMap(ns, ref.Name)
		if err != nil {
			if optional(ref.Optional) && apierrors.IsNotFound(err) {
				return "", false, nil
			}
			return "", false, lookupError("configmap", ref.Name, err)
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional(ref.Optional) {
			return "", false, nil
		}
		return "", false, &configError{msg: fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, ns, ref.Name)}
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := in.objects.Secret(ns, ref.Name)
		if err != nil {
			if optional(ref.Optional) && apierrors.IsNotFound(err) {
				return "", false, nil
			}
			return "", false, lookupError("secret", ref.Name, err)
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional(ref.Optional) {
			return "", false, nil
		}
		return "", false, &configError{msg: fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, ns, ref.Name)}
	case src.FieldRef != nil:
		v, err := podFieldValue(in.pod, src.FieldRef.FieldPath, in.podIP, in.hostIP)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		v, err := resourceFieldValue(in, src.ResourceFieldRef)
		return v, err == nil, err
	}
	return "", false, &configError{msg: "valueFrom names no source"}
}

// podFieldValue is the downward API's value of a pod field.
func podFieldValue(pod *corev1.Pod, path, podIP, hostIP string) (string, error) {
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	}
	return "", &configError{msg: fmt.Sprintf("unsupported fieldRef %q", path)}
}

// subscript parses prefix['key'].
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

// resourceFieldValue is a container's request or limit divided by the
// divisor and rounded up; an unset limit is the node's allocatable, as
// upstream does.
func resourceFieldValue(in envInput, ref *corev1.ResourceFieldSelector) (string, error) {
	c := in.container
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		found := false
		for i := range in.pod.Spec.Containers {
			if in.pod.Spec.Containers[i].Name == ref.ContainerName {
				c, found = &in.pod.Spec.Containers[i], true
			}
		}
		if !found {
			return "", &configError{msg: fmt.Sprintf("resourceFieldRef: no container %q", ref.ContainerName)}
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", &configError{msg: fmt.Sprintf("unsupported resourceFieldRef %q", ref.Resource)}
	}
	rn := corev1.ResourceName(name)
	var q resource.Quantity
	if kind == "limits" {
		if v, ok := c.Resources.Limits[rn]; ok {
			q = v
		} else {
			q = in.allocatable[rn]
		}
	} else {
		q = c.Resources.Requests[rn]
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if rn == corev1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// expandVars replaces $(NAME) by vals[NAME] when NAME is defined and
// $$ by $, leaving other references as written (upstream's rules).
func expandVars(s string, vals map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vals[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// serviceEnv is the docker-links style variables upstream gives every
// container: for each Service with a cluster IP in the pod's namespace
// (when enableServiceLinks is not false) and for default/kubernetes
// always. A namespace's own service wins over the default one of the
// same name.
func serviceEnv(pod *corev1.Pod, services []*corev1.Service) [][2]string {
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	byName := map[string]*corev1.Service{}
	for _, s := range services {
		if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		if s.Namespace == "default" && s.Name == "kubernetes" {
			if _, ok := byName[s.Name]; !ok {
				byName[s.Name] = s
			}
			continue
		}
		if links && s.Namespace == pod.Namespace {
			byName[s.Name] = s
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var out [][2]string
	for _, n := range names {
		s := byName[n]
		prefix := strings.ToUpper(strings.ReplaceAll(n, "-", "_"))
		ip := s.Spec.ClusterIP
		out = append(out, [2]string{prefix + "_SERVICE_HOST", ip})
		if len(s.Spec.Ports) == 0 {
			continue
		}
		out = append(out, [2]string{prefix + "_SERVICE_PORT", strconv.Itoa(int(s.Spec.Ports[0].Port))})
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				out = append(out, [2]string{prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), strconv.Itoa(int(p.Port))})
			}
		}
		first := s.Spec.Ports[0]
		out = append(out, [2]string{prefix + "_PORT", linkURL(first, ip)})
		for _, p := range s.Spec.Ports {
			proto := string(p.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			base := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
			out = append(out,
				[2]string{base, linkURL(p, ip)},
				[2]string{base + "_PROTO", strings.ToLower(proto)},
				[2]string{base + "_PORT", strconv.Itoa(int(p.Port))},
				[2]string{base + "_ADDR", ip})
		}
	}
	return out
}

func linkURL(p corev1.ServicePort, ip string) string {
	proto := strings.ToLower(string(p.Protocol))
	if proto == "" {
		proto = "tcp"
	}
	host := ip
	if strings.Contains(ip, ":") {
		host = "[" + ip + "]"
	}
	return fmt.Sprintf("%s://%s:%d", proto, host, p.Port)
}

package nodeagent

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// fakeObjects serves ConfigMaps and Secrets from maps keyed ns/name.
type fakeObjects struct {
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func (f *fakeObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	if c, ok := f.cms[ns+"/"+name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f *fakeObjects) Secret(ns, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func svc(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: ports}}
}

func TestContainerEnv(t *testing.T) {
	yes := true
	objects := &fakeObjects{
		cms:     map[string]*corev1.ConfigMap{"app/cfg": {Data: map[string]string{"mode": "fast", "level": "3"}}},
		secrets: map[string]*corev1.Secret{"app/creds": {Data: map[string][]byte{"user": []byte("ann"), "pass": []byte("s3cret")}}},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "app", UID: "uid-1", Labels: map[string]string{"tier": "front"}},
		Spec:       corev1.PodSpec{NodeName: "w1", ServiceAccountName: "sa"},
	}
	c := &corev1.Container{
		Name: "web",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: &yes}},
		},
		Env: []corev1.EnvVar{
			{Name: "PLAIN", Value: "v"},
			{Name: "EXPANDED", Value: "$(PLAIN)-$(CFG_mode)-$(UNDEFINED)-$$(PLAIN)"},
			{Name: "USER", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "user"}}},
			{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "level"}}},
			{Name: "MAYBE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: &yes}}},
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "TIER", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['tier']"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "HOST", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu"}}},
			{Name: "PLAIN", Value: "overridden"},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
	}
	services := []*corev1.Service{
		svc("default", "kubernetes", "10.96.0.1", corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}),
		svc("app", "redis-main", "10.96.0.7", corev1.ServicePort{Port: 6379}),
		svc("app", "headless", corev1.ClusterIPNone, corev1.ServicePort{Port: 80}),
	}
	env, err := containerEnv(envInput{pod: pod, container: c, services: services, objects: objects, podIP: "198.19.7.5", hostIP: "198.18.0.21"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var order []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
		order = append(order, k)
	}
	want := map[string]string{
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
		"REDIS_MAIN_SERVICE_HOST": "10.96.0.7", "REDIS_MAIN_SERVICE_PORT": "6379", "REDIS_MAIN_PORT": "tcp://10.96.0.7:6379",
		"CFG_mode": "fast", "CFG_level": "3",
		"PLAIN": "overridden", "EXPANDED": "v-fast-$(UNDEFINED)-$(PLAIN)", "USER": "ann", "LEVEL": "3",
		"POD": "web-1", "TIER": "front", "IP": "198.19.7.5", "HOST": "198.18.0.21", "NODE": "w1", "MEM": "64", "CPU": "1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"MAYBE", "HEADLESS_SERVICE_HOST"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s is set", k)
		}
	}
	if order[0] != "KUBERNETES_SERVICE_HOST" {
		t.Errorf("service variables do not come first: %v", order)
	}

	// enableServiceLinks: false keeps only the kubernetes service.
	no := false
	pod.Spec.EnableServiceLinks = &no
	env, err = containerEnv(envInput{pod: pod, container: &corev1.Container{}, services: services, objects: objects})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(env, " "), "REDIS") || !strings.Contains(strings.Join(env, " "), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("enableServiceLinks false: %v", env)
	}
}

func TestContainerEnvMissingSourcesAreConfigErrors(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "app"}}
	objects := &fakeObjects{cms: map[string]*corev1.ConfigMap{"app/cfg": {Data: map[string]string{"a": "1"}}}}
	for name, e := range map[string]corev1.EnvVar{
		"missing configmap": {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "a"}}},
		"missing key": {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "b"}}},
		"missing secret": {Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "a"}}},
		"unknown field": {Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nothing"}}},
	} {
		_, err := containerEnv(envInput{pod: pod, container: &corev1.Container{Env: []corev1.EnvVar{e}}, objects: objects})
		var ce *configError
		if err == nil || !asConfigError(err, &ce) {
			t.Errorf("%s: %v, want a configError", name, err)
		}
	}
}

func asConfigError(err error, target **configError) bool {
	for err != nil {
		if ce, ok := err.(*configError); ok {
			*target = ce
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestExpandVars(t *testing.T) {
	vals := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$(C)":           "$(C)",
		"$$(A)":          "$(A)",
		"$$":             "$",
		"$(A":            "$(A",
		"cost: $5":       "cost: $5",
		"trailing $":     "trailing $",
		"$(A)$(A)$$$(B)": "11$two",
	} {
		if got := expandVars(in, vals); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerArgs(t *testing.T) {
	vals := map[string]string{"PORT": "8080"}
	ep, cmd := []string{"/entry"}, []string{"serve"}
	for _, tc := range []struct {
		command, args, want []string
	}{
		{nil, nil, []string{"/entry", "serve"}},
		{nil, []string{"run", "--port=$(PORT)"}, []string{"/entry", "run", "--port=8080"}},
		{[]string{"sh", "-c"}, nil, []string{"sh", "-c"}},
		{[]string{"httpd", "-p", "$(PORT)"}, []string{"-f"}, []string{"httpd", "-p", "8080", "-f"}},
	} {
		got := containerArgs(&corev1.Container{Command: tc.command, Args: tc.args}, ep, cmd, vals)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("command %v args %v: %v, want %v", tc.command, tc.args, got, tc.want)
		}
	}
}

package apiserver

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestServiceAccountAdmission(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	pods := e.admin.CoreV1().Pods("default")
	newPod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "a", Image: "busybox"}, {Name: "b", Image: "busybox"}}}}
	}
	// No default account yet: refused, as upstream, until it exists.
	_, err := pods.Create(ctx, newPod("early"), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `serviceaccount "default" not found`) {
		t.Fatalf("a pod before its account: %v", err)
	}
	no := false
	must(e.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}}}, metav1.CreateOptions{})).get(t)
	must(e.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "quiet"},
		AutomountServiceAccountToken: &no}, metav1.CreateOptions{})).get(t)

	p := must(pods.Create(ctx, newPod("p"), metav1.CreateOptions{})).get(t)
	if p.Spec.ServiceAccountName != "default" || len(p.Spec.ImagePullSecrets) != 1 {
		t.Errorf("account %q, pull secrets %v", p.Spec.ServiceAccountName, p.Spec.ImagePullSecrets)
	}
	if len(p.Spec.Volumes) != 1 || !strings.HasPrefix(p.Spec.Volumes[0].Name, "kube-api-access-") || p.Spec.Volumes[0].Projected == nil {
		t.Fatalf("volumes %+v", p.Spec.Volumes)
	}
	src := p.Spec.Volumes[0].Projected.Sources
	if len(src) != 3 || src[0].ServiceAccountToken == nil || *src[0].ServiceAccountToken.ExpirationSeconds != 3607 ||
		src[1].ConfigMap == nil || src[1].ConfigMap.Name != "kube-root-ca.crt" || src[1].ConfigMap.Items[0].Key != "ca.crt" ||
		src[2].DownwardAPI == nil || src[2].DownwardAPI.Items[0].FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("projected sources %+v", src)
	}
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != ServiceAccountTokenPath || !c.VolumeMounts[0].ReadOnly ||
			c.VolumeMounts[0].Name != p.Spec.Volumes[0].Name {
			t.Errorf("container %s mounts %+v", c.Name, c.VolumeMounts)
		}
	}

	// Automount off, on the account or on the pod: nothing mounted.
	q := newPod("q")
	q.Spec.ServiceAccountName = "quiet"
	if q = must(pods.Create(ctx, q, metav1.CreateOptions{})).get(t); len(q.Spec.Volumes) != 0 {
		t.Errorf("an account with automount off got %+v", q.Spec.Volumes)
	}
	r := newPod("r")
	r.Spec.AutomountServiceAccountToken = &no
	if r = must(pods.Create(ctx, r, metav1.CreateOptions{})).get(t); len(r.Spec.Volumes) != 0 {
		t.Errorf("a pod with automount off got %+v", r.Spec.Volumes)
	}
	missing := newPod("m")
	missing.Spec.ServiceAccountName = "ghost"
	if _, err := pods.Create(ctx, missing, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a pod naming a missing account: %v", err)
	}
}

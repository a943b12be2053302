package apiserver

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
)

// What ServiceAccount admission mounts, as upstream.
const (
	// ServiceAccountTokenPath is where every container finds its token,
	// the cluster CA and its namespace (client-go's InClusterConfig).
	ServiceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// RootCAConfigMap is the ConfigMap, in every namespace, that holds
	// the cluster CA under "ca.crt".
	RootCAConfigMap = "kube-root-ca.crt"
	// tokenVolumePrefix names the projected volume.
	tokenVolumePrefix = "kube-api-access-"
	// tokenVolumeExpiration is the token lifetime the volume asks for:
	// an hour and seven seconds, upstream's marker of an
	// admission-injected token.
	tokenVolumeExpiration = 3607
	defaultServiceAccount = "default"
)

// admitServiceAccount is upstream's ServiceAccount admission on pod
// create, on when the server signs service-account tokens:
// spec.serviceAccountName defaults to "default"; a pod naming a missing
// service account is refused (so a pod in a new namespace waits for the
// controller manager to create "default"); the account's image pull
// secrets are used when the pod names none; and unless
// automountServiceAccountToken is false (on the pod, else on the account)
// every container mounts the projected kube-api-access-XXXXX volume (a
// token, the cluster CA, the namespace) at ServiceAccountTokenPath.
// Mirror pods are left alone.
func (s *Server) admitServiceAccount(ctx context.Context, res *Resource, obj runtime.Object) error {
	pod, ok := obj.(*corev1.Pod)
	if !ok || s.cfg.Identity.ServiceAccount == nil {
		return nil
	}
	if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return nil
	}
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = defaultServiceAccount
	}
	pod.Spec.DeprecatedServiceAccount = pod.Spec.ServiceAccountName
	saObj, err := s.get(ctx, s.reg.Lookup("", "v1", "serviceaccounts"), pod.Namespace, pod.Spec.ServiceAccountName)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return apierrors.NewForbidden(groupResource(res), pod.Name, fmt.Errorf("error looking up service account %s/%s: serviceaccount %q not found",
				pod.Namespace, pod.Spec.ServiceAccountName, pod.Spec.ServiceAccountName))
		}
		return err
	}
	sa := saObj.(*corev1.ServiceAccount)
	if len(pod.Spec.ImagePullSecrets) == 0 && len(sa.ImagePullSecrets) > 0 {
		pod.Spec.ImagePullSecrets = append([]corev1.LocalObjectReference{}, sa.ImagePullSecrets...)
	}
	automount := true
	switch {
	case pod.Spec.AutomountServiceAccountToken != nil:
		automount = *pod.Spec.AutomountServiceAccountToken
	case sa.AutomountServiceAccountToken != nil:
		automount = *sa.AutomountServiceAccountToken
	}
	if !automount {
		return nil
	}
	name := ""
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, tokenVolumePrefix) && v.Projected != nil {
			name = v.Name
			break
		}
	}
	if name == "" {
		name = tokenVolumePrefix + rand.String(5)
		pod.Spec.Volumes = append(pod.Spec.Volumes, tokenVolume(name))
	}
	mount := func(cs []corev1.Container) {
		for i := range cs {
			mounted := false
			for _, m := range cs[i].VolumeMounts {
				mounted = mounted || m.MountPath == ServiceAccountTokenPath
			}
			if !mounted {
				cs[i].VolumeMounts = append(cs[i].VolumeMounts, corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: ServiceAccountTokenPath})
			}
		}
	}
	mount(pod.Spec.InitContainers)
	mount(pod.Spec.Containers)
	return nil
}

// tokenVolume is the projected volume ServiceAccount admission adds.
func tokenVolume(name string) corev1.Volume {
	exp := int64(tokenVolumeExpiration)
	mode := int32(0o644)
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: &mode,
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: RootCAConfigMap},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		}}}}
}

package apiserver

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// reservationOwner is who holds ip's reservation in etcd, "" for nobody.
func reservationOwner(t *testing.T, e *env, ip string) string {
	t.Helper()
	resp, err := e.etcd.Get(context.Background(), clusterIPKey(ip))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// TestClusterIPFollowsTypeChangesAndOwners: a Service that becomes
// ExternalName gives its address back, one that stops being ExternalName
// gets one, and a create refused for asking another Service's address
// leaves that reservation alone.
func TestClusterIPFollowsTypeChangesAndOwners(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	svcs := e.admin.CoreV1().Services("default")
	a, err := svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := a.Spec.ClusterIP
	if owner := reservationOwner(t, e, ip); owner != "default/a/"+string(a.UID) {
		t.Fatalf("reservation of %s: %q", ip, owner)
	}

	// Another Service asking for a's address is refused and frees nothing.
	_, err = svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "b"},
		Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("taking a's address: %v, want 422", err)
	}
	if owner := reservationOwner(t, e, ip); owner != "default/a/"+string(a.UID) {
		t.Fatalf("after the refused create, the reservation of %s is %q", ip, owner)
	}

	// To ExternalName: the address goes, and its reservation with it.
	ext, err := svcs.Patch(ctx, "a", types.MergePatchType,
		[]byte(`{"spec":{"type":"ExternalName","externalName":"example.com","ports":null}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("to ExternalName: %v", err)
	}
	if ext.Spec.ClusterIP != "" || len(ext.Spec.ClusterIPs) != 0 {
		t.Fatalf("ExternalName keeps %q %v", ext.Spec.ClusterIP, ext.Spec.ClusterIPs)
	}
	if owner := reservationOwner(t, e, ip); owner != "" {
		t.Fatalf("%s still reserved by %q", ip, owner)
	}

	// Back to ClusterIP: a new address, reserved.
	back, err := svcs.Patch(ctx, "a", types.MergePatchType,
		[]byte(`{"spec":{"type":"ClusterIP","externalName":null,"ports":[{"port":80}]}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("back to ClusterIP: %v", err)
	}
	if back.Spec.ClusterIP == "" || len(back.Spec.ClusterIPs) != 1 || back.Spec.ClusterIPs[0] != back.Spec.ClusterIP {
		t.Fatalf("no address after leaving ExternalName: %q %v", back.Spec.ClusterIP, back.Spec.ClusterIPs)
	}
	if owner := reservationOwner(t, e, back.Spec.ClusterIP); owner != "default/a/"+string(a.UID) {
		t.Fatalf("reservation of the new address %s: %q", back.Spec.ClusterIP, owner)
	}
}

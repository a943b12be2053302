package apiserver

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func nodePortOwner(t *testing.T, e *env, p int32) string {
	t.Helper()
	resp, err := e.etcd.Get(context.Background(), nodePortKey(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// TestNodePortAllocation: an unset NodePort is allocated in range, a
// requested one held by another Service or out of range is a 422 that
// frees nothing, an update keeps the ports, a change to ClusterIP and a
// delete give them back.
func TestNodePortAllocation(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	svcs := e.admin.CoreV1().Services("default")
	a, err := svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "x", Port: 81, NodePort: 30081}}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	auto := a.Spec.Ports[0].NodePort
	if auto < 30000 || auto > 32767 || auto == 30081 || a.Spec.Ports[1].NodePort != 30081 {
		t.Fatalf("node ports %v", a.Spec.Ports)
	}
	owner := "default/a/" + string(a.UID)
	if nodePortOwner(t, e, auto) != owner || nodePortOwner(t, e, 30081) != owner {
		t.Fatalf("reservations: %q %q", nodePortOwner(t, e, auto), nodePortOwner(t, e, 30081))
	}

	for _, tc := range []struct {
		port int32
		msg  string
	}{{30081, "provided port is already allocated"}, {29999, "provided port is not in the valid range. The range of valid ports is 30000-32767"}} {
		_, err = svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "b"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80, NodePort: tc.port}}}}, metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "spec.ports[0].nodePort") {
			t.Errorf("nodePort %d: %v, want 422 %q", tc.port, err, tc.msg)
		}
	}
	if nodePortOwner(t, e, 30081) != owner {
		t.Fatalf("a refused create freed a's port")
	}

	// An update that leaves nodePort unset keeps the port.
	up, err := svcs.Patch(ctx, "a", types.StrategicMergePatchType,
		[]byte(`{"spec":{"ports":[{"name":"http","port":80,"nodePort":null},{"name":"x","port":81,"nodePort":30081}]}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if up.Spec.Ports[0].NodePort != auto {
		t.Errorf("after the update: %v, want %d kept", up.Spec.Ports, auto)
	}

	// To ClusterIP: the ports go.
	cip, err := svcs.Patch(ctx, "a", types.MergePatchType, []byte(`{"spec":{"type":"ClusterIP"}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("to ClusterIP: %v", err)
	}
	if cip.Spec.Ports[0].NodePort != 0 || cip.Spec.Ports[1].NodePort != 0 || nodePortOwner(t, e, 30081) != "" || nodePortOwner(t, e, auto) != "" {
		t.Errorf("after the change to ClusterIP: %v, reservations %q %q", cip.Spec.Ports, nodePortOwner(t, e, 30081), nodePortOwner(t, e, auto))
	}

	// Back to NodePort asking for 30081, then deleted: freed.
	np, err := svcs.Patch(ctx, "a", types.MergePatchType, []byte(`{"spec":{"type":"NodePort","ports":[{"name":"http","port":80,"nodePort":30081}]}}`), metav1.PatchOptions{})
	if err != nil || np.Spec.Ports[0].NodePort != 30081 || nodePortOwner(t, e, 30081) != owner {
		t.Fatalf("back to NodePort: %v %v", np, err)
	}
	if err := svcs.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if nodePortOwner(t, e, 30081) != "" {
		t.Errorf("the deleted Service's port is still reserved")
	}
	b, err := svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "b"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80, NodePort: 30081}}}}, metav1.CreateOptions{})
	if err != nil || b.Spec.Ports[0].NodePort != 30081 {
		t.Errorf("reusing the freed port: %v", err)
	}
}

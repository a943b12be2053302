package apiserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// Nodes, Endpoints, EndpointSlices, Leases and IngressClasses are
// validated as upstream does: 422 with the offending field in the causes.
func TestClusterKindsValidated(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cs := e.admin
	wantInvalid := func(what string, err error, field string) {
		t.Helper()
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want 422 Invalid", what, err)
			return
		}
		if fields := causeFields(err.(apierrors.APIStatus).Status()); !slices.Contains(fields, field) {
			t.Errorf("%s: causes %v, want %s", what, fields, field)
		}
	}
	ptrTo := func(s string) *string { return &s }
	i32 := func(v int32) *int32 { return &v }

	// Nodes.
	bad := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "a", Effect: "Sometimes"}}}}
	_, err := cs.CoreV1().Nodes().Create(ctx, bad, metav1.CreateOptions{})
	wantInvalid("taint effect", err, "spec.taints[0].effect")
	bad.Spec.Taints = []corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoSchedule}, {Key: "a", Value: "b", Effect: corev1.TaintEffectNoSchedule}}
	_, err = cs.CoreV1().Nodes().Create(ctx, bad, metav1.CreateOptions{})
	wantInvalid("duplicate taint", err, "spec.taints[1]")
	bad.Spec = corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "10.244.2.0/24"}}
	_, err = cs.CoreV1().Nodes().Create(ctx, bad, metav1.CreateOptions{})
	wantInvalid("two IPv4 pod CIDRs", err, "spec.podCIDRs[1]")
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.9.0/24", []string{"10.244.9.0/24"}
	_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	wantInvalid("pod CIDR change", err, "spec.podCIDRs")

	// Endpoints: addresses are IPs, several ports need names, TCP by default.
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "ep"}, Subsets: []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: "not-an-ip"}}, Ports: []corev1.EndpointPort{{Port: 80}}}}}
	_, err = cs.CoreV1().Endpoints("default").Create(ctx, ep, metav1.CreateOptions{})
	wantInvalid("endpoint address", err, "subsets[0].addresses[0].ip")
	ep.Subsets[0].Addresses[0].IP = "10.0.0.1"
	ep.Subsets[0].Ports = []corev1.EndpointPort{{Port: 80}, {Port: 81}}
	_, err = cs.CoreV1().Endpoints("default").Create(ctx, ep, metav1.CreateOptions{})
	wantInvalid("unnamed ports", err, "subsets[0].ports[0].name")
	ep.Subsets[0].Ports = []corev1.EndpointPort{{Port: 80}}
	got, err := cs.CoreV1().Endpoints("default").Create(ctx, ep, metav1.CreateOptions{})
	if err != nil || got.Subsets[0].Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("endpoints with one port: %v, %+v", err, got)
	}

	// EndpointSlices.
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s"}, AddressType: "IPv5"}
	_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{})
	wantInvalid("address type", err, "addressType")
	slice.AddressType = discoveryv1.AddressTypeIPv4
	slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"fd00::1"}}}
	_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{})
	wantInvalid("IPv6 address in an IPv4 slice", err, "endpoints[0].addresses[0]")
	slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}}
	slice.Ports = []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: i32(70000)}}
	_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{})
	wantInvalid("port out of range", err, "ports[0].port")
	slice.Ports = []discoveryv1.EndpointPort{{Port: i32(80)}}
	gotSlice, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := gotSlice.Ports[0]; p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP || p.Name == nil {
		t.Errorf("slice port not defaulted: %+v", p)
	}
	gotSlice.AddressType = discoveryv1.AddressTypeFQDN
	_, err = cs.DiscoveryV1().EndpointSlices("default").Update(ctx, gotSlice, metav1.UpdateOptions{})
	wantInvalid("address type change", err, "addressType")

	// Leases.
	_, err = cs.CoordinationV1().Leases("default").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l"},
		Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: i32(0)}}, metav1.CreateOptions{})
	wantInvalid("lease duration", err, "spec.leaseDurationSeconds")

	// Events live in the namespace of the object they are about.
	_, err = cs.CoreV1().Events("default").Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "kube-system", Name: "p"}, Reason: "R", Message: "m"}, metav1.CreateOptions{})
	wantInvalid("event in another namespace", err, "involvedObject.namespace")
	if _, err := cs.CoreV1().Events("default").Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e2"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "n1"}, Reason: "R", Message: "m"}, metav1.CreateOptions{}); err != nil {
		t.Errorf("event about a node in default: %v", err)
	}
	_, err = cs.EventsV1().Events("default").Create(ctx, &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e3"}, EventTime: metav1.NowMicro(),
		Regarding: corev1.ObjectReference{Kind: "Pod", Namespace: "kube-system", Name: "p"}, Reason: "R", Note: "m", Type: "Normal",
		ReportingController: "x/y", ReportingInstance: "i", Action: "A"}, metav1.CreateOptions{})
	wantInvalid("events.k8s.io event in another namespace", err, "regarding.namespace")

	// IngressClasses.
	_, err = cs.NetworkingV1().IngressClasses().Create(ctx, &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{})
	wantInvalid("no controller", err, "spec.controller")
	ic, err := cs.NetworkingV1().IngressClasses().Create(ctx, &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "c"},
		Spec: networkingv1.IngressClassSpec{Controller: "example.com/ingress"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ic.Spec.Controller = "example.com/other"
	_, err = cs.NetworkingV1().IngressClasses().Update(ctx, ic, metav1.UpdateOptions{})
	wantInvalid("controller change", err, "spec.controller")
}

// An apiserver told to stop fails /readyz at once, so load balancers
// take it out while it finishes the requests in flight.
func TestReadyzFailsWhileDraining(t *testing.T) {
	srv, err := New(Options{Store: storage.New(etcdtest.Start(t)), ServiceCIDR: "10.96.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	get := func() int {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv.serving.Store(&ctx)
	if code := get(); code != http.StatusOK {
		t.Fatalf("/readyz while serving: %d", code)
	}
	cancel()
	if code := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d, want 503", code)
	}
}

package apiserver

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestKubernetesEndpointsListEveryApiserver(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	ips := func() string {
		t.Helper()
		ep, err := e.admin.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sl, err := e.admin.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var a, b []string
		for _, sub := range ep.Subsets {
			for _, x := range sub.Addresses {
				a = append(a, fmt.Sprintf("%s:%d", x.IP, sub.Ports[0].Port))
			}
		}
		for _, x := range sl.Endpoints {
			b = append(b, x.Addresses...)
		}
		if fmt.Sprint(len(a)) != fmt.Sprint(len(b)) || sl.Labels["kubernetes.io/service-name"] != "kubernetes" {
			t.Fatalf("endpoints %v and slice %v disagree (labels %v)", a, b, sl.Labels)
		}
		return fmt.Sprint(a)
	}
	for _, addr := range []string{"10.0.0.5:6443", "10.0.0.6:6443"} {
		e.srv.cfg.Advertise = addr
		if err := e.srv.publishEndpoint(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	if got := ips(); got != "[10.0.0.5:6443 10.0.0.6:6443]" {
		t.Fatalf("after two apiservers: %s", got)
	}
	// Publishing again changes nothing; leaving removes only itself.
	if err := e.srv.publishEndpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.publishEndpoint(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := ips(); got != "[10.0.0.5:6443]" {
		t.Fatalf("after one left: %s", got)
	}
}

package apiserver

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
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

// startMaster serves an apiserver advertising addr over a client of its
// own to etcd's members, with a short master lease; closing the returned
// client cuts it off from etcd as a crash would.
func startMaster(t *testing.T, etcd *clientv3.Client, addr string) (*env, *clientv3.Client) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	e := startServerOn(t, cli, func(o *Options) {
		o.Advertise = addr
		o.MasterLeaseTTL = 3 * time.Second
		o.MasterLeaseInterval = 200 * time.Millisecond
	})
	return e, cli
}

// kubernetesIPs reads the addresses of the "kubernetes" Endpoints and
// EndpointSlice; it returns them once when both agree, else both.
func kubernetesIPs(t *testing.T, cs *kubernetes.Clientset) (ips string, rvs [2]string) {
	t.Helper()
	ctx := context.Background()
	ep, err := cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var a, b []string
	for _, sub := range ep.Subsets {
		for _, x := range sub.Addresses {
			a = append(a, x.IP)
		}
	}
	for _, x := range sl.Endpoints {
		b = append(b, x.Addresses...)
	}
	rvs = [2]string{ep.ResourceVersion, sl.ResourceVersion}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		return fmt.Sprintf("endpoints %v, slice %v", a, b), rvs
	}
	return fmt.Sprint(a), rvs
}

// waitForIPs polls until the "kubernetes" Endpoints and EndpointSlice
// both list exactly want.
func waitForIPs(t *testing.T, cs *kubernetes.Clientset, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := kubernetesIPs(t, cs)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubernetes endpoints: %s, want %s", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leaseHeld(t *testing.T, etcd *clientv3.Client, ip string) bool {
	t.Helper()
	resp, err := etcd.Get(context.Background(), masterLeasePrefix+ip)
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Kvs) > 0
}

func TestMasterLeasesKeepTheKubernetesEndpointsToLiveApiservers(t *testing.T) {
	etcd := etcdtest.Start(t)
	ctx := context.Background()
	a, _ := startMaster(t, etcd, "10.0.0.1:6443")
	b, bEtcd := startMaster(t, etcd, "10.0.0.2:6443")
	c, _ := startMaster(t, etcd, "10.0.0.3:6443")
	waitForIPs(t, a.admin, "[10.0.0.1 10.0.0.2 10.0.0.3]")

	// An address without a lease (a master from before, gone) is pruned.
	ep, err := a.admin.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, corev1.EndpointAddress{IP: "10.0.0.9"})
	if _, err := a.admin.CoreV1().Endpoints("default").Update(ctx, ep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForIPs(t, a.admin, "[10.0.0.1 10.0.0.2 10.0.0.3]")

	// Steady masters write nothing: several rounds of all three leave the
	// objects' resource versions alone.
	_, before := kubernetesIPs(t, a.admin)
	time.Sleep(10 * 200 * time.Millisecond)
	if _, after := kubernetesIPs(t, a.admin); after != before {
		t.Fatalf("resource versions moved without a change: %v then %v", before, after)
	}

	// b crashes: cut off from etcd, it can neither refresh nor revoke its
	// lease nor remove itself. Its lease expires and the others prune it.
	if err := bEtcd.Close(); err != nil {
		t.Fatal(err)
	}
	b.stop()
	waitForIPs(t, a.admin, "[10.0.0.1 10.0.0.3]")
	if leaseHeld(t, etcd, "10.0.0.2") {
		t.Fatal("the crashed apiserver's lease is still there")
	}

	// c stops cleanly: its lease and address are gone when Serve returns.
	c.stop()
	if got, _ := kubernetesIPs(t, a.admin); got != "[10.0.0.1]" {
		t.Fatalf("right after a clean stop: %s", got)
	}
	if leaseHeld(t, etcd, "10.0.0.3") {
		t.Fatal("the stopped apiserver's lease is still there")
	}

	// The survivor stays listed through rounds well past the lease TTL.
	for end := time.Now().Add(2 * 3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if got, _ := kubernetesIPs(t, a.admin); got != "[10.0.0.1]" || !leaseHeld(t, etcd, "10.0.0.1") {
			t.Fatalf("the survivor: endpoints %s, lease held %v", got, leaseHeld(t, etcd, "10.0.0.1"))
		}
	}
}

func TestMasterLeaseIntervalMustBeShorterThanTTL(t *testing.T) {
	etcd := etcdtest.Start(t)
	_, err := New(Options{Store: storage.New(etcd), Advertise: "10.0.0.1:6443", MasterLeaseTTL: time.Second, MasterLeaseInterval: time.Second})
	if err == nil {
		t.Fatal("New took a lease interval as long as the TTL")
	}
}

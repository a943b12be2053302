package serviceproxy

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/nftables"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"kforge.dev/kforge/controlplane/local/localtest"
)

// upControlPlane runs local.Up in a temp dir on a free port and returns
// the admin client configuration.
func upControlPlane(t *testing.T) *rest.Config {
	t.Helper()
	return localtest.Start(t).Config
}

// kernelState is what the kforge table of a namespace holds: its chains
// and the number of elements of service-ips, no-endpoint-services and
// the service-endpoints maps.
type kernelState struct {
	chains      map[string]bool
	serviceIPs  int
	noEndpoints int
	endpoints   int
}

func readKernel(t *testing.T, nsFd int) kernelState {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	must(t, err)
	st := kernelState{chains: map[string]bool{}}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	must(t, err)
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			st.chains[ch.Name] = true
		}
	}
	tbl := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	counts := map[string]*int{setServiceIPs: &st.serviceIPs, setNoEndpoints: &st.noEndpoints}
	for i := range endpointShards {
		counts[setEndpoints+"-"+strconv.Itoa(i)] = &st.endpoints
	}
	for name, n := range counts {
		s, err := c.GetSetByName(tbl, name)
		if err != nil {
			continue
		}
		el, err := c.GetSetElements(s)
		must(t, err)
		*n += len(el)
	}
	return st
}

// waitKernel polls the namespace's table until ok holds (the proxy works
// asynchronously); it fails the test after a generous deadline.
func waitKernel(t *testing.T, nsFd int, what string, ok func(kernelState) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := readKernel(t, nsFd)
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: kernel table never got there; last: %+v", what, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestProxyFollowsTheAPI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ns := newNS(t)
	rc := upControlPlane(t)
	cs, err := kubernetes.NewForConfig(rc)
	must(t, err)
	ctx := context.Background()

	// A Service without a selector, so its slice is the test's alone.
	web, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30090}}},
	}, metav1.CreateOptions{})
	must(t, err)
	sl := slicesOf(web, "http", corev1.ProtocolTCP, 8080, ep("198.19.1.5", "n2", true), ep("198.19.2.5", "n3", true))[0]
	sl.Name = "web-1"
	_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, sl, metav1.CreateOptions{})
	must(t, err)

	cfg := NewConfig()
	cfg.Kubeconfig = "unused"
	cfg.NodeName = "n1"
	cfg.NodePortAddresses = []string{"198.18.100.1"}
	cfg.ClusterCIDR = "198.19.0.0/16"
	cfg.HealthAddress = "127.0.0.1:0"
	cfg.MinSyncInterval = 10 * time.Millisecond
	p, err := NewWithRESTConfig(cfg, rc, int(ns), nil)
	must(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	svcChain := "svc-default/web/TCP/http"
	waitKernel(t, int(ns), "service with two endpoints", func(s kernelState) bool {
		// The kubernetes Service is there too, with one endpoint.
		return s.chains[svcChain] && s.serviceIPs == 2 && s.endpoints == 4 // two for the ClusterIP, two for the NodePort
	})

	resp, err := http.Get("http://" + p.HealthAddr().String() + "/healthz")
	must(t, err)
	var body struct{ LastUpdated time.Time }
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	must(t, err)
	if resp.StatusCode != http.StatusOK || body.LastUpdated.IsZero() {
		t.Errorf("/healthz = %d, lastUpdated %v", resp.StatusCode, body.LastUpdated)
	}

	// One endpoint goes not ready, then the slice goes: the Service's
	// address moves to the reject set.
	sl, err = cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "web-1", metav1.GetOptions{})
	must(t, err)
	f := false
	sl.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &f, Terminating: &f}
	_, err = cs.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{})
	must(t, err)
	waitKernel(t, int(ns), "one endpoint not ready", func(s kernelState) bool {
		return s.chains[svcChain] && s.endpoints == 0 // one endpoint: a plain DNAT
	})
	must(t, cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, "web-1", metav1.DeleteOptions{}))
	waitKernel(t, int(ns), "no endpoints", func(s kernelState) bool {
		return !s.chains[svcChain] && s.serviceIPs == 1 && s.noEndpoints == 1
	})

	// The Service goes: nothing of it is left.
	must(t, cs.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}))
	waitKernel(t, int(ns), "service deleted", func(s kernelState) bool {
		return s.serviceIPs == 1 && s.noEndpoints == 0 && !s.chains["ext-default/web/TCP/http"]
	})
}

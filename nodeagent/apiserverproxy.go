package nodeagent

import (
	"net"
	"sort"
	"strconv"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"kforge.dev/kforge/controlplane/lb"
)

// apiServerAddrs are the ready addresses (host:port, sorted) of the
// kubernetes Service's EndpointSlices: the apiservers now serving.
func apiServerAddrs(slices []*discoveryv1.EndpointSlice) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range slices {
		port := 0
		for _, p := range s.Ports {
			if p.Port != nil && (p.Name == nil || *p.Name == "https" || len(s.Ports) == 1) {
				port = int(*p.Port)
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				hp := net.JoinHostPort(a, strconv.Itoa(port))
				if !seen[hp] {
					seen[hp] = true
					out = append(out, hp)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// followAPIServers keeps the node-local load balancer's backends equal to
// the apiservers the kubernetes Service lists, once it lists any: a master
// added or removed after the install is reached or dropped without
// touching the agent's config. An empty list leaves the backends as they
// are (the Service is empty only while the control plane is down, which
// is when the node needs its last known apiservers most).
// The returned factory is not started.
func (a *Agent) followAPIServers(b *lb.Balancer) (informers.SharedInformerFactory, error) {
	f := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithNamespace(metav1.NamespaceDefault),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=kubernetes"
		}))
	inf := f.Discovery().V1().EndpointSlices()
	lister := inf.Lister()
	sync := func(any) {
		slices, err := lister.List(everything)
		if err != nil {
			return
		}
		addrs := apiServerAddrs(slices)
		if len(addrs) == 0 {
			return
		}
		if changed, err := b.SetBackends(addrs); err != nil {
			a.log.Warn("apiserver proxy: updating backends", "err", err)
		} else if changed {
			a.log.Info("apiserver proxy: backends follow the kubernetes Service", "backends", addrs)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: sync, UpdateFunc: func(_, o any) { sync(o) }, DeleteFunc: sync,
	}); err != nil {
		return nil, err
	}
	return f, nil
}

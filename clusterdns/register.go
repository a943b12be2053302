package clusterdns

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the
// EndpointSlices the instances write (the controller manager leaves
// selector-less Services' slices alone).
const ManagedBy = "kforge-dns"

// Port names of the kube-dns Service and of the instances' slices.
const (
	PortDNS    = "dns"
	PortDNSTCP = "dns-tcp"
)

// SliceName is the name of node's EndpointSlice of Service svc.
func SliceName(svc, node string) string { return svc + "-" + node }

// desiredService is the kube-dns Service: no selector (the instances
// write its endpoints), the fixed ClusterIP, DNS over UDP and TCP.
func (d *DNS) desiredService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: d.cfg.Service.Name, Namespace: d.cfg.Service.Namespace,
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNS"},
		},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: d.cfg.Service.ClusterIP,
			Ports: []corev1.ServicePort{
				{Name: PortDNS, Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
				{Name: PortDNSTCP, Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
}

// ensureService creates the kube-dns Service when a ClusterIP is
// configured and the Service does not exist. An existing one is left as
// it is (an operator's change wins).
func (d *DNS) ensureService(ctx context.Context) error {
	if d.cfg.Service.ClusterIP == "" {
		return nil
	}
	svcs := d.client.CoreV1().Services(d.cfg.Service.Namespace)
	if _, err := svcs.Get(ctx, d.cfg.Service.Name, metav1.GetOptions{}); err == nil || !apierrors.IsNotFound(err) {
		return err
	}
	_, err := svcs.Create(ctx, d.desiredService(), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		d.log.Info("created the cluster DNS Service", "service", d.cfg.Service.Namespace+"/"+d.cfg.Service.Name, "clusterIP", d.cfg.Service.ClusterIP)
	}
	return err
}

// desiredSlice is this instance's EndpointSlice: one endpoint, its
// address and node, ready as the instance is; terminating while it shuts
// down.
func (d *DNS) desiredSlice(ready, terminating bool) *discoveryv1.EndpointSlice {
	addrType := discoveryv1.AddressTypeIPv4
	if d.advertise.Is6() {
		addrType = discoveryv1.AddressTypeIPv6
	}
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	dnsName, tcpName := PortDNS, PortDNSTCP
	p := int32(d.port)
	node := d.cfg.NodeName
	serving := ready
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: SliceName(d.cfg.Service.Name, d.cfg.NodeName), Namespace: d.cfg.Service.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: d.cfg.Service.Name,
				discoveryv1.LabelManagedBy:   ManagedBy,
			},
		},
		AddressType: addrType,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{d.advertise.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
		}},
		Ports: []discoveryv1.EndpointPort{
			{Name: &dnsName, Protocol: &udp, Port: &p},
			{Name: &tcpName, Protocol: &tcp, Port: &p},
		},
	}
}

// ensureSlice creates or updates this instance's EndpointSlice.
func (d *DNS) ensureSlice(ctx context.Context, ready, terminating bool) error {
	want := d.desiredSlice(ready, terminating)
	api := d.client.DiscoveryV1().EndpointSlices(want.Namespace)
	cur, err := api.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = api.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if cur.AddressType == want.AddressType && equality.Semantic.DeepEqual(cur.Endpoints, want.Endpoints) &&
		equality.Semantic.DeepEqual(cur.Ports, want.Ports) && cur.Labels[discoveryv1.LabelServiceName] == want.Labels[discoveryv1.LabelServiceName] &&
		cur.Labels[discoveryv1.LabelManagedBy] == ManagedBy {
		return nil
	}
	if cur.AddressType != want.AddressType { // immutable: replace the slice
		if err := api.Delete(ctx, want.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		_, err = api.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	upd := cur.DeepCopy()
	if upd.Labels == nil {
		upd.Labels = map[string]string{}
	}
	for k, v := range want.Labels {
		upd.Labels[k] = v
	}
	upd.Endpoints, upd.Ports = want.Endpoints, want.Ports
	_, err = api.Update(ctx, upd, metav1.UpdateOptions{})
	return err
}

// deleteSlice removes this instance's EndpointSlice.
func (d *DNS) deleteSlice(ctx context.Context) error {
	err := d.client.DiscoveryV1().EndpointSlices(d.cfg.Service.Namespace).
		Delete(ctx, SliceName(d.cfg.Service.Name, d.cfg.NodeName), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the EndpointSlice: %w", err)
	}
	return nil
}

// register brings the Service and this instance's slice to what they
// should be.
func (d *DNS) register(ctx context.Context, ready bool) error {
	if err := d.ensureService(ctx); err != nil {
		return fmt.Errorf("service %s/%s: %w", d.cfg.Service.Namespace, d.cfg.Service.Name, err)
	}
	if ready {
		// The same rule peers apply (retireDeadPeers): an instance on a
		// Node that is missing or not Ready is not ready, so instances
		// never undo each other's writes.
		ok, err := d.nodeReady(ctx, d.cfg.NodeName)
		if err != nil {
			return fmt.Errorf("node %s: %w", d.cfg.NodeName, err)
		}
		if !ok && !d.nodeWarned {
			d.log.Warn("this instance's Node is missing or not Ready: registered as not ready", "node", d.cfg.NodeName)
		}
		d.nodeWarned = !ok
		ready = ok
	}
	if err := d.ensureSlice(ctx, ready, false); err != nil {
		return fmt.Errorf("endpointslice: %w", err)
	}
	if ready {
		return d.retireDeadPeers(ctx)
	}
	return nil
}

// retireDeadPeers marks not ready the endpoints other instances left
// behind on a Node that is gone or not Ready: an instance that was killed,
// or whose worker went down, cannot remove its own slice, and the proxies
// would go on sending it queries. Its instance sets it ready again once it
// runs on a Ready node.
func (d *DNS) retireDeadPeers(ctx context.Context) error {
	own := SliceName(d.cfg.Service.Name, d.cfg.NodeName)
	nodeOK := map[string]bool{}
	for _, s := range d.store.endpointSlices(d.cfg.Service.Namespace, d.cfg.Service.Name) {
		if s.Name == own || s.Labels[discoveryv1.LabelManagedBy] != ManagedBy {
			continue
		}
		var upd *discoveryv1.EndpointSlice
		for i, ep := range s.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			ok, seen := nodeOK[*ep.NodeName]
			if !seen {
				var err error
				if ok, err = d.nodeReady(ctx, *ep.NodeName); err != nil {
					return fmt.Errorf("node %s: %w", *ep.NodeName, err)
				}
				nodeOK[*ep.NodeName] = ok
			}
			if ok {
				continue
			}
			if upd == nil {
				upd = s.DeepCopy()
			}
			no := false
			upd.Endpoints[i].Conditions.Ready, upd.Endpoints[i].Conditions.Serving = &no, &no
		}
		if upd == nil {
			continue
		}
		if _, err := d.client.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil &&
			!apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("retiring %s: %w", s.Name, err)
		}
		d.log.Warn("marked a DNS instance on a missing or not-ready node not ready", "endpointslice", s.Name)
	}
	return nil
}

// nodeReady reports whether Node name exists with Ready=True.
func (d *DNS) nodeReady(ctx context.Context, name string) (bool, error) {
	n, err := d.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, nil
		}
	}
	return false, nil
}

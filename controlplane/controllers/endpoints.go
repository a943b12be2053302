package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the
// slices this controller writes.
const ManagedBy = "kforge-controller-manager"

// EndpointsController writes, for every Service with a selector, the
// addresses of the pods it selects as an Endpoints object and as one
// EndpointSlice.
type EndpointsController struct {
	*loop
	client    kubernetes.Interface
	services  corelisters.ServiceLister
	pods      corelisters.PodLister
	endpoints corelisters.EndpointsLister
	slices    discoverylisters.EndpointSliceLister
}

// NewEndpointsController wires the controller to the shared informers.
func NewEndpointsController(client kubernetes.Interface, svcInf coreinformers.ServiceInformer, podInf coreinformers.PodInformer,
	epInf coreinformers.EndpointsInformer, sliceInf discoveryinformers.EndpointSliceInformer, log *slog.Logger, m *metrics) (*EndpointsController, error) {
	c := &EndpointsController{client: client, services: svcInf.Lister(), pods: podInf.Lister(),
		endpoints: epInf.Lister(), slices: sliceInf.Lister()}
	c.loop = newLoop(NameEndpoints, log, m, c.sync, svcInf.Informer().HasSynced, podInf.Informer().HasSynced,
		epInf.Informer().HasSynced, sliceInf.Informer().HasSynced)
	if _, err := svcInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	podEvent := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			c.enqueueServicesOf(p)
		}
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: podEvent,
		UpdateFunc: func(o, n any) {
			op, np := o.(*corev1.Pod), n.(*corev1.Pod)
			if op.ResourceVersion == np.ResourceVersion {
				return
			}
			podEvent(n)
			if !labels.Equals(op.Labels, np.Labels) {
				podEvent(o) // services that selected the old labels
			}
		},
		DeleteFunc: podEvent,
	}); err != nil {
		return nil, err
	}
	// Someone else changing our objects: put them back.
	ownerEvent := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		switch o := obj.(type) {
		case *corev1.Endpoints:
			c.queue.Add(o.Namespace + "/" + o.Name)
		case *discoveryv1.EndpointSlice:
			if o.Labels[discoveryv1.LabelManagedBy] == ManagedBy && o.Labels[discoveryv1.LabelServiceName] != "" {
				c.queue.Add(o.Namespace + "/" + o.Labels[discoveryv1.LabelServiceName])
			}
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: ownerEvent, UpdateFunc: func(_, n any) { ownerEvent(n) }, DeleteFunc: ownerEvent}
	if _, err := epInf.Informer().AddEventHandler(h); err != nil {
		return nil, err
	}
	if _, err := sliceInf.Informer().AddEventHandler(h); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *EndpointsController) enqueueServicesOf(p *corev1.Pod) {
	list, err := c.services.Services(p.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range list {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.Labels)) {
			c.enqueue(s)
		}
	}
}

func (c *EndpointsController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// The slice is owned by the Service (the GC takes it); the
		// Endpoints object shares its name and goes here.
		if _, err := c.endpoints.Endpoints(ns).Get(name); err == nil {
			err = c.client.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	if len(svc.Spec.Selector) == 0 || svc.DeletionTimestamp != nil {
		return nil // endpoints of a selector-less Service are the user's
	}
	pods, err := c.pods.Pods(ns).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return err
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	targets := endpointTargets(svc, pods)
	return errors.Join(c.writeEndpoints(ctx, svc, targets), c.writeSlice(ctx, svc, targets))
}

// target is one pod with its resolved ports.
type target struct {
	pod   *corev1.Pod
	ready bool
	ports []corev1.EndpointPort
}

// endpointTargets keeps the pods that have an IP and are not gone, each
// with the Service's ports resolved against its containers; a pod without
// a named target port is left out of that port.
func endpointTargets(svc *corev1.Service, pods []*corev1.Pod) []target {
	var out []target
	for _, p := range pods {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		t := target{pod: p, ready: podReady(p)}
		for _, sp := range svc.Spec.Ports {
			port, ok := resolvePort(p, sp)
			if !ok {
				continue
			}
			proto := sp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			t.ports = append(t.ports, corev1.EndpointPort{Name: sp.Name, Port: port, Protocol: proto, AppProtocol: sp.AppProtocol})
		}
		if len(t.ports) > 0 || len(svc.Spec.Ports) == 0 {
			out = append(out, t)
		}
	}
	return out
}

// resolvePort finds a Service port's target on a pod: a number as is
// (the port itself when unset), a name through the containers' ports.
func resolvePort(p *corev1.Pod, sp corev1.ServicePort) (int32, bool) {
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.String && tp.StrVal != "":
		for _, ct := range p.Spec.Containers {
			for _, cp := range ct.Ports {
				if cp.Name == tp.StrVal && (cp.Protocol == sp.Protocol || cp.Protocol == "" && sp.Protocol == corev1.ProtocolTCP || sp.Protocol == "") {
					return cp.ContainerPort, true
				}
			}
		}
		return 0, false
	case tp.Type == intstr.Int && tp.IntVal != 0:
		return tp.IntVal, true
	}
	return sp.Port, true
}

func portsKey(ports []corev1.EndpointPort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprintf("%s/%d/%s", p.Name, p.Port, p.Protocol)
	}
	return strings.Join(parts, ",")
}

// podHostname is the DNS label an endpoint of p gets under svc, as
// upstream: the pod's hostname when its subdomain names the Service (a
// StatefulSet's pods and their headless Service).
func podHostname(p *corev1.Pod, svc *corev1.Service) string {
	if p.Spec.Hostname != "" && p.Spec.Subdomain == svc.Name && p.Namespace == svc.Namespace {
		return p.Spec.Hostname
	}
	return ""
}

func address(p *corev1.Pod, svc *corev1.Service) corev1.EndpointAddress {
	a := corev1.EndpointAddress{IP: p.Status.PodIP, TargetRef: &corev1.ObjectReference{
		Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID,
	}}
	if p.Spec.NodeName != "" {
		n := p.Spec.NodeName
		a.NodeName = &n
	}
	a.Hostname = podHostname(p, svc)
	return a
}

func (c *EndpointsController) writeEndpoints(ctx context.Context, svc *corev1.Service, targets []target) error {
	var subsets []corev1.EndpointSubset
	index := map[string]int{}
	for _, t := range targets {
		k := portsKey(t.ports)
		i, ok := index[k]
		if !ok {
			i = len(subsets)
			index[k] = i
			subsets = append(subsets, corev1.EndpointSubset{Ports: t.ports})
		}
		if t.ready {
			subsets[i].Addresses = append(subsets[i].Addresses, address(t.pod, svc))
		} else {
			subsets[i].NotReadyAddresses = append(subsets[i].NotReadyAddresses, address(t.pod, svc))
		}
	}
	existing, err := c.endpoints.Endpoints(svc.Namespace).Get(svc.Name)
	if apierrors.IsNotFound(err) {
		ep := &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: svc.Labels},
			Subsets:    subsets,
		}
		_, err := c.client.CoreV1().Endpoints(svc.Namespace).Create(ctx, ep, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("endpoints %s/%s: the cache is behind, retrying", svc.Namespace, svc.Name)
		}
		return err
	}
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(existing.Subsets, subsets) && labels.Equals(existing.Labels, svc.Labels) {
		return nil
	}
	ep := existing.DeepCopy()
	ep.Subsets, ep.Labels = subsets, svc.Labels
	_, err = c.client.CoreV1().Endpoints(svc.Namespace).Update(ctx, ep, metav1.UpdateOptions{})
	return err
}

// writeSlice writes the one EndpointSlice named after the Service. Pods
// whose resolved ports differ from the first pod's are left out of it.
func (c *EndpointsController) writeSlice(ctx context.Context, svc *corev1.Service, targets []target) error {
	addrType := discoveryv1.AddressTypeIPv4
	if len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol {
		addrType = discoveryv1.AddressTypeIPv6
	}
	var ports []discoveryv1.EndpointPort
	var key string
	var eps []discoveryv1.Endpoint
	for _, t := range targets {
		ip := net.ParseIP(t.pod.Status.PodIP)
		if ip == nil || (ip.To4() != nil) != (addrType == discoveryv1.AddressTypeIPv4) {
			continue
		}
		k := portsKey(t.ports)
		if eps == nil {
			key = k
			for _, p := range t.ports {
				ports = append(ports, discoveryv1.EndpointPort{Name: &p.Name, Port: &p.Port, Protocol: &p.Protocol, AppProtocol: p.AppProtocol})
			}
		} else if k != key {
			continue
		}
		ready, serving, terminating := t.ready, t.ready, false
		ep := discoveryv1.Endpoint{
			Addresses:  []string{t.pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: t.pod.Namespace, Name: t.pod.Name, UID: t.pod.UID},
		}
		if t.pod.Spec.NodeName != "" {
			n := t.pod.Spec.NodeName
			ep.NodeName = &n
		}
		if h := podHostname(t.pod, svc); h != "" {
			ep.Hostname = &h
		}
		eps = append(eps, ep)
	}
	if eps == nil {
		eps = []discoveryv1.Endpoint{}
	}
	lbls := map[string]string{}
	for k, v := range svc.Labels {
		lbls[k] = v
	}
	lbls[discoveryv1.LabelServiceName] = svc.Name
	lbls[discoveryv1.LabelManagedBy] = ManagedBy
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc.Name, Namespace: svc.Namespace, Labels: lbls,
			OwnerReferences: []metav1.OwnerReference{ownerRef(svc, serviceKind)},
		},
		AddressType: addrType,
		Endpoints:   eps,
		Ports:       ports,
	}
	existing, err := c.slices.EndpointSlices(svc.Namespace).Get(svc.Name)
	if apierrors.IsNotFound(err) {
		_, err := c.client.DiscoveryV1().EndpointSlices(svc.Namespace).Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("endpointslice %s/%s: the cache is behind, retrying", svc.Namespace, svc.Name)
		}
		return err
	}
	if err != nil {
		return err
	}
	if existing.AddressType == want.AddressType && labels.Equals(existing.Labels, want.Labels) &&
		apiequality.Semantic.DeepEqual(existing.Endpoints, want.Endpoints) && apiequality.Semantic.DeepEqual(existing.Ports, want.Ports) &&
		apiequality.Semantic.DeepEqual(existing.OwnerReferences, want.OwnerReferences) {
		return nil
	}
	if existing.AddressType != want.AddressType { // immutable
		if err := c.client.DiscoveryV1().EndpointSlices(svc.Namespace).Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		return fmt.Errorf("endpointslice %s/%s: address type changed, recreating", svc.Namespace, svc.Name)
	}
	s := existing.DeepCopy()
	s.Labels, s.Endpoints, s.Ports, s.OwnerReferences = want.Labels, want.Endpoints, want.Ports, want.OwnerReferences
	_, err = c.client.DiscoveryV1().EndpointSlices(svc.Namespace).Update(ctx, s, metav1.UpdateOptions{})
	return err
}

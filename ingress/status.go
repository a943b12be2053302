package ingress

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// ensureClass creates the IngressClass, marked as the cluster's default,
// when it does not exist; another instance creating it first is fine.
func (c *Controller) ensureClass(ctx context.Context) {
	if _, err := c.classes.Get(c.cfg.Class.Name); err == nil {
		return
	}
	ic := &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: c.cfg.Class.Name,
			Annotations: map[string]string{DefaultClassAnnotation: "true"},
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "kforge"}},
		Spec: networkingv1.IngressClassSpec{Controller: c.cfg.Class.Controller},
	}
	_, err := c.client.NetworkingV1().IngressClasses().Create(ctx, ic, metav1.CreateOptions{})
	switch {
	case err == nil:
		c.log.Info("created the IngressClass", "name", ic.Name, "controller", ic.Spec.Controller)
	case apierrors.IsAlreadyExists(err):
	default:
		c.log.Warn("could not create the IngressClass", "name", ic.Name, "err", err)
	}
}

// hasAddresses says whether every address is in the status list.
func hasAddresses(have []networkingv1.IngressLoadBalancerIngress, addrs []string) bool {
	for _, a := range addrs {
		if !slices.ContainsFunc(have, func(l networkingv1.IngressLoadBalancerIngress) bool { return l.IP == a || l.Hostname == a }) {
			return false
		}
	}
	return true
}

// withAddresses adds the missing addresses to a status list, sorted.
func withAddresses(have []networkingv1.IngressLoadBalancerIngress, addrs []string) []networkingv1.IngressLoadBalancerIngress {
	out := slices.Clone(have)
	for _, a := range addrs {
		if hasAddresses(out, []string{a}) {
			continue
		}
		if _, err := netip.ParseAddr(a); err == nil {
			out = append(out, networkingv1.IngressLoadBalancerIngress{IP: a})
		} else {
			out = append(out, networkingv1.IngressLoadBalancerIngress{Hostname: a})
		}
	}
	slices.SortFunc(out, func(x, y networkingv1.IngressLoadBalancerIngress) int {
		return strings.Compare(x.IP+x.Hostname, y.IP+y.Hostname)
	})
	return out
}

// statusWorker adds this instance's addresses to the status of the
// Ingresses queued by rebuild, until ctx ends.
func (c *Controller) statusWorker(ctx context.Context) {
	for {
		key, shutdown := c.statusQ.Get()
		if shutdown {
			return
		}
		err := c.syncStatus(ctx, key)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("could not write Ingress status; retrying", "ingress", key, "err", err)
			c.statusQ.AddRateLimited(key)
		} else {
			c.statusQ.Forget(key)
		}
		c.statusQ.Done(key)
	}
}

func (c *Controller) syncStatus(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.client.NetworkingV1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if hasAddresses(cur.Status.LoadBalancer.Ingress, c.cfg.StatusAddresses) {
			return nil
		}
		cur = cur.DeepCopy()
		cur.Status.LoadBalancer.Ingress = withAddresses(cur.Status.LoadBalancer.Ingress, c.cfg.StatusAddresses)
		_, err = c.client.NetworkingV1().Ingresses(ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

package controllers

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// RootCAConfigMap is the ConfigMap every namespace gets: the cluster CA
// under "ca.crt", which the kube-api-access volume of every pod projects.
const RootCAConfigMap = "kube-root-ca.crt"

// RootCACertPublisher keeps the kube-root-ca.crt ConfigMap in every
// namespace holding the cluster CA, as upstream's root-ca-cert-publisher:
// it creates it, and puts back its content when edited. Its queue holds
// namespace names; it watches only ConfigMaps of that name.
type RootCACertPublisher struct {
	*loop
	client     kubernetes.Interface
	rootCA     []byte
	namespaces corelisters.NamespaceLister
	cmInformer cache.SharedIndexInformer
	configMaps corelisters.ConfigMapLister
}

// NewRootCACertPublisher wires the publisher: namespaces from the shared
// informer, its own ConfigMaps through an informer that only lists and
// watches kube-root-ca.crt (Run runs it).
func NewRootCACertPublisher(client kubernetes.Interface, nsInf coreinformers.NamespaceInformer, rootCA []byte, resync time.Duration, log *slog.Logger, m *metrics) (*RootCACertPublisher, error) {
	cmInf := coreinformers.NewFilteredConfigMapInformer(client, metav1.NamespaceAll, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", RootCAConfigMap).String()
		})
	c := &RootCACertPublisher{client: client, rootCA: rootCA, namespaces: nsInf.Lister(),
		cmInformer: cmInf, configMaps: corelisters.NewConfigMapLister(cmInf.GetIndexer())}
	c.loop = newLoop(NameRootCACertPublisher, log, m, c.sync, nsInf.Informer().HasSynced, cmInf.HasSynced)
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueNamespace,
		UpdateFunc: func(_, n any) { c.enqueueNamespace(n) },
	}); err != nil {
		return nil, err
	}
	cmEvent := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == RootCAConfigMap {
			c.queue.Add(cm.Namespace)
		}
	}
	if _, err := cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, n any) { cmEvent(n) },
		DeleteFunc: cmEvent,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *RootCACertPublisher) enqueueNamespace(obj any) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		c.queue.Add(ns.Name)
	}
}

// Run runs the ConfigMap informer and the workers until ctx ends, and
// waits for both.
func (c *RootCACertPublisher) Run(ctx context.Context, workers int) error {
	var wg sync.WaitGroup
	wg.Go(func() { c.cmInformer.Run(ctx.Done()) })
	defer wg.Wait()
	return c.loop.Run(ctx, workers)
}

func (c *RootCACertPublisher) sync(ctx context.Context, ns string) error {
	n, err := c.namespaces.Get(ns)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	want := map[string]string{"ca.crt": string(c.rootCA)}
	cm, err := c.configMaps.ConfigMaps(ns).Get(RootCAConfigMap)
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootCAConfigMap, Namespace: ns, Annotations: map[string]string{
				"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. " +
					"No other usage is guaranteed across distributions of Kubernetes clusters."}},
			Data: want,
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil
		}
		return err
	case err != nil:
		return err
	}
	if len(cm.Data) == 1 && bytes.Equal([]byte(cm.Data["ca.crt"]), c.rootCA) && len(cm.BinaryData) == 0 {
		return nil
	}
	cm = cm.DeepCopy()
	cm.Data, cm.BinaryData = want, nil
	_, err = c.client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// rootCABundle is the CA bundle to publish: the file when named, else
// the kubeconfig's CA (none when it has neither).
func rootCABundle(file string, rc *rest.Config) ([]byte, error) {
	switch {
	case file != "":
		return os.ReadFile(file)
	case len(rc.CAData) > 0:
		return rc.CAData, nil
	case rc.CAFile != "":
		return os.ReadFile(rc.CAFile)
	}
	return nil, nil
}

package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"kforge.dev/kforge/controlplane/apiserver"
	"kforge.dev/kforge/controlplane/local"
)

// etcdOf connects to the local control plane's etcd with the apiserver's
// own client certificate, to look at what is stored.
func etcdOf(t *testing.T, dir string) *clientv3.Client {
	t.Helper()
	cfg, err := apiserver.LoadConfig(filepath.Join(dir, local.APIServerConf))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := transport.TLSInfo{CertFile: cfg.Etcd.CertFile, KeyFile: cfg.Etcd.KeyFile, TrustedCAFile: cfg.Etcd.CAFile}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Etcd.Endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func nsCondition(ns *corev1.Namespace, typ corev1.NamespaceConditionType) *corev1.NamespaceCondition {
	for i := range ns.Status.Conditions {
		if ns.Status.Conditions[i].Type == typ {
			return &ns.Status.Conditions[i]
		}
	}
	return nil
}

// TestNamespaceDeletionEmptiesIt deletes a namespace holding a Deployment
// (with its ReplicaSet and bound pods that need their node to finish), a
// Service, a ConfigMap held by a finalizer and a Secret: the namespace
// shows Terminating with the finalizer reported, then once the finalizer
// goes everything is gone, etcd holds nothing of it, and the namespace
// created again is empty.
func TestNamespaceDeletionEmptiesIt(t *testing.T) {
	cs, dir := startLocalIn(t)
	etcd := etcdOf(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "doomed"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A stand-in node agent binds the pods and finishes their graceful
	// deletion, as a kubelet would.
	kubelet := &fakeKubelet{}
	done := make(chan struct{})
	go func() { defer close(done); kubelet.run(ctx, t, cs, ns) }()
	defer func() { cancel(); <-done }()

	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: func() *int32 { n := int32(2); return &n }(), Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}}}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Selector: labels,
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	held := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "held", Finalizers: []string{"example.com/hold"}}}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, held, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"password": "p"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two running pods of the deployment", 30*time.Second, func() error {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running != 2 {
			return fmt.Errorf("%d running", running)
		}
		return nil
	})

	// kforge local up encrypts Secrets at rest: etcd holds no value.
	raw, err := etcd.Get(ctx, "/registry/core/secrets/"+ns+"/creds")
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("the secret in etcd: %v", err)
	}
	if v := raw.Kvs[0].Value; !bytes.HasPrefix(v, []byte("k8s:enc:secretbox:v1:")) || bytes.Contains(v, []byte("password")) {
		t.Fatalf("etcd holds the secret as %q", v)
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil || got.Status.Phase != corev1.NamespaceTerminating || got.DeletionTimestamp == nil {
		t.Fatalf("right after delete: %v %+v", err, got.Status)
	}

	// Everything but the held ConfigMap goes; the namespace says why it
	// stays.
	eventually(t, "the finalizer reported in the namespace's conditions", 60*time.Second, func() error {
		n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := nsCondition(n, corev1.NamespaceFinalizersRemaining)
		if c == nil || c.Status != corev1.ConditionTrue || c.Reason != "SomeFinalizersRemain" ||
			c.Message != "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances" {
			return fmt.Errorf("conditions %+v", n.Status.Conditions)
		}
		r := nsCondition(n, corev1.NamespaceContentRemaining)
		if r == nil || r.Status != corev1.ConditionTrue || r.Message != "Some resources are remaining: configmaps. has 1 resource instances" {
			return fmt.Errorf("content remaining: %+v", r)
		}
		if d := nsCondition(n, corev1.NamespaceDeletionDiscoveryFailure); d == nil || d.Status != corev1.ConditionFalse {
			return fmt.Errorf("discovery condition: %+v", d)
		}
		return nil
	})
	for what, list := range map[string]func() (int, error){
		"deployments": func() (int, error) {
			l, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"replicasets": func() (int, error) {
			l, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"pods": func() (int, error) {
			l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"services": func() (int, error) {
			l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"secrets": func() (int, error) {
			l, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
	} {
		if n, err := list(); err != nil || n != 0 {
			t.Errorf("%s left while a finalizer holds the namespace: %d %v", what, n, err)
		}
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("the namespace went while content remained: %v", err)
	}

	// The finalizer's owner lets go.
	h, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "held", metav1.GetOptions{})
	if err != nil || h.DeletionTimestamp == nil {
		t.Fatalf("held configmap: %v %+v", err, h)
	}
	h.Finalizers = nil
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, h, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the namespace gone", 60*time.Second, func() error {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	cancel()
	<-done

	resp, err := etcd.Get(context.Background(), "/registry/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "/"+ns+"/") || strings.HasSuffix(string(kv.Key), "/"+ns) {
			t.Errorf("etcd still holds %s", kv.Key)
		}
	}

	ctx2 := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx2, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if l, err := cs.AppsV1().Deployments(ns).List(ctx2, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("deployments in the recreated namespace: %d %v", len(l.Items), err)
	}
	// kube-root-ca.crt is the root-ca-cert-publisher's, made anew for
	// the new namespace; nothing else may be there.
	if l, err := cs.CoreV1().ConfigMaps(ns).List(ctx2, metav1.ListOptions{FieldSelector: "metadata.name!=" + apiserver.RootCAConfigMap}); err != nil || len(l.Items) != 0 {
		t.Errorf("configmaps in the recreated namespace: %d %v", len(l.Items), err)
	}
	if l, err := cs.CoreV1().Pods(ns).List(ctx2, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("pods in the recreated namespace: %d %v", len(l.Items), err)
	}
}

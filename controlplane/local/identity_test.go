package local

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// nodeClient is a client with a certificate the local cluster CA signs
// for system:node:NAME in system:nodes, as the PKI issues agents.
func nodeClient(t *testing.T, dir string, base *rest.Config, name string) *kubernetes.Clientset {
	t.Helper()
	caPair, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki/ca/cluster-ca.crt"), filepath.Join(dir, "pki/ca/cluster-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:   pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caPair.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cfg := rest.AnonymousClientConfig(base)
	cfg.CertData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cfg.KeyData = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// waitUntil polls f until it returns nil; the controller manager's
// controllers work in the background.
func waitUntil(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The identity pieces of a whole local control plane, through real
// client-go: a pod's projected token works as client-go's in-cluster
// config reads it, is authorized by RBAC and dies with the pod; a node's
// certificate reaches only its own pods' secrets; aggregated roles grow.
func TestIdentityOnALocalControlPlane(t *testing.T) {
	dir := t.TempDir()
	r := up(t, dir)
	ctx := context.Background()
	admin, err := kubernetes.NewForConfig(r.config)
	if err != nil {
		t.Fatal(err)
	}
	// The controller manager gives the namespace its account and CA.
	var rootCA string
	waitUntil(t, "the default account and kube-root-ca.crt", func() error {
		if _, err := admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		cm, err := admin.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			return err
		}
		rootCA = cm.Data["ca.crt"]
		return nil
	})
	if ca, _ := os.ReadFile(filepath.Join(dir, "pki/ca/cluster-ca.crt")); rootCA != string(ca) {
		t.Fatalf("kube-root-ca.crt holds %q, not the cluster CA", rootCA)
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{})
	must(err)
	_, err = admin.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "reader-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "reader", Namespace: "default"}}}, metav1.CreateOptions{})
	must(err)
	_, err = admin.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"}}, metav1.CreateOptions{})
	must(err)
	_, err = admin.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{})
	must(err)
	pod, err := admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{ServiceAccountName: "reader", NodeName: "w1", Containers: []corev1.Container{{Name: "c", Image: "busybox",
			Env: []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "pw"}}}}}}}}, metav1.CreateOptions{})
	must(err)
	if len(pod.Spec.Volumes) != 1 || len(pod.Spec.Containers[0].VolumeMounts) != 1 {
		t.Fatalf("no kube-api-access volume: %+v", pod.Spec)
	}

	// What the agent does for the projected volume: a TokenRequest bound
	// to the pod, with the node's own credentials.
	w1 := nodeClient(t, dir, r.config, "w1")
	exp := *pod.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.ExpirationSeconds
	tr, err := w1.CoreV1().ServiceAccounts("default").CreateToken(ctx, "reader", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
	must(err)
	// What the pod sees, read the way rest.InClusterConfig reads it:
	// a token file and the CA from the kube-root-ca.crt ConfigMap.
	mount := t.TempDir()
	must(os.WriteFile(filepath.Join(mount, "token"), []byte(tr.Status.Token), 0o600))
	must(os.WriteFile(filepath.Join(mount, "ca.crt"), []byte(rootCA), 0o600))
	inCluster := &rest.Config{Host: r.config.Host, BearerTokenFile: filepath.Join(mount, "token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(mount, "ca.crt")}}
	app, err := kubernetes.NewForConfig(inCluster)
	must(err)
	pods, err := app.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("the pod's token lists pods: %v", err)
	}
	if _, err := app.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a view token reads a secret: %v", err)
	}

	// The node: its pod's secret, nothing else.
	if _, err := w1.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{}); err != nil {
		t.Errorf("w1 reads its pod's secret: %v", err)
	}
	if _, err := w1.CoreV1().Secrets("default").Get(ctx, "other", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("w1 reads a secret no pod of its uses: %v", err)
	}
	w2 := nodeClient(t, dir, r.config, "w2")
	if _, err := w2.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("w2 reads w1's pod's secret: %v", err)
	}
	if err := w2.CoreV1().Pods("default").Delete(ctx, "app", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("w2 deletes w1's pod: %v", err)
	}
	_, err = w1.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}, metav1.CreateOptions{})
	must(err)
	n, err := w2.CoreV1().Nodes().Get(ctx, "w1", metav1.GetOptions{})
	must(err)
	n.Labels = map[string]string{"stolen": "yes"}
	if _, err := w2.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("w2 updates w1's Node: %v", err)
	}

	// The pod goes: its token stops working.
	must(w1.CoreV1().Pods("default").Delete(ctx, "app", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
	waitUntil(t, "the pod gone", func() error {
		if _, err := admin.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	// The apiserver accepts a token on what its object cache holds, which
	// follows etcd's watch: the refusal comes once the cache has seen the
	// delete.
	waitUntil(t, "a deleted pod's token refused", func() error {
		if _, err := app.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			return fmt.Errorf("not 401: %v", err)
		}
		return nil
	})

	// A role labelled aggregate-to-view joins view (and so edit and admin).
	widgets := rbacv1.PolicyRule{Verbs: []string{"get", "list"}, APIGroups: []string{"example.com"}, Resources: []string{"widgets"}}
	_, err = admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "widget-viewer",
		Labels: map[string]string{"rbac.authorization.k8s.io/aggregate-to-view": "true"}}, Rules: []rbacv1.PolicyRule{widgets}}, metav1.CreateOptions{})
	must(err)
	for _, role := range []string{"view", "edit", "admin"} {
		waitUntil(t, role+" gains the widgets rule", func() error {
			cr, err := admin.RbacV1().ClusterRoles().Get(ctx, role, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, r := range cr.Rules {
				if slices.Equal(r.Resources, widgets.Resources) && slices.Equal(r.APIGroups, widgets.APIGroups) {
					return nil
				}
			}
			return fmt.Errorf("%d rules, none for widgets", len(cr.Rules))
		})
	}
}

package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// BenchmarkAuthenticate measures what authentication costs a request: a
// client certificate verified in the handler (its chain remembered after
// the first request), and a pod-bound service-account token (signature,
// claims, and a read of the account and the pod from etcd).
func BenchmarkAuthenticate(b *testing.B) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "bob"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, &leafKey.PublicKey, caKey)
	leaf, _ := x509.ParseCertificate(leafDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	saKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tokens, err := NewTokenIssuer(testIssuer, nil, saKey)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Options{Store: storage.New(etcdtest.Start(b)), ServiceCIDR: "10.96.0.0/16",
		Identity: Identity{ClientCAs: pool, ServiceAccount: tokens}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Bootstrap(ctx); err != nil {
		b.Fatal(err)
	}
	saObj, err := s.create(ctx, s.reg.Lookup("", "v1", "serviceaccounts"), "default", &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	if err != nil {
		b.Fatal(err)
	}
	podObj, err := s.create(ctx, s.reg.Lookup("", "v1", "pods"), "default", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}})
	if err != nil {
		b.Fatal(err)
	}
	pod := podObj.(*corev1.Pod)
	tok, _, err := tokens.sign(time.Now(), time.Hour, []string{testIssuer}, saObj.(*corev1.ServiceAccount),
		k8sClaims{Pod: &ref{Name: pod.Name, UID: pod.UID}})
	if err != nil {
		b.Fatal(err)
	}
	// The object cache, as Serve runs it, caught up with the writes.
	stop := s.startIndexes(ctx)
	defer stop()
	rev, err := s.store.Revision(ctx)
	if err != nil || !s.cache.WaitFor(ctx, rev, 10*time.Second) {
		b.Fatalf("the object cache did not catch up: %v", err)
	}
	b.Run("client-certificate", func(b *testing.B) {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/pods", nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
		for b.Loop() {
			if _, err := s.authenticate(r, "api/v1/pods"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("service-account-token", func(b *testing.B) {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/pods", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		for b.Loop() {
			if _, err := s.authenticate(r, "api/v1/pods"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

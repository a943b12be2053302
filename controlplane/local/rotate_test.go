package local

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"kforge.dev/kforge/internal/atomicfile"
	"kforge.dev/kforge/pki"
)

// A running control plane takes reissued certificates without a restart:
// the apiserver serves its new certificate, and clients with the old and
// the new admin certificate both keep working.
func TestRunningControlPlaneReloadsReissuedCertificates(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	r := up(t, dir)
	u, err := url.Parse(r.config.Host)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	inv, err := pki.NewInventory(PKISpec(dir, port), "")
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		c, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) // only the serial is read
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()

	rotated, err := pki.Reissue(ctx, inv, pki.ReissueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, c := range rotated {
		if c.ID == HostName+"/apiserver" {
			if c.OldSerial != before {
				t.Fatalf("the apiserver served %s, the PKI had %s", before, c.OldSerial)
			}
			want = c.NewSerial
		}
	}
	if want == "" {
		t.Fatal("the apiserver certificate was not reissued")
	}
	// The apiserver polls its files every 2s: a minute without the new
	// serial means it does not reload.
	for start := time.Now(); served() != want; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("the apiserver still serves %s, not the reissued %s", served(), want)
		}
	}

	// The old client still works; so does one with the new admin
	// certificate, reading and writing.
	old, err := kubernetes.NewForConfig(r.config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("the old admin certificate: %v", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", inv.Path("kubeconfigs/admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-rotation"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("a write with the new admin certificate: %v", err)
	}
}

// The apiserver's client CA bundle reloads too: a client certificate from
// a CA added to the bundle file is answered 401 before the reload and
// authenticated after it, and the old CA keeps working.
func TestRunningAPIServerReloadsItsClientCABundle(t *testing.T) {
	dir := t.TempDir()
	r := up(t, dir)

	// A second CA and an admin certificate it signed.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "second-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject:   pkix.Name{CommonName: "second-admin", Organization: []string{"system:masters"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // the client side of this test is about the client certificate
		Certificates:       []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}},
	}, DisableKeepAlives: true}}
	status := func() int {
		resp, err := hc.Get(r.config.Host + "/api/v1/namespaces/default")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != http.StatusUnauthorized {
		t.Fatalf("a certificate from an unknown CA: %d, want 401", got)
	}

	// Append the second CA to the bundle the apiserver reads.
	bundle := filepath.Join(dir, PKIDir, "hosts", HostName, "cluster-ca.crt")
	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	if err := atomicfile.Write(bundle, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); status() != http.StatusOK; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("the certificate from the added CA is still refused: %d", status())
		}
	}
	cs, err := kubernetes.NewForConfig(r.config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Errorf("the first CA's admin after the reload: %v", err)
	}
}

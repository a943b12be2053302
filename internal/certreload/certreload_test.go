package certreload

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
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serialCounter int64 = 1000

func nextSerial() *big.Int { serialCounter++; return big.NewInt(serialCounter) }

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a leaf for localhost usable as server and client; it
// returns the PEMs and the serial.
func (ca *testCA) leaf(t *testing.T) (certPEM, keyPEM []byte, serial string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), tmpl.SerialNumber.String()
}

// replace writes a file the way the installer does: a new file renamed
// over the old one.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// serve runs a TLS server on loopback until the test ends; every
// accepted connection completes its handshake and reports the client's
// certificate serial ("" when none) on the returned channel.
func serve(t *testing.T, cfg *tls.Config) (string, <-chan string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	peers := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			serial := ""
			if tc.Handshake() == nil {
				if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
					serial = pc[0].SerialNumber.String()
				}
			} else {
				serial = "handshake failed"
			}
			peers <- serial
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), peers
}

// dial handshakes with addr and returns the server certificate's serial.
func dial(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func TestServerSeesReplacedPair(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	certFile, keyFile := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	c1, k1, s1 := ca.leaf(t)
	replace(t, certFile, c1)
	replace(t, keyFile, k1)

	kp, err := NewKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serve(t, ServerConfig(&tls.Config{MinVersion: tls.VersionTLS12}, kp, nil))
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	client := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}

	if got, err := dial(t, addr, client); err != nil || got != s1 {
		t.Fatalf("first handshake: serial %q, err %v; want %s", got, err, s1)
	}
	if changed, err := kp.Reload(); err != nil || changed {
		t.Fatalf("Reload of unchanged files: changed %v, err %v; want false, nil", changed, err)
	}

	// The certificate arrives before its key: the old pair stays.
	c2, k2, s2 := ca.leaf(t)
	replace(t, certFile, c2)
	if changed, err := kp.Reload(); err == nil || changed {
		t.Fatalf("Reload with a mismatched pair: changed %v, err %v; want an error", changed, err)
	}
	if got, err := dial(t, addr, client); err != nil || got != s1 {
		t.Fatalf("handshake during the swap: serial %q, err %v; want the old %s", got, err, s1)
	}
	replace(t, keyFile, k2)
	if changed, err := kp.Reload(); err != nil || !changed {
		t.Fatalf("Reload of a new pair: changed %v, err %v; want true, nil", changed, err)
	}
	if got, err := dial(t, addr, client); err != nil || got != s2 {
		t.Fatalf("handshake after the swap: serial %q, err %v; want the new %s", got, err, s2)
	}
	if kp.Leaf().SerialNumber.String() != s2 {
		t.Errorf("Leaf serial %s, want %s", kp.Leaf().SerialNumber, s2)
	}
}

func TestClientCertificateAndCABundleReload(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := newTestCA(t, "old"), newTestCA(t, "new")
	sc, sk, _ := oldCA.leaf(t)
	replace(t, filepath.Join(dir, "s.crt"), sc)
	replace(t, filepath.Join(dir, "s.key"), sk)
	replace(t, filepath.Join(dir, "ca.crt"), oldCA.pem)
	serverPair, err := NewKeyPair(filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := NewCABundle(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	addr, peers := serve(t, ServerConfig(&tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, serverPair, bundle))

	cc1, ck1, cs1 := oldCA.leaf(t)
	replace(t, filepath.Join(dir, "c.crt"), cc1)
	replace(t, filepath.Join(dir, "c.key"), ck1)
	clientPair, err := NewKeyPair(filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(oldCA.cert)
	client := &tls.Config{RootCAs: roots, GetClientCertificate: clientPair.GetClientCertificate, MinVersion: tls.VersionTLS12}
	if _, err := dial(t, addr, client); err != nil {
		t.Fatal(err)
	}
	if got := <-peers; got != cs1 {
		t.Fatalf("server saw client serial %q, want %s", got, cs1)
	}

	// A client certificate from the new CA: refused until the bundle
	// carries the new CA too.
	cc2, ck2, cs2 := newCA.leaf(t)
	replace(t, filepath.Join(dir, "c.crt"), cc2)
	replace(t, filepath.Join(dir, "c.key"), ck2)
	if _, err := clientPair.Reload(); err != nil {
		t.Fatal(err)
	}
	_, _ = dial(t, addr, client) // TLS 1.3: the client learns of the refusal only on its first read
	if got := <-peers; got != "handshake failed" {
		t.Fatalf("server with only the old CA accepted a client from the new CA (serial %q)", got)
	}
	replace(t, filepath.Join(dir, "ca.crt"), append(append([]byte{}, oldCA.pem...), newCA.pem...))
	if changed, err := bundle.Reload(); err != nil || !changed {
		t.Fatalf("bundle Reload: changed %v, err %v", changed, err)
	}
	if _, err := dial(t, addr, client); err != nil {
		t.Fatal(err)
	}
	if got := <-peers; got != cs2 {
		t.Fatalf("server saw client serial %q, want %s", got, cs2)
	}
}

func TestWatcherPolls(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	certFile, keyFile := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	c1, k1, _ := ca.leaf(t)
	replace(t, certFile, c1)
	replace(t, keyFile, k1)
	kp, err := NewKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan string, 1)
	w := &Watcher{Items: []Reloader{kp}, Interval: 10 * time.Millisecond, OnReload: func(n string) { reloaded <- n }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c2, k2, s2 := ca.leaf(t)
	replace(t, keyFile, k2)
	replace(t, certFile, c2)
	if got := <-reloaded; got != certFile {
		t.Fatalf("reloaded %q, want %s", got, certFile)
	}
	if kp.Leaf().SerialNumber.String() != s2 {
		t.Fatalf("serial after the poll %s, want %s", kp.Leaf().SerialNumber, s2)
	}
}

func TestNewKeyPairErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewKeyPair(filepath.Join(dir, "none.crt"), filepath.Join(dir, "none.key")); err == nil || !strings.Contains(err.Error(), "none.crt") {
		t.Errorf("missing files: err %v, want one naming none.crt", err)
	}
	replace(t, filepath.Join(dir, "empty.crt"), []byte("no pem here\n"))
	if _, err := NewCABundle(filepath.Join(dir, "empty.crt")); err == nil || !strings.Contains(err.Error(), "holds no certificate") {
		t.Errorf("empty bundle: err %v", err)
	}
}

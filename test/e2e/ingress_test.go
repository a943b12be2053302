package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// labWorkers are the lab's worker addresses; each runs the ingress on
// :80 and :443.
var labWorkers = []string{"198.18.0.21", "198.18.0.22", "198.18.0.23"}

// ingressCert makes a self-signed certificate for host and returns it
// PEM-encoded with its key, and the parsed certificate.
func ingressCert(t *testing.T, host string) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host},
		DNSNames: []string{host}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), cert
}

// workerClient sends every request to addr (a worker's address) whatever
// the URL's host, as curl --resolve does; TLS is checked against roots
// with the URL's host as the server name.
func workerClient(addr string, roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, hostport string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(hostport)
				var d net.Dialer
				return d.DialContext(ctx, network, net.JoinHostPort(addr, port))
			},
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetch returns status and body of a GET.
func fetch(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (e workloadEnv) apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command(e.kubectlBin, "--kubeconfig", e.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
}

const ingressManifest = `apiVersion: v1
kind: Service
metadata: {name: web-ingress}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Secret
metadata: {name: web-tls}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls: [{hosts: [web.lab.test], secretName: web-tls}]
  rules:
  - host: web.lab.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web-ingress, port: {name: http}}}}
%s`

// testIngress: the ingress controller on every worker routes an Ingress
// (no class: the default class, kforge) to the web Deployment's pods over
// HTTP and HTTPS with the Secret's certificate chosen by SNI; unknown
// hosts get 404; a new path is routed soon after it is applied; the
// Ingress's status lists the workers.
func testIngress(t *testing.T, e workloadEnv) {
	certPEM, keyPEM, cert := ingressCert(t, "web.lab.test")
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	b64 := base64.StdEncoding.EncodeToString
	e.apply(t, fmt.Sprintf(ingressManifest, b64(certPEM), b64(keyPEM), ""))
	defer func() {
		_, _ = e.kubectl(30*time.Second, "delete", "ingress/web", "service/web-ingress", "secret/web-tls", "--wait=false")
	}()

	t.Run("every worker answers on :80 and :443 with the Secret's certificate", func(t *testing.T) {
		for _, w := range labWorkers {
			c := workerClient(w, roots)
			if msg := eventually(60*time.Second, 500*time.Millisecond, func() string {
				code, body, err := fetch(c, "https://web.lab.test/")
				if err != nil || code != 200 || !strings.Contains(body, "hello from a configmap") {
					return fmt.Sprintf("https via %s: %d %v %.200q", w, code, err, body)
				}
				return ""
			}); msg != "" {
				t.Fatal(msg)
			}
			resp, err := c.Get("https://web.lab.test/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.TLS == nil || resp.TLS.PeerCertificates[0].Subject.CommonName != "web.lab.test" || resp.ProtoMajor != 2 {
				t.Errorf("via %s: TLS %v, protocol %s; want the Secret's certificate over HTTP/2", w, resp.TLS != nil, resp.Proto)
			}
			// Plain HTTP to a TLS host is redirected.
			code, _, err := fetch(c, "http://web.lab.test/x")
			if err != nil || code != http.StatusPermanentRedirect {
				t.Errorf("http via %s: %d %v, want 308 to https", w, code, err)
			}
		}
	})

	t.Run("unknown hosts get 404", func(t *testing.T) {
		for _, w := range labWorkers {
			code, _, err := fetch(workerClient(w, roots), "http://unknown.lab.test/")
			if err != nil || code != 404 {
				t.Errorf("via %s: %d %v, want 404", w, code, err)
			}
		}
	})

	t.Run("a new path is routed soon after apply", func(t *testing.T) {
		extra := `  - host: api.lab.test
    http:
      paths:
      - {path: /index.html, pathType: Exact, backend: {service: {name: web-ingress, port: {number: 80}}}}
`
		start := time.Now()
		e.apply(t, fmt.Sprintf(ingressManifest, b64(certPEM), b64(keyPEM), extra))
		applied := time.Since(start)
		for _, w := range labWorkers {
			c := workerClient(w, roots)
			if msg := eventually(30*time.Second, 20*time.Millisecond, func() string {
				// The pods' page, not a 404 (the ingress's own, for a
				// host it does not route yet).
				code, body, err := fetch(c, "http://api.lab.test/index.html")
				if err != nil || code != 200 || !strings.Contains(body, "hello from a configmap") {
					return fmt.Sprintf("via %s: %d %v %.100q", w, code, err, body)
				}
				return ""
			}); msg != "" {
				t.Fatal(msg)
			}
			t.Logf("new path routed via %s %s after kubectl apply started (apply itself took %s)",
				w, time.Since(start).Round(time.Millisecond), applied.Round(time.Millisecond))
		}
	})

	t.Run("kubectl get ingress shows the workers", func(t *testing.T) {
		var out string
		if msg := eventually(30*time.Second, time.Second, func() string {
			out, _ = e.kubectl(10*time.Second, "get", "ingress", "web", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
			for _, w := range labWorkers {
				if !strings.Contains(out, w) {
					return "status lists " + out
				}
			}
			return ""
		}); msg != "" {
			t.Error(msg)
		}
		table, err := e.kubectl(10*time.Second, "get", "ingress", "web")
		t.Logf("kubectl get ingress web:\n%s", table)
		for _, w := range labWorkers {
			if err != nil || !strings.Contains(table, w) {
				t.Errorf("kubectl get ingress: %v; the ADDRESS column lacks %s", err, w)
			}
		}
	})
}

// TestIngressOnRunningLab runs the ingress tests against a lab someone
// already brought up and installed (KFORGE_LAB_DIR), after applying the
// web Deployment.
func TestIngressOnRunningLab(t *testing.T) {
	dir := os.Getenv("KFORGE_LAB_DIR")
	if dir == "" {
		t.Skip("set KFORGE_LAB_DIR to a lab installed with kforge up")
	}
	e := labWorkloadEnv(t, binary(t), dir, kubectlBinary(t), filepath.Join(dir, "admin.kubeconfig"))
	_, file, _, _ := runtime.Caller(0)
	if out, err := e.kubectl(20*time.Second, "apply", "-f", filepath.Join(filepath.Dir(file), "..", "..", "examples", "web.yaml")); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	testIngress(t, e)
}

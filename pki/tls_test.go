package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func pool(t *testing.T, inv *Inventory, ca string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(mustRead(t, inv.Path("ca/"+ca+".crt"))) {
		t.Fatalf("no cert in %s", ca)
	}
	return p
}

func keyPair(t *testing.T, inv *Inventory, id string) tls.Certificate {
	t.Helper()
	c := inv.Cert(id)
	kp, err := tls.LoadX509KeyPair(inv.Path(c.CertFile), inv.Path(c.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// tlsServer serves with one certificate and requires a client certificate
// from clientCA; the handler echoes the client's CN and O.
func tlsServer(t *testing.T, cert tls.Certificate, clientCA *x509.CertPool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.TLS.PeerCertificates[0]
		fmt.Fprintf(w, "%s %s", c.Subject.CommonName, strings.Join(c.Subject.Organization, ","))
	}))
	s.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA,
		MinVersion:   tls.VersionTLS12,
	}
	// Refused handshakes are what some tests expect: keep them out of the log.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// TestKubeconfigsHandshake loads each kubeconfig with clientcmd and talks
// to a TLS server holding a master's apiserver certificate through
// client-go's own transport: server verification against the embedded CA
// and client authentication both work.
func TestKubeconfigsHandshake(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	srv := tlsServer(t, keyPair(t, inv, "m2/apiserver"), pool(t, inv, ClusterCA))
	want := map[string]string{
		"admin":              "kubernetes-admin system:masters",
		"scheduler":          "system:kube-scheduler ",
		"controller-manager": "system:kube-controller-manager ",
		"proxy":              "system:kube-proxy ",
		"ingress":            "system:kforge:ingress ",
		"dns":                "system:kforge:dns ",
		"agent:w1":           "system:node:w1 system:nodes",
		"agent:w2":           "system:node:w2 system:nodes",
		"agent:w3":           "system:node:w3 system:nodes",
	}
	for _, kc := range inv.Kubeconfigs {
		t.Run(kc.Name, func(t *testing.T) {
			data := mustRead(t, inv.Path(kc.File))
			cfg, err := clientcmd.Load(data)
			if err != nil {
				t.Fatal(err)
			}
			cl := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
			if cl == nil || cl.Server != kc.Server {
				t.Fatalf("server %+v, want %s", cl, kc.Server)
			}
			wantServer := "https://198.18.0.10:6443"
			if strings.HasPrefix(kc.Name, "agent:") || kc.Name == "proxy" || kc.Name == "ingress" || kc.Name == "dns" {
				// worker roles, through the agent's node-local LB
				wantServer = "https://127.0.0.1:6444"
			}
			if kc.Server != wantServer {
				t.Errorf("server %s, want %s", kc.Server, wantServer)
			}
			if got, err := KubeconfigFor(inv, kc.Name); err != nil || string(got) != string(data) {
				t.Errorf("KubeconfigFor differs from the file written (%v)", err)
			}
			rc, err := clientcmd.RESTConfigFromKubeConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			// The LB is not here: dial the test server, by an IP SAN and
			// then by the in-cluster name.
			for _, serverName := range []string{"", "kubernetes.default.svc.cluster.local"} {
				rc := rest.CopyConfig(rc)
				rc.Host = srv.URL // https://127.0.0.1:PORT, an IP SAN
				rc.TLSClientConfig.ServerName = serverName
				hc, err := rest.HTTPClientFor(rc)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := hc.Get(srv.URL + "/version")
				if err != nil {
					t.Fatalf("GET with server name %q: %v", serverName, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != want[kc.Name] {
					t.Errorf("server saw client %q, want %q", body, want[kc.Name])
				}
			}
		})
	}
}

func handshake(t *testing.T, srv *httptest.Server, client tls.Certificate, roots *x509.CertPool, serverName string) error {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		// Always present the certificate, even when the server asks for
		// another CA, so the server's own check is what refuses it.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &client, nil },
		RootCAs:              roots,
		ServerName:           serverName,
		MinVersion:           tls.VersionTLS12,
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(srv.URL)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}

// TestHandshakesAcrossCAs checks the pairs that must and must not work:
// each server accepts clients of its own CA only.
func TestHandshakesAcrossCAs(t *testing.T) {
	t.Parallel()
	inv := initLab(t)
	clusterCA, etcdCA := pool(t, inv, ClusterCA), pool(t, inv, EtcdCA)
	etcd := tlsServer(t, keyPair(t, inv, "m1/etcd-server"), etcdCA)
	agent := tlsServer(t, keyPair(t, inv, "w1/agent-server"), clusterCA)
	peer := tlsServer(t, keyPair(t, inv, "m1/etcd-peer"), etcdCA)

	tests := []struct {
		name       string
		srv        *httptest.Server
		client     string
		roots      *x509.CertPool
		serverName string
		ok         bool
	}{
		{"apiserver to etcd", etcd, "m2/apiserver-etcd-client", etcdCA, "m1", true},
		{"etcd peer to peer", peer, "m2/etcd-peer", etcdCA, "198.18.0.11", true},
		{"apiserver to agent", agent, "m1/apiserver-kubelet-client", clusterCA, "198.18.0.21", true},
		{"agent cert refused by etcd", etcd, "w1/agent-client", etcdCA, "m1", false},
		{"admin cert refused by etcd", etcd, "admin", etcdCA, "localhost", false},
		{"etcd client cert refused by agent", agent, "m1/apiserver-etcd-client", clusterCA, "w1", false},
		{"server-only cert is no client cert", etcd, "m2/etcd-server", etcdCA, "m1", false},
		{"agent-server name is not another node", agent, "m1/apiserver-kubelet-client", clusterCA, "w2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, tt.srv, keyPair(t, inv, tt.client), tt.roots, tt.serverName)
			if tt.ok && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tt.ok && err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestOpenSSLVerifies has openssl verify every leaf against its CA on its
// own, for the purpose it is for.
func TestOpenSSLVerifies(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed (hack/install-deps.sh installs it)")
	}
	inv := initLab(t)
	for _, c := range inv.Certs {
		if c.IsCA {
			continue
		}
		var purposes []string
		for _, u := range c.ExtKeyUsages {
			switch u {
			case x509.ExtKeyUsageServerAuth:
				purposes = append(purposes, "sslserver")
			case x509.ExtKeyUsageClientAuth:
				purposes = append(purposes, "sslclient")
			}
		}
		for _, p := range purposes {
			out, err := exec.Command(openssl, "verify", "-CAfile", inv.Path("ca/"+c.CA+".crt"), "-purpose", p, inv.Path(c.CertFile)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": OK") {
				t.Errorf("openssl verify %s (%s): %v\n%s", c.ID(), p, err, out)
			}
		}
		// And not against the other CA.
		other := EtcdCA
		if c.CA == EtcdCA {
			other = ClusterCA
		}
		if out, err := exec.Command(openssl, "verify", "-CAfile", inv.Path("ca/"+other+".crt"), inv.Path(c.CertFile)).CombinedOutput(); err == nil {
			t.Errorf("openssl verifies %s against %s:\n%s", c.ID(), other, out)
		}
	}
	if _, err := os.Stat(inv.Path("ca/sa.pub")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(openssl, "pkey", "-pubin", "-in", inv.Path("ca/sa.pub"), "-noout").CombinedOutput(); err != nil {
		t.Errorf("openssl cannot read sa.pub: %v\n%s", err, out)
	}
}

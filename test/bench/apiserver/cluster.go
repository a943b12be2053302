package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"kforge.dev/kforge/controlplane/apiserver"
	"kforge.dev/kforge/controlplane/apiserver/storage"
	"kforge.dev/kforge/controlplane/etcd"
)

// etcdChildEnv names the etcd config file when this binary is re-executed
// as the etcd member (-etcd=subprocess), so the apiserver's RSS is its own.
const etcdChildEnv = "KFORGE_BENCH_ETCD_CONFIG"

// cluster is one etcd member and the apiserver, with TLS on every hop.
type cluster struct {
	dir      string
	etcd     *clientv3.Client
	etcdPID  int // 0 when etcd runs in this process
	srv      *apiserver.Server
	host     string
	ca       *benchCA
	adminCrt []byte
	adminKey []byte
	closers  []func() // run in reverse order by close
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startCluster issues a PKI into dir, starts etcd (in a subprocess or in
// this process) and the apiserver on 127.0.0.1, and returns once both
// answer.
func startCluster(ctx context.Context, dir string, etcdMode string) (c *cluster, err error) {
	log.SetOutput(io.Discard) // grpc's default logger
	c = &cluster{dir: dir}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.ca, err = newBenchCA(); err != nil {
		return nil, err
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	caFile := filepath.Join(pkiDir, "ca.crt")
	if err := os.WriteFile(caFile, c.ca.pem, 0o600); err != nil {
		return nil, err
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	srvCrt, srvKey, err := c.ca.issueFiles(pkiDir, "etcd-server", "etcd", both...)
	if err != nil {
		return nil, err
	}
	peerAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	clientAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := etcd.NewConfig()
	cfg.Name = "bench"
	cfg.DataDir = filepath.Join(dir, "etcd")
	cfg.ListenPeerURLs = []string{"https://" + peerAddr}
	cfg.ListenClientURLs = []string{"https://" + clientAddr}
	cfg.InitialCluster = "bench=https://" + peerAddr
	cfg.MetricsAddress = "127.0.0.1:0"
	cfg.TLS = etcd.TLS{CertFile: srvCrt, KeyFile: srvKey, PeerCertFile: srvCrt, PeerKeyFile: srvKey, TrustedCAFile: caFile}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	switch etcdMode {
	case "subprocess":
		if err := c.startEtcdChild(ctx, cfg); err != nil {
			return nil, err
		}
	case "inprocess":
		lf, err := os.Create(filepath.Join(dir, "etcd.log"))
		if err != nil {
			return nil, err
		}
		m, err := etcd.NewMember(cfg, slog.New(slog.NewTextHandler(lf, nil)))
		if err != nil {
			lf.Close()
			return nil, err
		}
		if err := m.Start(ctx); err != nil {
			lf.Close()
			return nil, err
		}
		c.closers = append(c.closers, func() { m.Close(); lf.Close() })
		select {
		case <-m.ReadyNotify():
		case err := <-m.Err():
			return nil, err
		case <-time.After(60 * time.Second):
			return nil, errors.New("etcd not ready after 60s")
		}
	default:
		return nil, fmt.Errorf("-etcd: %q is neither subprocess nor inprocess", etcdMode)
	}

	// The apiserver's etcd client, over mutual TLS.
	ecCrt, ecKey, err := c.ca.issue("kforge-apiserver-etcd-client", nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	ecPair, err := tls.X509KeyPair(ecCrt, ecKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.cert)
	c.etcd, err = clientv3.New(clientv3.Config{Endpoints: []string{"https://" + clientAddr}, DialTimeout: 10 * time.Second,
		TLS: &tls.Config{Certificates: []tls.Certificate{ecPair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	c.closers = append(c.closers, func() { c.etcd.Close() })

	c.srv, err = apiserver.New(apiserver.Options{Store: storage.New(c.etcd), ServiceCIDR: "10.96.0.0/16"})
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.srv.Bootstrap(bctx); err != nil {
		return nil, err
	}
	sc, sk, err := c.ca.issue("kforge-apiserver", nil, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.srv.Serve(sctx, l, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12})
	}()
	c.closers = append(c.closers, func() {
		stop()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "bench: apiserver:", err)
		}
	})
	c.host = "https://" + l.Addr().String()
	if c.adminCrt, c.adminKey, err = c.ca.issue("kubernetes-admin", []string{"system:masters"}, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return c, nil
}

// startEtcdChild re-executes this binary as the etcd member. The child
// stops when its stdin closes (our close) and is killed if we die.
func (c *cluster) startEtcdChild(ctx context.Context, cfg *etcd.Config) error {
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(c.dir, "etcd.json")
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(c.dir, "etcd.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), etcdChildEnv+"="+cfgFile)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting etcd subprocess: %w", err)
	}
	c.etcdPID = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.closers = append(c.closers, func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("etcd subprocess said %q", line)
		}
		if err != nil {
			err = fmt.Errorf("etcd subprocess did not start (see %s): %w", logf.Name(), err)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("etcd subprocess not ready after 60s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runEtcdChild is main for the etcd subprocess.
func runEtcdChild(cfgFile string) int {
	log.SetOutput(io.Discard)
	data, err := os.ReadFile(cfgFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := etcd.NewConfig()
	if err := json.Unmarshal(data, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	m, err := etcd.NewMember(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := m.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	select {
	case <-m.ReadyNotify():
		fmt.Println("ready")
	case err := <-m.Err():
		fmt.Fprintln(os.Stderr, err)
		return 1
	case <-ctx.Done():
		return 0
	}
	select {
	case err := <-m.Err():
		fmt.Fprintln(os.Stderr, err)
		return 1
	case <-ctx.Done():
		return 0
	}
}

func (c *cluster) close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// restConfig is an admin client with its own TLS connection: client-go
// shares transports between equal configs, and a Dial function opts out
// of that cache, so n clients are n connections as n processes would be.
func (c *cluster) restConfig() *rest.Config {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &rest.Config{
		Host:            c.host,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.ca.pem, CertData: c.adminCrt, KeyData: c.adminKey},
		QPS:             -1, // no client-side rate limit: we measure the server
		Dial:            d.DialContext,
	}
}

func (c *cluster) client() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(c.restConfig())
}

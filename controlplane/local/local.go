package local

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/cert"

	"kforge.dev/kforge/controlplane/apiserver"
	"kforge.dev/kforge/controlplane/etcd"
	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/atomicfile"
	"kforge.dev/kforge/pki"
)

// Defaults for Options.
const (
	DefaultDir  = "kforge-local"
	DefaultPort = 6443
)

// The cluster Up builds.
const (
	ClusterName = "local"
	HostName    = "local"
	Address     = "127.0.0.1"
	ServiceCIDR = "10.96.0.0/16"
	PodCIDR     = "10.244.0.0/16"
)

// Files and folders under Options.Dir.
const (
	PKIDir         = "pki"
	EtcdDataDir    = "etcd"
	EtcdConfig     = "etcd.yaml"
	APIServerConf  = "apiserver.yaml"
	KubeconfigFile = "admin.kubeconfig"
)

// Options configure Up.
type Options struct {
	// Dir holds everything: pki/, etcd/ (data), etcd.yaml,
	// apiserver.yaml and admin.kubeconfig.
	Dir string
	// Port is the apiserver's port on 127.0.0.1; 0 asks the OS for a
	// free one (tests).
	Port int
	// Out gets the result (how to use the cluster); ErrOut the progress.
	// Either may be nil.
	Out, ErrOut io.Writer
	// Logger receives the roles' logs; nil discards them.
	Logger *slog.Logger
	// Version and Commit are what /version reports.
	Version, Commit string
	// ReadyTimeout bounds the wait for etcd and the apiserver; 2 minutes
	// when zero.
	ReadyTimeout time.Duration
}

// KubeconfigPath is where Up writes the admin kubeconfig for dir.
func KubeconfigPath(dir string) string { return filepath.Join(dir, KubeconfigFile) }

// Up runs the control plane in the foreground until ctx ends, then stops
// the apiserver and then etcd and returns nil; or it returns the first
// error. It writes DIR/admin.kubeconfig (mode 0600) once the apiserver's
// /readyz is ok and removes it again when it stops (and any left from an
// earlier run when it starts), so the file exists only while a ready
// control plane serves it.
//
// Ports: the apiserver on 127.0.0.1:Port; etcd's client and peer ports
// are picked by the OS on the first run and recorded in DIR/etcd.yaml,
// so they stay the same across restarts and never collide with a real
// etcd on 2379/2380; etcd's plain-HTTP health and metrics listener takes
// a fresh free port each run.
func Up(ctx context.Context, o Options) (err error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ErrOut == nil {
		o.ErrOut = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if o.Dir == "" {
		return errors.New("local: no folder (--dir)")
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("local: --port %d is not a TCP port (0-65535; 0 picks a free one)", o.Port)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	kubeconfig := KubeconfigPath(dir)
	if err := os.Remove(kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("local: removing the old kubeconfig: %w", err)
	}
	step := func(format string, args ...any) { fmt.Fprintf(o.ErrOut, " ✓ "+format+"\n", args...) }

	// Bind the API port first: a busy port fails before anything starts,
	// and port 0 becomes a real port for the certificates' kubeconfigs.
	apiLn, err := net.Listen("tcp", net.JoinHostPort(Address, strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("local: apiserver port: %w", err)
	}
	handedOver := false
	defer func() {
		if !handedOver {
			apiLn.Close()
		}
	}()
	port := apiLn.Addr().(*net.TCPAddr).Port

	inv, err := issuePKI(ctx, dir, port, o.ErrOut)
	if err != nil {
		return err
	}
	step("PKI in %s", inv.Dir)

	etcdCfg, err := etcdConfig(dir, inv)
	if err != nil {
		return err
	}
	member, err := etcd.NewMember(etcdCfg, o.Logger)
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	if err := member.Start(ctx); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	defer member.Close() // runs last: etcd stops after the apiserver
	readyCtx, cancelReady := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancelReady()
	select {
	case <-member.ReadyNotify():
	case err := <-member.Err():
		return fmt.Errorf("local: %w", err)
	case <-readyCtx.Done():
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("local: etcd not ready after %s", o.ReadyTimeout)
	}
	etcdURL := etcdCfg.ListenClientURLs[0]
	step("etcd member %s ready at %s (data in %s)", etcdCfg.Name, etcdURL, etcdCfg.DataDir)

	apiCfg, err := apiserverConfig(dir, inv, port, etcdURL)
	if err != nil {
		return err
	}
	apiCfg.Listener = apiLn
	apiCfg.Version, apiCfg.Commit = o.Version, o.Commit
	inst, err := apiserver.NewInstance(apiCfg, o.Logger)
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	if err := inst.Start(ctx); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	handedOver = true
	defer inst.Close() // runs first
	server := "https://" + inst.Addr().String()
	select {
	case <-inst.ReadyNotify():
	case err := <-inst.Err():
		return fmt.Errorf("local: %w", err)
	case err := <-member.Err():
		return fmt.Errorf("local: %w", err)
	case <-readyCtx.Done():
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("local: apiserver not ready after %s", o.ReadyTimeout)
	}
	if err := waitReadyz(readyCtx, server, inv.Path(inv.Cert(pki.ClusterCA).CertFile)); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("local: %w", err)
	}
	step("apiserver ready at %s", server)

	cm, err := startControllerManager(ctx, dir, inv, o.Logger)
	if err != nil {
		return fmt.Errorf("local: controller manager: %w", err)
	}
	defer cm.stop() // before the apiserver stops
	step("controller manager running")
	sched, err := startScheduler(ctx, dir, inv, o.Logger)
	if err != nil {
		return err
	}
	defer sched.stop() // runs before the apiserver closes
	step("scheduler running (leader election on)")

	data, err := pki.KubeconfigFor(inv, "admin")
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	// Pods are refused until their namespace's ServiceAccount exists, so
	// the control plane is ready once "default" has its own.
	if err := waitForDefaultServiceAccount(readyCtx, data); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("local: %w", err)
	}
	step("default service account ready")
	if err := atomicfile.Write(kubeconfig, data, 0o600); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	// Removed first on the way out, so the file exists only while this
	// control plane is ready (a stale one would point at a closed port).
	defer os.Remove(kubeconfig)
	fmt.Fprintf(o.Out, "kforge local control plane is ready: apiserver %s, etcd %s.\n", server, etcdURL)
	fmt.Fprintf(o.Out, "Use it with:\n\n  kubectl --kubeconfig %s get ns\n\n", kubeconfig)
	fmt.Fprintf(o.Out, "Stop it with Ctrl-C (SIGINT) or SIGTERM; the data stays in %s.\n", dir)

	select {
	case <-ctx.Done():
		fmt.Fprintln(o.ErrOut, "stopping: scheduler, apiserver, then etcd")
		return nil
	case err := <-inst.Err():
		return fmt.Errorf("local: %w", err)
	case err := <-member.Err():
		return fmt.Errorf("local: %w", err)
	case err := <-sched.err:
		return fmt.Errorf("local: %w", err)
	case err := <-cm.err:
		return fmt.Errorf("local: %w", err)
	}
}

// PKISpec is what Up issues the PKI for: one master named "local" at
// 127.0.0.1, behind a "load balancer" that is the apiserver itself at
// 127.0.0.1:port, with the cluster spec's default lifetimes.
func PKISpec(dir string, port int) pki.Spec {
	svc := netip.MustParsePrefix(ServiceCIDR)
	return pki.Spec{
		ClusterName:         ClusterName,
		Hosts:               []pki.Host{{Name: HostName, Address: Address, Role: pki.RoleMaster}},
		APIServerURL:        "https://" + net.JoinHostPort(Address, strconv.Itoa(port)),
		LoadBalancerAddress: Address,
		KubernetesServiceIP: svc.Masked().Addr().Next(),
		ClusterDomain:       "cluster.local",
		Dir:                 filepath.Join(dir, PKIDir),
		CAValidity:          10 * 365 * 24 * time.Hour,
		CertValidity:        365 * 24 * time.Hour,
	}
}

// issuePKI issues (or reuses) the PKI under dir/pki. A new port only
// rewrites the kubeconfigs.
func issuePKI(ctx context.Context, dir string, port int, progress io.Writer) (*pki.Inventory, error) {
	inv, err := pki.NewInventory(PKISpec(dir, port), "")
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if _, err := pki.Init(ctx, inv, pki.InitOptions{}); err != nil {
		return nil, fmt.Errorf("local: PKI: %w", err)
	}
	return inv, nil
}

// hostFile returns the path, relative to dir, of a file of the local
// host's PKI folder: its own certificate or key (id "local/NAME"), or its
// copy of a CA certificate or the service-account key pair (source
// path, relative to the PKI dir).
func hostFile(inv *pki.Inventory, source string) (string, error) {
	for _, f := range inv.FilesFor(HostName) {
		if f.Source == source || f.Path == source {
			return PKIDir + "/" + f.Path, nil
		}
	}
	return "", fmt.Errorf("local: the PKI inventory has no %s for host %s", source, HostName)
}

// files resolves the PKI files the role configs name, relative to dir.
func files(inv *pki.Inventory) (map[string]string, error) {
	out := map[string]string{}
	own := func(key, id string, key2 bool) error {
		c := inv.Cert(id)
		if c == nil {
			return fmt.Errorf("local: the PKI inventory has no certificate %s", id)
		}
		p := c.CertFile
		if key2 {
			p = c.KeyFile
		}
		f, err := hostFile(inv, p)
		out[key] = f
		return err
	}
	for _, e := range []struct {
		key, id string
		isKey   bool
	}{
		{"EtcdServerCert", HostName + "/etcd-server", false}, {"EtcdServerKey", HostName + "/etcd-server", true},
		{"EtcdPeerCert", HostName + "/etcd-peer", false}, {"EtcdPeerKey", HostName + "/etcd-peer", true},
		{"APIServerCert", HostName + "/apiserver", false}, {"APIServerKey", HostName + "/apiserver", true},
		{"EtcdClientCert", HostName + "/apiserver-etcd-client", false}, {"EtcdClientKey", HostName + "/apiserver-etcd-client", true},
		{"KubeletClientCert", HostName + "/apiserver-kubelet-client", false}, {"KubeletClientKey", HostName + "/apiserver-kubelet-client", true},
	} {
		if err := own(e.key, e.id, e.isKey); err != nil {
			return nil, err
		}
	}
	for key, src := range map[string]string{
		"EtcdCA":    inv.Cert(pki.EtcdCA).CertFile,
		"ClusterCA": inv.Cert(pki.ClusterCA).CertFile,
		"SAKey":     inv.ServiceAccountKey,
		"SAPub":     inv.ServiceAccountPub,
	} {
		f, err := hostFile(inv, src)
		if err != nil {
			return nil, err
		}
		out[key] = f
	}
	return out, nil
}

// etcdHeader and apiserverHeader open the config files Up writes.
const (
	etcdHeader = `# Written by "kforge local up" on its first run and reused after: it fixes
# etcd's ports and data dir. Relative paths are against this file's folder.
`
	apiserverHeader = `# Written by "kforge local up" on every start. Relative paths are against
# this file's folder.
`
)

// writeConfig writes a role config document after a comment header.
func writeConfig(path, header string, c roleconfig.Config) error {
	data, err := roleconfig.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append([]byte(header), data...), 0o600)
}

// etcdConfig loads DIR/etcd.yaml, writing it first on the first run with
// client and peer ports the OS picks.
func etcdConfig(dir string, inv *pki.Inventory) (*etcd.Config, error) {
	path := filepath.Join(dir, EtcdConfig)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		f, err := files(inv)
		if err != nil {
			return nil, err
		}
		client, peer, err := freePorts()
		if err != nil {
			return nil, fmt.Errorf("local: picking etcd ports: %w", err)
		}
		peerURL := "https://" + net.JoinHostPort(Address, strconv.Itoa(peer))
		c := etcd.NewConfig()
		c.Name, c.DataDir = HostName, EtcdDataDir
		c.ListenPeerURLs = []string{peerURL}
		c.ListenClientURLs = []string{"https://" + net.JoinHostPort(Address, strconv.Itoa(client))}
		c.InitialCluster = HostName + "=" + peerURL
		c.InitialClusterState, c.InitialClusterToken = etcd.ClusterStateNew, "kforge-local"
		c.TLS = etcd.TLS{
			CertFile: f["EtcdServerCert"], KeyFile: f["EtcdServerKey"],
			PeerCertFile: f["EtcdPeerCert"], PeerKeyFile: f["EtcdPeerKey"],
			TrustedCAFile: f["EtcdCA"],
		}
		c.MetricsAddress = "127.0.0.1:0" // a free port on each start
		if err := writeConfig(path, etcdHeader, c); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	c, err := etcd.LoadConfig(path)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	return c, nil
}

// apiserverConfig writes DIR/apiserver.yaml for this run and loads it.
func apiserverConfig(dir string, inv *pki.Inventory, port int, etcdURL string) (*apiserver.Config, error) {
	f, err := files(inv)
	if err != nil {
		return nil, err
	}
	// Secrets are encrypted at rest here as on a real cluster, with a
	// key made on the first run and kept.
	enc, err := pki.EncryptionKey(inv.Dir)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	c := apiserver.NewConfig()
	c.BindAddress = net.JoinHostPort(Address, strconv.Itoa(port))
	c.TLS = apiserver.ServingTLS{CertFile: f["APIServerCert"], KeyFile: f["APIServerKey"], ClientCAFile: f["ClusterCA"]}
	c.Etcd.Endpoints = []string{etcdURL}
	c.Etcd.CAFile, c.Etcd.CertFile, c.Etcd.KeyFile = f["EtcdCA"], f["EtcdClientCert"], f["EtcdClientKey"]
	c.KubeletClient = apiserver.KubeletClient{CertFile: f["KubeletClientCert"], KeyFile: f["KubeletClientKey"]}
	c.ServiceCIDR = ServiceCIDR
	c.ServiceAccount = apiserver.ServiceAccount{KeyFile: f["SAKey"], PublicKeyFile: f["SAPub"]}
	c.Metrics.Enabled = true
	c.Encryption.ProviderConfigFile = enc
	path := filepath.Join(dir, APIServerConf)
	if err := writeConfig(path, apiserverHeader, c); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	loaded, err := apiserver.LoadConfig(path)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	return loaded, nil
}

// freePorts asks the OS for two free loopback ports. Both listeners are
// held open together so the two differ.
func freePorts() (a, b int, err error) {
	l1, err := net.Listen("tcp", net.JoinHostPort(Address, "0"))
	if err != nil {
		return 0, 0, err
	}
	defer l1.Close()
	l2, err := net.Listen("tcp", net.JoinHostPort(Address, "0"))
	if err != nil {
		return 0, 0, err
	}
	defer l2.Close()
	return l1.Addr().(*net.TCPAddr).Port, l2.Addr().(*net.TCPAddr).Port, nil
}

// waitReadyz polls server/readyz, trusting the cluster CA, until it
// answers 200 or ctx ends.
func waitReadyz(ctx context.Context, server, caFile string) error {
	pool, err := cert.NewPool(caFile)
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	u, err := url.JoinPath(server, "readyz")
	if err != nil {
		return err
	}
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("apiserver /readyz not ok: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitForDefaultServiceAccount waits until the controller manager has
// made the "default" ServiceAccount of the default namespace.
func waitForDefaultServiceAccount(ctx context.Context, kubeconfig []byte) error {
	rc, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	var last error
	for {
		_, last = cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no default service account: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

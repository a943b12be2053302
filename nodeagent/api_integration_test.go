package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	k8sscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	streamhttp "k8s.io/streaming/pkg/httpstream"
	utilexec "k8s.io/utils/exec"

	"kforge.dev/kforge/controlplane/local"
	"kforge.dev/kforge/internal/busyboximage"
	"kforge.dev/kforge/pki"
)

// clusterCA signs test certificates with the local control plane's
// cluster CA.
type clusterCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	file string
}

func loadClusterCA(t *testing.T, dir string) *clusterCA {
	t.Helper()
	inv, err := pki.NewInventory(local.PKISpec(dir, 6443), "")
	if err != nil {
		t.Fatal(err)
	}
	c := inv.Cert(pki.ClusterCA)
	pair, err := tls.LoadX509KeyPair(inv.Path(c.CertFile), inv.Path(c.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	crt, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return &clusterCA{cert: crt, key: pair.PrivateKey.(crypto.Signer), file: inv.Path(c.CertFile)}
}

// issue writes a leaf certificate and key under dir and returns their
// paths; server certificates are for 127.0.0.1.
func (ca *clusterCA) issue(t *testing.T, dir, cn string, orgs []string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// httpsClient trusts the cluster CA and presents the given certificate
// (none when certFile is empty).
func (ca *clusterCA) httpsClient(t *testing.T, certFile, keyFile string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// notifyWriter collects output and signals when it contains want.
type notifyWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newNotifyWriter(want string) *notifyWriter {
	return &notifyWriter{want: want, seen: make(chan struct{})}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *notifyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// kubectlExecutor is what kubectl 1.37 builds for exec and attach:
// WebSocket first, SPDY when the upgrade is refused.
func kubectlExecutor(t *testing.T, rc *rest.Config, req *rest.Request) remotecommand.Executor {
	t.Helper()
	sp, err := remotecommand.NewSPDYExecutor(rc, "POST", req.URL())
	if err != nil {
		t.Fatal(err)
	}
	ws, err := remotecommand.NewWebSocketExecutor(rc, "GET", req.URL().String())
	if err != nil {
		t.Fatal(err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, sp, func(err error) bool {
		return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

// TestAgentAPI runs a pod on a real agent and uses it through the
// apiserver as kubectl does: logs (options, follow), exec with stdin and
// an exit code, attach to the container's stdin and stdout, port-forward
// to a server in the pod, nodes/proxy; and the agent API's own
// authentication (401) and authorization (403).
func TestAgentAPI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs containerd, mounts network namespaces and runs CNI plugins")
	}
	if testing.Short() {
		t.Skip("starts containerd and a control plane")
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is not installed (hack/install-deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := unmountVolumes(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	sock := startContainerd(t, filepath.Join(dir, "containerd"))
	hostNS, err := newNetNS(filepath.Join(dir, "netns"), "node")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeNetNS(hostNS); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := busyboximage.Write(&archive, busybox, itImage); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(images, "busybox.tar"), archive.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	rc, cpDir := startControlPlaneDir(t)
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ca := loadClusterCA(t, cpDir)
	certs := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	const node = "agent-api-it"
	serverCert, serverKey := ca.issue(t, certs, node, nil, true)

	cfg := NewConfig()
	// The node's InternalIP is loopback: the apiserver reaches the agent
	// API there.
	cfg.NodeName, cfg.NodeAddress, cfg.Kubeconfig = node, "127.0.0.1", "unused"
	cfg.Containerd.Socket = sock
	cfg.CNI.ConfDir = filepath.Join(dir, "net.d")
	cfg.CNI.Bridge = "kft1"
	cfg.CNI.Masquerade = false
	cfg.PodCIDRSource, cfg.PodCIDR = PodCIDRStatic, "198.19.8.0/24"
	cfg.ClusterDNS = itDNS
	cfg.RootDir = filepath.Join(dir, "agent")
	cfg.RunDir = filepath.Join(dir, "run")
	cfg.PodLogDir = filepath.Join(dir, "logs")
	cfg.ImageDir = images
	cfg.HealthAddress = ""
	cfg.Server = Server{Address: "127.0.0.1:0", CertFile: serverCert, KeyFile: serverKey, ClientCAFile: ca.file}
	cfg.Version = "v1.37.0-kforge-test"
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	cniExec := &nsExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, path: hostNS}
	stopAgent := runAgent(t, cfg, rc, cniExec)
	ctx := t.Context()

	// The Node publishes the API's port.
	var port int32
	eventually(t, "node Ready with its API port", itWaitLong, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		port = n.Status.DaemonEndpoints.KubeletEndpoint.Port
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && port > 0 {
				return nil
			}
		}
		return fmt.Errorf("port %d, conditions %+v", port, n.Status.Conditions)
	})
	apiURL := "https://127.0.0.1:" + strconv.Itoa(int(port))

	// A pod that logs to both streams, echoes its stdin (cat) and serves
	// HTTP on 8080.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "talk", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name: "talk", Image: itImage, Stdin: true,
				Command: []string{"sh", "-c", `mkdir -p /www && echo port-forwarded > /www/index.html && ` +
					`httpd -f -p 8080 -h /www & echo hello-stdout; echo hello-stderr >&2; exec cat`},
			}},
		},
	}
	created, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	logs := func(o *corev1.PodLogOptions) string {
		t.Helper()
		b, err := cs.CoreV1().Pods("default").GetLogs("talk", o).DoRaw(ctx)
		if err != nil {
			t.Fatalf("pods/log %+v: %v", o, err)
		}
		return string(b)
	}
	eventually(t, "pod talk running with its output logged", itWaitLong, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "talk", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		b, err := cs.CoreV1().Pods("default").GetLogs("talk", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "hello-stdout\n") || !strings.Contains(string(b), "hello-stderr\n") {
			return fmt.Errorf("log %q", b)
		}
		return nil
	})

	// The file is in the CRI format.
	logFile := filepath.Join(cfg.PodLogDir, "default_talk_"+string(created.UID), "talk", "0.log")
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	record := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) F hello-(stdout|stderr)$`)
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !record.MatchString(l) {
			t.Errorf("log record %q is not in the CRI format", l)
		}
	}
	one := int64(1)
	if got := logs(&corev1.PodLogOptions{TailLines: &one}); strings.Count(got, "\n") != 1 {
		t.Errorf("tailLines=1: %q", got)
	}
	if got := logs(&corev1.PodLogOptions{Timestamps: true}); !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\S+Z hello-stdout$`).MatchString(got) {
		t.Errorf("timestamps: %q", got)
	}
	if got := logs(&corev1.PodLogOptions{LimitBytes: &one}); got != "h" {
		t.Errorf("limitBytes=1: %q", got)
	}

	// logs -f: follow sees what the container writes later.
	followCtx, stopFollow := context.WithCancel(ctx)
	stream, err := cs.CoreV1().Pods("default").GetLogs("talk", &corev1.PodLogOptions{Follow: true}).Stream(followCtx)
	if err != nil {
		t.Fatal(err)
	}
	followed := make(chan string, 16)
	var followWG sync.WaitGroup
	followWG.Go(func() {
		defer close(followed)
		sc := bufio.NewScanner(stream)
		for sc.Scan() {
			followed <- sc.Text()
		}
	})
	waitLine := func(ch <-chan string, want string) {
		t.Helper()
		for l := range ch {
			if l == want {
				return
			}
		}
		t.Fatalf("the followed log ended before %q", want)
	}
	waitLine(followed, "hello-stdout")

	// exec with stdin, as kubectl exec -i.
	execReq := func(cmd ...string) *rest.Request {
		return cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("talk").SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: "talk", Command: cmd, Stdin: true, Stdout: true, Stderr: true}, paramCodec)
	}
	var out, errOut bytes.Buffer
	err = kubectlExecutor(t, rc, execReq("cat")).StreamWithContext(ctx, remotecommand.StreamOptions{
		Stdin: strings.NewReader("piped through exec\n"), Stdout: &out, Stderr: &errOut})
	if err != nil || out.String() != "piped through exec\n" {
		t.Fatalf("exec cat: %v; stdout %q stderr %q", err, out.String(), errOut.String())
	}
	// Output of an exec'd process into the container's stdout reaches
	// the followed log.
	out.Reset()
	err = kubectlExecutor(t, rc, execReq("sh", "-c", "echo to-pid-1 > /proc/1/fd/1; echo out; echo err >&2; exit 3")).
		StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
	var exit utilexec.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 3 || out.String() != "out\n" || !strings.Contains(errOut.String(), "err\n") {
		t.Fatalf("exec exit 3: %v; stdout %q stderr %q", err, out.String(), errOut.String())
	}
	// What the refused WebSocket try costs kubectl: exec round trips with
	// its fallback executor and with SPDY alone (reported, not asserted).
	spdyOnly := func(req *rest.Request) remotecommand.Executor {
		ex, err := remotecommand.NewSPDYExecutor(rc, "POST", req.URL())
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	for _, m := range []struct {
		name string
		ex   func(*rest.Request) remotecommand.Executor
	}{{"kubectl (WebSocket, then SPDY)", func(r *rest.Request) remotecommand.Executor { return kubectlExecutor(t, rc, r) }}, {"SPDY only", spdyOnly}} {
		const n = 5
		start := time.Now()
		for range n {
			var o bytes.Buffer
			if err := m.ex(execReq("true")).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: &o, Stderr: io.Discard}); err != nil {
				t.Fatalf("exec true (%s): %v", m.name, err)
			}
		}
		t.Logf("exec round trip through the apiserver, %s: %s", m.name, (time.Since(start) / n).Round(100*time.Microsecond))
	}

	// exec -t: the command gets a terminal.
	out.Reset()
	ttyReq := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("talk").SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "talk", Command: []string{"sh", "-c", "test -t 0 && test -t 1 && echo a-terminal"}, Stdin: true, Stdout: true, TTY: true}, paramCodec)
	// Input stays open while the command runs, as a terminal's would (its
	// end hangs the terminal up).
	ttyIn, ttyInW := io.Pipe()
	var ttyOut bytes.Buffer
	err = kubectlExecutor(t, rc, ttyReq).StreamWithContext(ctx, remotecommand.StreamOptions{
		Stdin: ttyIn, Stdout: &ttyOut, Tty: true})
	ttyInW.Close()
	if err != nil || strings.TrimSpace(ttyOut.String()) != "a-terminal" {
		t.Errorf("exec -t: %v; output %q", err, ttyOut.String())
	}
	waitLine(followed, "to-pid-1")
	stopFollow()
	followWG.Wait()
	stream.Close()

	// attach: input reaches the container's stdin, its echo comes back.
	attachReq := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("talk").SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Container: "talk", Stdin: true, Stdout: true, Stderr: true}, paramCodec)
	inR, inW := io.Pipe()
	attachOut := newNotifyWriter("via attach\n")
	attachDone := make(chan error, 1)
	go func() {
		attachDone <- kubectlExecutor(t, rc, attachReq).StreamWithContext(ctx, remotecommand.StreamOptions{
			Stdin: inR, Stdout: attachOut, Stderr: io.Discard})
	}()
	if _, err := io.WriteString(inW, "via attach\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-attachOut.seen:
	case err := <-attachDone:
		t.Fatalf("attach ended before the echo: %v; output %q", err, attachOut.String())
	}
	inW.Close()
	if err := <-attachDone; err != nil {
		t.Errorf("attach: %v", err)
	}
	if got := logs(&corev1.PodLogOptions{}); !strings.Contains(got, "via attach\n") {
		t.Errorf("the attached input's echo is not in the log: %q", got)
	}

	// port-forward, as kubectl: SPDY over WebSocket first, then SPDY.
	pfURL := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("talk").SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	tunnel, err := portforward.NewSPDYOverWebsocketDialerForStreaming(pfURL, rc)
	if err != nil {
		t.Fatal(err)
	}
	dialer := portforward.NewFallbackDialerForStreaming(tunnel,
		spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, "POST", pfURL),
		func(err error) bool { return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err) })
	stopPF, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stopPF, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	pfDone := make(chan error, 1)
	go func() { pfDone <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-pfDone:
		t.Fatalf("port-forward: %v", err)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("port-forward ports %v, %v", ports, err)
	}
	var body string
	eventually(t, "HTTP through the port-forward", 20*time.Second, func() error {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(int(ports[0].Local)) + "/index.html")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %q", resp.Status, b)
		}
		return err
	})
	if body != "port-forwarded\n" {
		t.Errorf("port-forward body %q", body)
	}
	close(stopPF)
	if err := <-pfDone; err != nil {
		t.Errorf("port-forward: %v", err)
	}

	// nodes/proxy reaches the agent's stats.
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + node + "/proxy/stats/summary").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sum statsapi.Summary
	if err := json.Unmarshal(raw, &sum); err != nil || sum.Node.NodeName != node || len(sum.Pods) != 1 || sum.Pods[0].PodRef.Name != "talk" {
		t.Errorf("stats summary %s: %v", raw, err)
	}

	// The agent API itself: no certificate is 401, a certificate without
	// rights 403, the apiserver's kubelet client 200.
	get := func(c *http.Client, path string) int {
		t.Helper()
		resp, err := c.Get(apiURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if code := get(ca.httpsClient(t, "", ""), "/healthz"); code != http.StatusUnauthorized {
		t.Errorf("no certificate: %d, want 401", code)
	}
	nobodyCert, nobodyKey := ca.issue(t, certs, "nobody", nil, false)
	nobody := ca.httpsClient(t, nobodyCert, nobodyKey)
	for _, p := range []string{"/healthz", "/containerLogs/default/talk/talk", "/stats/summary", "/metrics"} {
		if code := get(nobody, p); code != http.StatusForbidden {
			t.Errorf("nobody GET %s: %d, want 403", p, code)
		}
	}
	kcCert, kcKey := ca.issue(t, certs, "kforge:apiserver-kubelet-client", nil, false)
	kubeletClient := ca.httpsClient(t, kcCert, kcKey)
	for _, p := range []string{"/healthz", "/containerLogs/default/talk/talk", "/stats/summary", "/metrics"} {
		if code := get(kubeletClient, p); code != http.StatusOK {
			t.Errorf("kubelet client GET %s: %d, want 200", p, code)
		}
	}
	// The steps of the pod's start are timed.
	resp, err := kubeletClient.Get(apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, op := range []string{opNetNS, opNetwork, opVolumes, opImage, opSpec, opCreate, opStart, opStatusUpdate} {
		if !bytes.Contains(metrics, []byte(`kforge_agent_pod_operation_duration_seconds_count{operation="`+op+`"}`)) {
			t.Errorf("/metrics has no timing of %s", op)
		}
	}
	if code := get(kubeletClient, "/containerLogs/default/nope/talk"); code != http.StatusNotFound {
		t.Errorf("logs of a missing pod: %d, want 404", code)
	}

	// A restarted agent reopens the running container's output: what it
	// writes next still reaches the same log file.
	stopAgent()
	runAgent(t, cfg, rc, cniExec)
	eventually(t, "output after an agent restart", itWaitLong, func() error {
		var out, errOut bytes.Buffer
		err := kubectlExecutor(t, rc, execReq("sh", "-c", "echo after-restart > /proc/1/fd/1")).
			StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
		if err != nil {
			return fmt.Errorf("exec: %v (%s)", err, errOut.String())
		}
		b, err := cs.CoreV1().Pods("default").GetLogs("talk", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "after-restart\n") {
			return fmt.Errorf("log %q", b)
		}
		return nil
	})
}

// paramCodec encodes subresource options into queries.
var paramCodec kruntime.ParameterCodec = k8sscheme.ParameterCodec

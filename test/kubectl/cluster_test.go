package main_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The version the kubectl binary reports; kubectl's version skew checks and
// `kubectl version` need it, and a plain `go build` leaves it unset.
const (
	kubectlVersion = "v1.37.2"
	kubectlLdflags = "-X k8s.io/component-base/version.gitVersion=" + kubectlVersion +
		" -X k8s.io/component-base/version.gitMajor=1" +
		" -X k8s.io/component-base/version.gitMinor=37"
)

// suite is what TestMain set up; nil when the suite is not enabled.
var suite *cluster

// skipReason says why suite is nil.
var skipReason = "kubectl suite; set KFORGE_KUBECTL=1 (make test-kubectl does)"

// cluster is one `kforge local up` and a kubectl to drive it.
type cluster struct {
	kubectl    string // the kubectl binary
	dir        string // kforge local's --dir
	kubeconfig string // the admin kubeconfig
	home       string // HOME for kubectl: its discovery cache is shared
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run sets the suite up, runs the tests and always stops kforge.
func run(m *testing.M) int {
	if os.Getenv("KFORGE_KUBECTL") != "1" && os.Getenv("KFORGE_E2E") != "1" {
		return m.Run() // every test skips
	}
	work, err := os.MkdirTemp("", "kforge-kubectl-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(work)

	start := time.Now()
	kubectl, err := buildKubectl(work)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kforge, err := kforgeBinary(work)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kubectl suite: built kubectl and found kforge in %s\n", time.Since(start).Round(time.Second))

	c := &cluster{kubectl: kubectl, dir: filepath.Join(work, "local"), home: filepath.Join(work, "home")}
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := os.MkdirAll(c.home, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stop, err := startLocal(kforge, c.dir, filepath.Join(work, "local.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	suite = c
	skipReason = ""
	return m.Run()
}

// buildKubectl builds this module's kubectl with its version set.
func buildKubectl(work string) (string, error) {
	bin := filepath.Join(work, "kubectl")
	cmd := exec.Command("go", "build", "-ldflags", kubectlLdflags, "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building kubectl: %w\n%s", err, out)
	}
	return bin, nil
}

// kforgeBinary is $KFORGE_BINARY, or kforge built from the repository
// this module sits in (../..).
func kforgeBinary(work string) (string, error) {
	if b := os.Getenv("KFORGE_BINARY"); b != "" {
		return b, nil
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	bin := filepath.Join(work, "kforge")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/kforge")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building kforge in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

// startLocal runs `kforge local up` in its own process group and waits for
// its admin kubeconfig. stop sends SIGTERM to its PID, waits, and kills
// the group if it has not ended within 30s. Pdeathsig stops it too if
// this test binary dies without running stop (a panic, a -timeout).
func startLocal(kforge, dir, logFile string) (stop func() error, err error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(kforge, "local", "up", "--dir", dir, "--port", "0")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting kforge local up: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop = func() error {
		defer log.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				return fmt.Errorf("kforge local up: %w", err)
			}
			if err != nil {
				return fmt.Errorf("kforge local up ended with %w; its log is gone with the temp dir", err)
			}
			return nil
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return errors.New("kforge local up did not stop within 30s of SIGTERM; killed")
		}
	}
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	deadline := time.After(2 * time.Minute)
	for {
		if _, err := os.Stat(kubeconfig); err == nil {
			return stop, nil
		}
		select {
		case err := <-done:
			done <- err // for stop
			out, _ := os.ReadFile(logFile)
			_ = stop()
			return nil, fmt.Errorf("kforge local up ended before it was ready: %v\n%s", err, out)
		case <-deadline:
			out, _ := os.ReadFile(logFile)
			_ = stop()
			return nil, fmt.Errorf("kforge local up: no %s after 2m\n%s", kubeconfig, out)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// result is one kubectl run.
type result struct {
	Out, Err string
	// Klog holds stderr's klog lines ("E1126 10:00:00.000000 ..."), taken
	// out of Err: client-go's own diagnostics (a retried watch, a slow
	// request) come and go with timing, and no test compares them.
	Klog string
	Code int // exit code; -1 if it did not run to an exit
}

func (r result) String() string {
	s := fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Out, r.Err)
	if r.Klog != "" {
		s += "klog:\n" + r.Klog
	}
	return s
}

// klogLine matches the header of a klog line.
var klogLine = regexp.MustCompile(`^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ `)

// splitKlog separates klog lines from the rest of stderr.
func splitKlog(stderr string) (rest, klog string) {
	var r, k strings.Builder
	for _, line := range strings.SplitAfter(stderr, "\n") {
		if klogLine.MatchString(line) {
			k.WriteString(line)
		} else {
			r.WriteString(line)
		}
	}
	return r.String(), k.String()
}

// setup returns the suite's cluster, or skips the test.
func setup(t *testing.T) *cluster {
	t.Helper()
	if suite == nil {
		t.Skip(skipReason)
	}
	return suite
}

// run runs kubectl as the admin with stdin (may be empty).
func (c *cluster) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return c.runAs(t, c.kubeconfig, stdin, args...)
}

// runAs runs kubectl with the given kubeconfig, bounded to a minute.
func (c *cluster) runAs(t *testing.T, kubeconfig, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectl, args...)
	cmd.Env = c.env(kubeconfig)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("kubectl %s: no exit within a minute\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out.String(), errOut.String())
	}
	r := result{Out: out.String(), Code: cmd.ProcessState.ExitCode()}
	r.Err, r.Klog = splitKlog(errOut.String())
	// One line a run keeps a failing test's output short enough to read;
	// the checks print the whole result when they fail.
	t.Logf("kubectl %s: exit %d", strings.Join(args, " "), r.Code)
	if r.Klog != "" {
		t.Logf("kubectl %s: klog:\n%s", strings.Join(args, " "), r.Klog)
	}
	return r
}

func (c *cluster) env(kubeconfig string) []string {
	env := []string{"KUBECONFIG=" + kubeconfig, "HOME=" + c.home}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k == "PATH" || k == "TMPDIR" {
			env = append(env, kv)
		}
	}
	return env
}

// ok runs kubectl as the admin and fails the test unless it exits 0.
func (c *cluster) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := c.run(t, "", args...)
	if r.Code != 0 {
		t.Fatalf("kubectl %s: %s", strings.Join(args, " "), r)
	}
	if r.Err != "" {
		t.Errorf("kubectl %s: unexpected stderr (a warning?): %s", strings.Join(args, " "), r.Err)
	}
	return r.Out
}

// apply pipes a manifest into `kubectl apply -f -` plus args and fails
// unless it exits 0.
func (c *cluster) apply(t *testing.T, manifest string, args ...string) string {
	t.Helper()
	r := c.run(t, manifest, append([]string{"apply", "-f", "-"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("kubectl apply %s: %s", strings.Join(args, " "), r)
	}
	return r.Out
}

// namespace creates a namespace for the test, named after it.
func (c *cluster) namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	name = strings.Trim(name, "-")
	if len(name) > 50 {
		name = name[:50]
	}
	if out := c.ok(t, "create", "namespace", name); out != "namespace/"+name+" created\n" {
		t.Fatalf("create namespace printed %q", out)
	}
	// As upstream's e2e framework: a namespace is ready for a test once
	// the controller manager has given it its "default" ServiceAccount
	// (pods are refused before) and its kube-root-ca.crt ConfigMap.
	deadline := time.Now().Add(30 * time.Second)
	for {
		sa := c.run(t, "", "get", "serviceaccount", "default", "-n", name, "-o", "name")
		cm := c.run(t, "", "get", "configmap", "kube-root-ca.crt", "-n", name, "-o", "name")
		if sa.Code == 0 && cm.Code == 0 {
			return name
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s: no default ServiceAccount or kube-root-ca.crt after 30s: %s %s", name, sa, cm)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// userKubeconfig writes a kubeconfig for user (groups as organizations)
// with a client certificate from the cluster CA in DIR/pki, pointing at
// the same server as the admin's.
func (c *cluster) userKubeconfig(t *testing.T, user string, groups ...string) string {
	t.Helper()
	caDir := filepath.Join(c.dir, "pki", "ca")
	caCert, caKey := readCA(t, filepath.Join(caDir, "cluster-ca.crt"), filepath.Join(caDir, "cluster-ca.key"))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, kf := filepath.Join(dir, user+".crt"), filepath.Join(dir, user+".key")
	if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	// The way a user would: kubectl config, into a new file.
	server := c.ok(t, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
	kc := filepath.Join(dir, user+".kubeconfig")
	for _, args := range [][]string{
		{"config", "set-cluster", "local", "--server=" + server, "--certificate-authority=" + filepath.Join(caDir, "cluster-ca.crt"), "--embed-certs"},
		{"config", "set-credentials", user, "--client-certificate=" + crt, "--client-key=" + kf, "--embed-certs"},
		{"config", "set-context", user, "--cluster=local", "--user=" + user},
		{"config", "use-context", user},
	} {
		if r := c.runAs(t, kc, "", args...); r.Code != 0 {
			t.Fatalf("kubectl %s: %s", strings.Join(args, " "), r)
		}
	}
	return kc
}

func readCA(t *testing.T, certFile, keyFile string) (*x509.Certificate, any) {
	t.Helper()
	block := func(file string) *pem.Block {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		if b == nil {
			t.Fatalf("%s: no PEM block", file)
		}
		return b
	}
	cert, err := x509.ParseCertificate(block(certFile).Bytes)
	if err != nil {
		t.Fatal(err)
	}
	kb := block(keyFile)
	if k, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		return cert, k
	}
	if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		return cert, k
	}
	k, err := x509.ParsePKCS1PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatalf("%s: not a PKCS#8, EC or PKCS#1 key: %v", keyFile, err)
	}
	return cert, k
}

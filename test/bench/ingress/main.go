// Command ingress measures the ingress data path against nginx, side by
// side on one machine: a small backend (nginx answering a fixed 13-byte
// body), nginx as a reverse proxy to it with upstream keep-alive, and
// the kforge data path (ingress.Proxy with a table routing every request
// to the same backend), each in its own process. wrk drives each with
// the same connections and duration over HTTP and HTTPS and the figures
// are printed side by side: req/s, p50 and p99 latency, and the
// kforge/nginx ratio. Then the heap taken by a routing table of 1,000
// Ingresses (and by the API objects it is built from).
//
// It needs nginx and wrk on PATH (Debian: nginx-light, wrk); every child
// process is stopped by its PID before it returns.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kforge.dev/kforge/ingress"
)

var cpuProfile string

func main() {
	role := flag.String("role", "", "internal: run as the kforge data path child")
	backend := flag.String("backend", "", "internal: the backend address for -role kforge")
	httpAddr := flag.String("http", "", "internal: HTTP listen address for -role kforge")
	httpsAddr := flag.String("https", "", "internal: HTTPS listen address for -role kforge")
	duration := flag.Duration("duration", 10*time.Second, "wrk run per target and protocol")
	conns := flag.Int("connections", 64, "wrk connections")
	rounds := flag.Int("rounds", 3, "wrk runs per target, alternating targets; the median is shown")
	threads := flag.Int("threads", 2, "wrk threads")
	ingresses := flag.Int("ingresses", 1000, "Ingresses in the memory measurement")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the kforge child to this file")
	flag.Parse()
	var err error
	if *role == "kforge" {
		err = serveKforge(*backend, *httpAddr, *httpsAddr)
	} else {
		err = run(*duration, *rounds, *conns, *threads, *ingresses)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// child is a process started by the bench and stopped by its PID.
type child struct {
	name string
	cmd  *exec.Cmd
}

func start(name string, args []string, dir string) (*child, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &child{name: name, cmd: cmd}, nil
}

func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

const nginxConf = `worker_processes %d;
pid %[2]s/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:%[3]d;
    location / { return 200 "hello, world\n"; }
  }
  upstream backend {
    server 127.0.0.1:%[3]d;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:%[4]d;
    listen 127.0.0.1:%[5]d ssl;
    ssl_certificate %[2]s/tls.crt;
    ssl_certificate_key %[2]s/tls.key;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-ID $request_id;
    }
  }
}
`

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   string
}

var (
	rpsRe   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	latRe   = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	errorRe = regexp.MustCompile(`(Socket errors:.*|Non-2xx or 3xx responses: \d+)`)
)

func runWrk(url string, d time.Duration, conns, threads int) (result, error) {
	out, err := exec.Command("wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", d.String(), "--latency", url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	var r result
	m := rpsRe.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk %s: no Requests/sec in\n%s", url, out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	for _, l := range latRe.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(l[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(l[3])]
		if string(l[1]) == "50" {
			r.p50 = time.Duration(v * float64(unit))
		} else {
			r.p99 = time.Duration(v * float64(unit))
		}
	}
	for _, e := range errorRe.FindAll(out, -1) {
		r.errors += string(e) + "; "
	}
	return r, nil
}

func run(d time.Duration, rounds, conns, threads, nIngresses int) error {
	for _, tool := range []string{"nginx", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (Debian: apt-get install nginx-light wrk)", tool)
		}
	}
	dir, err := os.MkdirTemp("", "kforge-ingress-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeCert(dir); err != nil {
		return err
	}
	var ports [5]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	backendPort, nginxHTTP, nginxHTTPS, kfHTTP, kfHTTPS := ports[0], ports[1], ports[2], ports[3], ports[4]
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, runtime.NumCPU(), dir, backendPort, nginxHTTP, nginxHTTPS), 0o644); err != nil {
		return err
	}
	var children []*child
	defer func() {
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop()
		}
	}()
	stopOnSignal(&children)
	ng, err := start("nginx", []string{"nginx", "-p", dir, "-c", conf, "-g", "daemon off; master_process on;"}, dir)
	if err != nil {
		return err
	}
	children = append(children, ng)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	kfArgs := []string{self, "-role", "kforge", "-backend", fmt.Sprintf("127.0.0.1:%d", backendPort),
		"-http", fmt.Sprintf("127.0.0.1:%d", kfHTTP), "-https", fmt.Sprintf("127.0.0.1:%d", kfHTTPS)}
	if cpuProfile != "" {
		abs, err := filepath.Abs(cpuProfile)
		if err != nil {
			return err
		}
		kfArgs = append(kfArgs, "-cpuprofile", abs)
	}
	kf, err := start("kforge", kfArgs, dir)
	if err != nil {
		return err
	}
	children = append(children, kf)
	for _, p := range ports {
		if err := waitListening(fmt.Sprintf("127.0.0.1:%d", p)); err != nil {
			return err
		}
	}
	fmt.Printf("wrk -t%d -c%d -d%s --latency, %d rounds, %d CPUs, %s; backend: nginx returning 13 bytes\n", threads, conns, d, rounds, runtime.NumCPU(), nginxVersion())
	fmt.Printf("%-6s %-8s %12s %10s %10s  %-14s %s\n", "proto", "target", "req/s", "p50", "p99", "kforge/nginx", "(median of the rounds)")
	type target struct {
		proto, name, url string
	}
	targets := []target{
		{"http", "direct", fmt.Sprintf("http://127.0.0.1:%d/", backendPort)},
		{"http", "nginx", fmt.Sprintf("http://127.0.0.1:%d/", nginxHTTP)},
		{"http", "kforge", fmt.Sprintf("http://127.0.0.1:%d/", kfHTTP)},
		{"https", "nginx", fmt.Sprintf("https://127.0.0.1:%d/", nginxHTTPS)},
		{"https", "kforge", fmt.Sprintf("https://127.0.0.1:%d/", kfHTTPS)},
	}
	// A short warm-up of each, so pools and TLS sessions exist.
	for _, t := range targets {
		if _, err := runWrk(t.url, time.Second, conns, threads); err != nil {
			return err
		}
	}
	// Rounds alternate the targets, and the median round of each is
	// shown, so load from elsewhere on the machine hits both alike.
	runs := map[target][]result{}
	for range rounds {
		for _, t := range targets {
			r, err := runWrk(t.url, d, conns, threads)
			if err != nil {
				return err
			}
			runs[t] = append(runs[t], r)
		}
	}
	nginxRPS := map[string]float64{}
	for _, t := range targets {
		rs := runs[t]
		slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.rps, b.rps) })
		r := rs[len(rs)/2]
		ratio := ""
		switch t.name {
		case "nginx":
			nginxRPS[t.proto] = r.rps
		case "kforge":
			ratio = fmt.Sprintf("%.2f× req/s", r.rps/nginxRPS[t.proto])
		}
		var all []string
		for _, x := range rs {
			all = append(all, strconv.FormatFloat(x.rps, 'f', 0, 64))
			if x.errors != "" {
				ratio += "  (" + strings.TrimSuffix(x.errors, "; ") + ")"
			}
		}
		fmt.Printf("%-6s %-8s %12.0f %10s %10s  %-14s rounds: %s\n", t.proto, t.name, r.rps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), ratio, strings.Join(all, " "))
	}
	return memory(nIngresses)
}

func nginxVersion() string {
	out, _ := exec.Command("nginx", "-v").CombinedOutput()
	return strings.TrimSpace(strings.TrimPrefix(string(out), "nginx version: "))
}

func stopOnSignal(children *[]*child) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		for i := len(*children) - 1; i >= 0; i-- {
			(*children)[i].stop()
		}
		os.Exit(1)
	}()
}

// serveKforge is the kforge child: the data path with one catch-all
// route to the backend, on HTTP and HTTPS (the self-signed bench cert),
// as the role serves it (metrics on, access log off as in the nginx
// config).
func serveKforge(backend, httpAddr, httpsAddr string) error {
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		return err
	}
	cfg := ingress.NewConfig()
	p := ingress.NewProxy(ingress.ProxyOptions{Upstream: cfg.Upstream, Registry: prometheus.NewRegistry()})
	w := world(1, host, port)
	t, problems := ingress.NewBuilder(ingress.Options{ConnectTimeout: cfg.Upstream.ConnectTimeout, Timeout: cfg.Upstream.Timeout}).Build(w)
	if len(problems) > 0 {
		return fmt.Errorf("table: %+v", problems)
	}
	p.SetTable(t)
	cert, err := tls.LoadX509KeyPair("tls.crt", "tls.key")
	if err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 2)
	var servers []*http.Server
	for _, a := range []string{httpAddr, httpsAddr} {
		srv := &http.Server{Addr: a, Handler: p, ReadHeaderTimeout: cfg.Client.ReadHeaderTimeout, IdleTimeout: cfg.Client.IdleTimeout,
			MaxHeaderBytes: cfg.Client.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
		servers = append(servers, srv)
		if a == httpsAddr {
			srv.TLSConfig = p.TLSConfig(&cert)
			go func() { errc <- srv.ListenAndServeTLS("", "") }()
		} else {
			go func() { errc <- srv.ListenAndServe() }()
		}
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, s := range servers {
		_ = s.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// world is n Ingresses (two hosts' worth of paths each, over one Service
// with three endpoints per Ingress); n == 1 is the bench's catch-all.
func world(n int, backendHost, backendPort string) ingress.Sources {
	port, _ := strconv.Atoi(backendPort)
	p32 := int32(port)
	pn := "http"
	yes := true
	pt := networkingv1.PathTypePrefix
	services := map[string]*corev1.Service{}
	sliceOf := map[string][]*discoveryv1.EndpointSlice{}
	var ings []*networkingv1.Ingress
	for i := range n {
		name := fmt.Sprintf("app-%d", i)
		services[name] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name + "-abcde",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &p32}}}
		if n == 1 {
			sl.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{backendHost}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}}}
		} else {
			for j := range 3 {
				sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1)},
					Conditions: discoveryv1.EndpointConditions{Ready: &yes}})
			}
		}
		sliceOf[name] = []*discoveryv1.EndpointSlice{sl}
		be := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: name, Port: networkingv1.ServiceBackendPort{Name: "http"}}}
		host := fmt.Sprintf("app-%d.example.com", i)
		if n == 1 {
			host = ""
		}
		ings = append(ings, &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name, CreationTimestamp: metav1.Now(),
				Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 600)}},
			Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{
				HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{
					{Path: "/", PathType: &pt, Backend: be}, {Path: "/api", PathType: &pt, Backend: be}}}}}}},
		})
	}
	return ingress.Sources{
		Ingresses: ings,
		Service:   func(_, name string) *corev1.Service { return services[name] },
		Slices:    func(_, svc string) []*discoveryv1.EndpointSlice { return sliceOf[svc] },
		Secret:    func(string, string) *corev1.Secret { return nil },
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// memory prints the heap taken by n Ingresses' API objects (what the
// informers hold) and by the routing table built from them, and the
// time to build it.
func memory(n int) error {
	base := heap()
	w := world(n, "", "8080")
	objects := heap() - base
	b := ingress.NewBuilder(ingress.Options{ConnectTimeout: time.Second, Timeout: time.Minute})
	before := heap()
	start := time.Now()
	t, problems := b.Build(w)
	took := time.Since(start)
	tableBytes := heap() - before
	if len(problems) > 0 {
		return fmt.Errorf("table: %d problems, first %+v", len(problems), problems[0])
	}
	fmt.Printf("\n%d Ingresses (2 paths each, a Service with 3 endpoints each): table %s (%d routes), API objects %s, build %s\n",
		n, mib(tableBytes), t.Routes, mib(objects), took.Round(time.Microsecond))
	runtime.KeepAlive(w)
	runtime.KeepAlive(t)
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

// writeCert writes a self-signed certificate for both proxies.
func writeCert(dir string) error {
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", filepath.Join(dir, "tls.key"), "-out", filepath.Join(dir, "tls.crt"), "-days", "1", "-subj", "/CN=bench.test").CombinedOutput()
	if err != nil {
		return fmt.Errorf("openssl: %w\n%s", err, out)
	}
	return nil
}

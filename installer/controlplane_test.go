package installer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/nodeagent"
	"kforge.dev/kforge/pki"
)

// simLog is the order of writes and health checks across every host.
type simLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *simLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *simLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// simHost simulates a host well enough for the control-plane phases:
// files (sha, mode, content), folders, and unit states.
type simHost struct {
	name, role, addr string
	log              *simLog

	mu       sync.Mutex
	files    map[string]ssh.RemoteFile
	contents map[string][]byte
	dirsOK   bool
	etcdData bool              // the etcd data dir holds a member
	units    map[string]string // unit -> is-active
	writes   []string
	uploads  []string
}

var _ Host = (*simHost)(nil)

func (h *simHost) Name() string                  { return h.name }
func (h *simHost) Role() string                  { return h.role }
func (h *simHost) Address() string               { return h.addr }
func (h *simHost) Connect(context.Context) error { return nil }
func (h *simHost) Close() error                  { return nil }

func (h *simHost) Run(_ context.Context, cmd string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case strings.HasPrefix(cmd, ". /etc/os-release"):
		out, _ := labResponder(h.role, "")(cmd)
		if f := h.files[BinaryPath]; f.Exists {
			out += "kforge_sha256=" + f.SHA256 + "\n"
		}
		return out, nil
	case strings.HasPrefix(cmd, "date "):
		return labResponder(h.role, "")(cmd)
	case strings.HasPrefix(cmd, "cat /proc/net/tcp"):
		// kforge's own units hold their ports: preflight must accept that.
		out, err := labResponder(h.role, "")(cmd)
		ports := map[string]string{"kforge-etcd.service": "0953 0954", "kforge-apiserver.service": "192B", "kforge-lb.service": "192B",
			"kforge-controller-manager.service": "2811", "kforge-scheduler.service": "2813"}
		for u, st := range h.units {
			if st == "active" {
				out += "active " + u + "\n"
				for _, p := range strings.Fields(ports[u]) {
					out += "listen 00000000:" + p + "\n"
				}
			}
		}
		return out, err
	case strings.HasPrefix(cmd, "for f in"):
		var b strings.Builder
		for _, p := range strings.Fields(strings.SplitN(strings.TrimPrefix(cmd, "for f in"), ";", 2)[0]) {
			if f := h.files[p]; f.Exists {
				fmt.Fprintf(&b, "%o %s %s %s\n", f.Mode, f.Owner, f.SHA256, p)
			} else {
				fmt.Fprintf(&b, "absent - - %s\n", p)
			}
		}
		return b.String(), nil
	case strings.HasPrefix(cmd, "stat -c %a /etc/kforge"):
		if h.dirsOK {
			return "755\n700\n", nil
		}
		return "", nil
	case strings.HasPrefix(cmd, "test -d /var/lib/kforge/etcd/member"):
		if h.etcdData {
			return "data\n", nil
		}
		return "empty\n", nil
	case strings.HasPrefix(cmd, "systemctl is-active "):
		unit := strings.Fields(cmd)[2]
		st := h.units[unit]
		if st == "" {
			st = "inactive"
		}
		return st + "\nenabled\n", nil
	case strings.HasPrefix(cmd, "cat "):
		return string(h.contents[strings.TrimPrefix(cmd, "cat ")]), nil
	}
	return "", fmt.Errorf("unexpected command %q", cmd)
}

// DialContext answers one HTTP request on the host's loopback, as the
// daemon listening there would: the lb's metrics (every master's apiserver
// up) and the controller manager's and scheduler's /healthz.
func (h *simHost) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	owner := map[string]string{LBMetricsAddress: "kforge-lb.service",
		ControllerManagerMetricsAddress: "kforge-controller-manager.service", SchedulerHealthAddress: "kforge-scheduler.service",
		nodeagent.DefaultHealthAddress: "kforge-agent.service", ProxyHealthAddress: "kforge-proxy.service", DNSHealthAddress: "kforge-dns.service",
		IngressHealthAddress: "kforge-ingress.service"}
	unit := owner[addr]
	if unit == "" || h.units[unit] != "active" {
		return nil, errors.New("connection refused")
	}
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		req, err := http.ReadRequest(bufio.NewReader(server))
		if err != nil {
			return
		}
		var body strings.Builder
		switch {
		case addr == LBMetricsAddress && req.URL.Path == "/metrics":
			h.log.add("lb backends read")
			for _, a := range []string{"198.18.0.11", "198.18.0.12", "198.18.0.13"} {
				fmt.Fprintf(&body, "kforge_lb_backend_up{backend=%q} 1\n", a+":6443")
			}
		case req.URL.Path == "/healthz" || req.URL.Path == "/readyz":
			h.log.add("healthy " + strings.TrimSuffix(strings.TrimPrefix(unit, "kforge-"), ".service") + " " + h.addr)
			body.WriteString("ok")
		}
		resp := &http.Response{StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1,
			ContentLength: int64(body.Len()), Body: io.NopCloser(strings.NewReader(body.String()))}
		_ = resp.Write(server)
	}()
	return client, nil
}

func (h *simHost) Stat(_ context.Context, p string) (ssh.RemoteFile, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.files[p], nil
}

func (h *simHost) Write(_ context.Context, cmd string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writes = append(h.writes, cmd)
	f := strings.Fields(cmd)
	switch {
	case strings.Contains(cmd, "etcd.join"):
		h.log.add(h.name + " join marker")
	case strings.HasPrefix(cmd, "install -d"):
		h.dirsOK = true
	case strings.Contains(cmd, " etcd restore "):
		h.log.add(h.name + " etcd restore")
		aside := f[slices.Index(f, "--move-aside")+1]
		return "restored member " + h.name + " into /var/lib/kforge/etcd; the old data dir is at " + aside + "\n", nil
	case strings.HasPrefix(cmd, "set -e; for u in "):
		// restore's stop script: the units listed stop.
		units := strings.Fields(strings.SplitN(strings.TrimPrefix(cmd, "set -e; for u in "), ";", 2)[0])
		for _, u := range units {
			if h.units[u] == "active" {
				h.units[u] = "inactive"
			}
		}
		h.log.add(h.name + " stop " + strings.Join(units, " "))
	case strings.HasPrefix(cmd, "systemctl enable"), strings.HasPrefix(cmd, "systemctl restart"):
		unit := f[len(f)-1]
		h.units[unit] = "active"
		if unit == "kforge-etcd.service" {
			h.etcdData = true
		}
		h.log.add(h.name + " " + strings.Join(f[len(f)-2:], " "))

	}
	return "", nil
}

func (h *simHost) Upload(_ context.Context, u ssh.Upload) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.files[u.Remote]
	if cur.Exists && cur.SHA256 == u.File.SHA256 && cur.Mode == u.Mode.Perm() && cur.Owner == u.Owner {
		return false, nil
	}
	h.files[u.Remote] = ssh.RemoteFile{Exists: true, SHA256: u.File.SHA256, Mode: u.Mode.Perm(), Owner: u.Owner}
	if u.Remote != BinaryPath {
		r, err := u.File.Open()
		if err != nil {
			return false, err
		}
		data, _ := io.ReadAll(r)
		r.Close()
		h.contents[u.Remote] = data
	}
	h.uploads = append(h.uploads, u.Remote)
	return true, nil
}

func (h *simHost) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writes, h.uploads = nil, nil
}

func (h *simHost) changes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append(append([]string(nil), h.uploads...), h.writes...)
}

// simProber is always healthy and logs each check.
type simProber struct{ log *simLog }

func (p *simProber) EtcdMember(_ context.Context, addr string) (*EtcdStatus, error) {
	p.log.add("healthy etcd " + addr)
	return &EtcdStatus{Leader: 1, MemberID: 1}, nil
}

func (p *simProber) EtcdRejoin(_ context.Context, addrs []string, name, peerURL string) (bool, error) {
	p.log.add("etcd rejoin " + name + " " + peerURL + " via " + strings.Join(addrs, ","))
	return true, nil
}

func (p *simProber) APIServer(_ context.Context, base string) error {
	p.log.add("healthy api " + base)
	return nil
}

const simSpec = `apiVersion: kforge.dev/v1alpha1
kind: Cluster
metadata: {name: sim}
spec:
  ssh: {user: root, identityFile: ./id, knownHosts: ./known_hosts}
  loadBalancer: {address: 198.18.0.10, port: 6443, host: lb}
  network: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.16.0/20}
  hosts:
  - {name: lb, address: 198.18.0.10, role: loadbalancer}
  - {name: m1, address: 198.18.0.11, role: master}
  - {name: m2, address: 198.18.0.12, role: master}
  - {name: m3, address: 198.18.0.13, role: master}
  - {name: w1, address: 198.18.0.21, role: worker}
`

type sim struct {
	t     *testing.T
	c     *v1alpha1.Cluster
	hosts []*simHost
	log   *simLog
	exe   string
}

func newSim(t *testing.T) *sim {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(p, []byte(simSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"id", "known_hosts"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := v1alpha1.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, c: c, log: &simLog{}, exe: exe}
	for _, h := range c.Spec.Hosts {
		s.hosts = append(s.hosts, &simHost{name: h.Name, role: h.Role, addr: h.Address, log: s.log,
			files: map[string]ssh.RemoteFile{}, contents: map[string][]byte{}, units: map[string]string{}})
	}
	return s
}

func (s *sim) host(name string) *simHost {
	for _, h := range s.hosts {
		if h.name == name {
			return h
		}
	}
	return nil
}

func (s *sim) up(dry bool) (*UpResult, string, *recorder) {
	s.t.Helper()
	var hs []Host
	for _, h := range s.hosts {
		h.reset()
		hs = append(hs, h)
	}
	s.log.mu.Lock()
	s.log.lines = nil
	s.log.mu.Unlock()
	var out bytes.Buffer
	rec := &recorder{}
	res, err := Up(context.Background(), UpOptions{
		Cluster: s.c, DryRun: dry, Binary: s.exe, Out: &out, ErrOut: io.Discard, Hosts: hs,
		NewProber: func(*v1alpha1.Cluster, *pki.Inventory) (Prober, error) { return &simProber{log: s.log}, nil },
		Reporter:  rec,
	})
	if err != nil {
		s.t.Fatalf("up: %v\n%s", err, out.String())
	}
	return res, out.String(), rec
}

func TestUpPhaseOrder(t *testing.T) {
	s := newSim(t)
	_, _, rec := s.up(false)
	var got []string
	for _, e := range rec.phaseEvents() {
		if strings.HasSuffix(e, ":start") || strings.HasSuffix(e, ":skipped") {
			got = append(got, e)
		}
	}
	want := "facts:start preflight:start upload-binary:start pki:start distribute-pki:start configs:start etcd:start apiserver:start lb:start wait-api:start controller-manager:start scheduler:start agent:start proxy:start dns:start ingress:start kubeconfig:start"
	if strings.Join(got, " ") != want {
		t.Errorf("phases\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	// etcd members all start before any apiserver, which start before the lb.
	var order []string
	for _, l := range s.log.all() {
		if strings.Contains(l, "restart kforge-") {
			order = append(order, strings.Fields(l)[2])
		}
	}
	if fmt.Sprint(order) != "[kforge-etcd.service kforge-etcd.service kforge-etcd.service kforge-apiserver.service kforge-apiserver.service kforge-apiserver.service kforge-lb.service"+
		" kforge-controller-manager.service kforge-controller-manager.service kforge-controller-manager.service"+
		" kforge-scheduler.service kforge-scheduler.service kforge-scheduler.service kforge-agent.service kforge-proxy.service kforge-dns.service kforge-ingress.service]" {
		t.Errorf("start order %v", order)
	}
	// A worker gets its files but no CA key, nobody else's key, and of the
	// units only the agent's, the proxy's, the DNS server's and the
	// ingress controller's.
	for _, p := range s.host("w1").uploads {
		if strings.Contains(p, "ca.key") || strings.Contains(p, "etcd") || strings.Contains(p, "apiserver") || strings.Contains(p, "sa.key") ||
			strings.Contains(p, "encryption") || (strings.Contains(p, "systemd") && !strings.HasSuffix(p, "/kforge-agent.service") && !strings.HasSuffix(p, "/kforge-proxy.service") && !strings.HasSuffix(p, "/kforge-dns.service") && !strings.HasSuffix(p, "/kforge-ingress.service")) {
			t.Errorf("w1 got %s", p)
		}
	}
	if f := s.host("m1").files["/etc/kforge/pki/sa.key"]; f.Mode != 0o600 {
		t.Errorf("sa.key mode %o", f.Mode)
	}
	if fi, err := os.Stat(AdminKubeconfigPath(s.c.Path)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin kubeconfig: %v %v", fi, err)
	}
}

func TestUpDryRunWritesNothing(t *testing.T) {
	s := newSim(t)
	res, out, _ := s.up(true)
	for _, h := range s.hosts {
		if ch := h.changes(); len(ch) != 0 {
			t.Errorf("%s: %v in a dry run", h.name, ch)
		}
	}
	for _, want := range []string{"+++ /etc/kforge/etcd.yaml", "+kind: EtcdConfig", "systemctl enable --quiet kforge-etcd.service", "m1: upload /etc/kforge/pki/sa.key (new file"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q", want)
		}
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Error("a dry run printed a key")
	}
	if len(res.Changes) == 0 {
		t.Error("no planned changes")
	}
	dir := filepath.Dir(s.c.Path)
	for _, p := range []string{"pki", "admin.kubeconfig", "cluster.journal.jsonl"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("a dry run wrote %s", p)
		}
	}
	// A dry run after an install shows a config's diff.
	s.up(false)
	m2 := s.host("m2")
	m2.mu.Lock()
	m2.files["/etc/kforge/apiserver.yaml"] = ssh.RemoteFile{Exists: true, SHA256: "x", Mode: 0o644, Owner: "root:root"}
	m2.contents["/etc/kforge/apiserver.yaml"] = []byte("edited\n")
	m2.mu.Unlock()
	_, out, _ = s.up(true)
	if !strings.Contains(out, "--- /etc/kforge/apiserver.yaml") || !strings.Contains(out, "-edited") || !strings.Contains(out, "m2: command systemctl restart kforge-apiserver.service") {
		t.Errorf("dry-run diff:\n%s", out)
	}
}

func TestUpNoOpRerunRestartsNothing(t *testing.T) {
	s := newSim(t)
	s.up(false)
	res, _, _ := s.up(false)
	if len(res.Changes) != 0 {
		t.Errorf("no-op re-run changed %v", res.Changes)
	}
	for _, h := range s.hosts {
		if ch := h.changes(); len(ch) != 0 {
			t.Errorf("%s: %v on a no-op re-run", h.name, ch)
		}
	}
}

// A master whose etcd data dir was lost is re-added through the others
// and marked to join before its member starts; nothing else restarts.
func TestWipedEtcdMemberRejoins(t *testing.T) {
	s := newSim(t)
	s.up(false)
	m3 := s.host("m3")
	m3.mu.Lock()
	m3.units["kforge-etcd.service"], m3.etcdData = "inactive", false
	m3.mu.Unlock()

	res, _, _ := s.up(true)
	var dry []string
	for _, c := range res.Changes {
		dry = append(dry, c.String())
	}
	if got := strings.Join(dry, "\n"); !strings.Contains(got, "m3: etcd member m3 (https://198.18.0.13:2380)") ||
		!strings.Contains(got, "etcd.join") {
		t.Errorf("dry run changes:\n%s", got)
	}
	for _, l := range s.log.all() {
		if strings.HasPrefix(l, "etcd rejoin") || strings.Contains(l, "join marker") {
			t.Errorf("the dry run acted: %s", l)
		}
	}

	s.up(false)
	var got []string
	for _, l := range s.log.all() {
		if strings.HasPrefix(l, "etcd rejoin") || strings.Contains(l, "join marker") || strings.Contains(l, "restart kforge-etcd") {
			got = append(got, l)
		}
	}
	want := []string{
		"etcd rejoin m3 https://198.18.0.13:2380 via 198.18.0.11,198.18.0.12",
		"m3 join marker",
		"m3 restart kforge-etcd.service",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("etcd actions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Back to normal: the next run changes nothing.
	if res, _, _ := s.up(false); len(res.Changes) != 0 {
		t.Errorf("the run after the rejoin changed %v", res.Changes)
	}
}

func TestChangedConfigRestartsOnlyThatUnit(t *testing.T) {
	s := newSim(t)
	s.up(false)
	m2 := s.host("m2")
	m2.mu.Lock()
	m2.files["/etc/kforge/etcd.yaml"] = ssh.RemoteFile{Exists: true, SHA256: "x", Mode: 0o644, Owner: "root:root"}
	m2.mu.Unlock()
	s.up(false)
	var restarts []string
	for _, h := range s.hosts {
		for _, w := range h.changes() {
			if strings.HasPrefix(w, "systemctl") {
				restarts = append(restarts, h.name+": "+w)
			}
		}
	}
	if fmt.Sprint(restarts) != "[m2: systemctl restart kforge-etcd.service]" {
		t.Errorf("restarts %v", restarts)
	}
}

func TestBinaryChangeRestartsMastersOneAtATime(t *testing.T) {
	s := newSim(t)
	s.up(false)
	// Every host now has another binary: everything must restart, rolling.
	for _, h := range s.hosts {
		h.mu.Lock()
		h.files[BinaryPath] = ssh.RemoteFile{Exists: true, SHA256: "old", Mode: 0o755, Owner: "root:root"}
		h.mu.Unlock()
	}
	s.up(false)
	lines := s.log.all()
	// After each restart of a serial role (etcd, apiserver, lb), that host
	// is checked healthy before the next restart; the API's clients
	// (controller manager, scheduler) restart freely.
	pending := ""
	n := 0
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[1] == "restart":
			n++
			if !RoleNamed(strings.TrimSuffix(strings.TrimPrefix(f[2], "kforge-"), ".service")).Serial {
				continue
			}
			if pending != "" {
				t.Fatalf("%s restarted before %s was healthy:\n%s", l, pending, strings.Join(lines, "\n"))
			}
			pending = f[0]
		case strings.HasPrefix(l, "healthy ") && pending != "":
			addr := map[string]string{"m1": "198.18.0.11", "m2": "198.18.0.12", "m3": "198.18.0.13", "lb": "198.18.0.10"}[pending]
			if strings.Contains(l, addr) {
				pending = ""
			}
		}
	}
	if n != 17 {
		t.Errorf("%d restarts; want 3 etcd + 3 apiserver + 1 lb + 3 controller managers + 3 schedulers + 1 agent + 1 proxy + 1 dns + 1 ingress:\n%s", n, strings.Join(lines, "\n"))
	}
}

// downHost cannot be reached.
type downHost struct{ *simHost }

func (downHost) Connect(context.Context) error { return fmt.Errorf("dial tcp: connection refused") }

func TestResetSkipsUnreachableHosts(t *testing.T) {
	s := newSim(t)
	s.up(false)
	for _, h := range s.hosts {
		h.reset()
	}
	hs := []Host{s.host("m1"), downHost{s.host("m2")}, s.host("lb")}
	var out bytes.Buffer
	res, err := Reset(context.Background(), ResetOptions{Cluster: s.c, Out: &out, ErrOut: io.Discard, Hosts: hs})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Reset) != "[m1 lb]" || len(res.Skipped) != 1 || res.Skipped["m2"] == "" {
		t.Errorf("reset %v skipped %v", res.Reset, res.Skipped)
	}
	if !strings.Contains(out.String(), "Skipped (unreachable, nothing removed): m2.") {
		t.Errorf("output:\n%s", out.String())
	}
	for _, h := range []*simHost{s.host("m1"), s.host("lb")} {
		w := h.changes()
		if len(w) != 1 || !strings.Contains(w[0], "rm -rf /etc/kforge /var/lib/kforge /usr/local/bin/kforge") || !strings.Contains(w[0], "disable --now") {
			t.Errorf("%s: %v", h.name, w)
		}
	}
	if w := s.host("m2").changes(); len(w) != 0 {
		t.Errorf("m2 (unreachable) got %v", w)
	}
}

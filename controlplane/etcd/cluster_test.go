package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// testLogger shows etcd's warnings and errors with -v; otherwise nothing.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() || os.Getenv("KFORGE_TEST_ETCD_LOGS") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test", t.Name())
}

// freePorts reserves n distinct loopback ports. They are released before
// etcd binds them; another process could take one in between, which is
// rare enough for tests.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// testClusterConfigs returns the configs of an n-member cluster on
// loopback with its own CA; compaction and defrag are off.
func testClusterConfigs(t *testing.T, p *testPKI, n int) []*Config {
	t.Helper()
	ports := freePorts(t, 2*n)
	var initial []string
	cfgs := make([]*Config, n)
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		c := NewConfig()
		c.Name = name
		c.DataDir = t.TempDir()
		c.ListenPeerURLs = []string{fmt.Sprintf("https://127.0.0.1:%d", ports[2*i])}
		c.ListenClientURLs = []string{fmt.Sprintf("https://127.0.0.1:%d", ports[2*i+1])}
		c.MetricsAddress = "127.0.0.1:0"
		c.InitialClusterToken = "test-" + t.Name()
		c.TLS = p.memberTLS(t, name)
		c.Compaction.Interval = 0
		c.Defrag.Interval = 0
		initial = append(initial, name+"="+c.ListenPeerURLs[0])
		cfgs[i] = c
	}
	for _, c := range cfgs {
		c.InitialCluster = strings.Join(initial, ",")
	}
	return cfgs
}

func startMember(t *testing.T, cfg *Config) *Member {
	t.Helper()
	m, err := NewMember(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// startThree starts a three-member cluster and waits until it is ready;
// it skips the test with -short.
func startThree(t *testing.T) (*testPKI, []*Config, []*Member) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	p := newTestPKI(t)
	cfgs := testClusterConfigs(t, p, 3)
	ms := make([]*Member, 3)
	for i, c := range cfgs {
		ms[i] = startMember(t, c)
	}
	waitReady(t, ms...)
	return p, cfgs, ms
}

func waitReady(t *testing.T, ms ...*Member) {
	t.Helper()
	timeout := time.After(45 * time.Second)
	for _, m := range ms {
		select {
		case <-m.ReadyNotify():
		case err := <-m.Err():
			t.Fatalf("member %s failed: %v", m.cfg.Name, err)
		case <-timeout:
			t.Fatalf("member %s not ready in time", m.cfg.Name)
		}
	}
}

func newClient(t *testing.T, p *testPKI, withCert bool, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         p.clientTLS(t, withCert),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func put(t *testing.T, cli *clientv3.Client, key, val string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := cli.Put(ctx, key, val)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

func httpGet(t *testing.T, addr net.Addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr.String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestThreeMembersSurviveOneDown(t *testing.T) {
	p, cfgs, ms := startThree(t)

	var endpoints []string
	for _, c := range cfgs {
		endpoints = append(endpoints, c.ListenClientURLs[0])
	}
	cli := newClient(t, p, true, endpoints[:2]...) // never through m2, which goes down
	for i := range 10 {
		put(t, cli, fmt.Sprintf("/k/%02d", i), "before")
	}

	// Health and metrics on a running member.
	if code, body := httpGet(t, ms[0].MetricsAddr(), "/healthz"); code != 200 {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if code, body := httpGet(t, ms[0].MetricsAddr(), "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, body := httpGet(t, ms[0].MetricsAddr(), "/metrics"); code != 200 ||
		!strings.Contains(body, "etcd_server_has_leader") || !strings.Contains(body, "kforge_etcd_compactions_total") {
		t.Errorf("/metrics = %d, missing etcd or kforge series", code)
	}

	// One member down: the other two still have quorum.
	ms[2].Close()
	if code, body := httpGet(t, ms[0].MetricsAddr(), "/readyz"); code != 200 {
		t.Errorf("/readyz with one member down = %d %s", code, body)
	}
	var last int64
	for i := 10; i < 30; i++ {
		last = put(t, cli, fmt.Sprintf("/k/%02d", i), "while-down")
	}

	// Back again from its data dir: it catches up.
	ms[2] = startMember(t, cfgs[2])
	waitReady(t, ms[2])
	cli2 := newClient(t, p, true, endpoints[2])
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		resp, err := cli2.Get(ctx, "/k/", clientv3.WithPrefix(), clientv3.WithSerializable())
		cancel()
		if err == nil && resp.Header.Revision >= last && len(resp.Kvs) == 30 {
			if got := string(resp.Kvs[29].Value); got != "while-down" {
				t.Fatalf("m2 has /k/29 = %q", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("m2 did not catch up to revision %d: resp=%v err=%v", last, resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := ms[2].Etcd().Server.KV().Rev(), ms[0].Etcd().Server.KV().Rev(); got != want {
		t.Errorf("m2 revision %d, m0 revision %d", got, want)
	}
	// And it takes writes through itself again.
	put(t, cli2, "/k/after", "back")

	// Without quorum the survivor is alive but not ready.
	ms[1].Close()
	ms[2].Close()
	deadline = time.Now().Add(15 * time.Second)
	for {
		code, body := httpGet(t, ms[0].MetricsAddr(), "/readyz")
		if code == http.StatusServiceUnavailable {
			t.Logf("/readyz without quorum: %s", strings.TrimSpace(body))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz without quorum = %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := httpGet(t, ms[0].MetricsAddr(), "/healthz"); code != 200 {
		t.Errorf("/healthz without quorum = %d %s", code, body)
	}

	// Close leaves none of the Member's own goroutines behind.
	ms[0].Close()
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "etcd.(*Member)") {
		t.Errorf("Member goroutines left after Close:\n%s", stacks)
	}
}

func TestClientWithoutCertificateIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	p := newTestPKI(t)
	cfg := testClusterConfigs(t, p, 1)[0]
	m := startMember(t, cfg)
	waitReady(t, m)

	cli := newClient(t, p, false, cfg.ListenClientURLs[0])
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, err := cli.Put(ctx, "/nope", "x")
	if err == nil {
		t.Fatal("a client without a certificate could write")
	}
	if errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("refused by etcd auth, not by TLS: %v", err)
	}
	t.Logf("clientv3 without a certificate: %v", err)

	// Underneath, the TLS handshake itself is refused.
	conn, err := tls.Dial("tcp", strings.TrimPrefix(cfg.ListenClientURLs[0], "https://"), p.clientTLS(t, false))
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("TLS without a client certificate: got %v, want a certificate-required alert", err)
	}

	// The same CA with a client certificate works.
	put(t, newClient(t, p, true, cfg.ListenClientURLs[0]), "/yes", "x")
}

// A member whose data dir was lost rejoins as a new member: removed and
// added again through the others, then started with the join marker and
// its config unchanged ("new"). It catches up and removes the marker.
func TestLostMemberRejoinsWithTheJoinMarker(t *testing.T) {
	p, cfgs, ms := startThree(t)
	cli := newClient(t, p, true, cfgs[0].ListenClientURLs[0], cfgs[1].ListenClientURLs[0])
	for i := range 10 {
		put(t, cli, fmt.Sprintf("/k/%02d", i), "v")
	}

	ms[2].Close()
	if err := os.RemoveAll(cfgs[2].DataDir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		if m.Name == cfgs[2].Name {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				t.Fatalf("member remove: %v", err)
			}
		}
	}
	// etcd refuses to add a voting member until the others have been
	// connected for 5s (strict reconfig check): the cluster is young here.
	for {
		_, err := cli.MemberAdd(ctx, cfgs[2].ListenPeerURLs)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("member add: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	last := put(t, cli, "/k/after-add", "v")
	marker := JoinMarker(cfgs[2].DataDir)
	if err := os.WriteFile(marker, []byte("existing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfgs[2].InitialClusterState != ClusterStateNew {
		t.Fatalf("the config says %q; the marker alone must make it join", cfgs[2].InitialClusterState)
	}

	ms[2] = startMember(t, cfgs[2])
	waitReady(t, ms[2])
	cli2 := newClient(t, p, true, cfgs[2].ListenClientURLs[0])
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		resp, err := cli2.Get(ctx, "/k/", clientv3.WithPrefix(), clientv3.WithSerializable())
		cancel()
		if err == nil && resp.Header.Revision >= last && len(resp.Kvs) == 11 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rejoined member did not catch up to revision %d: %v %v", last, resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the join marker is still there after joining: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	if list, err := cli.MemberList(ctx2); err != nil || len(list.Members) != 3 {
		t.Fatalf("members after the rejoin: %v %v", list, err)
	}
}

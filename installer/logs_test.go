package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
)

// journalHost streams canned journalctl -o json lines, checking the
// command asks for the units it should.
type journalHost struct {
	fakeHost
	lines []string
	// follow, when set, is sent after lines and the stream stays open
	// until ctx ends.
	follow []string
	mu     sync.Mutex
	cmds   []string
}

func (h *journalHost) Stream(ctx context.Context, cmd string, stdout, _ io.Writer) error {
	h.mu.Lock()
	h.cmds = append(h.cmds, cmd)
	h.mu.Unlock()
	for _, l := range h.lines {
		fmt.Fprintln(stdout, l)
	}
	if !strings.Contains(cmd, "--follow") {
		return nil
	}
	for _, l := range h.follow {
		fmt.Fprintln(stdout, l)
	}
	<-ctx.Done()
	return ctx.Err()
}

func entry(t time.Time, unit, msg string) string {
	b, _ := json.Marshal(map[string]any{"__REALTIME_TIMESTAMP": fmt.Sprint(t.UnixMicro()), "_SYSTEMD_UNIT": unit, "MESSAGE": msg, "PRIORITY": "6"})
	return string(b)
}

func logsCluster() *v1alpha1.Cluster {
	return &v1alpha1.Cluster{Spec: v1alpha1.Spec{
		LoadBalancer: v1alpha1.LoadBalancer{Host: "lb"},
		Hosts: []v1alpha1.Host{
			{Name: "m1", Role: v1alpha1.RoleMaster}, {Name: "m2", Role: v1alpha1.RoleMaster},
			{Name: "lb", Role: v1alpha1.RoleLoadBalancer}, {Name: "w1", Role: v1alpha1.RoleWorker},
		}}}
}

// TestLogsMergedInTimeOrder: entries of several hosts come out sorted by
// their journal timestamp, prefixed with host and role; only the hosts
// running the asked role are read, for that role's unit only.
func TestLogsMergedInTimeOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	m1 := &journalHost{fakeHost: fakeHost{name: "m1", role: "master"}, lines: []string{
		entry(t0, "kforge-apiserver.service", "m1 first"),
		entry(t0.Add(2*time.Millisecond), "kforge-apiserver.service", "m1 third"),
	}}
	m2 := &journalHost{fakeHost: fakeHost{name: "m2", role: "master"}, lines: []string{
		entry(t0.Add(time.Millisecond), "kforge-apiserver.service", "m2 second"),
		entry(t0.Add(3*time.Millisecond), "kforge-apiserver.service", "m2 fourth\n"),
	}}
	w1 := &journalHost{fakeHost: fakeHost{name: "w1", role: "worker"}}
	var out, errOut bytes.Buffer
	err := Logs(context.Background(), LogsOptions{Cluster: logsCluster(), Roles: []string{"apiserver"}, Since: 5 * time.Minute,
		Out: &out, ErrOut: &errOut, HostList: []Host{m1, m2, w1}})
	if err != nil {
		t.Fatal(err, errOut.String())
	}
	want := "m1 apiserver          05:04:05.000 m1 first\n" +
		"m2 apiserver          05:04:05.001 m2 second\n" +
		"m1 apiserver          05:04:05.002 m1 third\n" +
		"m2 apiserver          05:04:05.003 m2 fourth\n"
	want = strings.ReplaceAll(want, "05:04:05", t0.Format("15:04:05"))
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	if len(w1.cmds) != 0 {
		t.Errorf("a worker was read for the apiserver role: %v", w1.cmds)
	}
	if got := m1.cmds[0]; got != "journalctl -o json --no-pager --quiet -u kforge-apiserver.service --since=-300s" {
		t.Errorf("command %q", got)
	}
}

func TestLogsJSONKeepsFields(t *testing.T) {
	t0 := time.Now()
	w1 := &journalHost{fakeHost: fakeHost{name: "w1", role: "worker"}, lines: []string{entry(t0, "kforge-agent.service", "hello")}}
	var out bytes.Buffer
	if err := Logs(context.Background(), LogsOptions{Cluster: logsCluster(), JSON: true, Out: &out, ErrOut: io.Discard, HostList: []Host{w1}}); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err, out.String())
	}
	if got["host"] != "w1" || got["role"] != "agent" || got["MESSAGE"] != "hello" || got["PRIORITY"] != "6" {
		t.Errorf("%v", got)
	}
	if !strings.Contains(w1.cmds[0], "-u kforge-agent.service -u kforge-proxy.service") {
		t.Errorf("all of a worker's units: %q", w1.cmds[0])
	}
}

// TestLogsFollowReorders: with --follow, an entry that arrives later but
// is stamped earlier than one already held still goes first, and ^C ends
// the follow without an error.
func TestLogsFollowReorders(t *testing.T) {
	t0 := time.Now()
	m1 := &journalHost{fakeHost: fakeHost{name: "m1", role: "master"}, follow: []string{entry(t0.Add(time.Millisecond), "kforge-etcd.service", "later")}}
	m2 := &journalHost{fakeHost: fakeHost{name: "m2", role: "master"}, follow: []string{entry(t0, "kforge-etcd.service", "earlier")}}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Logs(ctx, LogsOptions{Cluster: logsCluster(), Roles: []string{"etcd"}, Follow: true, ReorderWindow: 200 * time.Millisecond,
			Out: pw, ErrOut: io.Discard, HostList: []Host{m1, m2}})
		pw.Close()
	}()
	buf := make([]byte, 4096)
	var got string
	for strings.Count(got, "\n") < 2 {
		n, err := pr.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got += string(buf[:n])
	}
	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if err := <-done; err != nil {
		t.Errorf("follow ended with %v", err)
	}
	if i, j := strings.Index(got, "earlier"), strings.Index(got, "later"); i < 0 || j < 0 || i > j {
		t.Errorf("not in time order:\n%s", got)
	}
	if !strings.Contains(m1.cmds[0], "--follow --lines=10") {
		t.Errorf("command %q", m1.cmds[0])
	}
}

func TestLogsRefusesUnknownRoleAndHost(t *testing.T) {
	c := logsCluster()
	if err := Logs(context.Background(), LogsOptions{Cluster: c, Roles: []string{"kubelet"}, Out: io.Discard, ErrOut: io.Discard, HostList: []Host{}}); err == nil || !strings.Contains(err.Error(), "apiserver") {
		t.Errorf("unknown role: %v", err)
	}
	if err := Logs(context.Background(), LogsOptions{Cluster: c, Hosts: []string{"w9"}, Out: io.Discard, ErrOut: io.Discard, HostList: []Host{}}); err == nil {
		t.Error("unknown host accepted")
	}
}

func TestParseJournalLineSystemdAboutUnit(t *testing.T) {
	e, err := parseJournalLine("m1", []byte(`{"__REALTIME_TIMESTAMP":"1","_SYSTEMD_UNIT":"init.scope","UNIT":"kforge-apiserver.service","MESSAGE":"Stopping kforge-apiserver.service"}`))
	if err != nil || e.Role != "apiserver" {
		t.Errorf("%+v %v; want role apiserver", e, err)
	}
}

func TestParseJournalLineBytesMessage(t *testing.T) {
	e, err := parseJournalLine("m1", []byte(`{"__REALTIME_TIMESTAMP":"1700000000000000","UNIT":"kforge-lb.service","MESSAGE":[104,105,255]}`))
	if err != nil {
		t.Fatal(err)
	}
	if e.Role != "lb" || e.Message != "hi\xff" || !e.Time.Equal(time.UnixMicro(1700000000000000)) {
		t.Errorf("%+v", e)
	}
}

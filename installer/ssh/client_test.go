package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// env is one server and what a client needs to reach it.
type env struct {
	dir, identity, knownHosts string
	hostKey                   gossh.Signer
	srv                       *testServer
}

func newEnv(t *testing.T, pin bool) *env {
	t.Helper()
	dir := t.TempDir()
	id, pub := newClientKey(t, dir)
	hk := newHostKey(t)
	e := &env{dir: dir, identity: id, knownHosts: filepath.Join(dir, "known_hosts"), hostKey: hk, srv: startServer(t, hk, pub)}
	var data string
	if pin {
		data = knownhosts.Line([]string{knownhosts.Normalize(e.addr())}, hk.PublicKey()) + "\n"
	}
	if err := os.WriteFile(e.knownHosts, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) addr() string { return "127.0.0.1:" + strconv.Itoa(e.srv.port()) }

func (e *env) config(user string) Config {
	return Config{
		Name: "h1", Address: "127.0.0.1", Port: e.srv.port(), User: user, IdentityFile: e.identity,
		HostKeys: &HostKeys{File: e.knownHosts}, DialTimeout: 5 * time.Second, ConnectBackoff: 10 * time.Millisecond,
	}
}

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestUnknownHostKeyRefused(t *testing.T) {
	e := newEnv(t, false)
	_, err := Dial(context.Background(), e.config("root"))
	var u *UnknownHostKeyError
	if !errors.As(err, &u) {
		t.Fatalf("err = %v; want an UnknownHostKeyError", err)
	}
	want := gossh.FingerprintSHA256(e.hostKey.PublicKey())
	for _, s := range []string{"h1", want, "--accept-new-host-keys"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	if n := e.srv.connCount(); n > 1 {
		t.Errorf("host key refusal was retried: %d connections", n)
	}
	if data, _ := os.ReadFile(e.knownHosts); len(data) != 0 {
		t.Errorf("known_hosts written without AcceptNew: %q", data)
	}
}

func TestAcceptNewPins(t *testing.T) {
	e := newEnv(t, false)
	cfg := e.config("root")
	cfg.HostKeys.AcceptNew = true
	c := dial(t, cfg)
	c.Close()
	data, _ := os.ReadFile(e.knownHosts)
	if !strings.Contains(string(data), "[127.0.0.1]:"+strconv.Itoa(e.srv.port())) || !strings.Contains(string(data), "ssh-ed25519") {
		t.Fatalf("known_hosts after accept-new: %q", data)
	}
	// Now strict mode accepts it, and nothing more is appended.
	dial(t, e.config("root")).Close()
	again, _ := os.ReadFile(e.knownHosts)
	if string(again) != string(data) {
		t.Errorf("known_hosts changed on a second dial: %q", again)
	}
}

func TestChangedHostKeyRefused(t *testing.T) {
	e := newEnv(t, false)
	other := newHostKey(t)
	line := knownhosts.Line([]string{knownhosts.Normalize(e.addr())}, other.PublicKey()) + "\n"
	if err := os.WriteFile(e.knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, accept := range []bool{false, true} {
		cfg := e.config("root")
		cfg.HostKeys.AcceptNew = accept
		_, err := Dial(context.Background(), cfg)
		var ce *ChangedHostKeyError
		if !errors.As(err, &ce) {
			t.Fatalf("accept=%v: err = %v; want a ChangedHostKeyError", accept, err)
		}
		for _, s := range []string{
			gossh.FingerprintSHA256(e.hostKey.PublicKey()), gossh.FingerprintSHA256(other.PublicKey()),
			"ssh-keygen -R '[127.0.0.1]:" + strconv.Itoa(e.srv.port()) + "' -f", "CHANGED",
		} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("accept=%v: error %q lacks %q", accept, err, s)
			}
		}
	}
	if data, _ := os.ReadFile(e.knownHosts); string(data) != line {
		t.Errorf("known_hosts changed: %q", data)
	}
}

func TestRunExitCodeAndStderrTail(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	out, err := c.Run(context.Background(), "echo hello", RunOptions{})
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("echo: %q %v", out, err)
	}
	_, err = c.Run(context.Background(), "echo to-stdout; echo first-line >&2; echo boom >&2; exit 3", RunOptions{})
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v; want a CommandError", err)
	}
	if ce.ExitCode != 3 || ce.Host != "h1" || !strings.Contains(ce.Stderr, "boom") || !strings.Contains(ce.Command, "exit 3") {
		t.Errorf("CommandError = %+v", ce)
	}
	for _, s := range []string{"host h1", "exit 3", "code 3", "boom"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	// A long stderr keeps only its tail.
	_, err = c.Run(context.Background(), "i=0; while [ $i -lt 2000 ]; do echo line-$i >&2; i=$((i+1)); done; exit 1", RunOptions{})
	if !errors.As(err, &ce) || len(ce.Stderr) > stderrTailBytes+10 || !strings.Contains(ce.Stderr, "line-1999") || strings.Contains(ce.Stderr, "line-0\n") {
		t.Errorf("long stderr: %d bytes, %v", len(ce.Stderr), err)
	}
}

func TestOneConnectionConcurrentSessions(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.Run(context.Background(), fmt.Sprintf("echo %d", i), RunOptions{})
			if err == nil && strings.TrimSpace(string(out)) != strconv.Itoa(i) {
				err = fmt.Errorf("got %q for %d", out, i)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := e.srv.connCount(); n != 1 {
		t.Errorf("%d connections; want 1 shared", n)
	}
}

func TestRunCancelled(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Run(ctx, "sleep 10", RunOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("cancelled run: %v after %v", err, time.Since(start))
	}
}

func TestConnectRetriesThenFails(t *testing.T) {
	e := newEnv(t, true)
	cfg := e.config("root")
	cfg.Port = 1 // nothing listens there
	cfg.ConnectAttempts = 3
	start := time.Now()
	_, err := Dial(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "host h1") {
		t.Fatalf("err = %v", err)
	}
	// 10ms + 20ms of backoff between three attempts.
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("no backoff between attempts: %v", d)
	}
}

// fakeSudo puts a sudo on the server's PATH that behaves like the lab's:
// a password is required (-n fails), read from stdin with -S.
func fakeSudo(t *testing.T, password string) {
	t.Helper()
	bin := t.TempDir()
	script := `#!/bin/sh
need_pw=1; read_pw=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) [ -n "$NOPASSWD" ] && need_pw=0; noninteractive=1; shift ;;
    -S) read_pw=1; shift ;;
    -k) shift ;;
    -p) shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [ -n "$NOPASSWD" ]; then need_pw=0; fi
if [ "$need_pw" = 1 ]; then
  if [ -n "$noninteractive" ]; then echo "sudo: a password is required" >&2; exit 1; fi
  IFS= read -r pw
  if [ "$pw" != "` + password + `" ]; then echo "Sorry, try again." >&2; echo "sudo: 1 incorrect password attempt" >&2; exit 1; fi
fi
exec "$@"
`
	if err := os.WriteFile(filepath.Join(bin, "sudo"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
}

func TestSudoWithPassword(t *testing.T) {
	const pw = "s3cret-Pw"
	fakeSudo(t, pw)
	e := newEnv(t, true)
	cfg := e.config("kforge")
	calls := 0
	cfg.SudoPassword = func(context.Context) (string, error) { calls++; return pw, nil }
	c := dial(t, cfg)
	out, err := c.Run(context.Background(), "echo as-root; cat", RunOptions{Sudo: true, Stdin: strings.NewReader("input\n")})
	if err != nil || string(out) != "as-root\ninput\n" {
		t.Fatalf("sudo run: %q %v", out, err)
	}
	_, err = c.Run(context.Background(), "cat >&2; exit 2", RunOptions{Sudo: true, Stdin: strings.NewReader("leaked " + pw + "\n")})
	if err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "leaked [redacted]") {
		t.Errorf("the password leaks into an error or is not redacted: %v", err)
	}
	if calls != 1 {
		t.Errorf("password asked %d times; want 1", calls)
	}
	for _, cmd := range e.srv.execs() {
		if strings.Contains(cmd, pw) {
			t.Errorf("the password is on a command line: %q", cmd)
		}
	}

	// A wrong password is refused with a clear error that does not hold it.
	cfg.SudoPassword = func(context.Context) (string, error) { return "wrong-one", nil }
	c2 := dial(t, cfg)
	_, err = c2.Run(context.Background(), "true", RunOptions{Sudo: true})
	if err == nil || !strings.Contains(err.Error(), "sudo refused the password") || strings.Contains(err.Error(), "wrong-one") {
		t.Errorf("wrong password: %v", err)
	}
	// No password configured.
	cfg.SudoPassword = nil
	c3 := dial(t, cfg)
	_, err = c3.Run(context.Background(), "true", RunOptions{Sudo: true})
	if err == nil || !strings.Contains(err.Error(), "sudoPasswordEnv") {
		t.Errorf("no password: %v", err)
	}
}

func TestSudoWithoutPassword(t *testing.T) {
	fakeSudo(t, "unused")
	t.Setenv("NOPASSWD", "1")
	e := newEnv(t, true)
	cfg := e.config("kforge")
	cfg.SudoPassword = func(context.Context) (string, error) { t.Error("password asked for NOPASSWD sudo"); return "", nil }
	c := dial(t, cfg)
	out, err := c.Run(context.Background(), "echo ok", RunOptions{Sudo: true})
	if err != nil || string(out) != "ok\n" {
		t.Fatalf("%q %v", out, err)
	}
}

func currentOwner(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	return u.Username + ":" + g.Name
}

func testUpload(t *testing.T, c *Client, dir string) {
	ctx := context.Background()
	dst := filepath.Join(dir, "sub", "kforge")
	owner := currentOwner(t)
	up := Upload{File: BytesFile([]byte("version one\n")), Remote: dst, Mode: 0o750, Owner: owner}
	changed, err := c.Upload(ctx, up)
	if err != nil || !changed {
		t.Fatalf("first upload: changed=%v %v", changed, err)
	}
	data, _ := os.ReadFile(dst)
	st, _ := os.Stat(dst)
	if string(data) != "version one\n" || st.Mode().Perm() != 0o750 {
		t.Fatalf("content %q mode %v", data, st.Mode())
	}
	ino := inode(t, dst)
	changed, err = c.Upload(ctx, up)
	if err != nil || changed {
		t.Errorf("same content: changed=%v %v; want skipped", changed, err)
	}
	if inode(t, dst) != ino {
		t.Error("skipped upload replaced the file")
	}
	// A mode change alone is an upload too.
	up.Mode = 0o755
	if changed, err = c.Upload(ctx, up); err != nil || !changed {
		t.Errorf("mode change: changed=%v %v", changed, err)
	}
	// New content replaces the file by rename: a reader that has the old
	// file open still reads all of the old content. No temp files are left.
	old, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	up.File = BytesFile([]byte("version two, longer\n"))
	if changed, err = c.Upload(ctx, up); err != nil || !changed {
		t.Fatalf("new content: changed=%v %v", changed, err)
	}
	data, _ = os.ReadFile(dst)
	oldData, _ := io.ReadAll(old)
	if string(data) != "version two, longer\n" || string(oldData) != "version one\n" {
		t.Errorf("after update: %q; the old file now reads %q", data, oldData)
	}
	entries, _ := os.ReadDir(filepath.Dir(dst))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("files beside the destination: %v", names)
	}
	rf, err := c.Stat(ctx, dst)
	if err != nil || rf.SHA256 != up.File.SHA256 || rf.Mode != fs.FileMode(0o755) || rf.Owner != owner {
		t.Errorf("Stat = %+v, %v", rf, err)
	}
	if rf, err := c.Stat(ctx, filepath.Join(dir, "absent")); err != nil || rf.Exists {
		t.Errorf("Stat of a missing file = %+v, %v", rf, err)
	}
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscallStat
	if err := statInode(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.ino
}

func TestUploadAtomicAndSkipped(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	testUpload(t, c, t.TempDir())
}

func TestUploadThroughSudo(t *testing.T) {
	fakeSudo(t, "pw")
	e := newEnv(t, true)
	cfg := e.config("kforge")
	cfg.SudoPassword = func(context.Context) (string, error) { return "pw", nil }
	c := dial(t, cfg)
	testUpload(t, c, t.TempDir())
	if left, _ := filepath.Glob("/tmp/.kforge-upload-*"); len(left) > 0 {
		t.Errorf("staged files left: %v", left)
	}
}

func TestBastion(t *testing.T) {
	target := newEnv(t, true)
	// The bastion accepts the same client key; pin its host key too.
	bastion := startServer(t, newHostKey(t), mustPub(t, target.identity))
	baddr := "127.0.0.1:" + strconv.Itoa(bastion.port())
	f, _ := os.OpenFile(target.knownHosts, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintln(f, knownhosts.Line([]string{knownhosts.Normalize(baddr)}, bastion.hostKey.PublicKey()))
	f.Close()
	cfg := target.config("root")
	cfg.Bastion = "jump@" + baddr
	c := dial(t, cfg)
	if out, err := c.Run(context.Background(), "echo via-bastion", RunOptions{}); err != nil || string(out) != "via-bastion\n" {
		t.Fatalf("%q %v", out, err)
	}
	bastion.mu.Lock()
	fw := append([]string(nil), bastion.forwards...)
	bastion.mu.Unlock()
	if len(fw) != 1 || fw[0] != target.addr() {
		t.Errorf("bastion forwards = %v; want [%s]", fw, target.addr())
	}
}

func mustPub(t *testing.T, identity string) gossh.PublicKey {
	t.Helper()
	pem, _ := os.ReadFile(identity)
	s, err := gossh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	return s.PublicKey()
}

func TestParseBastion(t *testing.T) {
	for in, want := range map[string][2]string{
		"jump.example":          {"me", "jump.example:22"},
		"ops@jump.example:2222": {"ops", "jump.example:2222"},
		"ops@[2001:db8::1]":     {"ops", "[2001:db8::1]:22"},
	} {
		u, a := parseBastion(in, "me")
		if u != want[0] || a != want[1] {
			t.Errorf("parseBastion(%q) = %q %q; want %v", in, u, a, want)
		}
	}
}

// DialContext carries a TCP connection through the SSH connection: the
// host opens it, and bytes flow both ways.
func TestDialContextThroughTheHost(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err == nil {
			conn.Write([]byte(strings.ToUpper(string(buf))))
		}
	}()
	conn, err := c.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "PING" {
		t.Fatalf("echo through the tunnel: %q %v", buf, err)
	}
	e.srv.mu.Lock()
	fw := append([]string(nil), e.srv.forwards...)
	e.srv.mu.Unlock()
	if len(fw) != 1 || fw[0] != ln.Addr().String() {
		t.Errorf("host forwards = %v; want [%s]", fw, ln.Addr())
	}
	// A refused connection on the host is an error naming the host.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln2.Addr().String()
	ln2.Close()
	if _, err := c.DialContext(context.Background(), "tcp", addr); err == nil || !strings.Contains(err.Error(), "h1") {
		t.Errorf("dial to a closed port through the host: %v", err)
	}
}

package ssh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
)

// testServer is an in-process SSH server on 127.0.0.1:0: it accepts one
// client key, runs "exec" requests with sh -c on this machine (so exit
// codes and stderr are real), serves the "sftp" subsystem with
// github.com/pkg/sftp, and forwards direct-tcpip (so it can be a bastion).
type testServer struct {
	t       *testing.T
	ln      net.Listener
	hostKey gossh.Signer
	cfg     *gossh.ServerConfig
	wg      sync.WaitGroup

	mu       sync.Mutex
	commands []string // every exec request, as received
	stdins   []string
	conns    int
	forwards []string
	ptys     []string // "TERM WxH" of every pty-req
	resizes  []string // "WxH" of every window-change
}

func newHostKey(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newClientKey writes a private key to dir and returns its path and public key.
func newClientKey(t *testing.T, dir string) (string, gossh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(p, pemEncode(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p, sp
}

func startServer(t *testing.T, hostKey gossh.Signer, clientKey gossh.PublicKey) *testServer {
	t.Helper()
	s := &testServer{t: t, hostKey: hostKey}
	s.cfg = &gossh.ServerConfig{
		PublicKeyCallback: func(_ gossh.ConnMetadata, k gossh.PublicKey) (*gossh.Permissions, error) {
			if string(k.Marshal()) == string(clientKey.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	s.cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *testServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *testServer) handle(nc net.Conn) {
	defer nc.Close()
	sc, chans, reqs, err := gossh.NewServerConn(nc, s.cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	s.mu.Lock()
	s.conns++
	s.mu.Unlock()
	go gossh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nch := range chans {
		switch nch.ChannelType() {
		case "session":
			ch, reqs, err := nch.Accept()
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.session(ch, reqs)
			}()
		case "direct-tcpip":
			var p struct {
				Host     string
				Port     uint32
				OrigHost string
				OrigPort uint32
			}
			if err := gossh.Unmarshal(nch.ExtraData(), &p); err != nil {
				nch.Reject(gossh.ConnectionFailed, "bad payload")
				continue
			}
			target := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
			tc, err := net.Dial("tcp", target)
			if err != nil {
				nch.Reject(gossh.ConnectionFailed, err.Error())
				continue
			}
			ch, reqs, err := nch.Accept()
			if err != nil {
				tc.Close()
				continue
			}
			s.mu.Lock()
			s.forwards = append(s.forwards, target)
			s.mu.Unlock()
			go gossh.DiscardRequests(reqs)
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(ch, tc); ch.CloseWrite() }()
			go func() { defer wg.Done(); io.Copy(tc, ch); tc.Close() }()
		default:
			nch.Reject(gossh.UnknownChannelType, "no")
		}
	}
}

func (s *testServer) session(ch gossh.Channel, reqs <-chan *gossh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := gossh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				return
			}
			req.Reply(true, nil)
			s.exec(ch, reqs, p.Command)
			return
		case "pty-req":
			var p struct {
				Term          string
				Columns, Rows uint32
				Width, Height uint32
				Modes         string
			}
			if err := gossh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				return
			}
			s.mu.Lock()
			s.ptys = append(s.ptys, p.Term+" "+strconv.Itoa(int(p.Columns))+"x"+strconv.Itoa(int(p.Rows)))
			s.mu.Unlock()
			req.Reply(true, nil)
		case "shell":
			// No real terminal: the shell reads commands from stdin.
			req.Reply(true, nil)
			s.exec(ch, reqs, "")
			return
		case "subsystem":
			var p struct{ Name string }
			_ = gossh.Unmarshal(req.Payload, &p)
			if p.Name != "sftp" {
				req.Reply(false, nil)
				return
			}
			req.Reply(true, nil)
			go gossh.DiscardRequests(reqs)
			srv, err := sftp.NewServer(ch)
			if err != nil {
				return
			}
			_ = srv.Serve()
			srv.Close()
			return
		default:
			req.Reply(false, nil)
		}
	}
}

func (s *testServer) exec(ch gossh.Channel, reqs <-chan *gossh.Request, command string) {
	cmd := exec.Command("sh", "-c", command)
	if command == "" {
		cmd = exec.Command("sh")
	}
	stdin := &recorder{}
	cmd.Stdin = io.TeeReader(ch, stdin)
	cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	// Like OpenSSH, a "signal" request kills the command.
	if err := cmd.Start(); err != nil {
		return
	}
	go func() {
		for req := range reqs {
			if req.Type == "signal" && cmd.Process != nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
			if req.Type == "window-change" {
				var p struct{ Columns, Rows, Width, Height uint32 }
				if gossh.Unmarshal(req.Payload, &p) == nil {
					s.mu.Lock()
					s.resizes = append(s.resizes, strconv.Itoa(int(p.Columns))+"x"+strconv.Itoa(int(p.Rows)))
					s.mu.Unlock()
				}
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		} else {
			code = ee.ExitCode()
		}
	} else if err != nil {
		code = 127
	}
	s.mu.Lock()
	s.commands = append(s.commands, command)
	s.stdins = append(s.stdins, stdin.String())
	s.mu.Unlock()
	status := make([]byte, 4)
	binary.BigEndian.PutUint32(status, uint32(code))
	_, _ = ch.SendRequest("exit-status", false, status)
}

type recorder struct {
	mu sync.Mutex
	b  []byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b = append(r.b, p...)
	return len(p), nil
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.b)
}

func (s *testServer) execs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

func (s *testServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

var _ = context.Background

func (s *testServer) ptyRequests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ptys...)
}

func (s *testServer) windowChanges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.resizes...)
}

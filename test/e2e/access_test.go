package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a background command's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// background starts kubectl with args until the test's cleanup (or stop).
func (e workloadEnv) background(t *testing.T, args ...string) (out *lockedBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, e.kubectlBin, append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	out = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("kubectl %v: %v", args, err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return out, stop
}

// hitPod makes one HTTP request to a web pod from its node, so its httpd
// logs a line.
func (e workloadEnv) hitPod(node, ip string) {
	_, _ = e.ssh(node, "busybox wget -qO- http://"+ip+":8080/ >/dev/null")
}

// testAccess is what a user does with a running pod through the API: logs,
// logs -f, exec with stdin, attach, port-forward and describe, all through
// the apiservers to the agent on the pod's node.
func testAccess(t *testing.T, e workloadEnv) {
	pods := e.webPods(t)
	var name string
	var pod []string
	for n, p := range pods {
		name, pod = n, p
		break
	}
	if name == "" {
		t.Fatal("no web pod")
	}
	node, ip := pod[0], pod[1]

	t.Run("logs", func(t *testing.T) {
		out, err := e.kubectl(20*time.Second, "logs", name)
		if err != nil || !strings.Contains(out, "serving on 8080") {
			t.Fatalf("kubectl logs %s: %v\n%s", name, err, out)
		}
		out, err = e.kubectl(20*time.Second, "logs", name, "--tail=1", "--timestamps")
		if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "T") {
			t.Errorf("kubectl logs --tail=1 --timestamps: %v\n%q", err, out)
		}
	})

	t.Run("logs -f follows new output", func(t *testing.T) {
		out, stop := e.background(t, "logs", "-f", "--tail=0", name)
		defer stop()
		if msg := eventually(30*time.Second, time.Second, func() string {
			e.hitPod(node, ip)
			if !strings.Contains(out.String(), "response:200") {
				return "no new line followed: " + out.String()
			}
			return ""
		}); msg != "" {
			t.Fatal(msg)
		}
	})

	t.Run("exec with stdin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, e.kubectlBin, "--kubeconfig", e.kubeconfig, "exec", "-i", name, "--",
			"sh", "-c", "cat; echo; cat /secret/token; echo; echo $GREETING; exit 3")
		cmd.Stdin = strings.NewReader("from stdin")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output() // kubectl reports the exit code on stderr
		want := "from stdin\ns3cr3t\nhello from a configmap\n"
		if string(out) != want {
			t.Errorf("exec output %q, want %q", out, want)
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("exec exit: %v (%s), want the command's status 3", err, stderr.String())
		}
	})

	t.Run("attach streams the container's output", func(t *testing.T) {
		out, stop := e.background(t, "attach", name, "-c", "web")
		defer stop()
		if msg := eventually(30*time.Second, time.Second, func() string {
			e.hitPod(node, ip)
			if !strings.Contains(out.String(), "response:200") {
				return "attach showed no output: " + out.String()
			}
			return ""
		}); msg != "" {
			t.Fatal(msg)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		out, stop := e.background(t, "port-forward", "pod/"+name, "18080:8080")
		defer stop()
		var body string
		if msg := eventually(30*time.Second, 500*time.Millisecond, func() string {
			resp, err := http.Get("http://127.0.0.1:18080/")
			if err != nil {
				return fmt.Sprintf("GET through port-forward: %v (kubectl: %s)", err, out.String())
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return ""
		}); msg != "" {
			t.Fatal(msg)
		}
		if !strings.Contains(body, "hello from a configmap s3cr3t "+name) {
			t.Errorf("page through port-forward: %q", body)
		}
	})

	t.Run("describe tells the story", func(t *testing.T) {
		out, err := e.kubectl(20*time.Second, "describe", "pod", name)
		if err != nil {
			t.Fatalf("describe: %v\n%s", err, out)
		}
		for _, w := range []string{"Events:", "Scheduled", "Started", "Ready", "True", "/secret from secret"} {
			if !strings.Contains(out, w) {
				t.Errorf("describe lacks %q:\n%s", w, out)
			}
		}
	})
}

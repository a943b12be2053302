package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// workloadEnv is what the workload tests need from TestUp's lab.
type workloadEnv struct {
	kubectlBin, kubeconfig string
	// ssh runs a command on a lab host as root.
	ssh func(host, cmd string) (string, error)
	// put writes a file on a lab host (mode 0755), streamed over SSH.
	put func(host, path string, content io.Reader) error
}

// labWorkloadEnv is the workloadEnv of the lab in dir, through kforge lab ssh.
func labWorkloadEnv(t *testing.T, bin, dir, kubectlBin, kubeconfig string) workloadEnv {
	return workloadEnv{kubectlBin: kubectlBin, kubeconfig: kubeconfig,
		ssh: func(host, cmd string) (string, error) {
			out, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, host, "--", cmd)
			return out, err
		},
		put: func(host, path string, content io.Reader) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "lab", "ssh", "--dir", dir, host, "--",
				fmt.Sprintf("mkdir -p %s && cat > %s.tmp && chmod 0755 %s.tmp && mv %s.tmp %s", filepath.Dir(path), path, path, path, path))
			cmd.Stdin = content
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("put %s on %s: %v\n%s", path, host, err, out)
			}
			return nil
		}}
}

// kubectl runs the real kubectl with the admin kubeconfig, bounded by d.
func (e workloadEnv) kubectl(d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.kubectlBin, append([]string{"--kubeconfig", e.kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

// eventually polls f every interval until it returns "" or d passes, and
// returns the last complaint.
func eventually(d, interval time.Duration, f func() string) string {
	deadline := time.Now().Add(d)
	for {
		msg := f()
		if msg == "" || time.Now().After(deadline) {
			return msg
		}
		time.Sleep(interval)
	}
}

// webPods are the Deployment's pods: name → "node ip containerID ready".
func (e workloadEnv) webPods(t *testing.T) map[string][]string {
	t.Helper()
	out, err := e.kubectl(10*time.Second, "get", "pods", "-l", "app=web", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].ready} {.metadata.deletionTimestamp}{"\n"}{end}`)
	if err != nil {
		t.Fatalf("get pods: %v\n%s", err, out)
	}
	pods := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 { // terminating pods (6 fields) are not counted
			pods[f[0]] = f[1:]
		}
	}
	return pods
}

// testWorkload runs the lab's busybox image as a real workload: a
// 3-replica Deployment serving HTTP with env from a ConfigMap, a Secret
// volume, an emptyDir and readiness and liveness probes.
func testWorkload(t *testing.T, e workloadEnv) {
	_, file, _, _ := runtime.Caller(0)
	manifest := filepath.Join(filepath.Dir(file), "..", "..", "examples", "web.yaml")
	if out, err := e.kubectl(20*time.Second, "apply", "-f", manifest); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// Ready, and spread over the workers.
	if out, err := e.kubectl(100*time.Second, "rollout", "status", "deployment/web", "--timeout=90s"); err != nil {
		out2, _ := e.kubectl(10*time.Second, "get", "pods", "-o", "wide")
		t.Fatalf("rollout status: %v\n%s\n%s", err, out, out2)
	}
	var pods map[string][]string
	if msg := eventually(30*time.Second, time.Second, func() string {
		pods = e.webPods(t)
		ready := 0
		for _, p := range pods {
			if p[3] == "true" {
				ready++
			}
		}
		if ready != 3 || len(pods) != 3 {
			return fmt.Sprintf("%d of %d pods ready: %v", ready, len(pods), pods)
		}
		return ""
	}); msg != "" {
		t.Fatal(msg)
	}
	nodes := map[string]bool{}
	for _, p := range pods {
		nodes[p[0]] = true
	}
	if len(nodes) < 2 {
		t.Errorf("the 3 replicas run on %d worker(s), want at least 2: %v", len(nodes), pods)
	}

	t.Run("pods reach pods on other workers by IP, with their own address", func(t *testing.T) {
		// A client pinned to one worker fetches every replica's page: the
		// content proves the env, the secret volume and the hostname.
		var urls []string
		var client string
		for _, p := range pods {
			urls = append(urls, "wget -qO- http://"+p[1]+":8080/")
			if client == "" || p[0] < client {
				client = p[0]
			}
		}
		sort.Strings(urls)
		pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-client"},"spec":{"nodeName":%q,"restartPolicy":"Never",
			"containers":[{"name":"c","image":"docker.io/library/busybox:local","command":["sh","-c",%q]}]}}`,
			client, "set -e; "+strings.Join(urls, "; "))
		cmd := exec.Command(e.kubectlBin, "--kubeconfig", e.kubeconfig, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(pod)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("client pod: %v\n%s", err, out)
		}
		var phase string
		if msg := eventually(60*time.Second, time.Second, func() string {
			phase, _ = e.kubectl(10*time.Second, "get", "pod", "web-client", "-o", "jsonpath={.status.phase}")
			if phase != "Succeeded" {
				return "client pod phase " + phase
			}
			return ""
		}); msg != "" {
			t.Fatalf("%s: a wget from %s to a replica failed", msg, client)
		}
		// Each replica's server logged the client pod's own address, not
		// its node's: no masquerade inside the cluster's pod range.
		clientIP, _ := e.kubectl(10*time.Second, "get", "pod", "web-client", "-o", "jsonpath={.status.podIP}")
		for name, p := range pods {
			if p[0] == client {
				continue
			}
			out, _ := e.ssh(p[0], "cat /var/log/pods/default_"+name+"_*/web/*.log")
			if !strings.Contains(out, "[::ffff:"+clientIP+"]") {
				t.Errorf("%s on %s did not log a request from the client pod's address %s:\n%s", name, p[0], clientIP, out)
			}
		}
		_, _ = e.kubectl(20*time.Second, "delete", "pod", "web-client", "--wait=false")
	})

	t.Run("a deleted pod is replaced", func(t *testing.T) {
		var victim string
		for name := range pods {
			victim = name
			break
		}
		if out, err := e.kubectl(30*time.Second, "delete", "pod", victim); err != nil {
			t.Fatalf("delete pod: %v\n%s", err, out)
		}
		if msg := eventually(60*time.Second, time.Second, func() string {
			now := e.webPods(t)
			if _, ok := now[victim]; ok {
				return victim + " is still there"
			}
			ready := 0
			for _, p := range now {
				if p[3] == "true" {
					ready++
				}
			}
			if ready != 3 {
				return fmt.Sprintf("%d of 3 ready: %v", ready, now)
			}
			return ""
		}); msg != "" {
			t.Fatal(msg)
		}
	})

	t.Run("rollout and undo complete", func(t *testing.T) {
		if out, err := e.kubectl(20*time.Second, "set", "env", "deployment/web", "ROLLOUT=2"); err != nil {
			t.Fatalf("set env: %v\n%s", err, out)
		}
		if out, err := e.kubectl(130*time.Second, "rollout", "status", "deployment/web", "--timeout=120s"); err != nil {
			t.Fatalf("rollout status after set env: %v\n%s", err, out)
		}
		if out, err := e.kubectl(20*time.Second, "rollout", "undo", "deployment/web"); err != nil {
			t.Fatalf("rollout undo: %v\n%s", err, out)
		}
		if out, err := e.kubectl(130*time.Second, "rollout", "status", "deployment/web", "--timeout=120s"); err != nil {
			t.Fatalf("rollout status after undo: %v\n%s", err, out)
		}
		out, _ := e.kubectl(10*time.Second, "get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].env[*].name}")
		if strings.Contains(out, "ROLLOUT") {
			t.Errorf("after undo the template still sets ROLLOUT: %s", out)
		}
	})

	t.Run("restarting the agent leaves containers running", func(t *testing.T) {
		before := e.webPods(t)
		var node string
		for _, p := range before {
			node = p[0]
			break
		}
		if out, err := e.ssh(node, "systemctl restart kforge-agent"); err != nil {
			t.Fatalf("restart agent on %s: %v\n%s", node, err, out)
		}
		if msg := eventually(30*time.Second, time.Second, func() string {
			out, err := e.ssh(node, "busybox wget -qO- http://127.0.0.1:10248/readyz")
			if err != nil {
				return "agent not ready again: " + out
			}
			return ""
		}); msg != "" {
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Second) // a resync of every pod
		after := e.webPods(t)
		for name, p := range before {
			if p[0] != node {
				continue
			}
			if a, ok := after[name]; !ok || a[2] != p[2] {
				t.Errorf("%s on %s: container %s before the agent restart, %v after", name, node, p[2], a)
			}
		}
	})

	t.Run("kubectl reaches the pods through the agent", func(t *testing.T) { testAccess(t, e) })
	t.Run("Services answer", func(t *testing.T) { testServices(t, e) })
	t.Run("Ingress routes to the pods", func(t *testing.T) { testIngress(t, e) })
	testNodeFaults(t, e)
}

// TestWorkloadOnRunningLab runs the workload tests against a lab someone
// already brought up and installed (KFORGE_LAB_DIR, with admin.kubeconfig
// in it), for quick iterations; make test-e2e runs them inside TestUp.
func TestWorkloadOnRunningLab(t *testing.T) {
	dir := os.Getenv("KFORGE_LAB_DIR")
	if dir == "" {
		t.Skip("set KFORGE_LAB_DIR to a lab installed with kforge up")
	}
	t.Cleanup(removeInclusterClient)
	testWorkload(t, labWorkloadEnv(t, binary(t), dir, kubectlBinary(t), filepath.Join(dir, "admin.kubeconfig")))
}

// testNodeFaults stops a worker's agent (its Node turns NotReady and
// tainted) and drains another (its pods move).
func testNodeFaults(t *testing.T, e workloadEnv) {
	t.Run("a stopped agent turns its Node NotReady within 60s", func(t *testing.T) {
		if out, err := e.ssh("w3", "systemctl stop kforge-agent"); err != nil {
			t.Fatalf("stop agent: %v\n%s", err, out)
		}
		start := time.Now()
		msg := eventually(75*time.Second, 2*time.Second, func() string {
			out, _ := e.kubectl(10*time.Second, "get", "node", "w3", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if out == "True" {
				return "w3 still Ready"
			}
			return ""
		})
		took := time.Since(start)
		taints := eventually(15*time.Second, time.Second, func() string {
			out, _ := e.kubectl(10*time.Second, "get", "node", "w3", "-o", "jsonpath={.spec.taints[*].key}")
			if !strings.Contains(out, "node.kubernetes.io/unreachable") {
				return "w3's taints: " + out + ", want node.kubernetes.io/unreachable"
			}
			return ""
		})
		if _, err := e.ssh("w3", "systemctl start kforge-agent"); err != nil {
			t.Errorf("start agent: %v", err)
		}
		if msg != "" || took > 62*time.Second {
			t.Fatalf("%s after %s", msg, took.Round(time.Second))
		}
		t.Logf("w3 NotReady %s after its agent stopped", took.Round(time.Second))
		if taints != "" {
			t.Error(taints)
		}
		if msg := eventually(60*time.Second, 2*time.Second, func() string {
			out, _ := e.kubectl(10*time.Second, "get", "node", "w3", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints[*].key}`)
			if out != "True " {
				return "w3 after its agent restarted: " + out
			}
			return ""
		}); msg != "" {
			t.Fatal(msg)
		}
	})

	t.Run("drain moves the pods", func(t *testing.T) {
		var node string
		for _, p := range e.webPods(t) {
			node = p[0]
			break
		}
		out, err := e.kubectl(150*time.Second, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
		if err != nil {
			t.Fatalf("drain %s: %v\n%s", node, err, out)
		}
		defer func() {
			if out, err := e.kubectl(20*time.Second, "uncordon", node); err != nil {
				t.Errorf("uncordon: %v\n%s", err, out)
			}
		}()
		if msg := eventually(90*time.Second, 2*time.Second, func() string {
			pods := e.webPods(t)
			ready := 0
			for n, p := range pods {
				if p[0] == node {
					return n + " still on the drained node " + node
				}
				if p[3] == "true" {
					ready++
				}
			}
			if ready != 3 {
				return fmt.Sprintf("%d of 3 ready after the drain: %v", ready, pods)
			}
			return ""
		}); msg != "" {
			t.Fatal(msg)
		}
	})
}

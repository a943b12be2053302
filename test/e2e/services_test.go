package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// servicesManifest exposes the web Deployment three ways, and gives a
// ServiceAccount the view role in default.
const servicesManifest = `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-nodeport}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: viewer}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewer-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: ServiceAccount, name: viewer, namespace: default}]
`

// inclusterClient builds testdata/incluster once, statically, for the
// busybox image; TestUp starts it early so that it overlaps the install.
var inclusterClient = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kforge-e2e-incluster-")
	if err != nil {
		return "", err
	}
	inclusterDir.Store(&dir)
	bin := filepath.Join(dir, "incluster")
	build := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, "./testdata/incluster")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the in-cluster client: %v\n%s", err, out)
	}
	return bin, nil
})

// inclusterDir is the folder inclusterClient made, once it has.
var inclusterDir atomic.Pointer[string]

// removeInclusterClient removes what inclusterClient built, if anything.
func removeInclusterClient() {
	if dir := inclusterDir.Load(); dir != nil {
		_ = os.RemoveAll(*dir)
	}
}

// runPod runs a one-shot busybox pod as the viewer ServiceAccount and
// returns its log once it has finished.
func (e workloadEnv) runPod(t *testing.T, name, script string) (string, string) {
	t.Helper()
	return e.runPodJSON(t, name, fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q},"spec":{"restartPolicy":"Never","serviceAccountName":"viewer",
		"containers":[{"name":"c","image":"docker.io/library/busybox:local","command":["sh","-c",%q]}]}}`, name, script))
}

// runPodJSON runs the one-shot pod given as JSON and returns its phase and
// log once it has finished.
func (e workloadEnv) runPodJSON(t *testing.T, name, pod string) (string, string) {
	t.Helper()
	cmd := exec.Command(e.kubectlBin, "--kubeconfig", e.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(pod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pod %s: %v\n%s", name, err, out)
	}
	defer func() { _, _ = e.kubectl(20*time.Second, "delete", "pod", name, "--wait=false") }()
	var phase string
	_ = eventually(90*time.Second, time.Second, func() string {
		phase, _ = e.kubectl(10*time.Second, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		if phase != "Succeeded" && phase != "Failed" {
			return "pod " + name + " " + phase
		}
		return ""
	})
	out, _ := e.kubectl(20*time.Second, "logs", name)
	return phase, out
}

// testServices: cluster DNS and the service proxy, seen from pods.
func testServices(t *testing.T, e workloadEnv) {
	cmd := exec.Command(e.kubectlBin, "--kubeconfig", e.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(servicesManifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply services: %v\n%s", err, out)
	}

	t.Run("pods resolve Services by name", func(t *testing.T) {
		// busybox's nslookup tries every search domain and exits 1 when
		// any of them fails, so the answers are read from its output.
		phase, out := e.runPod(t, "dns-client", `nslookup web
nslookup web.default.svc.cluster.local
nslookup kubernetes.default.svc.cluster.local
echo HEADLESS; nslookup web-headless.default.svc.cluster.local`)
		if phase == "" {
			t.Fatalf("the lookups did not finish:\n%s", out)
		}
		svcIP, _ := e.kubectl(10*time.Second, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")
		if strings.Count(out, "Address: "+svcIP) < 2 || !strings.Contains(out, "Address: 198.18.16.1\n") {
			t.Errorf("answers lack web's %s (short and full name) or kubernetes' 198.18.16.1:\n%s", svcIP, out)
		}
		headless := out[strings.Index(out, "HEADLESS"):]
		if n := len(regexp.MustCompile(`Address: 198\.19\.`).FindAllString(headless, -1)); n != 3 {
			t.Errorf("the headless Service resolves to %d pod addresses, want 3:\n%s", n, headless)
		}
	})

	t.Run("a ClusterIP spreads over the pods", func(t *testing.T) {
		phase, out := e.runPod(t, "svc-client", `for i in $(seq 1 12); do wget -qO- http://web/; done`)
		if phase != "Succeeded" {
			t.Fatalf("wget through the ClusterIP failed (%s):\n%s", phase, out)
		}
		hosts := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				hosts[f[len(f)-1]] = true
			}
		}
		if len(hosts) < 2 {
			t.Errorf("12 requests reached %d pod(s), want at least 2:\n%s", len(hosts), out)
		}
	})

	t.Run("a NodePort answers on every worker", func(t *testing.T) {
		port, err := e.kubectl(10*time.Second, "get", "svc", "web-nodeport", "-o", "jsonpath={.spec.ports[0].nodePort}")
		if err != nil || port == "" {
			t.Fatalf("nodePort: %v %q", err, port)
		}
		for _, addr := range []string{"198.18.0.21", "198.18.0.22", "198.18.0.23"} {
			out, err := e.ssh("lb", "busybox wget -qO- http://"+addr+":"+port+"/")
			if err != nil || !strings.Contains(out, "hello from a configmap") {
				t.Errorf("NodePort %s:%s from the lb host: %v %q", addr, port, err, out)
			}
		}
	})

	t.Run("Services keep working through proxy and dns restarts and a scale to zero", func(t *testing.T) {
		if out, err := e.ssh("w1", "systemctl restart kforge-proxy"); err != nil {
			t.Fatalf("restart proxy: %v\n%s", err, out)
		}
		if out, err := e.ssh("w2", "systemctl stop kforge-dns"); err != nil {
			t.Fatalf("stop dns on w2: %v\n%s", err, out)
		}
		defer func() { _, _ = e.ssh("w2", "systemctl start kforge-dns") }()
		if out, err := e.kubectl(20*time.Second, "scale", "deployment/web", "--replicas=0"); err != nil {
			t.Fatalf("scale to 0: %v\n%s", err, out)
		}
		if out, err := e.kubectl(20*time.Second, "scale", "deployment/web", "--replicas=3"); err != nil {
			t.Fatalf("scale to 3: %v\n%s", err, out)
		}
		if out, err := e.kubectl(130*time.Second, "rollout", "status", "deployment/web", "--timeout=120s"); err != nil {
			t.Fatalf("rollout status: %v\n%s", err, out)
		}
		// Every client node, including the one whose proxy restarted and
		// the one whose dns instance is stopped.
		for _, node := range []string{"w1", "w2", "w3"} {
			pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"after-%s"},"spec":{"nodeName":%q,"restartPolicy":"Never",
				"containers":[{"name":"c","image":"docker.io/library/busybox:local","command":["sh","-c","wget -qO- http://web/"]}]}}`, node, node)
			cmd := exec.Command(e.kubectlBin, "--kubeconfig", e.kubeconfig, "apply", "-f", "-")
			cmd.Stdin = strings.NewReader(pod)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("pod: %v\n%s", err, out)
			}
		}
		for _, node := range []string{"w1", "w2", "w3"} {
			name := "after-" + node
			if msg := eventually(90*time.Second, time.Second, func() string {
				phase, _ := e.kubectl(10*time.Second, "get", "pod", name, "-o", "jsonpath={.status.phase}")
				if phase != "Succeeded" {
					return name + " " + phase
				}
				return ""
			}); msg != "" {
				out, _ := e.kubectl(20*time.Second, "logs", name)
				t.Errorf("%s:\n%s", msg, out)
			}
			_, _ = e.kubectl(20*time.Second, "delete", "pod", name, "--wait=false")
		}
	})

	t.Run("a pod's client-go lists pods through the kubernetes Service with its token", func(t *testing.T) {
		// busybox's own wget offers TLS 1.2 without signature_algorithms,
		// which Go servers refuse since RFC 9155 (as kube-apiserver does),
		// so the pod runs a static client-go program from the worker.
		bin, err := inclusterClient()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"w1", "w2", "w3"} {
			f, err := os.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			err = e.put(w, "/var/lib/kforge-e2e/incluster", f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api-client"},"spec":{"restartPolicy":"Never","serviceAccountName":"viewer",
			"containers":[{"name":"c","image":"docker.io/library/busybox:local","command":["/e2e/incluster"],
				"volumeMounts":[{"name":"e2e","mountPath":"/e2e","readOnly":true}]}],
			"volumes":[{"name":"e2e","hostPath":{"path":"/var/lib/kforge-e2e","type":"Directory"}}]}}`
		phase, out := e.runPodJSON(t, "api-client", pod)
		if phase != "Succeeded" || !strings.Contains(out, "host https://198.18.16.1:443") ||
			!regexp.MustCompile(`(?m)^pods [1-9]`).MatchString(out) || !strings.Contains(out, "secrets forbidden") ||
			!strings.Contains(out, "resolved kubernetes.default 198.18.16.1\n") ||
			!regexp.MustCompile(`(?m)^pods via https://kubernetes.default.svc [1-9]`).MatchString(out) {
			t.Fatalf("the in-cluster client (%s) should resolve kubernetes.default and list pods as viewer through 198.18.16.1:443 and https://kubernetes.default.svc, and be refused secrets:\n%s", phase, out)
		}
		for _, w := range []string{"w1", "w2", "w3"} {
			_, _ = e.ssh(w, "rm -rf /var/lib/kforge-e2e")
		}
	})
}

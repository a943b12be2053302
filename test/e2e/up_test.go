package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUp runs the installer end to end on a lab of its own: a dry run,
// kforge up (etcd, apiservers, lb), the real kubectl through the lb,
// kforge status, a no-op re-run, a changed config, a master's daemons
// stopped, the sudo user, host keys, and kforge reset. Only one lab can run on a machine (they share the kforge0
// bridge and addresses), so the tests of this package never call
// t.Parallel: TestLab (lab_test.go) has brought its labs down before this
// test starts, and this one always brings its lab down before returning.
func TestUp(t *testing.T) {
	if os.Getenv("KFORGE_E2E") != "1" {
		t.Skip("end-to-end test; set KFORGE_E2E=1 (make test-e2e does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root")
	}
	bin := binary(t)
	go func() { _, _ = inclusterClient() }() // built while the lab boots
	t.Cleanup(removeInclusterClient)
	dir := filepath.Join(t.TempDir(), "lab")
	if _, _, err := kforge(t, bin, nil, "lab", "up", "--dir", dir); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	defer func() {
		// Whatever happened, leave nothing running.
		if _, _, err := kforge(t, bin, nil, "lab", "down", "--dir", dir); err != nil {
			t.Errorf("lab down: %v", err)
		}
	}()
	st := readState(t, dir)
	spec := filepath.Join(dir, "cluster.yaml")
	specData, err := os.ReadFile(spec)
	if err != nil {
		t.Fatal(err)
	}
	// variant writes a copy of cluster.yaml beside it (relative paths keep working).
	variant := func(name string, edit func(string) string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(edit(string(specData))), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	remoteSHA := func(host string) string {
		out, _, _ := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, host, "--", "sha256sum /usr/local/bin/kforge 2>/dev/null || echo absent")
		return strings.Fields(out + " absent")[0]
	}
	hostLines := func(stderr, mark string) map[string]bool {
		seen := map[string]bool{}
		for _, l := range strings.Split(stderr, "\n") {
			// Host lines are indented; phase lines are not.
			if f := strings.Fields(l); len(f) >= 2 && f[0] == mark && strings.HasPrefix(l, " ") {
				seen[f[1]] = true
			}
		}
		return seen
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		out, stderr, err := kforge(t, bin, nil, "up", "-f", spec, "--dry-run")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"nothing was changed.", "upload /usr/local/bin/kforge",
			"+++ /etc/kforge/etcd.yaml", "+kind: EtcdConfig", // a unified diff of each config
			"m1: upload /etc/kforge/pki/etcd-server.key (new file:", // keys: no content
			"would start kforge-etcd.service", "would start kforge-lb.service",
		} {
			if !strings.Contains(out+stderr, want) {
				t.Errorf("dry run output lacks %q", want)
			}
		}
		if strings.Contains(out, "PRIVATE KEY") {
			t.Error("the dry run printed a private key")
		}
		if seen := hostLines(stderr, "✓"); len(seen) != 7 {
			t.Errorf("✓ lines for %d hosts; want 7", len(seen))
		}
		for _, h := range st.Hosts {
			if s := remoteSHA(h.Name); s != "absent" {
				t.Errorf("%s has /usr/local/bin/kforge after a dry run", h.Name)
			}
		}
		out, _, _ = kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "m1", "--", "ls /etc/kforge /etc/systemd/system/kforge-etcd.service 2>&1 || true")
		if !strings.Contains(out, "No such file") || strings.Count(out, "No such file") != 2 {
			t.Errorf("m1 after a dry run: %s", out)
		}
		for _, p := range []string{"cluster.journal.jsonl", "pki", "admin.kubeconfig"} {
			if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
				t.Errorf("a dry run wrote %s", p)
			}
		}
	})

	t.Run("up installs etcd, the apiservers and the lb", func(t *testing.T) {
		start := time.Now()
		out, stderr, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING kforge up (3 masters + lb, binary pushed to %d hosts): %s", len(st.Hosts), time.Since(start))
		for _, title := range []string{"✓ Connect and gather facts", "✓ Preflight checks", "✓ Upload the kforge binary",
			"✓ Distribute certificates and kubeconfigs", "✓ etcd members", "✓ apiservers", "✓ load balancer", "✓ The API through the load balancer"} {
			if !strings.Contains(stderr, title) {
				t.Errorf("stderr lacks %q", title)
			}
		}
		if !strings.Contains(out, "kubectl --kubeconfig "+filepath.Join(dir, "admin.kubeconfig")) {
			t.Errorf("summary: %q", out)
		}
		if fi, err := os.Stat(filepath.Join(dir, "admin.kubeconfig")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("admin.kubeconfig: %v %v", fi, err)
		}
		want := remoteSHA("m1")
		for _, h := range st.Hosts {
			if s := remoteSHA(h.Name); s == "absent" || s != want {
				t.Errorf("%s: sha256 %s; want %s", h.Name, s, want)
			}
		}
		j, err := os.ReadFile(filepath.Join(dir, "cluster.journal.jsonl"))
		if err != nil || strings.Count(string(j), `"phase":"upload-binary"`) != 7 {
			t.Errorf("journal: %v\n%s", err, j)
		}
		// Modes, and no CA key anywhere.
		out, _, _ = kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "m1", "--", "stat -c '%a %n' /etc/kforge/pki /etc/kforge/pki/sa.key /etc/kforge/pki/apiserver.key /etc/kforge/pki/apiserver.crt")
		for _, w := range []string{"700 /etc/kforge/pki", "600 /etc/kforge/pki/sa.key", "600 /etc/kforge/pki/apiserver.key", "644 /etc/kforge/pki/apiserver.crt"} {
			if !strings.Contains(out, w) {
				t.Errorf("m1 modes lack %q: %s", w, out)
			}
		}
		out, _, _ = kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "w1", "--", "ls /etc/kforge/pki")
		if strings.Contains(out, "ca.key") || strings.Contains(out, "etcd") || strings.Contains(out, "apiserver") || strings.Contains(out, "sa.key") {
			t.Errorf("w1 has files it must not: %s", out)
		}
	})

	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	kc := kubectlBinary(t)
	kubectl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, kc, append([]string{"--kubeconfig", kubeconfig, "--request-timeout", "3s"}, args...)...).CombinedOutput()
		return string(out), err
	}

	t.Run("the real kubectl through the lb", func(t *testing.T) {
		out, err := kubectl("get", "ns")
		if err != nil || !strings.Contains(out, "default") || !strings.Contains(out, "kube-system") {
			t.Fatalf("get ns: %v\n%s", err, out)
		}
		out, err = kubectl("create", "configmap", "e2e-one", "--from-literal=a=b")
		if err != nil || !strings.Contains(out, "configmap/e2e-one created") {
			t.Fatalf("create configmap: %v\n%s", err, out)
		}
	})

	t.Run("the controller manager and scheduler act on the installed cluster", func(t *testing.T) {
		// The workers' agents registered their Nodes: the scheduler binds
		// the deployment's pods to them.
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := kubectl("get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}")
			if err == nil && strings.Count(out, "=True") == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the three workers' Nodes were not Ready within 60s: %v %q", err, out)
			}
			time.Sleep(time.Second)
		}
		if out, err := kubectl("create", "deployment", "e2e-web", "--image=docker.io/library/busybox:local", "--replicas=2"); err != nil {
			t.Fatalf("create deployment: %v\n%s", err, out)
		}
		deadline = time.Now().Add(30 * time.Second)
		for {
			out, err := kubectl("get", "pods", "-l", "app=e2e-web", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\" \"}{end}")
			if err == nil && len(regexp.MustCompile(`\bw[123]\b`).FindAllString(out, -1)) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the deployment's 2 pods were not created and bound to workers within 30s: %v %q", err, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if out, err := kubectl("delete", "deployment", "e2e-web"); err != nil {
			t.Fatalf("delete deployment: %v\n%s", err, out)
		}
	})

	t.Run("a Deployment runs on the workers", func(t *testing.T) {
		testWorkload(t, labWorkloadEnv(t, bin, dir, kc, kubeconfig))
	})

	t.Run("status is healthy", func(t *testing.T) {
		out, _, err := kforge(t, bin, nil, "status", "-f", spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"All healthy.", "✓ healthy", "(load balancer)", "198.18.0.11:6443 (m1)  ✓ up", "/etc/kforge/pki/apiserver.crt"} {
			if !strings.Contains(out, w) {
				t.Errorf("status lacks %q", w)
			}
		}
		if n := len(regexp.MustCompile(`(?m)^w[123] +✓ Ready +\d+ +\S+$`).FindAllString(out, -1)); n != 3 {
			t.Errorf("status lists %d Ready worker Nodes, want 3:\n%s", n, out)
		}
		// Every master publishes itself in the kubernetes Endpoints.
		if n := len(regexp.MustCompile(`(?m)^198\.18\.0\.1[123] +m[123] +✓ listed$`).FindAllString(out, -1)); n != 3 {
			t.Errorf("status lists %d masters in the kubernetes endpoints, want 3:\n%s", n, out)
		}
	})

	// Every host reached through the lb as a jump host: SSH, and the
	// health checks and status through the hosts' SSH connections.
	bastionSpec := variant("cluster-bastion.yaml", func(s string) string {
		return strings.Replace(s, "\n    user: root\n", "\n    user: root\n    bastion: root@198.18.0.10:22\n", 1)
	})
	t.Run("up and status through a bastion", func(t *testing.T) {
		if _, stderr, err := kforge(t, bin, nil, "up", "-f", bastionSpec, "--binary", bin); err != nil {
			t.Fatalf("up through the bastion: %v\n%s", err, stderr)
		}
		out, _, err := kforge(t, bin, nil, "status", "-f", bastionSpec)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"All healthy.", "✓ healthy", "(load balancer)", "198.18.0.11:6443 (m1)  ✓ up"} {
			if !strings.Contains(out, w) {
				t.Errorf("status through the bastion lacks %q", w)
			}
		}
	})

	unitTimes := func() string {
		var b strings.Builder
		for _, h := range []string{"m1", "m2", "m3", "lb"} {
			out, _, _ := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, h, "--", "systemctl show -p ActiveEnterTimestamp kforge-etcd kforge-apiserver kforge-lb")
			b.WriteString(h + ": " + out)
		}
		return b.String()
	}

	t.Run("no-op re-run restarts nothing", func(t *testing.T) {
		before := unitTimes()
		start := time.Now()
		out, stderr, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING no-op re-run: %s", time.Since(start))
		if !strings.Contains(stderr, "Upload the kforge binary: skipped: every host has this binary") || !strings.Contains(out, "(0 change(s))") {
			t.Errorf("the re-run changed something:\n%s\n%s", stderr, out)
		}
		if strings.Contains(stderr, "started") || strings.Contains(stderr, "restarted") {
			t.Errorf("the re-run (re)started a unit:\n%s", stderr)
		}
		if after := unitTimes(); after != before {
			t.Errorf("units restarted:\nbefore %s\nafter %s", before, after)
		}
	})

	t.Run("a changed config restarts only that unit", func(t *testing.T) {
		if _, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "m2", "--", "echo '# edited' >> /etc/kforge/apiserver.yaml"); err != nil {
			t.Fatal(err)
		}
		_, stderr, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(stderr, "restarted "); n != 1 || !strings.Contains(stderr, "restarted kforge-apiserver.service (changed: apiserver.yaml)") {
			t.Errorf("%d restarts; want only m2's apiserver:\n%s", n, stderr)
		}
	})

	t.Run("json output", func(t *testing.T) {
		out, _, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin, "--output", "json")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var last map[string]any
		for _, l := range lines {
			if err := json.Unmarshal([]byte(l), &last); err != nil {
				t.Fatalf("not JSON: %q", l)
			}
		}
		if last["status"] != "summary" || len(lines) < 3*7 {
			t.Errorf("%d lines, last %v", len(lines), last)
		}
	})

	t.Run("writes survive a master's daemons stopping", func(t *testing.T) {
		if _, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "m1", "--", "systemctl stop kforge-apiserver kforge-etcd"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var last string
		ok := false
		for i := 0; time.Since(start) < 5*time.Second; i++ {
			out, err := kubectl("create", "configmap", fmt.Sprintf("e2e-failover-%d", i), "--from-literal=a=b")
			if err == nil {
				ok = true
				break
			}
			last = out
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("TIMING first write through the lb after stopping m1's daemons: %s", time.Since(start))
		if !ok {
			t.Errorf("no write succeeded within 5s of stopping m1's etcd and apiserver: %s", last)
		}
		if _, _, err := kforge(t, bin, nil, "status", "-f", spec); err == nil {
			t.Error("status exits 0 with m1 down")
		}
		if _, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "m1", "--", "systemctl start kforge-etcd kforge-apiserver"); err != nil {
			t.Fatal(err)
		}
		// up waits until m1 is healthy again.
		if _, _, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin); err != nil {
			t.Fatal(err)
		}
		if _, _, err := kforge(t, bin, nil, "status", "-f", spec); err != nil {
			t.Errorf("status after m1 is back: %v", err)
		}
	})

	t.Run("a master whose etcd data was lost rejoins", func(t *testing.T) {
		if out, err := kubectl("create", "configmap", "e2e-before-wipe", "--from-literal=a=b"); err != nil {
			t.Fatalf("create configmap: %v\n%s", err, out)
		}
		if _, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "m3", "--",
			"systemctl stop kforge-apiserver kforge-etcd && rm -rf /var/lib/kforge/etcd"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, stderr, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin)
		if err != nil {
			t.Fatalf("up after m3 lost its etcd data: %v\n%s", err, stderr)
		}
		t.Logf("TIMING up that re-adds m3's etcd member: %s", time.Since(start))
		if !strings.Contains(stderr, "re-added to the etcd cluster") {
			t.Errorf("up did not say it re-added m3:\n%s\n%s", stderr, out)
		}
		if out, _, err := kforge(t, bin, nil, "status", "-f", spec); err != nil {
			t.Errorf("status after the rejoin: %v\n%s", err, out)
		}
		if out, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "m3", "--",
			"test -d /var/lib/kforge/etcd/member && test ! -e /var/lib/kforge/etcd.join && echo joined"); err != nil || !strings.Contains(out, "joined") {
			t.Errorf("m3's data dir after the rejoin: %v %s", err, out)
		}
		// m3's apiserver reads through its own, rejoined member first.
		if out, err := kubectl("--server", "https://198.18.0.13:6443", "get", "configmap", "e2e-before-wipe", "-o", "jsonpath={.data.a}"); err != nil || out != "b" {
			t.Errorf("the configmap written before the wipe, through m3: %v %q", err, out)
		}
		// And the next run is a no-op again.
		if out, _, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin); err != nil || !strings.Contains(out, "(0 change(s))") {
			t.Errorf("the run after the rejoin: %v\n%s", err, out)
		}
	})

	pw, err := os.ReadFile(filepath.Join(dir, "ssh", "sudo-password"))
	if err != nil {
		t.Fatal(err)
	}
	password := strings.TrimSpace(string(pw))
	sudoSpec := variant("cluster-sudo.yaml", func(s string) string {
		return strings.Replace(s, "\n    user: root\n", "\n    user: kforge\n    sudoPasswordEnv: KFORGE_E2E_SUDO_PASSWORD\n", 1)
	})

	t.Run("sudo user with a password", func(t *testing.T) {
		// Take the binary away from w2 so the kforge user has to upload through sudo.
		if _, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "w2", "--", "rm", "-f", "/usr/local/bin/kforge"); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := kforge(t, bin, []string{"KFORGE_E2E_SUDO_PASSWORD="}, "up", "-f", sudoSpec, "--binary", bin)
		if err == nil || !strings.Contains(stderr, "KFORGE_E2E_SUDO_PASSWORD") {
			t.Errorf("without the password: err=%v; want an error naming the variable", err)
		}
		if strings.Contains(out+stderr, password) {
			t.Error("the sudo password appears in the output")
		}
		out, stderr, err = kforge(t, bin, []string{"KFORGE_E2E_SUDO_PASSWORD=" + password}, "up", "-f", sudoSpec, "--binary", bin)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out+stderr, password) {
			t.Error("the sudo password appears in the output")
		}
		// The changes: w2's binary and its stamp, and each of w2's daemons
		// restarted on it (agent, proxy, dns, ingress).
		restarts := len(regexp.MustCompile(`(?m)✓ w2 +restarted kforge-`).FindAllString(stderr, -1))
		if !hostLines(stderr, "✓")["w2"] || restarts < 3 || !strings.Contains(out, fmt.Sprintf("(%d change(s))", 2+restarts)) {
			t.Errorf("w2 was not re-uploaded through sudo (%d restarts):\n%s\n%s", restarts, stderr, out)
		}
		if s := remoteSHA("w2"); s != remoteSHA("m1") {
			t.Errorf("w2 sha256 %s after the sudo upload", s)
		}
		out, _, _ = kforge(t, bin, nil, "lab", "ssh", "--dir", dir, "w2", "--", "stat -c '%a %U:%G' /usr/local/bin/kforge; ls -a /tmp /usr/local/bin")
		if !strings.Contains(out, "755 root:root") || strings.Contains(out, ".kforge-") {
			t.Errorf("w2 after the sudo upload: %s", out)
		}
	})

	t.Run("wrong host key refused", func(t *testing.T) {
		known := filepath.Join(dir, "ssh", "known_hosts")
		data, _ := os.ReadFile(known)
		var m1, w1Key string
		for _, h := range st.Hosts {
			if h.Name == "m1" {
				m1 = h.Address
			}
		}
		var w1 string
		for _, h := range st.Hosts {
			if h.Name == "w1" {
				w1 = h.Address
			}
		}
		var kept []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == w1 {
				w1Key = f[1] + " " + f[2]
			}
			if len(f) == 3 && f[0] == m1 {
				continue
			}
			kept = append(kept, l)
		}
		bad := filepath.Join(dir, "ssh", "bad_known_hosts")
		badData := strings.Join(append(kept, m1+" "+w1Key), "\n") + "\n"
		if err := os.WriteFile(bad, []byte(badData), 0o600); err != nil {
			t.Fatal(err)
		}
		badSpec := variant("cluster-badkey.yaml", func(s string) string {
			return strings.Replace(s, "knownHosts: ./ssh/known_hosts", "knownHosts: ./ssh/bad_known_hosts", 1)
		})
		for _, extra := range [][]string{nil, {"--accept-new-host-keys"}} {
			_, stderr, err := kforge(t, bin, nil, append([]string{"up", "-f", badSpec, "--binary", bin}, extra...)...)
			if err == nil {
				t.Fatalf("%v: a changed host key was accepted", extra)
			}
			for _, s := range []string{"HOST KEY CHANGED", "host m1", "SHA256:", "ssh-keygen -R " + m1} {
				if !strings.Contains(stderr, s) {
					t.Errorf("%v: stderr lacks %q", extra, s)
				}
			}
			if strings.Count(stderr, "SHA256:") < 2 {
				t.Errorf("%v: want both fingerprints", extra)
			}
		}
		if after, _ := os.ReadFile(bad); string(after) != badData {
			t.Error("the known_hosts file was changed")
		}
	})

	t.Run("unknown host key pinned only when asked", func(t *testing.T) {
		empty := filepath.Join(dir, "ssh", "new_known_hosts")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		newSpec := variant("cluster-newkeys.yaml", func(s string) string {
			return strings.Replace(s, "knownHosts: ./ssh/known_hosts", "knownHosts: ./ssh/new_known_hosts", 1)
		})
		_, stderr, err := kforge(t, bin, nil, "up", "-f", newSpec, "--binary", bin)
		if err == nil || !strings.Contains(stderr, "unknown host key") || !strings.Contains(stderr, "--accept-new-host-keys") {
			t.Errorf("unknown keys: err=%v", err)
		}
		if _, _, err := kforge(t, bin, nil, "up", "-f", newSpec, "--binary", bin, "--accept-new-host-keys"); err != nil {
			t.Errorf("--accept-new-host-keys: %v", err)
		}
		data, _ := os.ReadFile(empty)
		if n := len(strings.Split(strings.TrimSpace(string(data)), "\n")); n != 7 {
			t.Errorf("%d keys pinned; want 7", n)
		}
		if _, _, err := kforge(t, bin, nil, "up", "-f", newSpec, "--binary", bin); err != nil {
			t.Errorf("strict run after pinning: %v", err)
		}
	})

	t.Run("cert rotate under load", func(t *testing.T) { testCertRotate(t, newRotateEnv(t, bin, dir)) })

	t.Run("node remove and add of a worker", func(t *testing.T) {
		testNodeOps(t, nodeOpsEnv{
			workloadEnv: workloadEnv{kubectlBin: kc, kubeconfig: kubeconfig, ssh: func(host, cmd string) (string, error) {
				out, _, err := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, host, "--", cmd)
				return out, err
			}},
			bin: bin, spec: spec,
			kforge: func(args ...string) (string, string, error) { return kforge(t, bin, nil, args...) },
		})
	})

	t.Run("backup and restore", func(t *testing.T) { testBackupRestore(t, newBackupEnv(t, bin, dir)) })

	// It upgrades back at its end, so the reset below finds the lab as it was.
	t.Run("upgrade under load, logs, and back", func(t *testing.T) { testUpgrade(t, newRotateEnv(t, bin, dir)) })

	t.Run("reset leaves the hosts clean", func(t *testing.T) {
		if _, _, err := kforge(t, bin, nil, "reset", "-f", spec); err == nil {
			t.Error("reset without --yes and without a terminal went ahead")
		}
		if _, _, err := kforge(t, bin, nil, "reset", "-f", spec, "--yes"); err != nil {
			t.Fatal(err)
		}
		for _, h := range st.Hosts {
			out, _, _ := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, h.Name, "--",
				"ls -d /etc/kforge /var/lib/kforge /usr/local/bin/kforge /etc/systemd/system/kforge-* 2>/dev/null; systemctl list-units --all --no-legend 'kforge-*'; true")
			if strings.TrimSpace(out) != "" {
				t.Errorf("%s after reset: %s", h.Name, out)
			}
		}
		// The workers ran pods until the reset: none of their containers,
		// sandboxes, routes, bridge or logs are left.
		for _, w := range []string{"w1", "w2", "w3"} {
			out, _, _ := kforge(t, bin, nil, "lab", "ssh", "--dir", dir, w, "--",
				"ctr -n k8s.io containers ls -q; ip route show proto 66; ip -o link show cni0 2>/dev/null; find /var/log/pods /run/kforge /etc/cni/net.d -mindepth 1 2>/dev/null; true")
			if strings.TrimSpace(out) != "" {
				t.Errorf("%s after reset still has pod state:\n%s", w, out)
			}
		}
	})
}

// kubectlBinary is $KUBECTL, or the real kubectl built from test/kubectl.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	if k := os.Getenv("KUBECTL"); k != "" {
		return k
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(t.TempDir(), "kubectl")
	cmd := exec.Command("go", "build", "-o", b, ".")
	cmd.Dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "test", "kubectl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl: %v\n%s", err, out)
	}
	return b
}

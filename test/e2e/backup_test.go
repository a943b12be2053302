package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// backupEnv is what the backup and restore tests need from a lab.
type backupEnv struct {
	workloadEnv
	spec string
	// kforge runs the binary and returns stdout, stderr.
	kforge func(args ...string) (string, string, error)
	tmp    string
}

// testBackupRestore takes a backup while a client reads and writes
// through the load balancer, writes more, restores, and checks that the
// objects written before are there, those written after are gone and the
// web Deployment is Ready again; then two masters lose their etcd data and
// the same backup brings the cluster back.
func testBackupRestore(t *testing.T, e backupEnv) {
	_, file, _, _ := runtime.Caller(0)
	if out, err := e.kubectl(20*time.Second, "apply", "-f", filepath.Join(filepath.Dir(file), "..", "..", "examples", "web.yaml")); err != nil {
		t.Fatalf("apply web: %v\n%s", err, out)
	}
	if out, err := e.kubectl(100*time.Second, "rollout", "status", "deployment/web", "--timeout=90s"); err != nil {
		t.Fatalf("web is not rolled out: %v\n%s", err, out)
	}
	create := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			if out, err := e.kubectl(10*time.Second, "create", "configmap", fmt.Sprintf("%s-%d", prefix, i), "--from-literal=a=b"); err != nil {
				t.Fatalf("create configmap: %v\n%s", err, out)
			}
		}
	}
	// configmaps lists the names of ConfigMaps with the prefix.
	configmaps := func(prefix string) []string {
		t.Helper()
		out, err := e.kubectl(10*time.Second, "get", "configmaps", "-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}")
		if err != nil {
			t.Fatalf("get configmaps: %v\n%s", err, out)
		}
		var names []string
		for _, n := range strings.Fields(out) {
			if strings.HasPrefix(n, prefix) {
				names = append(names, n)
			}
		}
		return names
	}
	create("e2e-backup-before", 5)
	archive := filepath.Join(e.tmp, "backup.tar.gz")

	load := startAPILoad(t, e.kubeconfig)
	start := time.Now()
	out, stderr, err := e.kforge("backup", "-f", e.spec, "-o", archive)
	took := time.Since(start)
	n, failed := load.take()
	load.close()
	if err != nil {
		t.Fatalf("backup: %v\n%s\n%s", err, stderr, out)
	}
	fi, err := os.Stat(archive)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the archive: %v %v", fi, err)
	}
	t.Logf("TIMING kforge backup: %s, %d bytes; API load through the lb meanwhile: %d requests, %d failed %v", took.Round(100*time.Millisecond), fi.Size(), n, len(failed), failed)
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed during the backup", len(failed), n)
	}
	if !strings.Contains(out, "CA PRIVATE KEYS") || !strings.Contains(stderr, "sha256 trailer and database verified") {
		t.Errorf("backup output:\n%s\n%s", stderr, out)
	}
	create("e2e-backup-after", 3)
	// A fourth web pod, made after the backup: the restore must take it
	// off its node.
	before := e.webPods(t)
	if out, err := e.kubectl(10*time.Second, "scale", "deployment/web", "--replicas=4"); err != nil {
		t.Fatalf("scale: %v\n%s", err, out)
	}
	var extra, extraNode string
	if msg := eventually(60*time.Second, time.Second, func() string {
		for name, p := range e.webPods(t) {
			if _, old := before[name]; !old && p[3] == "true" {
				extra, extraNode = name, p[0]
				return ""
			}
		}
		return "no fourth web pod Ready"
	}); msg != "" {
		t.Fatal(msg)
	}
	// containersOf lists the containers on host that belong to pod.
	containersOf := func(host, pod string) string {
		out, _ := e.ssh(host, `ctr -n k8s.io containers ls -q 'labels."io.kforge.pod.name"==`+pod+`'`)
		return strings.TrimSpace(out)
	}
	if containersOf(extraNode, extra) == "" {
		t.Fatalf("no container of %s on %s", extra, extraNode)
	}

	webReady := func(what string) {
		t.Helper()
		if msg := eventually(150*time.Second, 2*time.Second, func() string {
			out, err := e.kubectl(10*time.Second, "get", "deployment", "web", "-o", "jsonpath={.status.readyReplicas}/{.spec.replicas}")
			if err != nil || out != "3/3" {
				return fmt.Sprintf("web ready/replicas %q %v", out, err)
			}
			ready := 0
			for _, p := range e.webPods(t) {
				if p[3] == "true" {
					ready++
				}
			}
			if ready != 3 {
				return fmt.Sprintf("%d web pods Ready", ready)
			}
			return ""
		}); msg != "" {
			pods, _ := e.kubectl(10*time.Second, "get", "pods", "-o", "wide")
			t.Fatalf("%s: %s\n%s", what, msg, pods)
		}
	}
	statusClean := func(what string) {
		t.Helper()
		var last string
		if msg := eventually(90*time.Second, 3*time.Second, func() string {
			out, _, err := e.kforge("status", "-f", e.spec)
			last = out
			if err != nil {
				return "status: " + err.Error()
			}
			return ""
		}); msg != "" {
			t.Errorf("%s: %s\n%s", what, msg, last)
		}
	}
	// podsRun checks that every web pod's container runs on its node.
	podsRun := func(what string) {
		t.Helper()
		if msg := eventually(60*time.Second, 2*time.Second, func() string {
			for name, p := range e.webPods(t) {
				id := strings.TrimPrefix(p[2], "containerd://")
				out, _ := e.ssh(p[0], "ctr -n k8s.io tasks ls")
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + `\s+\d+\s+RUNNING`).MatchString(out) {
					return fmt.Sprintf("%s's container %s does not run on %s:\n%s", name, id, p[0], out)
				}
			}
			return ""
		}); msg != "" {
			t.Errorf("%s: %s", what, msg)
		}
	}
	restore := func(what string) {
		t.Helper()
		start := time.Now()
		out, stderr, err := e.kforge("restore", "-f", e.spec, archive, "--yes")
		if err != nil {
			t.Fatalf("%s: restore: %v\n%s\n%s", what, err, stderr, out)
		}
		t.Logf("TIMING kforge restore (%s): %s", what, time.Since(start).Round(100*time.Millisecond))
		if !strings.Contains(out, "Restored etcd revision") || !strings.Contains(stderr, "✓ Rebuild every etcd member") {
			t.Errorf("%s: restore output:\n%s\n%s", what, stderr, out)
		}
		start = time.Now()
		webReady(what)
		t.Logf("TIMING web Deployment Ready again after the restore (%s): %s", what, time.Since(start).Round(100*time.Millisecond))
		if got := configmaps("e2e-backup-before"); len(got) != 5 {
			t.Errorf("%s: ConfigMaps written before the backup: %v", what, got)
		}
		if got := configmaps("e2e-backup-after"); len(got) != 0 {
			t.Errorf("%s: ConfigMaps written after the backup are back: %v", what, got)
		}
		statusClean(what)
		podsRun(what)
		if _, err := e.kubectl(10*time.Second, "get", "pod", extra); err == nil {
			t.Errorf("%s: pod %s, made after the backup, is back", what, extra)
		}
		if msg := eventually(60*time.Second, 2*time.Second, func() string {
			if ids := containersOf(extraNode, extra); ids != "" {
				return fmt.Sprintf("%s still has containers of %s (made after the backup): %s", extraNode, extra, ids)
			}
			return ""
		}); msg != "" {
			t.Errorf("%s: %s", what, msg)
		}
	}

	t.Run("restore onto the running cluster", func(t *testing.T) {
		restore("running cluster")
		out, err := e.ssh("m1", "ls -d /var/lib/kforge/etcd.before-restore-*")
		if err != nil || !strings.Contains(out, "etcd.before-restore-") {
			t.Errorf("m1's old data dir: %v %s", err, out)
		}
		// Writes work again, through the lb.
		create("e2e-backup-after-restore", 1)
	})

	t.Run("two of three masters lost their etcd data", func(t *testing.T) {
		for _, m := range []string{"m2", "m3"} {
			if out, err := e.ssh(m, "systemctl stop kforge-apiserver kforge-etcd && rm -rf /var/lib/kforge/etcd"); err != nil {
				t.Fatalf("%s: %v\n%s", m, err, out)
			}
		}
		restore("two masters lost their data")
	})
	for _, m := range []string{"m1", "m2", "m3"} {
		_, _ = e.ssh(m, "rm -rf /var/lib/kforge/etcd.before-restore-*")
	}
}

// TestBackupRestoreOnRunningLab runs testBackupRestore against a lab
// someone already brought up and installed (KFORGE_LAB_DIR); TestUp runs
// it too.
func TestBackupRestoreOnRunningLab(t *testing.T) {
	dir := os.Getenv("KFORGE_LAB_DIR")
	if dir == "" {
		t.Skip("set KFORGE_LAB_DIR to a lab installed with kforge up")
	}
	bin := binary(t)
	testBackupRestore(t, newBackupEnv(t, bin, dir))
}

func newBackupEnv(t *testing.T, bin, dir string) backupEnv {
	return backupEnv{
		workloadEnv: labWorkloadEnv(t, bin, dir, kubectlBinary(t), filepath.Join(dir, "admin.kubeconfig")),
		spec:        filepath.Join(dir, "cluster.yaml"),
		kforge:      func(args ...string) (string, string, error) { return kforge(t, bin, nil, args...) },
		tmp:         t.TempDir(),
	}
}

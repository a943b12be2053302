package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// upgradeVersion is the version string of the rebuilt binary the lab is
// upgraded to.
const upgradeVersion = "v0.99.0-e2e"

// buildVersioned builds kforge from this module with another version string.
func buildVersioned(t *testing.T, ver string) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(t.TempDir(), "kforge-"+ver)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X kforge.dev/kforge/cmd/kforge/app.Version="+ver, "-o", b, "./cmd/kforge")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", ver, err, out)
	}
	return b
}

// testUpgrade upgrades a running lab to a rebuilt binary with another
// version string while a client reads and writes through the load
// balancer every 100 ms, checks every host runs it in every unit, that
// no Node stays cordoned and that `kforge logs` merges all three
// apiservers' lines; then it upgrades back to the binary under test, so
// what runs after finds the lab as it was.
func testUpgrade(t *testing.T, e rotateEnv) {
	newBin := buildVersioned(t, upgradeVersion)
	verOf := func(bin string) string {
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(strings.SplitN(string(out), "\n", 2)[0], "kforge ")
	}
	oldVer := verOf(e.bin)
	check := func(t *testing.T, want string) {
		t.Helper()
		for _, h := range e.hosts {
			out, err := e.ssh(h, "/usr/local/bin/kforge version | head -1; for p in $(systemctl show -p MainPID --value 'kforge-*'); do [ \"$p\" != 0 ] && readlink /proc/$p/exe; done; true")
			if err != nil {
				t.Fatalf("%s: %v", h, err)
			}
			if !strings.HasPrefix(out, "kforge "+want+"\n") {
				t.Errorf("%s runs %q, want kforge %s", h, strings.SplitN(out, "\n", 2)[0], want)
			}
			if strings.Contains(out, "(deleted)") {
				t.Errorf("%s: a unit still runs the replaced binary:\n%s", h, out)
			}
		}
		if out, err := e.kubectl(20*time.Second, "get", "nodes", "-o", "jsonpath={.items[*].spec.unschedulable}"); err != nil || strings.Contains(out, "true") {
			t.Errorf("a Node stayed cordoned: %q %v", out, err)
		}
	}
	roll := func(t *testing.T, bin, want string, extra ...string) {
		load := startRotateLoad(t, e.kubeconfig)
		start := time.Now()
		_, stderr, err := kforge(t, e.bin, nil, append([]string{"upgrade", "-f", e.spec, "--binary", bin}, extra...)...)
		ok, failed, errs := load.finish()
		t.Logf("upgrade to %s: %s; %d requests through the LB, %d failed", want, time.Since(start).Round(time.Second), ok+failed, failed)
		if err != nil {
			t.Fatalf("upgrade: %v\n%s", err, stderr)
		}
		// The load balancer is one host: while its process is replaced,
		// connections to it are refused (about half a second on the lab).
		// Those are logged and bounded; any other failure fails the test.
		refused := 0
		for _, e := range errs {
			if strings.Contains(e, "connection refused") {
				refused++
			} else {
				t.Errorf("a request failed during the upgrade: %s", e)
			}
		}
		if failed > 0 {
			t.Logf("%d of %d requests failed during the upgrade, %d of them refused by the restarting load balancer: %s", failed, ok+failed, refused, strings.Join(errs, "; "))
		}
		if failed > len(errs) || refused > 5 {
			t.Errorf("%d requests failed (%d refused by the load balancer); want at most 5, all refused while it restarts", failed, refused)
		}
		check(t, want)
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		out, _, err := kforge(t, e.bin, nil, "upgrade", "-f", e.spec, "--binary", newBin, "--dry-run")
		if err != nil || !strings.Contains(out, "dry run done") {
			t.Fatalf("dry run: %v\n%s", err, out)
		}
		check(t, oldVer)
	})
	t.Run("to a rebuilt binary under load", func(t *testing.T) { roll(t, newBin, upgradeVersion) })
	t.Run("a second run has nothing to do", func(t *testing.T) {
		out, _, err := kforge(t, e.bin, nil, "upgrade", "-f", e.spec, "--binary", newBin)
		if err != nil || !strings.Contains(out, "0 of 7 host(s) upgraded") {
			t.Errorf("re-run: %v\n%s", err, out)
		}
	})
	t.Run("logs merges the three apiservers", func(t *testing.T) {
		out, _, err := kforge(t, e.bin, nil, "logs", "-f", e.spec, "--role", "apiserver", "--since", "5m")
		if err != nil {
			t.Fatal(err)
		}
		line := regexp.MustCompile(`^(m[123]) +apiserver +(\d\d:\d\d:\d\d\.\d{3}) `)
		seen, last := map[string]int{}, ""
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("line not prefixed with host and role: %q", l)
			}
			seen[m[1]]++
			if m[2] < last {
				t.Errorf("out of time order: %q after %s", l, last)
			}
			last = m[2]
		}
		for _, m := range []string{"m1", "m2", "m3"} {
			if seen[m] == 0 {
				t.Errorf("no line from %s's apiserver (seen %v)", m, seen)
			}
		}
		out, _, err = kforge(t, e.bin, nil, "logs", "-f", e.spec, "--host", "w1", "--role", "agent", "--since", "5m", "--output", "json")
		if err != nil || !strings.Contains(out, `"host":"w1"`) || !strings.Contains(out, `"_SYSTEMD_UNIT":"kforge-agent.service"`) {
			t.Errorf("logs --output json: %v\n%.400s", err, out)
		}
	})
	t.Run("back to the binary under test under load", func(t *testing.T) { roll(t, e.bin, oldVer, "--allow-downgrade") })
}

// TestUpgradeOnRunningLab runs the upgrade test against a lab someone
// already brought up and installed (KFORGE_LAB_DIR); TestUp runs it too.
func TestUpgradeOnRunningLab(t *testing.T) {
	dir := os.Getenv("KFORGE_LAB_DIR")
	if dir == "" {
		t.Skip("set KFORGE_LAB_DIR to a lab installed with kforge up")
	}
	testUpgrade(t, newRotateEnv(t, binary(t), dir))
}

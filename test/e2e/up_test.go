package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUp runs `kforge up` (facts, preflight, binary upload) on a lab of
// its own. Only one lab can run on a machine (they share the kforge0
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
		if !strings.Contains(out, "Dry run: 7 change(s) planned, nothing was changed.") || !strings.Contains(out, "upload /usr/local/bin/kforge") {
			t.Errorf("dry run output lacks the plan:\n%s", out)
		}
		if !strings.Contains(out, "not there yet") {
			t.Error("kforge up does not say the control-plane phases are missing")
		}
		if seen := hostLines(stderr, "✓"); len(seen) != 7 {
			t.Errorf("✓ lines for %d hosts; want 7", len(seen))
		}
		for _, h := range st.Hosts {
			if s := remoteSHA(h.Name); s != "absent" {
				t.Errorf("%s has /usr/local/bin/kforge after a dry run", h.Name)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "cluster.journal.jsonl")); err == nil {
			t.Error("a dry run wrote the journal")
		}
	})

	t.Run("up uploads to every host", func(t *testing.T) {
		start := time.Now()
		out, stderr, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING kforge up on %d hosts: %s", len(st.Hosts), time.Since(start))
		for _, title := range []string{"✓ Connect and gather facts", "✓ Preflight checks", "✓ Upload the kforge binary"} {
			if !strings.Contains(stderr, title) {
				t.Errorf("stderr lacks %q", title)
			}
		}
		if !strings.Contains(out, "(7 change(s))") || !strings.Contains(out, "not there yet") {
			t.Errorf("summary: %q", out)
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
	})

	t.Run("re-run skips the upload", func(t *testing.T) {
		start := time.Now()
		out, stderr, err := kforge(t, bin, nil, "up", "-f", spec, "--binary", bin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING no-op re-run: %s", time.Since(start))
		if !strings.Contains(stderr, "Upload the kforge binary: skipped: every host has this binary") || !strings.Contains(out, "(0 change(s))") {
			t.Errorf("the re-run did not skip the upload:\n%s\n%s", stderr, out)
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
		if !hostLines(stderr, "✓")["w2"] || !strings.Contains(out, "(1 change(s))") {
			t.Errorf("w2 was not re-uploaded through sudo:\n%s\n%s", stderr, out)
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
}

package installer

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestNewerThan(t *testing.T) {
	for _, tc := range []struct {
		a, b           string
		newer, ordered bool
	}{
		{"v1.2.0", "v1.1.9", true, true},
		{"v1.1.0", "v1.2.0", false, true},
		{"1.2.0", "v1.2.0", false, true},
		{"v0.99.0-e2e", "v0.99.0", false, true}, // a pre-release is older
		{"2f4a0be-dirty", "v1.0.0", false, false},
		{"v1.0.0", "dev", false, false},
	} {
		newer, ok := newerThan(tc.a, tc.b)
		if newer != tc.newer || ok != tc.ordered {
			t.Errorf("newerThan(%q, %q) = %v, %v; want %v, %v", tc.a, tc.b, newer, ok, tc.newer, tc.ordered)
		}
	}
}

// TestVersionScript runs the host script with a real shell (no systemd
// here: every unit reads as not active) and parses a host's answer.
func TestVersionScript(t *testing.T) {
	out, err := exec.Command("sh", "-c", versionScript([]string{"kforge-etcd.service"})).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "unit kforge-etcd.service") {
		t.Errorf("output %q", out)
	}
	hv, err := parseVersionScript(`version={  "version": "v1.2.3",  "commit": "abc"}
unit kforge-etcd.service active /usr/local/bin/kforge
unit kforge-apiserver.service active /usr/local/bin/kforge (deleted)
unit kforge-scheduler.service inactive
`)
	if err != nil {
		t.Fatal(err)
	}
	if hv.Version != "v1.2.3" || strings.Join(hv.Stale, ",") != "kforge-apiserver.service" || strings.Join(hv.Inactive, ",") != "kforge-scheduler.service" {
		t.Errorf("%+v", hv)
	}
	if _, err := parseVersionScript("version=garbage\n"); err == nil {
		t.Error("garbage version accepted")
	}
}

// TestUpgradeGate: a newer host refuses the upgrade before anything
// changes unless downgrades are allowed; a host without kforge refuses
// it; versions that cannot be ordered go on with a note.
func TestUpgradeGate(t *testing.T) {
	hosts := fakeHosts(2, "")
	env, rec := newEnv(hosts, false)
	u := &upgrade{to: "v1.1.0", states: map[string]*hostVersion{"h0": {Version: "v1.0.0"}, "h1": {Version: "v1.2.0"}}}
	g := &upgradeGate{u: u, env: env}
	err := g.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "h1 runs kforge v1.2.0, newer than v1.1.0") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("newer host: %v", err)
	}
	u.o.AllowDowngrade = true
	if err := g.Run(context.Background()); err != nil {
		t.Errorf("with AllowDowngrade: %v", err)
	}
	u.states["h1"] = &hostVersion{}
	if err := g.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "run kforge up first") {
		t.Errorf("host without kforge: %v", err)
	}
	u.states["h1"] = &hostVersion{Version: "2f4a0be-dirty"}
	if err := g.Run(context.Background()); err != nil {
		t.Errorf("unordered versions: %v", err)
	}
	found := false
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		found = found || strings.Contains(ev.Message, "order is unknown")
	}
	if !found {
		t.Error("no note about versions that cannot be ordered")
	}
}

// TestUpgradeCordonIsOurs: the upgrade uncordons only a Node it cordoned.
func TestUpgradeCordonIsOurs(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w2"}, Spec: corev1.NodeSpec{Unschedulable: true}},
	)
	for _, n := range []string{"w1", "w2"} {
		if err := cordonForUpgrade(ctx, client, n); err != nil {
			t.Fatal(err)
		}
	}
	w1, _ := client.CoreV1().Nodes().Get(ctx, "w1", metav1.GetOptions{})
	if !w1.Spec.Unschedulable || w1.Annotations[UpgradeCordonAnnotation] != "true" {
		t.Fatalf("w1 after cordon: %+v", w1)
	}
	if changed, err := uncordonAfterUpgrade(ctx, client, "w2"); err != nil || changed {
		t.Errorf("w2 (cordoned by someone else) uncordoned: %v %v", changed, err)
	}
	if changed, err := uncordonAfterUpgrade(ctx, client, "w1"); err != nil || !changed {
		t.Errorf("w1: %v %v", changed, err)
	}
	w1, _ = client.CoreV1().Nodes().Get(ctx, "w1", metav1.GetOptions{})
	if w1.Spec.Unschedulable || w1.Annotations[UpgradeCordonAnnotation] != "" {
		t.Errorf("w1 after uncordon: %+v", w1)
	}
}

package controllers

import (
	"encoding/json"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	core "k8s.io/client-go/testing"
)

func ipamNode(name, cidr string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
}

// patchedCIDR is the podCIDR the last write patched onto node, or "".
func patchedCIDR(t *testing.T, f *fixture, node string) string {
	t.Helper()
	got := ""
	for _, a := range f.writes() {
		p, ok := a.(core.PatchAction)
		if !ok || p.GetName() != node {
			continue
		}
		var body struct {
			Spec struct {
				PodCIDR  string   `json:"podCIDR"`
				PodCIDRs []string `json:"podCIDRs"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(p.GetPatch(), &body); err != nil {
			t.Fatal(err)
		}
		if len(body.Spec.PodCIDRs) != 1 || body.Spec.PodCIDRs[0] != body.Spec.PodCIDR {
			t.Errorf("podCIDRs %v do not match podCIDR %s", body.Spec.PodCIDRs, body.Spec.PodCIDR)
		}
		got = body.Spec.PodCIDR
	}
	return got
}

func TestNodeIPAMAllocatesReleasesAndReuses(t *testing.T) {
	a, b, c := ipamNode("a", "198.19.0.0/24"), ipamNode("b", ""), ipamNode("c", "")
	stray := ipamNode("stray", "10.0.0.0/24") // not from the cluster range: left alone
	f := newFixture(t, a, b, c, stray)
	ctl, err := NewNodeIPAMController(f.client, f.factory.Core().V1().Nodes(), "198.19.0.0/23", 24, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.load(a, b, c, stray)
	ctx := t.Context()

	if err := ctl.sync(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got := patchedCIDR(t, f, "b"); got != "198.19.1.0/24" {
		t.Fatalf("b got %q, want 198.19.1.0/24 (198.19.0.0/24 is a's)", got)
	}
	if err := ctl.sync(ctx, "c"); !errors.Is(err, errRangeFull) {
		t.Fatalf("c with the range full: %v", err)
	}
	if err := ctl.sync(ctx, "stray"); err != nil || patchedCIDR(t, f, "stray") != "" {
		t.Fatalf("stray node: %v, patched %q", err, patchedCIDR(t, f, "stray"))
	}

	// a is deleted: its range goes to c.
	if err := f.factory.Core().V1().Nodes().Informer().GetIndexer().Delete(a); err != nil {
		t.Fatal(err)
	}
	if err := ctl.sync(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := ctl.Allocated("a"); ok {
		t.Error("a's range was not released")
	}
	if err := ctl.sync(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if got := patchedCIDR(t, f, "c"); got != "198.19.0.0/24" {
		t.Fatalf("c got %q, want a's old 198.19.0.0/24", got)
	}
}

func TestNodeIPAMRejectsBadRanges(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		cidr string
		mask int
	}{{"nonsense", 24}, {"fd00::/64", 80}, {"198.19.0.0/16", 12}, {"198.19.0.0/16", 31}} {
		if _, err := NewNodeIPAMController(f.client, f.factory.Core().V1().Nodes(), tc.cidr, tc.mask, nil, nil); err == nil {
			t.Errorf("%s with /%d accepted", tc.cidr, tc.mask)
		}
	}
}

package scheduler

import (
	"testing"
	"time"
)

func TestCacheAssumeConfirmForgetExpire(t *testing.T) {
	c := newSchedCache()
	clk := &clock{t: time.Unix(1000, 0)}
	c.now = clk.now
	c.setNode(readyNode("a", "1", "1Gi", 10))
	c.setNode(readyNode("b", "1", "1Gi", 10))
	snap := newSnapshot()
	c.updateSnapshot(snap)
	if len(snap.list) != 2 || snap.list[0].node.Name != "a" {
		t.Fatalf("snapshot list %v", snap.list)
	}
	before := snap.infos["b"]

	p := podReq("p", "500m", "")
	p.Spec.NodeName = "a"
	c.assume(p)
	c.updateSnapshot(snap)
	if got := snap.infos["a"].requested.milliCPU; got != 500 {
		t.Errorf("a requested %d after assume, want 500", got)
	}
	if snap.infos["b"] != before {
		t.Error("an unchanged node was cloned again")
	}
	// The informer shows it bound elsewhere: the cache follows.
	seen := p.DeepCopy()
	seen.Spec.NodeName = "b"
	c.addPod(seen)
	c.updateSnapshot(snap)
	if snap.infos["a"].requested.milliCPU != 0 || snap.infos["b"].requested.milliCPU != 500 || c.isAssumed("default/p") {
		t.Errorf("after confirm: a %d b %d assumed %v", snap.infos["a"].requested.milliCPU, snap.infos["b"].requested.milliCPU, c.isAssumed("default/p"))
	}

	// A failed bind forgets; an unconfirmed one expires after assumedTTL.
	q := podReq("q", "200m", "")
	q.Spec.NodeName = "a"
	c.assume(q)
	c.forget("default/q")
	r := podReq("r", "300m", "")
	r.Spec.NodeName = "a"
	c.assume(r)
	c.finishBinding("default/r")
	if n := c.cleanupExpired(); n != 0 {
		t.Errorf("expired %d before the TTL", n)
	}
	clk.t = clk.t.Add(assumedTTL + time.Second)
	if n := c.cleanupExpired(); n != 1 {
		t.Errorf("expired %d, want 1", n)
	}
	c.updateSnapshot(snap)
	if got := snap.infos["a"].requested.milliCPU; got != 0 {
		t.Errorf("a requested %d, want 0", got)
	}

	// A removed node with a pod on it leaves the list but keeps the pod.
	c.removeNode("b")
	c.updateSnapshot(snap)
	if len(snap.list) != 1 || snap.list[0].node.Name != "a" {
		t.Errorf("list after removing b: %d nodes", len(snap.list))
	}
	c.removePod("default/p")
	c.updateSnapshot(snap)
	if _, ok := snap.infos["b"]; ok {
		t.Error("b still in the snapshot after its last pod went")
	}
}

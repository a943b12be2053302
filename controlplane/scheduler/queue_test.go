package scheduler

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func prioPod(name string, prio int32) *corev1.Pod {
	p := podReq(name, "", "")
	p.Spec.Priority = &prio
	return p
}

// A fake clock for the queue.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestQueueOrder(t *testing.T) {
	q := newSchedulingQueue()
	c := &clock{t: time.Unix(1000, 0)}
	q.now = c.now
	for i, p := range []*corev1.Pod{prioPod("low-old", 0), prioPod("high", 100), prioPod("low-new", 0), prioPod("mid", 10)} {
		c.t = c.t.Add(time.Duration(i) * time.Second)
		q.add(p)
	}
	var got []string
	for range 4 {
		qp, _ := q.pop()
		got = append(got, qp.pod.Name)
		q.done(qp.key)
	}
	want := []string{"high", "mid", "low-old", "low-new"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
	if q.len() != 0 {
		t.Errorf("len %d after done", q.len())
	}
}

func TestQueueUnschedulableMoves(t *testing.T) {
	q := newSchedulingQueue()
	c := &clock{t: time.Unix(1000, 0)}
	q.now = c.now
	q.add(prioPod("p", 0))
	qp, cycle := q.pop()
	q.requeueUnschedulable(qp, cycle)
	if qp.where != inUnschedulable {
		t.Fatalf("where %d, want unschedulable", qp.where)
	}
	// A pod-only move does not touch a pod that failed on resources.
	q.moveAll(true)
	if qp.where != inUnschedulable {
		t.Fatalf("pod event moved a resource-bound pod")
	}
	// A node event inside the backoff puts it in backoff; the flush after
	// the backoff makes it active.
	q.moveAll(false)
	if qp.where != inBackoff {
		t.Fatalf("where %d, want backoff", qp.where)
	}
	q.flush(false)
	if qp.where != inBackoff {
		t.Fatal("left backoff early")
	}
	c.t = c.t.Add(initialBackoff)
	q.flush(false)
	if qp.where != inActive {
		t.Fatalf("where %d, want active after the backoff", qp.where)
	}
	// A move while the pod is in flight sends it to backoff, not to the
	// unschedulable set: the event may be the one it needed.
	qp, cycle = q.pop()
	q.moveAll(false)
	q.requeueUnschedulable(qp, cycle)
	if qp.where != inBackoff {
		t.Fatalf("where %d, want backoff after a move during its cycle", qp.where)
	}
	// Backoff doubles with attempts, up to maxBackoff.
	qp.attempts = 10
	if d := qp.backoffUntil().Sub(qp.timestamp); d != maxBackoff {
		t.Errorf("backoff after 10 attempts %s, want %s", d, maxBackoff)
	}
	// An update of an unschedulable pod makes it active at once.
	c.t = c.t.Add(time.Minute)
	q.flush(false)
	qp, cycle = q.pop()
	q.requeueUnschedulable(qp, cycle+1)
	q.add(prioPod("p", 5))
	if qp.where != inActive || qp.priority != 5 {
		t.Errorf("after update: where %d priority %d", qp.where, qp.priority)
	}
	q.remove(qp.key)
	if q.len() != 0 {
		t.Errorf("len %d after remove", q.len())
	}
}

func TestNumFeasibleNodesToFind(t *testing.T) {
	for nodes, want := range map[int]int{10: 10, 99: 99, 100: 100, 500: 230, 1000: 420, 5000: 500, 6000: 300} {
		if got := numFeasibleNodesToFind(nodes); got != want {
			t.Errorf("%d nodes: %d, want %d", nodes, got, want)
		}
	}
}

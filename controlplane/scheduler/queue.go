package scheduler

import (
	"container/heap"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	v1helper "k8s.io/component-helpers/scheduling/corev1"
)

// Upstream's defaults: a failed pod waits 1 s, doubling to 10 s, before
// it may be tried again; a pod left unschedulable for 5 minutes is tried
// again even if no event moved it.
const (
	initialBackoff         = time.Second
	maxBackoff             = 10 * time.Second
	maxUnschedulableWait   = 5 * time.Minute
	queueFlushInterval     = time.Second
	unschedulableFlushTick = 30 * time.Second
)

// Where a queued pod is.
const (
	inActive = iota + 1
	inBackoff
	inUnschedulable
	inFlight // popped, being scheduled
)

// queuedPod is a pod waiting to be scheduled and its history.
type queuedPod struct {
	pod       *corev1.Pod
	key       string
	priority  int32
	timestamp time.Time // when it entered the queue (orders equal priorities)
	attempts  int
	firstSeen time.Time // first time it was queued (the e2e latency's start)
	where     int
	index     int // position in its heap
	// podEvents: it failed on pod (anti-)affinity or spread, which pods
	// being bound elsewhere may satisfy.
	podEvents bool
	// gated: held by schedulingGates; only its own update moves it.
	gated bool
	// dirty: updated while in flight; retried at once.
	dirty bool
}

func (q *queuedPod) backoffUntil() time.Time {
	d := initialBackoff
	for i := 1; i < q.attempts && d < maxBackoff; i++ {
		d *= 2
	}
	return q.timestamp.Add(min(d, maxBackoff))
}

// podHeap orders by less.
type podHeap struct {
	items []*queuedPod
	less  func(a, b *queuedPod) bool
}

func (h *podHeap) Len() int           { return len(h.items) }
func (h *podHeap) Less(i, j int) bool { return h.less(h.items[i], h.items[j]) }
func (h *podHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].index, h.items[j].index = i, j
}
func (h *podHeap) Push(x any) {
	q := x.(*queuedPod)
	q.index = len(h.items)
	h.items = append(h.items, q)
}
func (h *podHeap) Pop() any {
	n := len(h.items)
	q := h.items[n-1]
	h.items[n-1] = nil
	h.items = h.items[:n-1]
	return q
}

// schedulingQueue is upstream's priority queue: an active heap (higher
// spec.priority first, then the earlier queued), a backoff heap (by the
// end of each pod's backoff) and a set of unschedulable pods that wait
// for a cluster event that could make them fit. Pop blocks until a pod
// is active.
type schedulingQueue struct {
	mu            sync.Mutex
	cond          *sync.Cond
	active        *podHeap
	backoff       *podHeap
	unschedulable map[string]*queuedPod
	pods          map[string]*queuedPod // every pod above, and those in flight
	// moveCycle is the scheduling cycle during which the last move event
	// arrived; a pod whose attempt started before it goes to backoff, not
	// unschedulable, since the event may have been the one it waits for.
	cycle, moveCycle int64
	closed           bool
	now              func() time.Time
}

func newSchedulingQueue() *schedulingQueue {
	q := &schedulingQueue{
		active: &podHeap{less: func(a, b *queuedPod) bool {
			if a.priority != b.priority {
				return a.priority > b.priority
			}
			return a.timestamp.Before(b.timestamp)
		}},
		backoff:       &podHeap{less: func(a, b *queuedPod) bool { return a.backoffUntil().Before(b.backoffUntil()) }},
		unschedulable: map[string]*queuedPod{},
		pods:          map[string]*queuedPod{},
		now:           time.Now,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// add queues a new pod, or takes an update of a queued one: an
// unschedulable or gated pod whose spec changed is tried again at once.
func (q *schedulingQueue) add(pod *corev1.Pod) {
	q.mu.Lock()
	defer q.mu.Unlock()
	key := podKey(pod)
	if qp := q.pods[key]; qp != nil {
		qp.pod = pod
		qp.priority = v1helper.PodPriority(pod)
		switch qp.where {
		case inFlight:
			qp.dirty = true
		case inActive:
			heap.Fix(q.active, qp.index)
		case inUnschedulable:
			delete(q.unschedulable, key)
			qp.gated = false
			q.pushActive(qp)
		}
		return
	}
	now := q.now()
	qp := &queuedPod{pod: pod, key: key, priority: v1helper.PodPriority(pod), timestamp: now, firstSeen: now}
	q.pods[key] = qp
	q.pushActive(qp)
}

func (q *schedulingQueue) pushActive(qp *queuedPod) {
	qp.where = inActive
	heap.Push(q.active, qp)
	q.cond.Signal()
}

// remove drops a pod that was deleted, bound or handed to another
// scheduler.
func (q *schedulingQueue) remove(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	qp := q.pods[key]
	if qp == nil {
		return
	}
	switch qp.where {
	case inActive:
		heap.Remove(q.active, qp.index)
	case inBackoff:
		heap.Remove(q.backoff, qp.index)
	case inUnschedulable:
		delete(q.unschedulable, key)
	}
	delete(q.pods, key)
}

// pop waits for an active pod; nil once the queue is closed. The pod is
// in flight until done, requeue or park.
func (q *schedulingQueue) pop() (*queuedPod, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.active.Len() == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return nil, 0
	}
	qp := heap.Pop(q.active).(*queuedPod)
	qp.where = inFlight
	qp.attempts++
	qp.dirty = false
	q.cycle++
	return qp, q.cycle
}

// done forgets a pod that was placed (or needs no placing).
func (q *schedulingQueue) done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if qp := q.pods[key]; qp != nil && qp.where == inFlight {
		delete(q.pods, key)
	}
}

// requeueUnschedulable takes back a pod no node fits (podCycle is the
// cycle that tried it): to the unschedulable set, or to backoff if a move
// event came while it was tried, or at once if it was updated meanwhile.
func (q *schedulingQueue) requeueUnschedulable(qp *queuedPod, podCycle int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pods[qp.key] != qp || qp.where != inFlight {
		return
	}
	qp.timestamp = q.now()
	switch {
	case qp.dirty:
		q.pushActive(qp)
	case !qp.gated && q.moveCycle >= podCycle:
		qp.where = inBackoff
		heap.Push(q.backoff, qp)
	default:
		qp.where = inUnschedulable
		q.unschedulable[qp.key] = qp
	}
}

// requeueBackoff takes back a pod whose attempt failed on an error (an
// API call, a failed bind): it is tried again after its backoff.
func (q *schedulingQueue) requeueBackoff(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	qp := q.pods[key]
	if qp == nil || qp.where != inFlight {
		return
	}
	qp.timestamp = q.now()
	qp.where = inBackoff
	heap.Push(q.backoff, qp)
}

// moveAll moves the unschedulable pods (all, or only those that wait for
// pods when podsOnly) to active, or to backoff while their backoff lasts:
// something changed in the cluster that may make them fit.
func (q *schedulingQueue) moveAll(podsOnly bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.moveCycle = q.cycle
	now := q.now()
	for key, qp := range q.unschedulable {
		if qp.gated || (podsOnly && !qp.podEvents) {
			continue
		}
		delete(q.unschedulable, key)
		if qp.backoffUntil().After(now) {
			qp.where = inBackoff
			heap.Push(q.backoff, qp)
		} else {
			q.pushActive(qp)
		}
	}
}

// flush moves the pods whose backoff ended to active, and the pods
// unschedulable for maxUnschedulableWait when all is set.
func (q *schedulingQueue) flush(all bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for q.backoff.Len() > 0 && !q.backoff.items[0].backoffUntil().After(now) {
		qp := heap.Pop(q.backoff).(*queuedPod)
		q.pushActive(qp)
	}
	if !all {
		return
	}
	for key, qp := range q.unschedulable {
		if !qp.gated && now.Sub(qp.timestamp) > maxUnschedulableWait {
			delete(q.unschedulable, key)
			q.pushActive(qp)
		}
	}
}

// len is the number of pods waiting, in any sub-queue or in flight.
func (q *schedulingQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pods)
}

func (q *schedulingQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}

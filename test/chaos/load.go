package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// attempt is one request of the load: when it started and ended, and
// whether it was acknowledged.
type attempt struct {
	Start, End time.Time
	OK         bool
	// Timeout is true when the client gave up (no answer within its
	// timeout) rather than getting an error back.
	Timeout bool
	Err     string
}

// load writes ConfigMaps with increasing sequence numbers through one
// client and reads acknowledged ones back through another, recording
// every attempt. Only a write whose Create returned success counts as
// acknowledged; a write that failed or timed out may or may not exist
// afterwards, and neither outcome is a loss.
type load struct {
	client kubernetes.Interface
	ns     string
	prefix string
	// pause is the wait between two writes (and two reads).
	pause time.Duration

	mu     sync.Mutex
	acked  map[string]string // name → the value it was written with
	names  []string          // acked names, in order
	writes []attempt
	reads  []attempt
	// stale counts reads of an acknowledged write that answered NotFound.
	stale int
}

func newLoad(client kubernetes.Interface, ns, prefix string) *load {
	return &load{client: client, ns: ns, prefix: prefix, pause: 100 * time.Millisecond, acked: map[string]string{}}
}

// run writes and reads until ctx ends; it returns when both loops have.
func (l *load) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { l.writeLoop(ctx) })
	wg.Go(func() { l.readLoop(ctx) })
	wg.Wait()
}

func (l *load) writeLoop(ctx context.Context) {
	for seq := 1; ctx.Err() == nil; seq++ {
		name := fmt.Sprintf("%s-%06d", l.prefix, seq)
		value := strconv.Itoa(seq)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"chaos": l.prefix}},
			Data: map[string]string{"seq": value}}
		a := attempt{Start: time.Now()}
		// Not ctx: a write in flight when the load stops still gets its
		// answer, so it is counted as what it was.
		_, err := l.client.CoreV1().ConfigMaps(l.ns).Create(context.Background(), cm, metav1.CreateOptions{})
		a.End = time.Now()
		l.mu.Lock()
		if err == nil {
			a.OK = true
			l.acked[name] = value
			l.names = append(l.names, name)
		} else {
			a.Err, a.Timeout = err.Error(), isTimeout(err)
		}
		l.writes = append(l.writes, a)
		l.mu.Unlock()
		sleep(ctx, l.pause)
	}
}

func (l *load) readLoop(ctx context.Context) {
	for ctx.Err() == nil {
		l.mu.Lock()
		var name string
		if n := len(l.names); n > 0 {
			name = l.names[rand.IntN(n)]
		}
		l.mu.Unlock()
		if name == "" {
			sleep(ctx, l.pause)
			continue
		}
		a := attempt{Start: time.Now()}
		_, err := l.client.CoreV1().ConfigMaps(l.ns).Get(context.Background(), name, metav1.GetOptions{})
		a.End = time.Now()
		l.mu.Lock()
		if err == nil {
			a.OK = true
		} else {
			a.Err, a.Timeout = err.Error(), isTimeout(err)
			if apierrors.IsNotFound(err) {
				l.stale++
			}
		}
		l.reads = append(l.reads, a)
		l.mu.Unlock()
		sleep(ctx, l.pause)
	}
}

// snapshot copies what the load recorded so far.
func (l *load) snapshot() (acked map[string]string, writes, reads []attempt, stale int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acked = make(map[string]string, len(l.acked))
	for k, v := range l.acked {
		acked[k] = v
	}
	return acked, append([]attempt(nil), l.writes...), append([]attempt(nil), l.reads...), l.stale
}

// missing lists every acknowledged write that client does not return with
// its value: lost writes. It lists the load's ConfigMaps by label, page by
// page, with a quorum read (no resourceVersion).
func missing(ctx context.Context, client kubernetes.Interface, ns, prefix string, acked map[string]string) ([]string, error) {
	found := map[string]string{}
	opts := metav1.ListOptions{LabelSelector: "chaos=" + prefix, Limit: 500}
	for {
		list, err := client.CoreV1().ConfigMaps(ns).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, cm := range list.Items {
			found[cm.Name] = cm.Data["seq"]
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	var lost []string
	for name, v := range acked {
		if found[name] != v {
			lost = append(lost, name)
		}
	}
	return lost, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || apierrors.IsTimeout(err)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

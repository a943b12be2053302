package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	sloMutating    = time.Second           // upstream SLO: p99 of mutating calls
	targetMutating = 50 * time.Millisecond // kforge's target at 100 clients
)

// payload makes ConfigMaps about the size of a small real one.
var payload = strings.Repeat("x", 256)

// writeRun is what one write phase measured.
type writeRun struct {
	create, update latencies
	ops, errs      int
	elapsed        time.Duration
	firstErr       error
}

func (w *writeRun) all() latencies { return append(append(latencies{}, w.create...), w.update...) }

// runWorkers runs n workers until the deadline; each returns its own
// latencies, merged afterwards so the loop takes no lock.
func runWorkers(ctx context.Context, n int, d time.Duration, work func(ctx context.Context, i int, res *writeRun)) *writeRun {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	parts := make([]writeRun, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() { work(ctx, i, &parts[i]) })
	}
	wg.Wait()
	out := &writeRun{elapsed: time.Since(start)}
	for _, p := range parts {
		out.create = append(out.create, p.create...)
		out.update = append(out.update, p.update...)
		out.ops += len(p.create) + len(p.update)
		out.errs += p.errs
		if out.firstErr == nil {
			out.firstErr = p.firstErr
		}
	}
	return out
}

func (w *writeRun) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // the phase ended mid-call
	}
	w.errs++
	if w.firstErr == nil {
		w.firstErr = err
	}
}

// benchEtcdRaw is the anchor: the etcd calls a ConfigMap create and update
// make, from the same number of concurrent clients, without the apiserver.
// "txn" is the write transaction alone; "read+txn" adds the read kforge
// does before it (the namespace for a create, the object for an update),
// as a linearizable read (a quorum round) and as a serializable one.
func benchEtcdRaw(ctx context.Context, c *cluster, o options, t *table) error {
	t.section(fmt.Sprintf("etcd alone (clientv3 over mTLS, %d concurrent clients, %s)", o.clients, o.duration))
	// A single client's put: one raft round and one fsync, nothing batched.
	var serial latencies
	for i := range 100 {
		start := time.Now()
		if _, err := c.etcd.Put(ctx, fmt.Sprintf("/bench/serial/%d", i), payload); err != nil {
			return err
		}
		serial = append(serial, time.Since(start))
	}
	t.add("1 client, Put (fsync floor)", serial.summary(), "", "")
	for _, shape := range []struct {
		name     string
		withRead bool
		readOpts []clientv3.OpOption
	}{
		{"txn", false, nil},
		{"read+txn (linearizable read)", true, nil},
		{"read+txn (serializable read)", true, []clientv3.OpOption{clientv3.WithSerializable()}},
	} {
		name, withRead := shape.name, shape.withRead
		progress("etcd alone: %s, %d clients for %s", name, o.clients, o.duration)
		res := runWorkers(ctx, o.clients, o.duration, func(ctx context.Context, i int, res *writeRun) {
			for j := 0; ctx.Err() == nil; j++ {
				key := fmt.Sprintf("/bench/raw/%s/%d/%d", name, i, j)
				start := time.Now()
				if withRead {
					if _, err := c.etcd.Get(ctx, "/registry/core/namespaces/default", shape.readOpts...); err != nil {
						res.fail(ctx, err)
						continue
					}
				}
				r, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
					Then(clientv3.OpPut(key, payload)).Commit()
				if err != nil {
					res.fail(ctx, err)
					continue
				}
				res.create = append(res.create, time.Since(start))
				start = time.Now()
				if withRead {
					if _, err := c.etcd.Get(ctx, key, shape.readOpts...); err != nil {
						res.fail(ctx, err)
						continue
					}
				}
				_, err = c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", r.Header.Revision)).
					Then(clientv3.OpPut(key, payload+"1")).Else(clientv3.OpGet(key)).Commit()
				if err != nil {
					res.fail(ctx, err)
					continue
				}
				res.update = append(res.update, time.Since(start))
			}
		})
		addWriteRows(t, name, res, false)
	}
	return nil
}

func addWriteRows(t *table, name string, res *writeRun, slo bool) {
	all := res.all().sorted()
	p99 := all.pct(99)
	tput := fmt.Sprintf("%.0f ops/s (%d ops, %d errors)", float64(res.ops)/res.elapsed.Seconds(), res.ops, res.errs)
	if slo {
		t.add(name+": create+update", all.summary(), "SLO p99 ≤ 1s", "p99/1s = "+ratio(p99, sloMutating))
		t.add("", "", "target p99 ≤ 50ms", "p99/50ms = "+ratio(p99, targetMutating))
	} else {
		t.add(name+": create+update", all.summary(), "", "")
	}
	t.add(name+": create", res.create.summary(), "", "")
	t.add(name+": update", res.update.summary(), "", "")
	t.add(name+": throughput", tput, "", "")
	if res.firstErr != nil {
		t.note("%s: first error: %v", name, res.firstErr)
	}
}

// benchWrites is the main figure: n client-go clients, each on its own
// TLS connection, creating a ConfigMap then updating it, in a loop.
func benchWrites(ctx context.Context, c *cluster, o options, t *table) error {
	t.section(fmt.Sprintf("kforge apiserver: %d client-go clients, ConfigMap create then update, %s", o.clients, o.duration))
	clients := make([]*kubernetes.Clientset, o.clients)
	for i := range clients {
		cs, err := c.client()
		if err != nil {
			return err
		}
		// Connect (TLS handshake) before the clock starts.
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		clients[i] = cs
	}
	progress("kforge: %d clients creating and updating ConfigMaps for %s", o.clients, o.duration)
	before := procMem(0)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	res := runWorkers(ctx, o.clients, o.duration, func(ctx context.Context, i int, res *writeRun) {
		cms := clients[i].CoreV1().ConfigMaps("default")
		for j := 0; ctx.Err() == nil; j++ {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("w%d-%d", i, j)}, Data: map[string]string{"v": "0", "p": payload}}
			start := time.Now()
			got, err := cms.Create(ctx, cm, metav1.CreateOptions{})
			if err != nil {
				res.fail(ctx, err)
				continue
			}
			res.create = append(res.create, time.Since(start))
			got.Data["v"] = "1"
			start = time.Now()
			if _, err := cms.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
				res.fail(ctx, err)
				continue
			}
			res.update = append(res.update, time.Since(start))
		}
	})
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	addWriteRows(t, "kforge", res, true)
	t.add("process RSS before → after", mib(before.rss)+" → "+procMem(0).String(), "", "")
	for _, cs := range clients {
		cs.CoreV1().RESTClient().(*rest.RESTClient).Client.CloseIdleConnections()
	}
	return nil
}

// benchList creates o.pods pods, then lists them: raw HTTP (body
// discarded, so the client holds no memory), client-go in one call, and
// client-go in limit=500 pages.
func benchList(ctx context.Context, c *cluster, o options, t *table) error {
	const ns = "bench-pods"
	admin, err := c.client()
	if err != nil {
		return err
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	progress("creating %d pods with %d workers", o.pods, o.podWorkers)
	var next atomic.Int64
	var errs atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range o.podWorkers {
		cs, err := c.client()
		if err != nil {
			return err
		}
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(o.pods) || ctx.Err() != nil {
					return
				}
				p := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%05d", i), Labels: map[string]string{"app": "bench", "shard": strconv.Itoa(int(i % 10))}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10",
						Resources: corev1.ResourceRequirements{}}}},
				}
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					errs.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		})
	}
	wg.Wait()
	createTime := time.Since(start)
	if err := ctx.Err(); err != nil {
		return err
	}
	if firstErr != nil && errs.Load() > int64(o.pods)/100 {
		return fmt.Errorf("%d pod creates failed, first: %w", errs.Load(), firstErr)
	}
	t.section(fmt.Sprintf("list of %d pods (median of %d)", o.pods, o.listReps))
	t.add("creating them", fmt.Sprintf("%s, %.0f pods/s with %d workers (%d errors)", ms(createTime), float64(o.pods)/createTime.Seconds(), o.podWorkers, errs.Load()), "", "")

	tr, err := rest.TransportFor(c.restConfig())
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: tr}
	rawList := func() (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.host+"/api/v1/namespaces/"+ns+"/pods", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return n, fmt.Errorf("list: HTTP %d", resp.StatusCode)
		}
		return n, err
	}
	if _, err := rawList(); err != nil { // warm the connection
		return err
	}

	var rawT, fullT, pagedT []time.Duration
	var size int64
	var peak memStatus
	var base memStatus
	peakOK := false
	var etcdBase, etcdPeak memStatus
	for rep := range o.listReps {
		progress("listing %d pods (%d/%d)", o.pods, rep+1, o.listReps)
		runtime.GC()
		debug.FreeOSMemory()
		b := procMem(0)
		peakOK = resetPeak(0)
		eb := procMem(c.etcdPID)
		if c.etcdPID > 0 {
			resetPeak(c.etcdPID)
		}
		start := time.Now()
		n, err := rawList()
		if err != nil {
			return err
		}
		rawT = append(rawT, time.Since(start))
		size = n
		if rep == 0 {
			base, peak = b, procMem(0)
			etcdBase, etcdPeak = eb, procMem(c.etcdPID)
		}

		start = time.Now()
		l, err := admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		fullT = append(fullT, time.Since(start))
		if len(l.Items) != o.pods {
			return fmt.Errorf("full list returned %d pods, want %d", len(l.Items), o.pods)
		}
		l = nil

		start = time.Now()
		total, pages := 0, 0
		opts := metav1.ListOptions{Limit: 500}
		for {
			pl, err := admin.CoreV1().Pods(ns).List(ctx, opts)
			if err != nil {
				return err
			}
			total += len(pl.Items)
			pages++
			if pl.Continue == "" {
				break
			}
			opts.Continue = pl.Continue
		}
		pagedT = append(pagedT, time.Since(start))
		if total != o.pods {
			return fmt.Errorf("paged list returned %d pods, want %d", total, o.pods)
		}
		if rep == 0 {
			t.note("paged list: %d pages of ≤500", pages)
		}
	}
	t.add("raw HTTP GET, JSON body discarded", fmt.Sprintf("%s (%.1f MiB)", ms(median(rawT)), float64(size)/(1<<20)), "", "")
	t.add("client-go List, one call", ms(median(fullT)), "", "")
	t.add("client-go List, limit=500 pages", ms(median(pagedT)), "", "")
	if peakOK {
		t.add("apiserver process RSS, raw list", fmt.Sprintf("before %s, peak during +%s", mib(base.rss), mib(peak.hwm-base.rss)), "", "")
	} else {
		t.add("apiserver process RSS, raw list", fmt.Sprintf("before %s, after %s (peak not resettable)", mib(base.rss), mib(peak.rss)), "", "")
	}
	if c.etcdPID > 0 {
		t.add("etcd process RSS, raw list", fmt.Sprintf("before %s, peak during +%s", mib(etcdBase.rss), mib(etcdPeak.hwm-etcdBase.rss)), "", "")
	} else {
		t.note("etcd runs in this process: the RSS figures include it")
	}
	hc.CloseIdleConnections()
	return nil
}

// benchWatch opens o.watchers watches on ConfigMaps in one namespace, then
// changes one ConfigMap o.watchRounds times and times how long each change
// takes to reach every watcher (from just before the update is sent).
func benchWatch(ctx context.Context, c *cluster, o options, t *table) error {
	const ns = "bench-watch"
	admin, err := c.client()
	if err != nil {
		return err
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	cms := admin.CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "target"}, Data: map[string]string{"round": "0"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	l, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	conns := make([]*kubernetes.Clientset, max(1, o.watchConns))
	for i := range conns {
		if conns[i], err = c.client(); err != nil {
			return err
		}
	}
	runtime.GC()
	debug.FreeOSMemory()
	memBefore := procMem(0)
	progress("opening %d watches over %d connections", o.watchers, len(conns))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recv := make([][]atomic.Int64, o.watchRounds)
	counts := make([]atomic.Int64, o.watchRounds)
	for r := range recv {
		recv[r] = make([]atomic.Int64, o.watchers)
	}
	watches := make([]watch.Interface, o.watchers)
	var opened atomic.Int64
	var openErr error
	var once sync.Once
	var open sync.WaitGroup
	timeout := int64(600)
	for w := range 50 {
		open.Go(func() {
			for i := w; i < o.watchers; i += 50 {
				wi, err := conns[i%len(conns)].CoreV1().ConfigMaps(ns).Watch(wctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion, TimeoutSeconds: &timeout})
				if err != nil {
					once.Do(func() { openErr = err })
					return
				}
				watches[i] = wi
				opened.Add(1)
			}
		})
	}
	open.Wait()
	var readers sync.WaitGroup
	defer func() {
		cancel()
		for _, w := range watches {
			if w != nil {
				w.Stop()
			}
		}
		readers.Wait()
	}()
	if openErr != nil {
		return fmt.Errorf("opened %d watches: %w", opened.Load(), openErr)
	}
	for i, w := range watches {
		readers.Go(func() {
			for ev := range w.ResultChan() {
				cm, ok := ev.Object.(*corev1.ConfigMap)
				if !ok || ev.Type != watch.Modified {
					continue
				}
				r, err := strconv.Atoi(cm.Data["round"])
				if err != nil || r < 1 || r > len(recv) {
					continue
				}
				if recv[r-1][i].CompareAndSwap(0, time.Now().UnixNano()) {
					counts[r-1].Add(1)
				}
			}
		})
	}
	// The server counts a watch once its etcd watch is set up.
	deadline := time.Now().Add(30 * time.Second)
	for c.srv.OpenWatches() < o.watchers && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := c.srv.OpenWatches(); n < o.watchers {
		return fmt.Errorf("only %d of %d watches open on the server", n, o.watchers)
	}
	memOpen := procMem(0)
	t.section(fmt.Sprintf("%d watches on ConfigMaps in one namespace (%d TLS connections), one change at a time", o.watchers, len(conns)))
	t.add("process RSS for the open watches", fmt.Sprintf("+%s (%.0f KiB per watch, server and client side)", mib(memOpen.rss-memBefore.rss),
		float64(memOpen.rss-memBefore.rss)/float64(o.watchers)), "", "")
	var all latencies
	var lastOf []time.Duration
	for r := 1; r <= o.watchRounds; r++ {
		time.Sleep(time.Second)
		cur, err := cms.Get(ctx, "target", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Data["round"] = strconv.Itoa(r)
		t0 := time.Now()
		if _, err := cms.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
		write := time.Since(t0)
		deadline := time.Now().Add(30 * time.Second)
		for counts[r-1].Load() < int64(o.watchers) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		var lat latencies
		for i := range recv[r-1] {
			if ns := recv[r-1][i].Load(); ns != 0 {
				lat = append(lat, time.Duration(ns-t0.UnixNano()))
			}
		}
		all = append(all, lat...)
		if len(lat) > 0 {
			lastOf = append(lastOf, lat.sorted().pct(100))
		}
		missing := o.watchers - len(lat)
		progress("watch round %d: %d of %d received", r, len(lat), o.watchers)
		t.add(fmt.Sprintf("round %d: write → each watcher", r), lat.summary(), "", fmt.Sprintf("write %s, %d missing", ms(write), missing))
	}
	if len(all) == 0 {
		return errors.New("no watcher received anything")
	}
	s := all.sorted()
	t.add("fan-out, write → last watcher", fmt.Sprintf("median of rounds %s, worst round %s", ms(median(lastOf)), ms(s.pct(100))), "", "")
	t.add("all rounds, per watcher", s.summary(), "", "")
	return nil
}

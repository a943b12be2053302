package etcd

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestRetentionObserve(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	type step struct {
		after     time.Duration // since t0
		cur       int64
		compacted int64
		want      int64
	}
	tests := []struct {
		name    string
		minAge  time.Duration
		minRevs int64
		steps   []step
	}{
		{"no history yet: a new leader waits", 5 * time.Minute, 1000, []step{
			{0, 50_000, 0, 0},
			{4 * time.Minute, 60_000, 0, 0},
		}},
		{"time keeps more", 5 * time.Minute, 1000, []step{
			{0, 10_000, 0, 0},
			{5 * time.Minute, 20_000, 0, 10_000}, // 19_000 by count; time keeps everything since 10_000
		}},
		{"count keeps more", 5 * time.Minute, 1000, []step{
			{0, 10_000, 0, 0},
			{5 * time.Minute, 10_500, 0, 9_500}, // 10_000 by time; count keeps the newest 1000
		}},
		{"newest sample at least minAge old is used", 5 * time.Minute, 0, []step{
			{0, 100, 0, 0},
			{2 * time.Minute, 200, 0, 0},
			{5 * time.Minute, 300, 0, 100},
			{7 * time.Minute, 400, 100, 200},
			{8 * time.Minute, 500, 200, 0}, // newest old-enough sample is still 200
		}},
		{"nothing past what is compacted", 0, 1000, []step{
			{0, 5_000, 4_000, 0},
			{time.Minute, 5_500, 4_000, 4_500},
		}},
		{"young cluster: nothing to compact", 0, 1000, []step{
			{0, 800, 0, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &retention{minAge: tt.minAge, minRevs: tt.minRevs}
			for i, s := range tt.steps {
				if got := r.observe(t0.Add(s.after), s.cur, s.compacted); got != s.want {
					t.Errorf("step %d: observe = %d, want %d", i, got, s.want)
				}
			}
			if len(r.samples) > len(tt.steps) {
				t.Errorf("kept %d samples", len(r.samples))
			}
		})
	}
}

func TestShouldDefrag(t *testing.T) {
	d := Defrag{Interval: time.Minute, MinDBSize: 100 << 20, MaxInUseRatio: 0.5}
	tests := []struct {
		size, inUse int64
		want        bool
	}{
		{0, 0, false},
		{50 << 20, 1 << 20, false},    // mostly free but small
		{200 << 20, 150 << 20, false}, // big but mostly used
		{200 << 20, 99 << 20, true},
		{200 << 20, 100 << 20, false}, // exactly the ratio is not below it
	}
	for _, tt := range tests {
		if got := shouldDefrag(d, tt.size, tt.inUse); got != tt.want {
			t.Errorf("shouldDefrag(size %d, inUse %d) = %v, want %v", tt.size, tt.inUse, got, tt.want)
		}
	}
}

func TestDefragSlotsDoNotOverlap(t *testing.T) {
	interval := 9 * time.Minute
	start := time.Unix(1_700_000_000, 0)
	for step := time.Duration(0); step < 2*interval; step += 7 * time.Second {
		now := start.Add(step)
		owners := 0
		for idx := range 3 {
			if defragSlot(now, interval, idx, 3) {
				owners++
			}
		}
		if owners != 1 {
			t.Fatalf("at %s: %d members own the slot", now, owners)
		}
	}
	if !defragSlot(start, interval, 0, 1) {
		t.Error("a single member always owns the slot")
	}
}

// TestCompactionKeepsWindowAndCount runs the real loop on one member
// with a short window: what is older than the window and beyond the
// newest N revisions goes; the rest stays readable.
func TestCompactionKeepsWindowAndCount(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	const window, keep = 3 * time.Second, 100
	p := newTestPKI(t)
	cfg := testClusterConfigs(t, p, 1)[0]
	cfg.Compaction = Compaction{Interval: 100 * time.Millisecond, MinRetention: window, MinRevisions: keep}
	// Defragment at every chance: any real file is "big" and "mostly free".
	cfg.Defrag = Defrag{Interval: 500 * time.Millisecond, MinDBSize: 1, MaxInUseRatio: 0.9999}
	m := startMember(t, cfg)
	waitReady(t, m)
	cli := newClient(t, p, true, cfg.ListenClientURLs[0])

	readable := func(rev int64) error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "/c/", clientv3.WithPrefix(), clientv3.WithRev(rev))
		return err
	}
	waitCompacted := func(rev int64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := readable(rev)
			if errors.Is(err, rpctypes.ErrCompacted) {
				return
			}
			if err != nil {
				t.Fatalf("read at %d: %v", rev, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("revision %d was never compacted", rev)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// The window assertions hold only if a batch of writes takes well under
	// the window; on a machine too slow for that they are skipped, not failed.
	inWindow := func(since time.Time) bool {
		if d := time.Since(since); d > window*2/3 {
			t.Logf("writes took %s, too close to the %s window to check it", d, window)
			return false
		}
		return true
	}

	var a int64
	start := time.Now()
	for i := range 150 {
		a = put(t, cli, fmt.Sprintf("/c/%03d", i), "one")
	}
	// Nothing written in the window is compacted, however many revisions.
	if err := readable(a - 140); inWindow(start) && err != nil {
		t.Fatalf("revision %d (inside the %s window) unreadable: %v", a-140, window, err)
	}

	// Once the window has passed, the count rule alone keeps the newest 100.
	waitCompacted(a - keep - 1)
	if err := readable(a - keep); err != nil {
		t.Fatalf("revision %d (within the newest %d) unreadable: %v", a-keep, keep, err)
	}

	// New writes: now the window keeps them although the count would not.
	time.Sleep(window) // let a's revisions age out of the window entirely
	var b int64
	start = time.Now()
	for i := range 150 {
		b = put(t, cli, fmt.Sprintf("/c/%03d", i), "two")
	}
	time.Sleep(500 * time.Millisecond) // several compaction runs
	if err := readable(a + 1); inWindow(start) && err != nil {
		t.Fatalf("revision %d (written within %s) unreadable: %v", a+1, window, err)
	}
	// And when the window passes again, down to the newest 100.
	waitCompacted(b - keep - 1)
	if err := readable(b - keep); err != nil {
		t.Fatalf("revision %d unreadable: %v", b-keep, err)
	}

	// The defragmenter ran too, and /metrics counts both. A defrag waits
	// for its slot and for free pages, so on a loaded machine it may come
	// a little after the compactions: poll, within a bound.
	var compactions, defrags float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, body := httpGet(t, m.MetricsAddr(), "/metrics")
		compactions = metricValue(t, body, "kforge_etcd_compactions_total")
		defrags = metricValue(t, body, "kforge_etcd_defrags_total")
		if (compactions >= 2 && defrags >= 1) || time.Now().After(deadline) {
			break
		}
	}
	if compactions < 2 {
		t.Errorf("kforge_etcd_compactions_total = %v", compactions)
	}
	if defrags < 1 {
		t.Errorf("kforge_etcd_defrags_total = %v", defrags)
	}
}

func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

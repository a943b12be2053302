package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// revSample is the head revision seen at one moment.
type revSample struct {
	at  time.Time
	rev int64
}

// retention decides how far compaction may go. It remembers the head
// revision once per run, so it can tell which revision was current
// MinRetention ago.
type retention struct {
	minAge  time.Duration
	minRevs int64
	samples []revSample // oldest first
}

// observe records the head revision cur at now and returns the revision
// to compact to: the newest one that is both at least minAge old and at
// least minRevs behind cur. It returns 0 when there is nothing to do,
// including when this member has not yet watched the head for minAge
// (a new leader waits rather than guessing).
func (r *retention) observe(now time.Time, cur, compacted int64) int64 {
	r.samples = append(r.samples, revSample{at: now, rev: cur})
	cutoff := now.Add(-r.minAge)
	idx := -1
	for i, s := range r.samples {
		if s.at.After(cutoff) {
			break
		}
		idx = i
	}
	if idx < 0 {
		return 0
	}
	// Samples older than the one we use can never be needed again.
	r.samples = slices.Delete(r.samples, 0, idx)
	target := min(r.samples[0].rev, cur-r.minRevs)
	if target <= compacted || target <= 0 {
		return 0
	}
	return target
}

// shouldDefrag is the defragmentation test: a file big enough to be
// worth rewriting, mostly free pages.
func shouldDefrag(d Defrag, size, inUse int64) bool {
	if size <= 0 || size < d.MinDBSize {
		return false
	}
	return float64(inUse)/float64(size) < d.MaxInUseRatio
}

// defragSlot says whether member number idx (of n, sorted by ID) owns the
// moment now: each Interval is cut into n slots, one per member, so
// members defragment one at a time without talking to each other.
func defragSlot(now time.Time, interval time.Duration, idx, n int) bool {
	if n <= 1 {
		return true
	}
	slotLen := interval.Nanoseconds() / int64(n)
	if slotLen <= 0 {
		return true
	}
	return int((now.UnixNano()/slotLen)%int64(n)) == idx
}

// maintenanceMetrics are kforge's own series, beside etcd's.
type maintenanceMetrics struct {
	compactions      prometheus.Counter
	compactionErrors prometheus.Counter
	compactedRev     prometheus.Gauge
	defrags          prometheus.Counter
	defragErrors     prometheus.Counter
}

func newMaintenanceMetrics(reg prometheus.Registerer) *maintenanceMetrics {
	m := &maintenanceMetrics{
		compactions:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kforge", Subsystem: "etcd", Name: "compactions_total", Help: "Compactions this member requested as leader."}),
		compactionErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kforge", Subsystem: "etcd", Name: "compaction_errors_total", Help: "Compactions that failed."}),
		compactedRev:     prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kforge", Subsystem: "etcd", Name: "compacted_revision", Help: "The last revision this member compacted to."}),
		defrags:          prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kforge", Subsystem: "etcd", Name: "defrags_total", Help: "Defragmentations of this member."}),
		defragErrors:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kforge", Subsystem: "etcd", Name: "defrag_errors_total", Help: "Defragmentations that failed."}),
	}
	reg.MustRegister(m.compactions, m.compactionErrors, m.compactedRev, m.defrags, m.defragErrors)
	return m
}

// compactLoop runs until stop is closed. Every member samples the head
// revision; only the leader compacts.
func (m *Member) compactLoop(ctx context.Context) {
	cfg := m.cfg.Compaction
	r := &retention{minAge: cfg.MinRetention, minRevs: cfg.MinRevisions}
	var compacted int64
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		srv := m.etcd.Server
		target := r.observe(time.Now(), srv.KV().Rev(), compacted)
		if target == 0 || srv.Leader() != srv.MemberID() {
			continue
		}
		if err := compact(ctx, srv, target); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.metrics.compactionErrors.Inc()
			m.log.Warn("compaction failed", "revision", target, "err", err)
			continue
		}
		compacted = target
		m.metrics.compactions.Inc()
		m.metrics.compactedRev.Set(float64(target))
		m.log.Info("compacted", "revision", target)
	}
}

func compact(ctx context.Context, srv *etcdserver.EtcdServer, rev int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := srv.Compact(ctx, &pb.CompactionRequest{Revision: rev})
	if errors.Is(err, mvcc.ErrCompacted) {
		return nil // someone (an earlier leader, an operator) went further already
	}
	return err
}

// defragLoop runs until stop is closed; see doc.go for the policy.
func (m *Member) defragLoop(ctx context.Context) {
	cfg := m.cfg.Defrag
	srv := m.etcd.Server
	members := func() (idx, n int) {
		ms := srv.Cluster().Members()
		ids := make([]uint64, 0, len(ms))
		for _, mm := range ms {
			ids = append(ids, uint64(mm.ID))
		}
		slices.Sort(ids)
		return slices.Index(ids, uint64(srv.MemberID())), len(ids)
	}
	// Check several times per slot so a slot is never missed.
	_, n := members()
	period := cfg.Interval / time.Duration(max(n, 1)*4)
	t := time.NewTicker(max(period, 10*time.Millisecond))
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if !last.IsZero() && now.Sub(last) < cfg.Interval {
			continue
		}
		idx, n := members()
		if idx < 0 || !defragSlot(now, cfg.Interval, idx, n) || srv.Leader() == 0 {
			continue
		}
		be := srv.Backend()
		size, inUse := be.Size(), be.SizeInUse()
		if !shouldDefrag(cfg, size, inUse) {
			continue
		}
		last = now
		m.log.Info("defragmenting", "size", size, "inUse", inUse)
		m.defragging.Store(true)
		err := srv.Defragment()
		m.defragging.Store(false)
		if err != nil {
			m.metrics.defragErrors.Inc()
			m.log.Warn("defragmentation failed", "err", fmt.Errorf("etcd: defrag: %w", err))
			continue
		}
		m.metrics.defrags.Inc()
		m.log.Info("defragmented", "before", size, "after", be.Size(), "took", time.Since(now).Round(time.Millisecond))
	}
}

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// table collects the figures and prints them once, at the end.
type table struct {
	title string
	rows  [][4]string // measurement, value, anchor, ratio
	notes []string
}

func (t *table) add(measure, value, anchor, ratio string) {
	t.rows = append(t.rows, [4]string{measure, value, anchor, ratio})
}

func (t *table) section(name string) { t.rows = append(t.rows, [4]string{"## " + name}) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) print(w io.Writer) {
	fmt.Fprintln(w, t.title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tvalue\tanchor\tratio")
	for _, r := range t.rows {
		if strings.HasPrefix(r[0], "## ") {
			fmt.Fprintf(tw, "%s\t\t\t\n", r[0])
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r[0], r[1], r[2], r[3])
	}
	tw.Flush()
	for _, n := range t.notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// latencies are the durations of one kind of call.
type latencies []time.Duration

func (l latencies) sorted() latencies {
	s := slices.Clone(l)
	slices.Sort(s)
	return s
}

// pct is the p-th percentile (0..100) of sorted latencies (nearest rank).
func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(p/100*float64(len(l))+0.5) - 1
	i = max(0, min(i, len(l)-1))
	return l[i]
}

func (l latencies) summary() string {
	s := l.sorted()
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", ms(s.pct(50)), ms(s.pct(90)), ms(s.pct(99)), ms(s.pct(100)))
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
}

func ratio(a, b time.Duration) string { return fmt.Sprintf("%.3f", float64(a)/float64(b)) }

func median(ds []time.Duration) time.Duration {
	s := latencies(ds).sorted()
	return s[len(s)/2]
}

// memStatus is a process's resident set from /proc/PID/status, in KiB.
type memStatus struct{ rss, hwm int64 }

func (m memStatus) String() string { return fmt.Sprintf("RSS %s (peak %s)", mib(m.rss), mib(m.hwm)) }

func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

func procMem(pid int) memStatus {
	p := "/proc/self/status"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(p)
	if err != nil {
		return memStatus{}
	}
	defer f.Close()
	var m memStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.rss = n
		case "VmHWM":
			m.hwm = n
		}
	}
	return m
}

// resetPeak resets VmHWM to the current RSS (Linux ≥ 4.0), so the peak of
// one phase can be read; it reports whether that worked.
func resetPeak(pid int) bool {
	p := "/proc/self/clear_refs"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/clear_refs", pid)
	}
	return os.WriteFile(p, []byte("5"), 0) == nil
}

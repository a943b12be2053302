package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

type options struct {
	cases    []benchCase
	variants []string
	creators int
	group    int
	timeout  time.Duration
	cpu      string
	memory   string
	podCPU   string
	podMem   string
	zones    int
	backlog  bool
}

type benchCase struct{ nodes, pods int }

func main() {
	var o options
	cases := flag.String("cases", "100x1000,500x3000", "NODESxPODS cases, comma-separated")
	variants := flag.String("variants", "plain,spread", "plain (requests only) and/or spread (zone spread constraint + hostname anti-affinity)")
	flag.IntVar(&o.creators, "creators", 20, "concurrent clients creating pods")
	flag.IntVar(&o.group, "group", 10, "pods per app label in the spread variant")
	flag.IntVar(&o.zones, "zones", 3, "zones the nodes are spread over (topology.kubernetes.io/zone)")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long a case may take to bind every pod")
	flag.StringVar(&o.cpu, "node-cpu", "8", "allocatable cpu of each node")
	flag.StringVar(&o.memory, "node-memory", "32Gi", "allocatable memory of each node")
	flag.StringVar(&o.podCPU, "pod-cpu", "100m", "cpu request of each pod")
	flag.StringVar(&o.podMem, "pod-memory", "128Mi", "memory request of each pod")
	flag.BoolVar(&o.backlog, "backlog", false, "create every pod before the scheduler starts, and time from its start (scheduler throughput without the creation rate as a bound)")
	flag.Parse()
	var err error
	if o.cases, err = parseCases(*cases); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	for _, v := range strings.Split(*variants, ",") {
		if v != "plain" && v != "spread" {
			fmt.Fprintf(os.Stderr, "bench: unknown variant %q\n", v)
			os.Exit(2)
		}
		o.variants = append(o.variants, v)
	}
	klog.SetLogger(logr.Discard())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseCases(s string) ([]benchCase, error) {
	var out []benchCase
	for _, c := range strings.Split(s, ",") {
		n, p, ok := strings.Cut(strings.TrimSpace(c), "x")
		nodes, err1 := strconv.Atoi(n)
		pods, err2 := strconv.Atoi(p)
		if !ok || err1 != nil || err2 != nil || nodes <= 0 || pods <= 0 {
			return nil, fmt.Errorf("case %q is not NODESxPODS", c)
		}
		out = append(out, benchCase{nodes, pods})
	}
	return out, nil
}

func run(ctx context.Context, o options) error {
	var results []result
	loadStart := loadAvg()
	for _, c := range o.cases {
		for _, v := range o.variants {
			progress("case %d nodes × %d pods, %s", c.nodes, c.pods, v)
			r, err := runCase(ctx, o, c, v)
			if err != nil {
				return fmt.Errorf("%dx%d %s: %w", c.nodes, c.pods, v, err)
			}
			results = append(results, r)
		}
	}
	mode := "pods created while the scheduler runs"
	if o.backlog {
		mode = "backlog: every pod created before the scheduler starts; rate and latency from its start"
	}
	fmt.Printf("kforge scheduler benchmark — %d CPUs, %s, kforge local control plane (embedded etcd, apiserver over TLS); %s\n",
		runtime.NumCPU(), runtime.Version(), mode)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "nodes\tpods\tvariant\tbound\tcreated/s\tbound pods/s\tp50\tp99\tused nodes\tpods per used node\tbroken rules")
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%.0f\t%.1f\t%s\t%s\t%d\t%d–%d\t%s\n",
			r.nodes, r.pods, r.variant, r.bound, r.createRate, r.rate, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond),
			r.usedNodes, r.minPerNode, r.maxPerNode, r.broken)
	}
	tw.Flush()
	fmt.Printf("note: load average at the start %s, at the end %s (other work on this machine skews the figures)\n", loadStart, loadAvg())
	return nil
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(data)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

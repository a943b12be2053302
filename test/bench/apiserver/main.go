package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

type options struct {
	clients     int
	duration    time.Duration
	pods        int
	podWorkers  int
	listReps    int
	watchers    int
	watchConns  int
	watchRounds int
	etcdMode    string
	keep        bool
	dir         string
	skip        string
	cpuProfile  string
}

func main() {
	if p := os.Getenv(etcdChildEnv); p != "" {
		os.Exit(runEtcdChild(p))
	}
	var o options
	flag.IntVar(&o.clients, "clients", 100, "concurrent clients creating then updating ConfigMaps")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "how long each write phase runs")
	flag.IntVar(&o.pods, "pods", 10000, "pods to create, then list")
	flag.IntVar(&o.podWorkers, "pod-workers", 50, "concurrent creators of the pods")
	flag.IntVar(&o.listReps, "list-reps", 3, "times each list is repeated (the median is shown)")
	flag.IntVar(&o.watchers, "watchers", 1000, "concurrent watches on ConfigMaps in one namespace")
	flag.IntVar(&o.watchConns, "watch-conns", 10, "TLS connections the watches are spread over")
	flag.IntVar(&o.watchRounds, "watch-rounds", 3, "changes sent to the watchers, one at a time")
	flag.StringVar(&o.etcdMode, "etcd", "subprocess", "where etcd runs: subprocess or inprocess")
	flag.StringVar(&o.dir, "dir", "", "data directory (default: a new temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory")
	flag.StringVar(&o.skip, "skip", "", "phases to skip, comma-separated: raw,writes,list,watch")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (apiserver and clients) during the kforge write phase")
	flag.Parse()
	klog.SetLogger(logr.Discard()) // client-go's complaints when a phase's deadline cuts a call
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "kforge-bench-")
		if err != nil {
			return err
		}
		dir = d
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	}
	progress("starting etcd (%s, data in %s) and the apiserver", o.etcdMode, dir)
	c, err := startCluster(ctx, dir, o.etcdMode)
	if err != nil {
		return err
	}
	defer c.close()

	loadStart := loadAvg()
	t := &table{}
	t.title = fmt.Sprintf("kforge apiserver benchmark — %d CPUs, %s, etcd %s (one member, data on disk, mTLS), client-go over TLS",
		runtime.NumCPU(), runtime.Version(), o.etcdMode)
	skip := map[string]bool{}
	for _, s := range splitComma(o.skip) {
		skip[s] = true
	}
	if !skip["raw"] {
		if err := benchEtcdRaw(ctx, c, o, t); err != nil {
			return fmt.Errorf("raw etcd: %w", err)
		}
	}
	if !skip["writes"] {
		if err := benchWrites(ctx, c, o, t); err != nil {
			return fmt.Errorf("writes: %w", err)
		}
	}
	if !skip["list"] {
		if err := benchList(ctx, c, o, t); err != nil {
			return fmt.Errorf("list: %w", err)
		}
	}
	if !skip["watch"] {
		if err := benchWatch(ctx, c, o, t); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
	}
	t.note("load average at the start %s, at the end %s (other work on this machine skews the figures)", loadStart, loadAvg())
	t.print(os.Stdout)
	return nil
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

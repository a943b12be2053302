// Command proxy measures the service proxy's nftables writer in a fresh
// network namespace: a full sync of N Services with E endpoints each
// (time, and the process's memory), a full rebuild over an existing
// table, and the time for one endpoint change to reach the kernel
// (Builder.Build, which rebuilds only the changed Service, plus an
// incremental transaction). Figures are printed with
// their ratio to the goals: 2 s for a full sync of 10,000 Services,
// 100 ms for one change.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kforge.dev/kforge/serviceproxy"
)

var cpuProfile string

const (
	goalFull   = 2 * time.Second
	goalChange = 100 * time.Millisecond
)

func main() {
	sizes := flag.String("services", "1000,10000", "Service counts to measure, comma-separated")
	eps := flag.Int("endpoints", 5, "endpoints per Service")
	changes := flag.Int("changes", 20, "single-endpoint changes measured per size (the median is shown)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the single-endpoint changes of the largest size")
	flag.Parse()
	if err := run(*sizes, *eps, *changes); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(sizes string, eps, changes int) error {
	ns, err := newNetNS()
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer ns.Close()
	fmt.Printf("%-9s %-10s %-12s %-26s %-12s %-10s %-14s\n", "services", "rules", "build", "full sync", "vs 2 s", "rebuild", "one change (median, max)")
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 30000 {
			return fmt.Errorf("bad Service count %q", f)
		}
		if err := measure(int(ns), n, eps, changes); err != nil {
			return err
		}
	}
	return serviceproxy.RemoveTable(int(ns))
}

func measure(nsFd, n, eps, changes int) error {
	in := input(n, eps)
	w, err := serviceproxy.NewWriter(nsFd)
	if err != nil {
		return err
	}
	defer w.Close()
	runtime.GC()
	rssBefore := rssKiB()
	var b serviceproxy.Builder
	cpu0 := cpuTime()
	start := time.Now()
	rs := b.Build(in)
	build := time.Since(start)
	if _, err := w.Sync(rs, true); err != nil {
		return err
	}
	full := time.Since(start)
	fullCPU := cpuTime() - cpu0
	rss := rssKiB() - rssBefore

	start = time.Now()
	if _, err := w.Sync(serviceproxy.Build(in), true); err != nil {
		return err
	}
	rebuild := time.Since(start)

	var times []time.Duration
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for i := range changes {
		// One endpoint of one Service is replaced by another.
		s := in.Slices[(i*7919)%n].DeepCopy()
		s.Endpoints[0].Addresses = []string{podIP(n*eps + i).String()}
		in.Slices[(i*7919)%n] = s
		start := time.Now()
		if full, err := w.Sync(b.Build(in), false); err != nil || full {
			return fmt.Errorf("change %d: full=%v: %w", i, full, err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	med, mx := times[len(times)/2], times[len(times)-1]
	fmt.Printf("%-9d %-10d %-12s %-26s %-12s %-10s %s, %s (%.2f× of 100 ms)   RSS +%d MiB\n", n, w.Rules(),
		build.Round(time.Millisecond), fmt.Sprintf("%s (cpu %s)", full.Round(time.Millisecond), fullCPU.Round(time.Millisecond)),
		fmt.Sprintf("%.2f×", full.Seconds()/goalFull.Seconds()),
		rebuild.Round(time.Millisecond), med.Round(100*time.Microsecond), mx.Round(100*time.Microsecond),
		med.Seconds()/goalChange.Seconds(), rss/1024)
	return serviceproxy.RemoveTable(nsFd)
}

// input is n ClusterIP Services (every tenth also a NodePort) of one TCP
// port with eps ready endpoints each, addresses from the benchmarking
// range.
func input(n, eps int) serviceproxy.Input {
	in := serviceproxy.Input{NodeName: "n1", NodeIPs: []netip.Addr{netip.MustParseAddr("198.18.0.21")},
		PodPrefix: netip.MustParsePrefix("198.19.0.0/16")}
	base := netip.MustParseAddr("198.18.128.0").As4()
	for i := range n {
		ip := base
		ip[2] += byte(i >> 8)
		ip[3] = byte(i)
		name := fmt.Sprintf("svc-%05d", i)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: netip.AddrFrom4(ip).String(),
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
		}
		if i%10 == 0 && 30000+i/10 <= 32767 {
			svc.Spec.Type = corev1.ServiceTypeNodePort
			svc.Spec.Ports[0].NodePort = int32(30000 + i/10)
		}
		in.Services = append(in.Services, svc)
		pn, proto, port := "http", corev1.ProtocolTCP, int32(8080)
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-1", Labels: map[string]string{serviceproxy.ServiceNameLabel: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &pn, Protocol: &proto, Port: &port}},
		}
		for e := range eps {
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{podIP(i*eps + e).String()}})
		}
		in.Slices = append(in.Slices, sl)
	}
	return in
}

func podIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
}

// newNetNS makes a network namespace and leaves this thread where it was.
func newNetNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		return 0, err
	}
	if err := netns.Set(orig); err != nil {
		ns.Close()
		return 0, err
	}
	return ns, nil
}

// cpuTime is the process's user plus system CPU time: the kernel's work
// on the netlink batch is system time of the sending thread.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssKiB is the process's resident set size.
func rssKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

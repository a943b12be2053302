// Command scheduler benchmarks the kforge scheduler: it starts a
// `kforge local up` control plane in-process (embedded etcd and the
// apiserver on a free port; the control plane's own scheduler ignores the
// benchmark's pods, which name another scheduler), creates N fake Ready
// nodes (allocatable cpu, memory and pods, hostname and zone labels, a
// node Lease renewed so the node lifecycle controller keeps them Ready),
// runs the kforge scheduler in this process and creates M pods with
// requests from concurrent clients. It prints, per case, the rate at
// which pods were bound (pods divided by the time from the first create
// to the last bind), the p50/p99 scheduling latency (created → seen
// bound), how many pods each used node got, and, for the spread variant,
// how many placements broke the pods' rules.
//
//	go run ./test/bench/scheduler                                 # 100×1000 and 500×3000, plain and spread
//	go run ./test/bench/scheduler -cases 300x2000 -variants plain # one case
//	go run ./test/bench/scheduler -h
//
// With -backlog every pod is created before the scheduler starts, and the
// rate and latencies count from its start: the scheduler's own throughput,
// not bounded by how fast the apiserver takes creates.
//
// The spread variant gives every group of -group pods (one app label) a
// topology spread constraint over zones (maxSkew 1, DoNotSchedule) and a
// required pod anti-affinity on the hostname.
//
// Each case gets a fresh control plane in a temporary folder, stopped and
// removed before the next one starts. Progress goes to stderr, the table
// to stdout.
package main

// Command apiserver benchmarks kforge's apiserver against a real one-member
// etcd on disk, with TLS on every hop, and prints a table of figures with
// ratios against the upstream SLO (p99 ≤ 1 s for mutating calls) and
// kforge's target (p99 ≤ 50 ms at 100 clients).
//
//	go run ./test/bench/apiserver            # about 2 minutes on 2 cores
//	go run ./test/bench/apiserver -h         # sizes and durations
//
// Phases, in one run: raw etcd anchors (the same transactions without the
// apiserver), 100 client-go clients creating then updating ConfigMaps, a
// list of 10,000 pods (full and limit=500 pages) with the apiserver's RSS,
// and 1,000 concurrent watches receiving one change. etcd runs in a
// subprocess by default so the RSS read from /proc/self is the
// apiserver's (and the client-go clients', which live here too); -etcd
// inprocess runs it in this process, as `kforge local up` does.
//
// Progress goes to stderr, the table to stdout. Everything it starts stops
// before it returns; the data directory is removed unless -keep.
package main

// Command dns measures how fast the cluster DNS server answers on the
// node: queries over loopback UDP to the real server (clusterdns.Resolver
// behind a miekg/dns server) whose Store holds a cluster's Services and
// EndpointSlices in the same client-go indexers the informers fill, and
// whose cache holds forwarded answers from a fake upstream. It prints
// p50, p99 and max per kind of name, side by side with the 1 ms p99 goal.
//
//	go run ./test/bench/dns             # a few seconds
//	go run ./test/bench/dns -h          # sizes and concurrency
//
// Kinds: a ClusterIP Service (A), a headless Service with 10 endpoints
// (A), an SRV of a named port, a missing name (NXDOMAIN), and a name
// outside the cluster answered from the cache. Each kind runs with one
// client, then with -clients concurrent ones, every client on its own UDP
// socket. Progress goes to stderr, the table to stdout.
package main

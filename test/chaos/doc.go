// Command chaos is the fault suite on the lab (`make chaos`): with a
// cluster installed by `kforge up` on a running lab, it injects each
// fault while a client writes ConfigMaps with increasing sequence numbers
// through the load balancer (and reads acknowledged ones back), heals
// it, waits until `kforge status` is clean, and checks that every
// acknowledged write is readable through the load balancer and through
// each master's own apiserver.
//
//	go run ./test/chaos -lab DIR [-faults a,b] [-kforge bin/kforge] [-json FILE]
//
// Per fault it prints writes attempted, acknowledged writes lost (which
// must be 0), failed requests, the time from the heal to the first
// successful write, the longest time without one, and the time until the
// cluster is healthy; -json writes the same as JSON. It exits non-zero
// when a write was lost, the cluster did not become healthy, or a
// fault's own check failed. Faults act over the lab's SSH: systemd units
// killed or stopped, an nftables table of the suite's own in a master's
// network namespace (deleted to heal), containerd restarted, `kforge up`
// killed. Everything it creates in the cluster is in the namespace
// "chaos".
package main

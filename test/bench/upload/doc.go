// Command upload measures how fast the kforge binary reaches a cluster's
// hosts with each upload encoding: it connects to every host of a
// cluster.yaml, sends the binary to a scratch path on all of them at once
// (as `kforge up` does), once per encoding, and prints the wall time, the
// binary MiB/s per host and in all, and the bytes on the wire. The scratch
// file is removed afterwards.
//
//	go run ./test/bench/upload -f kforge-lab/cluster.yaml -binary bin/kforge
package main

// Package installer owns the SSH installer and the commands that act on a
// whole cluster: up, cert rotate (RotateCerts: up's phases with a reissue
// and a served-certificates check), status, reset, and node add/remove
// (workers: the converge of up cut to the new host; cordon, an Eviction API
// drain that retries 429s, the Node's deletion and the host's reset),
// upgrade (Upgrade: the binary host by host in skew order, masters behind
// etcd and API gates, workers cordoned and drained in batches), logs
// (Logs: journalctl -o json of every host, merged in time order), backup
// (an etcd snapshot from the leader, verified, in a 0600 tar.gz with the PKI,
// cluster.yaml and a manifest) and restore (up's converge with the daemons
// stopped and every etcd member rebuilt from the snapshot as a new cluster
// before the first daemon phase). The binary is uploaded compressed and
// stamped (BinaryStampPath), so a no-op run does not hash it. Each is an
// ordered list of phases
// over a Host interface (SSH, or a fake in tests), every remote write behind
// one dry-run gate. The cluster.yaml types live in api/v1alpha1 and the
// local lab in installer/lab.
package installer

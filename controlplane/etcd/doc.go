// Package etcd is the etcd role of kforge (`kforge etcd --config FILE`):
// one member of the cluster's etcd, embedded with
// go.etcd.io/etcd/server/v3/embed, plus the care etcd needs and does not
// give itself. It owns:
//
//   - Config: the role config (/etc/kforge/etcd.yaml on a master), in the
//     shape of embed.Config: NewConfig fills defaults, LoadConfig decodes a
//     file strictly over them (unknown fields are errors), Validate lists
//     every problem before anything starts.
//   - Member: NewMember, Start, ReadyNotify, Err, and an ordered Close.
//     Peers and clients use mutual TLS with the etcd CA; a client without
//     a certificate that CA signed fails the TLS handshake. ReadyNotify is
//     closed once the member has joined (published itself through raft)
//     and the cluster has a leader. Run wraps it for the command.
//   - The health and metrics server on MetricsAddress (plain HTTP; keep it
//     on loopback or a management address): /healthz (the process and its
//     local store answer: etcd's /livez), /readyz (joined, a leader, not
//     defragmenting or shutting down, then etcd's own /readyz, which does a
//     linearizable read and so needs quorum), etcd's raw checks under
//     /etcd/ (/etcd/health, /etcd/livez, /etcd/readyz), and /metrics:
//     etcd's own Prometheus series (from the default registry, where embed
//     registers them) plus kforge_etcd_* for the maintenance below.
//   - Snapshots (snapshot.go): SaveSnapshot streams one from a member's
//     maintenance API into a 0600 file; VerifySnapshot checks its sha256
//     trailer and, with etcdutl, its database (revision, keys);
//     RestoreSnapshot rebuilds a stopped member's data dir from one with
//     etcdutl as a member of a new cluster (a new token, the revision moved
//     RestoreRevisionBump ahead and marked compacted so clients relist),
//     built beside the old data dir, which is renamed aside, never deleted
//     (`kforge etcd restore`).
//   - Logging: etcd logs through zap; a zap core forwards every entry to
//     the injected *slog.Logger, so etcd is as quiet as kforge's -v says.
//
// # Compaction
//
// etcd's own compactor keeps either a time window or a revision count,
// never both, so it is turned off and kforge compacts instead. Every
// Compaction.Interval (1m) each member notes the head revision; the
// leader alone then compacts to the newest revision that is both at least
// MinRetention (5m) old and at least MinRevisions (1000) behind the head —
// whichever rule keeps more wins. A member that has not yet watched the
// head for MinRetention (just started, or just became leader) does not
// compact: it never guesses a revision's age. Compaction is logical
// (etcd frees the pages in the background); watchers of the apiserver
// that fall behind it get 410 Expired and relist.
//
// # Defragmentation
//
// Compaction frees pages inside the bbolt file but never shrinks it;
// defragmentation rewrites the file and blocks that member's reads and
// writes while it runs. The policy, per member:
//
//   - Defrag.Interval (10m) is cut into one slot per member, in order of
//     member ID, on the wall clock; a member acts only in its own slot, so
//     members defragment one at a time without talking to each other
//     (clocks are assumed to agree within a slot; a defrag that outlasts
//     its slot can overlap the next member's).
//   - In its slot it defragments when the file is at least MinDBSize
//     (100 MiB) and less than MaxInUseRatio (0.5) of it is in use, at most
//     once per Interval, and only while the cluster has a leader.
//   - While it runs the member's /readyz says "defragmenting", so a client
//     that follows readiness goes to another member.
//
// It does not clear a NOSPACE alarm: an operator (or a later kforge
// command) disarms it once compaction and defragmentation made room.
package etcd

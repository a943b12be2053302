// Package storage is the apiserver's view of etcd: objects as bytes under
// keys, with etcd's revisions as resource versions. Every write is one etcd
// transaction that compares the key's mod revision, so a stale write is a
// conflict rather than a lost update; lists read one consistent revision,
// page by page; watches start from a revision and report compaction as
// ErrExpired. Encoding, validation and the REST rules live above it.
//
// Follow keeps a Mirror current (a paged list, then a watch resumed from
// its last revision, relisting only after a compaction). Cache is the
// Mirror of all of /registry/ the apiserver reads proven-by-write copies
// from and serves watches from (a history of recent events, Progress
// events for idle watches, one decode per event through Shared).
// LeasedKey is a key that lives while its holder refreshes an etcd lease
// (the apiservers' master leases).
package storage

// Package storage is the apiserver's view of etcd: objects as bytes under
// keys, with etcd's revisions as resource versions. Every write is one etcd
// transaction that compares the key's mod revision, so a stale write is a
// conflict rather than a lost update; lists read one consistent revision,
// page by page; watches start from a revision and report compaction as
// ErrExpired. Encoding, validation and the REST rules live above it.
package storage

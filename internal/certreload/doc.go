// Package certreload serves TLS certificates and CA bundles from files
// that may be replaced while a daemon runs, as kube-apiserver's dynamic
// serving certificates do: `kforge cert rotate` writes new files and the
// daemon's next handshake uses them, with no restart.
//
// A KeyPair holds a certificate and its key; its GetCertificate and
// GetClientCertificate plug into a tls.Config. A CABundle holds a pool of
// CA certificates. Both load at construction (an error there is fatal to
// the daemon) and again on Reload, which re-reads only when a file's
// identity, size or modification time changed, and keeps the pair it has
// when the new files do not load or do not belong together (a rotation
// that has written the certificate but not yet the key): the next Reload
// tries again.
//
// Watcher polls its items every Interval. Polling, not inotify: the
// installer replaces files by rename, which ends an inotify watch on the
// file (a watch on the folder would see every unrelated file), a poll
// needs no extra dependency, and a stat of two files every few seconds
// costs nothing next to the handshakes it serves.
package certreload

// Package cluster owns cluster.yaml (apiVersion kforge.dev/v1alpha1, kind
// Cluster): its Go types, strict decoding, defaults, path resolution and
// validation. Everything that reads a cluster file — the PKI, the lab, the
// installer — goes through Load, so a bad file is refused, with every
// problem named by field and line, before anything is changed anywhere.
package cluster

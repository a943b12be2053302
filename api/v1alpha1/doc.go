// Package v1alpha1 is the user-facing cluster spec, cluster.yaml
// (apiVersion kforge.dev/v1alpha1, kind Cluster): its Go types, strict
// decoding, defaults, path resolution and validation. Load refuses a bad
// file with every problem at once, each a field.Error shown with its field
// and line, before anything is changed anywhere; CheckSSHFiles adds what
// only the commands that connect need. AddHostEntry and RemoveHostEntry
// edit the spec.hosts list of a file in place, leaving every other byte as
// it was. The package depends on no other
// kforge package: the PKI, the lab and the installer convert the spec into
// the narrower inputs they take.
package v1alpha1

// Package controlplane groups the control-plane roles of the kforge
// binary: etcd, apiserver, scheduler, controller-manager (controllers) and
// the apiserver load balancer (lb), one subpackage each; local runs them
// together in one process for `kforge local up`.
package controlplane

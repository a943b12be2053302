// Package controlplane groups the control-plane roles of the kforge
// binary: etcd, apiserver, scheduler, controller-manager (controllers) and
// the apiserver load balancer (lb), one subpackage each.
package controlplane

// Package nodeagent owns the node agent (kforge agent), the kubelet of a
// kforge cluster: node registration, Lease heartbeat, pods on containerd
// with CNI, probes, logs and volumes, and the node-local apiserver load
// balancer. The service proxy and cluster DNS are its subpackages.
package nodeagent

// Command kforge installs a highly available Kubernetes-compatible cluster
// over SSH, and is every daemon of that cluster.
package main

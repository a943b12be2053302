// Package pki owns the cluster's certificates: it issues the CAs, the
// service-account key pair and every leaf of DESIGN.md's inventory with
// cfssl, writes them as PEM files grouped by host, builds the kubeconfigs
// with client-go's clientcmd, and reports what expires when.
package pki

// Package templates holds the embedded text templates (systemd units, role
// configs, containerd and CNI configs) that the installer renders onto
// hosts.
package templates

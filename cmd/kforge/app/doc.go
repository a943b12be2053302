// Package app wires kforge's cobra commands to the library packages. Each
// command's RunE maps its flags to an options struct and calls installer,
// pki, controlplane, nodeagent or ingress; there is no logic here. Run is
// what tests drive; only Main exits.
package app

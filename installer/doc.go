// Package installer owns the SSH installer and the day-2 commands (up,
// status, node add/remove, backup, restore, upgrade, reset): an ordered
// list of phases over a Host interface, every remote write behind one
// dry-run gate. The cluster.yaml types live in installer/cluster and the
// local lab in installer/lab.
package installer

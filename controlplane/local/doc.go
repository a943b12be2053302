// Package local runs a single-node kforge control plane in one process,
// for trying kforge and for tests: `kforge local up`.
//
// It owns the layout of its folder (see Up) and the order of things:
// the PKI for one master at 127.0.0.1 is issued (or reused), one etcd
// member starts, then the apiserver; once the apiserver's /readyz
// answers ok the controller manager and the scheduler start in-process,
// leader elected as on a master, and then the admin kubeconfig is
// written. On shutdown the scheduler and the controller manager stop
// first, then the apiserver, then etcd. The data stays in the folder,
// so a second Up on the same folder finds what the first one stored.
//
// A scheduler or controller manager that loses its lease exits on a
// master and systemd starts it again; here the same role is built and
// started again in-process after a second, while etcd and the apiserver
// go on. Any other failure of a role ends Up with its error.
//
// The roles are the real ones (controlplane/etcd, controlplane/apiserver,
// controlplane/controllers and controlplane/scheduler), driven through
// the same config files the installer writes on a master: Up writes
// DIR/etcd.yaml once and DIR/apiserver.yaml on every start, and loads
// both.
package local

// Package local runs a single-node kforge control plane in one process,
// for trying kforge and for tests: `kforge local up`.
//
// It owns the layout of its folder (see Up) and the order of things:
// the PKI for one master at 127.0.0.1 is issued (or reused), one etcd
// member starts, then the apiserver; the admin kubeconfig is written once
// the apiserver's /readyz answers ok, and on shutdown the apiserver stops
// before etcd. The data stays in the folder, so a second Up on the same
// folder finds what the first one stored. The scheduler runs in-process
// once the apiserver is ready (before the admin kubeconfig is written)
// and stops before it; later the controllers and an agent join the same
// sequence.
//
// The roles are the real ones (controlplane/etcd and
// controlplane/apiserver), driven through the same config files the
// installer writes on a master: Up writes DIR/etcd.yaml once and
// DIR/apiserver.yaml on every start, and loads both.
package local

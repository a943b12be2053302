// Package nodeagent is the node agent (kforge agent), the kubelet of a
// kforge cluster.
//
// It owns, for one node:
//
//   - registration and heartbeat: the Node (addresses, the
//     kubernetes.io/hostname, os, arch and node-role.kubernetes.io/worker
//     labels, capacity from the host and allocatable minus a reservation,
//     nodeInfo with containerd://VERSION, and the Ready, MemoryPressure,
//     DiskPressure, PIDPressure and NetworkUnavailable conditions), written
//     when it changes and at least every minute; and a Lease in
//     kube-node-lease renewed every 10 s, owned by the Node;
//   - the pod network: once the node has a pod CIDR (spec.podCIDR from node
//     IPAM, or a static one), a CNI network list (bridge with host-local
//     IPAM on that range, portmap) written to the CNI folder, and for each
//     pod a network namespace pinned under runDir, attached with libcni
//     (plus loopback), and hosts, resolv.conf (cluster DNS, search
//     NS.svc.DOMAIN svc.DOMAIN DOMAIN, ndots:5, per dnsPolicy/dnsConfig)
//     and hostname files; with a cluster CIDR, a route to every other
//     node's pod CIDR via its InternalIP (marked proto 66) and an nftables
//     table (kforge-agent) masquerading only what leaves the cluster's pod
//     range (podnet.go);
//   - the pods bound to the node (a field-selected informer on
//     spec.nodeName): volumes (emptyDir incl. medium Memory, configMap,
//     secret, downwardAPI, projected, hostPath), init containers in order,
//     then the containers through the containerd client in its namespace
//     (k8s.io) with command/args, workingDir, env (values, ConfigMap and
//     Secret keys, the downward API, envFrom, the service variables),
//     securityContext basics and the cgroup limits the host can enforce,
//     restart policy with crash-loop backoff (10 s doubling to 5 min),
//     exec/httpGet/tcpSocket probes, postStart and preStop hooks (exec,
//     httpGet, sleep; hooks.go), graceful termination, and pod status
//     through pods/status; a deleted pod is stopped, detached (CNI DEL)
//     and then deleted with grace 0;
//   - admission before a pod first runs (admit.go), as the kubelet's: its
//     requests against the allocatable left by the pods admitted before
//     it, the pod count, and host ports; a pod that does not fit is failed
//     with OutOfcpu, OutOfmemory, OutOfpods or NodePorts and never run;
//   - restart safety: every container carries labels naming its pod,
//     container and attempt, and each pod's sandbox is recorded in its
//     folder, so a restarted agent adopts running containers and removes
//     those whose pod is gone; Cleanup (kforge agent cleanup, run by
//     kforge reset) removes every pod and the pod network.
//
// Images (images.go) come by the container's imagePullPolicy from
// containerd, from OCI archives in imageDir imported on demand, or from
// their registry through containerd's client, with containerd's hosts.toml
// registry configuration (registryConfigDir) and the pod's pull secrets.
//
// The agent holds each container's stdio (containerio.go): containerd
// hands stdout and stderr over FIFOs in runDir/fifo, and the agent writes
// them to podLogDir/NS_NAME_UID/CONTAINER/N.log in the CRI log format,
// rotated by size (package podlogs), and to attached clients; a container
// with stdin: true gets a stdin FIFO fed by attached clients, tty: true a
// terminal. Labels record how the stdio was opened, so a restarted agent
// reopens the FIFOs of running containers and their output continues in
// the same file.
//
// With a serving certificate configured the agent serves its API (package
// server) on :10250 and publishes the port in status.daemonEndpoints; the
// agent's side of it (api.go) finds pods and containers from the informer
// and containerd, runs streaming execs (stdin, tty, resize; a client that
// goes away kills the process), attaches to the held stdio, and
// port-forwards by dialing 127.0.0.1:PORT inside the pod's network
// namespace.
//
// The node-local apiserver load balancer (apiServerProxy) is the lb
// package, embedded.
package nodeagent

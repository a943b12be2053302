// Package server is the node agent's API, the kubelet's port (:10250):
// HTTPS with the agent's serving certificate, clients authenticated by
// certificates the cluster CA signed and authorized by asking the
// apiserver (a SubjectAccessReview per user, verb and node subresource,
// cached briefly), as upstream's kubelet with webhook authorization.
//
// Paths and the node subresource each needs (upstream's mapping):
//
//	/healthz                                   nodes/healthz or nodes/proxy
//	/metrics                                   nodes/metrics (Prometheus)
//	/stats/summary                             nodes/stats
//	/containerLogs/NS/POD/CONTAINER            nodes/proxy (get)
//	/exec/NS/POD/CONTAINER?command=...         nodes/proxy (create)
//	/attach/NS/POD/CONTAINER                   nodes/proxy (create)
//	/portForward/NS/POD                        nodes/proxy (create)
//
// The verb is the request's (GET get, POST create, ...), except that
// exec, attach and port-forward always need create: a WebSocket upgrade
// is a GET, and it must not run commands with read rights only.
//
// containerLogs takes kubectl logs' options: follow, tailLines,
// sinceSeconds, sinceTime, timestamps, previous, limitBytes. exec and
// attach speak the remote command protocols (SPDY v1 to v4 and the
// channel.k8s.io WebSocket protocols up to v4) and portForward speaks
// SPDY and the portforward.k8s.io WebSocket protocol, all through the
// CRI streaming server packages of k8s.io/cri-streaming. The pods
// themselves (logs, processes, network namespaces) are the Pods
// interface's, which the agent implements.
package server

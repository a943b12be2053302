// Package lb is the apiserver load balancer of kforge (`kforge lb
// --config FILE` on the lb host) and the node-local LB that agents embed
// (127.0.0.1:6444). It owns:
//
//   - Config: the role config (/etc/kforge/lb.yaml), in the shape of
//     etcd's embed.Config: NewConfig fills defaults, LoadConfig decodes a
//     file strictly over them (unknown fields are errors), Validate lists
//     every problem before anything starts.
//   - Balancer: New(cfg, log), Start, Ready, Backends, Handler, Err and an
//     ordered Close. A plain TCP proxy: TLS passes through to the
//     apiservers, which terminate it, so client certificates reach them
//     unchanged. Each connection goes to a healthy backend (least
//     connections by default, or round robin); a failed dial is retried
//     on another healthy backend; with none healthy the client connection
//     is reset at once. Bytes are copied both ways with half-close, so a
//     client's FIN reaches the apiserver while its answer still flows.
//   - Health checks: an HTTPS GET of /readyz on every backend each second
//     (800 ms timeout), verified with the cluster CA and, optionally, a
//     client certificate; two failures in a row take a backend out (so a
//     failed master is out within 3 s), one success brings it back.
//     Backends start out down and are checked at once on Start.
//     Connections open to a backend when it is taken out are reset, so
//     their clients reconnect to a healthy one rather than wait on a hung
//     or cut-off master.
//   - SetBackends replaces the backends while running (the agent's
//     node-local LB follows the kubernetes Service's EndpointSlices):
//     those that stay keep their health and connections, new ones are
//     checked before use, removed ones stop being checked and their
//     connections are reset.
//   - The metrics server on MetricsAddress (plain HTTP, 127.0.0.1:9443 by
//     default; keep it on loopback or a management address): /healthz,
//     /readyz (ready while at least one backend is healthy) and /metrics
//     from the Balancer's own registry: kforge_lb_backend_up,
//     kforge_lb_backend_active_connections,
//     kforge_lb_backend_connections_total,
//     kforge_lb_backend_dial_failures_total,
//     kforge_lb_health_check_failures_total and
//     kforge_lb_rejected_connections_total, plus the Go and process
//     collectors when run as the role.
//
// Embedding (the agent's node-local LB): build a Config with NewConfig,
// set ListenAddress 127.0.0.1:6444, Backends, HealthCheck.CAFile (and
// MetricsAddress "" to mount Handler on the agent's own server), then
// New, Start and, on shutdown, Close.
package lb

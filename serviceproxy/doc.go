// Package serviceproxy is the kforge service proxy (`kforge proxy
// --config FILE` on each worker): it makes Services reachable on its node
// through one nftables table of its own, "kforge" (family ip), and never
// touches any other table. It owns:
//
//   - Config: the role config (/etc/kforge/proxy.yaml, kind ProxyConfig):
//     NewConfig, LoadConfig/ParseConfig (strict, over the defaults),
//     Validate listing every problem.
//   - Build: a pure function from Services and EndpointSlices (plus the
//     node's name and NodePort addresses and the cluster's pod range) to
//     a Ruleset, the wanted content of the table. Per service port: a
//     ClusterIP chain (svc-NS/NAME/PROTO/PORT) and, for NodePorts and
//     externalIPs, an external chain (ext-…). The endpoints are the ready
//     ones, or the serving terminating ones when none is ready;
//     internalTrafficPolicy Local keeps this node's; externalTrafficPolicy
//     Local sends outside traffic only to this node's endpoints, without
//     masquerade (dropped when there is none), while the node's own and its
//     pods' traffic may go to any. ClientIP affinity adds per-endpoint
//     chains (ep-…) with a timed set of recent clients. Headless and
//     ExternalName Services are left alone; a port the proxy cannot
//     express (a protocol other than TCP, UDP and SCTP, a port out of
//     range, a non-IPv4 address) is skipped and reported, the rest built.
//   - Writer: writes Rulesets through github.com/google/nftables, which
//     speaks netlink to the kernel directly: no nft binary on the host, no
//     text to generate and parse, and errors come back as the kernel's
//     own. (sigs.k8s.io/knftables, kube-proxy's, drives the nft binary,
//     which the hosts need not have.) The first sync deletes and recreates
//     the table in one transaction; later ones send only the chains and
//     set elements that changed, also in one transaction, so the kernel
//     applies a sync whole or not at all and a refused one leaves the last
//     good rules in place.
//   - Proxy: informers on Services and EndpointSlices; each change kicks
//     one sync (at most one per minSyncInterval, a full rebuild every
//     syncPeriod, retries with backoff after a failure); after a sync, the
//     conntrack entries of UDP flows to endpoints that went away are
//     deleted over netlink, so clients' next datagrams reach a live one.
//     /healthz (and /readyz) answer 200 with the last sync's time once a
//     sync succeeded and while failures are younger than two minutes;
//     /metrics has the sync duration histogram (full/partial), the rules
//     count, refused transactions, deleted conntrack entries and skipped
//     Services. Unexpressible ports are reported as ServiceNotProxied
//     warning events on their Service.
//   - Cleanup and RemoveTable: delete the table (`kforge proxy cleanup`,
//     which `kforge reset` runs).
//
// The table: nat chains on prerouting and output jump to "services",
// which looks `ip daddr . meta l4proto . th dport` up in the verdict map
// service-ips, and for the node's addresses (set nodeport-ips) `meta
// l4proto . th dport` in service-nodeports, each going to the Service's
// chain. A chain with several endpoints picks one with `numgen random`
// and looks (chain number . index) up in one of the service-endpoints-N
// maps, which DNATs to the address and port found there; with one
// endpoint it DNATs directly. Postrouting masquerades packets marked
// 0x4000 (traffic from outside the pod range to a ClusterIP, external
// traffic under the Cluster policy) and hairpin traffic (set hairpin:
// an endpoint reaching itself). Filter chains ahead of DNAT on prerouting
// and output reject (ICMP port unreachable) new connections to the
// addresses and NodePorts in no-endpoint-services and
// no-endpoint-nodeports, so clients fail at once instead of timing out.
//
// Why this shape: a verdict map makes dispatch one hash lookup whatever
// the number of Services, and the endpoint maps keep the number of
// kernel objects to about one chain and two rules per service port. Each
// rule that looks a map up is a binding the kernel walks when it binds
// another, so the endpoints are spread over 128 maps, and a sync adds map
// elements after the rules that use them (binding a map checks the
// elements already in it). Element lists go in messages of 256, under
// netlink's 16-bit attribute length.
package serviceproxy

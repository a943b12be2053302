// Package clusterdns is the dns role (`kforge dns`): the cluster DNS
// server each worker runs, reached by pods at the kube-dns Service
// (kube-system, the 10th address of the service range, 53/UDP and
// 53/TCP).
//
// Names under the cluster domain follow the Kubernetes DNS
// specification, answered from Services and EndpointSlices kept by
// client-go informers (Store):
//
//   - SVC.NS.svc.DOMAIN: A/AAAA with the ClusterIPs; for a headless
//     Service one record per ready endpoint (every endpoint with
//     publishNotReadyAddresses); a CNAME to spec.externalName for an
//     ExternalName Service, followed by the target's addresses when they
//     can be found. SRV on it lists every named port.
//   - HOST.SVC.NS.svc.DOMAIN for a headless Service's endpoints: HOST is
//     the endpoint's hostname, or its address with dashes.
//   - _PORT._PROTO.SVC.NS.svc.DOMAIN: SRV per named port, to the Service's
//     name (ClusterIP) or to each ready endpoint's name (headless), with
//     the addresses in the additional section.
//   - A-B-C-D.NS.pod.DOMAIN (and the dashed IPv6 form): the address the
//     name spells, as upstream's "pods insecure" mode, without looking
//     Pods up.
//   - PTR for ClusterIPs and endpoint addresses (pods behind Services),
//     under in-addr.arpa and ip6.arpa; other addresses go upstream.
//   - A name that does not exist is NXDOMAIN; one that exists without
//     records of the type (an empty namespace level, AAAA of an
//     IPv4-only Service, a headless Service without ready endpoints) is
//     NODATA; both carry the zone's SOA, whose minimum is the record TTL.
//
// Every other name goes to the host's resolvers (Forwarder) read from
// /etc/resolv.conf, loopback stubs skipped, through a Cache of their
// answers. Forwarding fails fast: without an upstream at once, otherwise
// within the forward timeout, and the failure is cached briefly so a
// cluster without an outside resolver does not stall every lookup.
//
// Malformed queries get FORMERR (from the dns library, before the
// Resolver), unknown opcodes NOTIMP, a UDP answer larger than the
// client's buffer is cut with the TC bit so the client retries over TCP.
// While the API is unreachable the informers keep their last contents and
// the server keeps answering from them.
//
// Each instance creates the kube-dns Service when it is missing (no
// selector, the configured ClusterIP) and keeps one EndpointSlice of its
// own (SVC-NODE, managed-by kforge-dns) pointing at its node address,
// ready while it is synced and its Node is Ready; a clean shutdown removes
// it, then keeps answering for a lame-duck period while proxies catch up.
// A ready instance marks not ready its peers' endpoints on Nodes that are
// missing or not Ready (the same rule, so instances never undo each
// other's writes): a worker that died cannot remove its own slice.
//
// The server is built on github.com/miekg/dns rather than CoreDNS
// embedded as a library: CoreDNS v1.15.0 needs the same k8s.io modules,
// but moves grpc (v1.84) and prometheus/common, adds about a hundred
// modules to the build graph (the cloud SDKs of plugins we do not use),
// registers its plugins through init() into global registries, and its
// loop plugin exits the process. Record semantics are upstream's
// kubernetes plugin's, re-implemented over our informers.
package clusterdns

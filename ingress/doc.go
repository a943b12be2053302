// Package ingress is the ingress role (`kforge ingress`): the HTTP and
// HTTPS ingress controller each worker runs on :80 and :443, routing
// networking.k8s.io/v1 Ingresses straight to the ready endpoints of their
// backend Services.
//
// Three parts:
//
//   - Builder turns Ingresses, Services, EndpointSlices and Secrets
//     (Sources) into an immutable Table: exact hosts, single-label
//     wildcards ("*.example.com" covers one label), then rules without a
//     host; within a host, Exact paths before Prefix paths, Prefix matched
//     element-wise (/foo matches /foo and /foo/bar, not /foobar), longest
//     first; ImplementationSpecific is Prefix; the oldest Ingress's
//     defaultBackend when nothing matches, else a 404 page. When two
//     Ingresses claim the same host and path the older one keeps it and
//     the other gets a Problem (an event). An Ingress with an invalid host
//     or path is left out whole; a route whose Service or port is missing
//     stays and answers 503. Backends are Service ports resolved to
//     endpoint addresses; endpoint state (passive health, requests in
//     flight) and parsed certificates outlive rebuilds.
//   - Proxy is the data path, an http.Handler over the current Table
//     (an atomic.Pointer, swapped whole on every change; requests in
//     flight finish on the table they started with). It sends requests
//     over one http.Transport tuned for a proxy: a keep-alive pool per
//     endpoint (1,024 idle connections each), no compression, HTTP/1.1 to
//     pods. Endpoints are picked round-robin, or least-request (two random
//     choices) by annotation; a request whose connection fails before the
//     pod could have seen it, or an idempotent one without a body that
//     gets 502/503/504, is tried on another endpoint, and an endpoint whose
//     dial fails is skipped for failTimeout. It sets X-Forwarded-For,
//     -Proto, -Host, -Port, X-Real-IP and X-Request-ID, passes Upgrade
//     (WebSocket) through by joining the two connections, redirects plain
//     HTTP to HTTPS (308) for hosts in an Ingress's tls section, and
//     enforces the per-Ingress timeouts and body limit. Certificates are
//     chosen by SNI from the table, a self-signed default otherwise;
//     HTTP/2 is offered over TLS.
//   - Controller wires them to the API: client-go informers feed a
//     rebuild on every change (no debounce: a burst coalesces into one
//     rebuild), problems become events (once each), a workqueue adds the
//     instance's statusAddresses to status.loadBalancer.ingress, and the
//     IngressClass "kforge" (controller kforge.dev/ingress, marked default)
//     is created when missing. Ingresses are served when their class is
//     one whose controller is ours, or when they name none and the default
//     class is ours.
//
// Annotations under ingress.kforge.dev/: ssl-redirect ("false" turns the
// redirect off), proxy-connect-timeout and proxy-read-timeout (a Go
// duration or whole seconds), proxy-body-size (nginx's 8k/1m/1g or a
// quantity; 0 for none), load-balance (round-robin or least-request).
// An invalid value keeps the default and is reported.
package ingress

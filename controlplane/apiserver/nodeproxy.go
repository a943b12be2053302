package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"kforge.dev/kforge/internal/certreload"
)

// The node agent's subresources: pods/log, pods/exec, pods/attach and
// pods/portforward, and nodes/proxy/PATH, which the apiserver serves by
// proxying to the agent API of the pod's node (its InternalIP and
// status.daemonEndpoints port) over TLS verified against the cluster CA,
// as the apiserver's kubelet client (Options.NodeClientTLS). Streaming
// upgrades (SPDY) pass through unchanged.
//
// WebSocket upgrades pass through when they offer a channel protocol the
// agent speaks (channel.k8s.io and base64.channel.k8s.io, plain or v4).
// kubectl's first try, v5.channel.k8s.io for exec and attach and SPDY
// tunnelled over WebSocket for port-forward, would need translating;
// those are answered 400 before any upgrade, which makes kubectl fall
// back to SPDY.

// agentWebSocketProtocols are the WebSocket subprotocols the agent API
// speaks for exec, attach and port-forward.
var agentWebSocketProtocols = map[string]bool{
	"channel.k8s.io": true, "base64.channel.k8s.io": true,
	"v4.channel.k8s.io": true, "v4.base64.channel.k8s.io": true,
}

// nodeAgentSubresources are the subresources proxied to a node agent.
var nodeAgentSubresources = map[string]bool{"log": true, "exec": true, "attach": true, "portforward": true, "proxy": true}

// logQuery are the pods/log options passed on to the agent.
var logQuery = []string{"follow", "tailLines", "sinceSeconds", "sinceTime", "timestamps", "previous", "limitBytes"}

// isNodeAgentRequest reports a request for a proxied subresource: a
// long-running request, exempt from the in-flight cap and the request
// deadline like a watch (a followed log or an exec session lasts).
func isNodeAgentRequest(parts []string) bool {
	if !isResourcePath(parts) {
		return false
	}
	rest := parts[2:]
	if parts[0] == "apis" {
		rest = parts[3:]
	}
	if len(rest) >= 4 && rest[0] == "namespaces" && rest[2] == "pods" {
		return len(rest) == 5 && nodeAgentSubresources[rest[4]] && rest[4] != "proxy"
	}
	return len(rest) >= 3 && rest[0] == "nodes" && rest[2] == "proxy"
}

// NodeClientTLS builds the apiserver's TLS client config toward the node
// agents: the kubelet client certificate, and the cluster CA for their
// serving certificates.
func NodeClientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	c, _, err := nodeClientTLS(certFile, keyFile, caFile)
	return c, err
}

// nodeClientTLS is NodeClientTLS with the client certificate's KeyPair,
// which a certreload.Watcher reloads: each new connection to an agent
// presents the current certificate.
func nodeClientTLS(certFile, keyFile, caFile string) (*tls.Config, *certreload.KeyPair, error) {
	pair, err := certreload.NewKeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("apiserver: kubelet client certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("apiserver: kubelet client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("apiserver: %s holds no certificate", caFile)
	}
	return &tls.Config{GetClientCertificate: pair.GetClientCertificate, RootCAs: pool, MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"}}, pair, nil
}

// serveNodeProxy proxies one request for a node agent subresource; path
// is the rest of the URL after nodes/NAME/proxy.
func (s *Server) serveNodeProxy(w http.ResponseWriter, r *http.Request, req *request, path string) {
	ctx := r.Context()
	var nodeName, target string
	q := url.Values{}
	if req.res.Plural == "nodes" {
		nodeName, target = req.name, "/"+path
		q = r.URL.Query()
	} else {
		obj, err := s.get(ctx, req.res, req.ns, req.name)
		if err != nil {
			writeError(w, err)
			return
		}
		pod := obj.(*corev1.Pod)
		if pod.Spec.NodeName == "" {
			writeError(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name)))
			return
		}
		nodeName = pod.Spec.NodeName
		in := r.URL.Query()
		ref := url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name)
		switch req.sub {
		case "portforward":
			target = "/portForward/" + ref
			for _, p := range in["ports"] {
				q.Add("port", p)
			}
		default:
			c, err := podContainer(pod, in.Get("container"), req.sub == "log")
			if err != nil {
				writeError(w, err)
				return
			}
			ref += "/" + url.PathEscape(c)
			switch req.sub {
			case "log":
				target = "/containerLogs/" + ref
				for _, k := range logQuery {
					if v := in.Get(k); v != "" {
						q.Set(k, v)
					}
				}
			case "exec", "attach":
				target = "/" + req.sub + "/" + ref
				for _, k := range []string{"stdin", "stdout", "stderr", "tty"} {
					// The agent's names for the stream flags, as upstream.
					name := map[string]string{"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"}[k]
					if v := in.Get(k); v == "true" || v == "1" {
						q.Set(name, "1")
					}
				}
				for _, c := range in["command"] {
					q.Add("command", c)
				}
			}
		}
	}
	if isWebSocket(r) && req.res.Plural == "pods" && req.sub != "log" && !agentSpeaks(r) {
		writeError(w, apierrors.NewBadRequest(fmt.Sprintf(
			"pods/%s over WebSocket is served with the channel.k8s.io protocols up to v4; use SPDY (kubectl falls back to it)", req.sub)))
		return
	}
	host, err := s.nodeAddress(ctx, nodeName)
	if err != nil {
		writeError(w, err)
		return
	}
	// Checked last, so that a missing pod or node, or a bad option, is
	// answered as upstream would (404, 400) even here.
	if s.nodeTransport == nil {
		writeError(w, apierrors.NewServiceUnavailable(fmt.Sprintf(
			"%s/%s: this apiserver has no client certificate for the node agents (kubeletClient in its config)", req.res.Plural, req.sub)))
		return
	}
	u := &url.URL{Scheme: "https", Host: host, Path: target, RawQuery: q.Encode()}
	s.proxyTo(w, r, u)
}

// podContainer picks the container a request names, or the only one.
func podContainer(pod *corev1.Pod, name string, withInit bool) (string, error) {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	all := names
	if withInit {
		for _, c := range pod.Spec.InitContainers {
			all = append(all, c.Name)
		}
	}
	if name == "" {
		if len(names) == 1 {
			return names[0], nil
		}
		return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: %v", pod.Name, names))
	}
	for _, n := range all {
		if n == name {
			return name, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", name, pod.Name))
}

// nodeAddress is host:port of a node's agent API.
func (s *Server) nodeAddress(ctx context.Context, name string) (string, error) {
	obj, err := s.get(ctx, s.reg.Lookup("", "v1", "nodes"), "", name)
	if err != nil {
		return "", err
	}
	n := obj.(*corev1.Node)
	var ip string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
			break
		}
	}
	if ip == "" {
		return "", apierrors.NewServiceUnavailable(fmt.Sprintf("node %s has no InternalIP address", name))
	}
	port := n.Status.DaemonEndpoints.KubeletEndpoint.Port
	if port <= 0 {
		port = 10250
	}
	return net.JoinHostPort(ip, strconv.Itoa(int(port))), nil
}

// proxyTo forwards r to target, upgrades included, without the caller's
// credentials: the agent sees the apiserver's kubelet client.
func (s *Server) proxyTo(w http.ResponseWriter, r *http.Request, target *url.URL) {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = target.Host
			pr.Out.Header.Del("Authorization")
			for k := range pr.Out.Header {
				if strings.HasPrefix(k, "Impersonate-") {
					pr.Out.Header.Del(k)
				}
			}
		},
		Transport:     s.nodeTransport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			writeError(w, apierrors.NewServiceUnavailable(fmt.Sprintf("error dialing the node agent at %s: %v", target.Host, err)))
		},
		ErrorLog: nil,
	}
	rp.ServeHTTP(w, r)
}

func newNodeTransport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	}
}

func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// agentSpeaks reports whether a WebSocket request offers no subprotocol
// or one the agent serves.
func agentSpeaks(r *http.Request) bool {
	var offered []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				offered = append(offered, p)
			}
		}
	}
	if len(offered) == 0 {
		return true
	}
	for _, p := range offered {
		if agentWebSocketProtocols[p] {
			return true
		}
	}
	return false
}

package nodeagent

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestHTTPAndTCPProbes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("X-Probe") != "yes" || !strings.HasPrefix(r.UserAgent(), "kube-probe/") {
				w.WriteHeader(http.StatusBadRequest)
			}
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	host, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	sb := &sandbox{HostNetwork: true, IP: host}
	c := &corev1.Container{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tc := range []struct {
		path string
		port intstr.IntOrString
		ok   bool
	}{
		{"/ok", intstr.FromString("http"), true},
		{"/ok", intstr.FromInt32(int32(port)), true},
		{"/redirect", intstr.FromString("http"), true}, // 3xx passes, as upstream
		{"/fail", intstr.FromString("http"), false},
		{"/ok", intstr.FromString("nope"), false},
	} {
		ok, msg := httpProbe(ctx, &corev1.HTTPGetAction{Path: tc.path, Port: tc.port,
			HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "yes"}}}, time.Second, c, sb)
		if ok != tc.ok {
			t.Errorf("%s on %s: %v (%s), want %v", tc.path, tc.port.String(), ok, msg, tc.ok)
		}
	}

	p := &prober{}
	ok, msg := p.probe(ctx, &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}}, time.Second, "", c, sb)
	if !ok {
		t.Errorf("tcp probe of a listening port: %s", msg)
	}
	srv.Close()
	ok, _ = p.probe(ctx, &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}}}, time.Second, "", c, sb)
	if ok {
		t.Error("tcp probe of a closed port passed")
	}
}

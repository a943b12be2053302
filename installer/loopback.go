package installer

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// loopbackTimeout bounds one request to a daemon on a host's loopback.
const loopbackTimeout = 5 * time.Second

// loopbackGet GETs path from a daemon that listens on the host's loopback
// at addr (health and metrics listeners are loopback-only), through the
// host's own SSH connection: a plain HTTP client whose every dial is a
// direct-tcpip channel. A status other than 200 is an error.
func loopbackGet(ctx context.Context, h Host, addr, path string) ([]byte, error) {
	t, ok := h.(tunneler)
	if !ok {
		return nil, fmt.Errorf("host %s: cannot open connections through it", h.Name())
	}
	client := &http.Client{
		Timeout: loopbackTimeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return t.DialContext(ctx, "tcp", addr)
			},
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", path, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", path, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s on %s: %s: %s", path, addr, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// loopbackHealthz asks a daemon's /healthz on the host's loopback.
func loopbackHealthz(ctx context.Context, h Host, addr string) error {
	_, err := loopbackGet(ctx, h, addr, "/healthz")
	return err
}

package installer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/cert"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/pki"
)

// Prober checks the daemons' health from the operator's machine.
type Prober interface {
	// EtcdMember returns nil when the member at address answers a status
	// call and knows a leader.
	EtcdMember(ctx context.Context, address string) (*EtcdStatus, error)
	// APIServer returns nil when GET base+"/readyz" answers 200.
	APIServer(ctx context.Context, base string) error
	// EtcdRejoin prepares the member name (peer URL peerURL), whose data
	// dir is empty, to start again, through the members at addresses:
	// when the cluster knows it as a member that has run, it is removed
	// and added anew, and replaced is true (the member must then start
	// with the join marker); a member that never started stays as it is.
	EtcdRejoin(ctx context.Context, addresses []string, name, peerURL string) (replaced bool, err error)
}

// EtcdStatus is what one member says about itself.
type EtcdStatus struct {
	Endpoint string
	MemberID uint64
	Leader   uint64
	DBSize   int64
	Version  string
	Errors   []string
}

// DialFunc connects to "host:port" (Dialer.DialContext, or net.Dialer's).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// NetProber asks the daemons with the PKI's certificates: the etcd CA and
// an apiserver→etcd client certificate for etcd, the cluster CA for the
// apiservers. It connects with its DialFunc: directly, or through SSH to
// hosts behind a bastion (Dialer).
type NetProber struct {
	etcdTLS *tls.Config
	apiTLS  *tls.Config
	client  *http.Client
	dial    DialFunc
}

// NewNetProber builds a prober from the local PKI; a nil dial dials
// directly.
func NewNetProber(c *v1alpha1.Cluster, inv *pki.Inventory, dial DialFunc) (*NetProber, error) {
	masters := c.Masters()
	if len(masters) == 0 {
		return nil, errors.New("no masters")
	}
	clusterCA, err := cert.NewPool(inv.Path(inv.Cert(pki.ClusterCA).CertFile))
	if err != nil {
		return nil, err
	}
	if dial == nil {
		d := &net.Dialer{Timeout: 5 * time.Second}
		dial = d.DialContext
	}
	p := &NetProber{apiTLS: &tls.Config{RootCAs: clusterCA, MinVersion: tls.VersionTLS12}, dial: dial}
	etcdCA, err := cert.NewPool(inv.Path(inv.Cert(pki.EtcdCA).CertFile))
	if err != nil {
		return nil, err
	}
	ec := inv.Cert(masters[0].Name + "/apiserver-etcd-client")
	if ec == nil {
		return nil, errors.New("the PKI has no apiserver-etcd-client certificate")
	}
	pair, err := tls.LoadX509KeyPair(inv.Path(ec.CertFile), inv.Path(ec.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading the etcd client certificate: %w", err)
	}
	p.etcdTLS = &tls.Config{RootCAs: etcdCA, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	p.client = &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: p.apiTLS, DisableKeepAlives: true, DialContext: dial},
	}
	return p, nil
}

// etcdClient connects to the members at eps through p's DialFunc.
func (p *NetProber) etcdClient(ctx context.Context, eps []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints: eps, TLS: p.etcdTLS, DialTimeout: 2 * time.Second, Logger: zap.NewNop(), Context: ctx,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return p.dial(ctx, "tcp", addr)
		})},
	})
}

// EtcdEndpoint is a member's client URL.
func EtcdEndpoint(address string) string { return "https://" + v1alpha1.HostPort(address, 2379) }

// etcdEndpoints is the client URLs of the members at addresses.
func etcdEndpoints(addresses []string) []string {
	eps := make([]string, len(addresses))
	for i, a := range addresses {
		eps[i] = EtcdEndpoint(a)
	}
	return eps
}

func (p *NetProber) EtcdMember(ctx context.Context, address string) (*EtcdStatus, error) {
	ep := EtcdEndpoint(address)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cli, err := p.etcdClient(ctx, []string{ep})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, ep)
	if err != nil {
		return nil, err
	}
	s := &EtcdStatus{Endpoint: ep, MemberID: st.Header.MemberId, Leader: st.Leader, DBSize: st.DbSize, Version: st.Version, Errors: st.Errors}
	switch {
	case st.Leader == 0:
		return s, errors.New("no leader")
	case len(st.Errors) > 0:
		return s, errors.New(strings.Join(st.Errors, "; "))
	}
	return s, nil
}

// EtcdMembers lists the members through any of the endpoints.
func (p *NetProber) EtcdMembers(ctx context.Context, addresses []string) (map[uint64]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := p.etcdClient(ctx, etcdEndpoints(addresses))
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	out := map[uint64]string{}
	for _, m := range resp.Members {
		out[m.ID] = m.Name
	}
	return out, nil
}

func (p *NetProber) EtcdRejoin(ctx context.Context, addresses []string, name, peerURL string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, EtcdWait)
	defer cancel()
	cli, err := p.etcdClient(ctx, etcdEndpoints(addresses))
	if err != nil {
		return false, err
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return false, fmt.Errorf("etcd member list: %w", err)
	}
	for _, m := range list.Members {
		if !slices.Contains(m.PeerURLs, peerURL) {
			continue
		}
		if m.Name == "" {
			// Listed since the bootstrap but never started: it may start
			// now as the member it was meant to be.
			return false, nil
		}
		if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
			return false, fmt.Errorf("etcd member remove %s (%x): %w", name, m.ID, err)
		}
	}
	// etcd refuses a new voting member until the others have been
	// connected for 5s (its strict reconfig check): retry until then.
	for {
		_, err := cli.MemberAdd(ctx, []string{peerURL})
		if err == nil {
			return true, nil
		}
		if ctx.Err() != nil || !errors.Is(err, rpctypes.ErrUnhealthy) {
			return false, fmt.Errorf("etcd member add %s (%s): %w", name, peerURL, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (p *NetProber) APIServer(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/readyz: %s: %s", base, resp.Status, oneLine(string(body)))
	}
	return nil
}

// waitFor polls check every interval until it succeeds or timeout passes;
// the error is check's last one.
func waitFor(ctx context.Context, timeout, interval time.Duration, check func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		last = check(ctx)
		return last == nil, nil
	})
	if err == nil {
		return nil
	}
	if last == nil {
		last = err
	}
	return fmt.Errorf("not healthy after %s: %w", timeout, last)
}

package installer

import (
	"context"
	"path"
	"strings"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/controlplane/etcd"
	"kforge.dev/kforge/templates"
)

// etcdDataDir is the etcd role's data dir on a master.
const etcdDataDir = templates.StateDir + "/etcd"

// etcdRole is an embedded etcd member on every master. Members that are
// not running start together (a new cluster needs its quorum); restarts go
// one master at a time, each member healthy before the next.
var etcdRole = &Role{
	Name:        "etcd",
	Description: "kforge etcd member",
	Title:       "etcd members (quorum and health)",
	RunsOn:      onMasters,
	Config: func(cp *ControlPlane, h Host) (any, error) {
		var ic []string
		for _, m := range cp.Cluster.Masters() {
			ic = append(ic, m.Name+"="+etcdPeerURL(m.Address))
		}
		c := etcd.NewConfig()
		c.Name = h.Name()
		c.DataDir = etcdDataDir
		c.ListenPeerURLs = []string{etcdPeerURL(h.Address())}
		c.AdvertisePeerURLs = []string{etcdPeerURL(h.Address())}
		c.ListenClientURLs = []string{EtcdEndpoint(h.Address()), "https://127.0.0.1:2379"}
		c.AdvertiseClientURLs = []string{EtcdEndpoint(h.Address())}
		c.InitialCluster = strings.Join(ic, ",")
		// etcd reads the initial cluster only to bootstrap: a member with a
		// data dir ignores it, so "new" stays right on re-runs.
		c.InitialClusterState = etcd.ClusterStateNew
		c.InitialClusterToken = etcdClusterToken(cp.Cluster)
		c.TLS = etcd.TLS{
			CertFile: pkiPath("etcd-server.crt"), KeyFile: pkiPath("etcd-server.key"),
			PeerCertFile: pkiPath("etcd-peer.crt"), PeerKeyFile: pkiPath("etcd-peer.key"),
			TrustedCAFile: pkiPath("etcd-ca.crt"),
		}
		c.MetricsAddress = "127.0.0.1:2381"
		return c, nil
	},
	Parse:    func(data []byte) error { _, err := etcd.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"etcd-ca.crt", "etcd-server.crt", "etcd-server.key", "etcd-peer.crt", "etcd-peer.key"},
	// etcd's transport reads its serving and peer pairs on every
	// handshake.
	ReloadsCerts: []string{"etcd-server.crt", "etcd-server.key", "etcd-peer.crt", "etcd-peer.key"},
	Ports:        []int{2379, 2380},
	Health: func(ctx context.Context, cp *ControlPlane, h Host) error {
		_, err := cp.prober.EtcdMember(ctx, h.Address())
		return err
	},
	Wait:            EtcdWait,
	Serial:          true,
	RejoinWhenWiped: true,
}

// etcdClusterToken is the token a cluster's etcd bootstraps with.
func etcdClusterToken(c *v1alpha1.Cluster) string { return "kforge-" + c.Metadata.Name }

func etcdPeerURL(addr string) string { return "https://" + v1alpha1.HostPort(addr, 2380) }

// pkiPath is a file of the host's PKI folder.
func pkiPath(name string) string { return templates.PKIDir + "/" + name }

// etcdHostsWithData returns the hosts whose etcd data dir holds a member.
func etcdHostsWithData(ctx context.Context, hosts []Host) ([]Host, error) {
	has := make([]bool, len(hosts))
	err := ParallelEach(ctx, DefaultParallel, indexes(len(hosts)), func(ctx context.Context, i int) error {
		out, err := hosts[i].Run(ctx, "test -d "+etcdDataDir+"/member && echo data || echo empty")
		if err != nil {
			return hostError(hosts[i].Name(), err)
		}
		has[i] = strings.TrimSpace(out) == "data"
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Host
	for i, h := range hosts {
		if has[i] {
			out = append(out, h)
		}
	}
	return out, nil
}

// rejoinEtcd brings back a member whose data dir is empty while the
// members on withData have the cluster: through them it is removed and
// added anew (when the cluster knows it as a member that has run), the
// join marker makes it start as a member of the existing cluster, then
// start starts it and waits until it is healthy.
func (p *ServicePhase) rejoinEtcd(ctx context.Context, h Host, withData []Host, start func(context.Context, Host) (string, error)) (string, error) {
	cp := p.cp
	peerURL := "https://" + v1alpha1.HostPort(h.Address(), 2380)
	change := Change{Host: h.Name(), Kind: "etcd", Target: "member " + h.Name() + " (" + peerURL + ")",
		Detail: "removed and added again: its data dir is empty"}
	replaced := true
	if cp.Env.Gate.DryRun() {
		cp.Env.Gate.record(change)
	} else {
		var via []string
		for _, d := range withData {
			via = append(via, d.Address())
		}
		var err error
		if replaced, err = cp.prober.EtcdRejoin(ctx, via, h.Name(), peerURL); err != nil {
			return "", err
		}
		if replaced {
			cp.Env.Gate.record(change)
		}
	}
	if replaced {
		marker := etcd.JoinMarker(etcdDataDir)
		if _, err := cp.Env.Gate.Write(ctx, h, "install -d -m 0700 "+path.Dir(marker)+" && printf 'existing\\n' > "+marker,
			"mark etcd to join the existing cluster"); err != nil {
			return "", err
		}
	}
	msg, err := start(ctx, h)
	if replaced && err == nil {
		msg = "re-added to the etcd cluster; " + msg
	}
	return msg, err
}

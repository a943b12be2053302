package installer

import (
	"context"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/controlplane/apiserver"
)

// encryptionFileName is the Secrets encryption config in a master's PKI
// folder (pki.EncryptionKey makes it; each master gets the same).
const encryptionFileName = "encryption.yaml"

// apiserverRole is the Kubernetes API on every master's :6443, a client of
// the etcd members (its own first). Restarts go one master at a time, each
// ready before the next, so the load balancer always has one.
var apiserverRole = &Role{
	Name:        "apiserver",
	Description: "kforge apiserver",
	Title:       "apiservers (/readyz on each master)",
	RunsOn:      onMasters,
	Config: func(cp *ControlPlane, h Host) (any, error) {
		eps := []string{EtcdEndpoint(h.Address())} // its own member first
		for _, m := range cp.Cluster.Masters() {
			if m.Name != h.Name() {
				eps = append(eps, EtcdEndpoint(m.Address))
			}
		}
		c := apiserver.NewConfig()
		c.BindAddress = "0.0.0.0:6443"
		c.AdvertiseAddress = v1alpha1.HostPort(h.Address(), 6443)
		c.TLS = apiserver.ServingTLS{CertFile: pkiPath("apiserver.crt"), KeyFile: pkiPath("apiserver.key"), ClientCAFile: pkiPath("cluster-ca.crt")}
		c.Etcd.Endpoints = eps
		c.Etcd.CAFile = pkiPath("etcd-ca.crt")
		c.Etcd.CertFile = pkiPath("apiserver-etcd-client.crt")
		c.Etcd.KeyFile = pkiPath("apiserver-etcd-client.key")
		c.KubeletClient = apiserver.KubeletClient{CertFile: pkiPath("apiserver-kubelet-client.crt"), KeyFile: pkiPath("apiserver-kubelet-client.key")}
		c.ServiceCIDR = cp.Cluster.Spec.Network.ServiceCIDR
		c.ServiceAccount = apiserver.ServiceAccount{KeyFile: pkiPath("sa.key"), PublicKeyFile: pkiPath("sa.pub"),
			Issuer: "https://kubernetes.default.svc." + cp.Cluster.Spec.Network.ClusterDomain}
		c.Encryption.ProviderConfigFile = pkiPath(encryptionFileName)
		return c, nil
	},
	Parse: func(data []byte) error { _, err := apiserver.ParseConfig(data, "/"); return err },
	PKIFiles: []string{"cluster-ca.crt", "etcd-ca.crt", "apiserver.crt", "apiserver.key",
		"apiserver-etcd-client.crt", "apiserver-etcd-client.key", "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key",
		"sa.key", "sa.pub", encryptionFileName},
	// The serving and kubelet client certificates are polled
	// (certreload); the etcd client reads its pair per handshake.
	ReloadsCerts: []string{"apiserver.crt", "apiserver.key", "apiserver-etcd-client.crt", "apiserver-etcd-client.key",
		"apiserver-kubelet-client.crt", "apiserver-kubelet-client.key"},
	Ports: []int{6443},
	After: []string{"etcd"},
	Health: func(ctx context.Context, cp *ControlPlane, h Host) error {
		return cp.prober.APIServer(ctx, "https://"+v1alpha1.HostPort(h.Address(), 6443))
	},
	Wait:   APIServerWait,
	Serial: true,
}

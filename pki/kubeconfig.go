package pki

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// buildKubeconfig builds one kubeconfig with client-go's types, the CA
// and client certificate embedded, so it is one self-contained file.
func buildKubeconfig(inv *Inventory, kc *Kubeconfig, caPEM []byte, client *pair) ([]byte, error) {
	if client == nil {
		return nil, fmt.Errorf("kubeconfig %s: no client certificate %s", kc.Name, kc.Cert)
	}
	user := client.cert.Subject.CommonName
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[inv.ClusterName] = &clientcmdapi.Cluster{
		Server:                   kc.Server,
		CertificateAuthorityData: caPEM,
	}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{
		ClientCertificateData: client.certPEM,
		ClientKeyData:         client.keyPEM,
	}
	ctxName := user + "@" + inv.ClusterName
	cfg.Contexts[ctxName] = &clientcmdapi.Context{Cluster: inv.ClusterName, AuthInfo: user}
	cfg.CurrentContext = ctxName
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kc.Name, err)
	}
	return data, nil
}

// KubeconfigNames lists what KubeconfigFor accepts.
func (inv *Inventory) KubeconfigNames() []string {
	var out []string
	for _, kc := range inv.Kubeconfigs {
		out = append(out, kc.Name)
	}
	return out
}

// LookupKubeconfig finds a kubeconfig by user: "admin", "scheduler",
// "controller-manager", "proxy", "ingress", "dns", or an agent as
// "agent:NODE" or just the worker's name.
func (inv *Inventory) LookupKubeconfig(user string) (*Kubeconfig, error) {
	if kc := inv.Kubeconfig(user); kc != nil {
		return kc, nil
	}
	if kc := inv.Kubeconfig("agent:" + user); kc != nil {
		return kc, nil
	}
	return nil, fmt.Errorf("unknown kubeconfig user %q: one of %s, or a worker's name", user, strings.Join(inv.KubeconfigNames(), ", "))
}

// KubeconfigFor builds the kubeconfig for user (see LookupKubeconfig) from
// the certificates in the PKI directory, pointing at the server the
// current spec says. It fails with ErrNoPKI when they are not there, and
// when they no longer match the spec, rather than hand out a stale one.
func KubeconfigFor(inv *Inventory, user string) ([]byte, error) {
	kc, err := inv.LookupKubeconfig(user)
	if err != nil {
		return nil, err
	}
	spec := inv.Cert(kc.Cert)
	caSpec := inv.Cert(spec.CA)
	caPair, err := loadPair(inv.Path(caSpec.CertFile), inv.Path(caSpec.KeyFile))
	if err != nil {
		return nil, err
	}
	if caPair == nil {
		return nil, fmt.Errorf("%w in %s (%s is missing): run `kforge pki init -f cluster.yaml` first", ErrNoPKI, inv.Dir, caSpec.CertFile)
	}
	p, err := loadPair(inv.Path(spec.CertFile), inv.Path(spec.KeyFile))
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("%w for %s in %s (%s is missing): run `kforge pki init -f cluster.yaml` first", ErrNoPKI, kc.Name, inv.Dir, spec.CertFile)
	}
	if why := mismatch(spec, p.cert, caPair.cert, time.Now()); why != "" {
		return nil, fmt.Errorf("%s: %s: run `kforge pki init -f cluster.yaml` to reissue it", inv.Path(spec.CertFile), why)
	}
	return buildKubeconfig(inv, kc, caPair.certPEM, p)
}

package pki

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Names of the two certificate authorities.
const (
	ClusterCA = "cluster-ca" // signs the apiserver, every client of it, and the agents
	EtcdCA    = "etcd-ca"    // signs etcd's server and peer certs and its only client, the apiserver
)

// AgentLocalAPIServer is the node-local apiserver load balancer that every
// agent runs and that the agent's kubeconfig points at.
const AgentLocalAPIServer = "https://127.0.0.1:6444"

// Folders under the PKI directory. Everything under hosts/NAME/ is what
// goes to host NAME, and nothing else does.
const (
	caDir         = "ca"
	clientsDir    = "clients"
	kubeconfigDir = "kubeconfigs"
	hostsDir      = "hosts"
)

// Cert is one certificate of the inventory: a CA or a leaf, with everything
// needed to issue it, to check that an existing one still fits the spec,
// and to know where it goes.
type Cert struct {
	// Name says what the certificate is ("etcd-server", "admin",
	// "cluster-ca"). Per-host certificates share a name; Host tells them
	// apart. ID() is unique.
	Name string `json:"name"`
	// Host is the one host that owns the key of a per-host certificate;
	// empty for a CA and for a client certificate shared by a role.
	Host string `json:"host,omitempty"`
	// Hosts lists every host the certificate is deployed to, as a file or
	// embedded in a kubeconfig (for a CA, the certificate only, never its
	// key). Empty when it stays on the operator's machine (admin).
	Hosts []string `json:"hosts,omitempty"`
	// Where summarizes Hosts for people: the owner host, "masters",
	// "workers", "all" or "operator" (stays on the operator's machine).
	Where string `json:"where"`
	// Purpose is a short human description.
	Purpose string `json:"purpose"`
	// IsCA is true for the two CAs.
	IsCA bool `json:"isCA,omitempty"`
	// CA names the issuing CA of a leaf; empty for a CA (self-signed).
	CA string `json:"ca,omitempty"`

	CommonName   string   `json:"commonName"`
	Organization []string `json:"organization,omitempty"`
	DNSNames     []string `json:"dnsNames,omitempty"`
	IPAddresses  []string `json:"ipAddresses,omitempty"`
	// ExtKeyUsages are exactly the extended key usages the purpose needs:
	// server auth, client auth, or both for etcd peers. Empty for a CA.
	ExtKeyUsages []x509.ExtKeyUsage `json:"-"`
	// Validity is how long a newly issued certificate lasts.
	Validity time.Duration `json:"-"`

	// CertFile and KeyFile are slash-separated paths relative to the PKI
	// directory.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// ID is unique in an inventory: "HOST/NAME" for a per-host certificate,
// NAME otherwise.
func (c *Cert) ID() string {
	if c.Host != "" {
		return c.Host + "/" + c.Name
	}
	return c.Name
}

// Usages names the extended key usages ("server auth", "client auth").
func (c *Cert) Usages() []string {
	var out []string
	for _, u := range c.ExtKeyUsages {
		out = append(out, usageName(u))
	}
	return out
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "server auth"
	case x509.ExtKeyUsageClientAuth:
		return "client auth"
	}
	return fmt.Sprintf("ext-key-usage-%d", u)
}

// Kubeconfig is one kubeconfig file built from a client certificate.
type Kubeconfig struct {
	// Name is what `kforge kubeconfig --user` accepts: "admin",
	// "scheduler", ..., or "agent:NODE".
	Name string `json:"name"`
	// Cert is the ID of the client certificate embedded in it.
	Cert string `json:"cert"`
	// Server is the apiserver URL: the load balancer, or the node-local
	// load balancer for an agent.
	Server string `json:"server"`
	// File is where the kubeconfig is written, relative to the PKI directory.
	File string `json:"file"`
	// Hosts are the hosts it is deployed to.
	Hosts []string `json:"hosts,omitempty"`
}

// FileKind says what a file under the PKI directory holds.
type FileKind string

// Kinds of files.
const (
	KindCert       FileKind = "cert"
	KindKey        FileKind = "key"
	KindPublicKey  FileKind = "public-key"
	KindKubeconfig FileKind = "kubeconfig"
)

// File is one file of a host's folder (hosts/NAME/...): what the installer
// copies to that host, usually to /etc/kforge/pki/.
type File struct {
	// Path is slash-separated, relative to the PKI directory.
	Path string `json:"path"`
	// Kind says what it holds.
	Kind FileKind `json:"kind"`
	// Secret files (keys, kubeconfigs) are mode 0600; others 0644.
	Secret bool `json:"secret"`
	// Source is, for a copy, the path of the original it is kept equal
	// to (a CA certificate, the service-account key pair, a shared
	// kubeconfig); empty for the host's own files.
	Source string `json:"source,omitempty"`
}

// Inventory is the whole PKI for one cluster spec: every certificate, key
// pair and kubeconfig, where each lives under Dir, and what goes to each
// host. It is computed from the spec alone; Init makes the files match it.
type Inventory struct {
	// Dir is the PKI directory (absolute).
	Dir string `json:"dir"`
	// ClusterName is metadata.name, used as the kubeconfig cluster name.
	ClusterName string `json:"clusterName"`
	// Certs lists the CAs first, then the shared client certificates,
	// then each host's certificates in spec order.
	Certs []Cert `json:"certs"`
	// ServiceAccountKey and ServiceAccountPub are the service-account
	// signing key pair (ECDSA P-256, for ES256 tokens).
	ServiceAccountKey string `json:"serviceAccountKey"`
	ServiceAccountPub string `json:"serviceAccountPub"`
	// Kubeconfigs lists every kubeconfig.
	Kubeconfigs []Kubeconfig `json:"kubeconfigs"`
	// HostFiles maps a host name to the files of its folder.
	HostFiles map[string][]File `json:"hostFiles"`
	// Hosts are the host names with a folder, in spec order.
	Hosts []string `json:"hosts"`
}

// Cert returns the certificate with this ID, or nil.
func (inv *Inventory) Cert(id string) *Cert {
	for i := range inv.Certs {
		if inv.Certs[i].ID() == id {
			return &inv.Certs[i]
		}
	}
	return nil
}

// Kubeconfig returns the kubeconfig with this name, or nil.
func (inv *Inventory) Kubeconfig(name string) *Kubeconfig {
	for i := range inv.Kubeconfigs {
		if inv.Kubeconfigs[i].Name == name {
			return &inv.Kubeconfigs[i]
		}
	}
	return nil
}

// FilesFor returns the files that go to one host (its hosts/NAME/ folder).
func (inv *Inventory) FilesFor(host string) []File { return inv.HostFiles[host] }

// Path turns a slash-separated path relative to Dir into a local path.
func (inv *Inventory) Path(rel string) string { return filepath.Join(inv.Dir, filepath.FromSlash(rel)) }

// NewInventory computes the inventory for a cluster. dir overrides
// s.Dir when not empty.
func NewInventory(s Spec, dir string) (*Inventory, error) {
	if dir == "" {
		dir = s.Dir
	}
	if dir == "" {
		return nil, fmt.Errorf("no PKI directory: spec.pki.dir is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving PKI directory %s: %w", dir, err)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	caValidity, certValidity := s.CAValidity, s.CertValidity
	svcIP, server := s.KubernetesServiceIP, s.APIServerURL

	masters, workers := s.withRole(RoleMaster), s.withRole(RoleWorker)
	masterNames, workerNames := names(masters), names(workers)
	lbs := s.withRole(RoleLoadBalancer)
	var all []string
	for _, h := range s.Hosts {
		switch h.Role {
		case RoleMaster, RoleWorker, RoleLoadBalancer:
			all = append(all, h.Name)
		}
	}

	inv := &Inventory{
		Dir:               abs,
		ClusterName:       s.ClusterName,
		ServiceAccountKey: caDir + "/sa.key",
		ServiceAccountPub: caDir + "/sa.pub",
		HostFiles:         map[string][]File{},
		Hosts:             all,
	}
	server2 := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

	ca := func(name, cn, purpose string, hosts []string) {
		inv.Certs = append(inv.Certs, Cert{
			Name: name, Hosts: hosts, Purpose: purpose, IsCA: true,
			CommonName: cn, Organization: []string{"kforge:" + s.ClusterName},
			Validity: caValidity,
			CertFile: caDir + "/" + name + ".crt", KeyFile: caDir + "/" + name + ".key",
		})
	}
	ca(ClusterCA, "kforge-cluster-ca", "cluster CA: apiserver, its clients, agents", all)
	ca(EtcdCA, "kforge-etcd-ca", "etcd CA: etcd members and the apiserver's etcd client", masterNames)

	// Client certificates one role shares on every host that runs it. The
	// worker roles reach the API through the agent's node-local load
	// balancer, the others through the cluster's.
	shared := func(name, cn string, org []string, purpose string, hosts []string) {
		server := server
		if len(hosts) > 0 && slices.Equal(hosts, workerNames) {
			server = AgentLocalAPIServer
		}
		inv.Certs = append(inv.Certs, Cert{
			Name: name, Hosts: hosts, Purpose: purpose, CA: ClusterCA,
			CommonName: cn, Organization: org, ExtKeyUsages: client, Validity: certValidity,
			CertFile: clientsDir + "/" + name + ".crt", KeyFile: clientsDir + "/" + name + ".key",
		})
		inv.Kubeconfigs = append(inv.Kubeconfigs, Kubeconfig{
			Name: name, Cert: name, Server: server, Hosts: hosts,
			File: kubeconfigDir + "/" + name + ".kubeconfig",
		})
	}
	shared("admin", "kubernetes-admin", []string{"system:masters"}, "cluster admin client (kubectl)", nil)
	shared("scheduler", "system:kube-scheduler", nil, "scheduler client", masterNames)
	shared("controller-manager", "system:kube-controller-manager", nil, "controller-manager client", masterNames)
	shared("proxy", "system:kube-proxy", nil, "service proxy client", workerNames)
	shared("ingress", "system:kforge:ingress", nil, "ingress controller client", workerNames)
	shared("dns", "system:kforge:dns", nil, "cluster DNS client", workerNames)

	// The apiserver serves on its own address and behind the LB, and as
	// the "kubernetes" Service from inside the cluster.
	apiDNS := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + s.ClusterDomain, "localhost"}
	var apiHosts []string
	if a := s.LoadBalancerAddress; a != "" {
		apiHosts = append(apiHosts, a)
	}
	for _, m := range masters {
		apiHosts = append(apiHosts, m.Address)
	}
	apiHosts = append(apiHosts, svcIP.String(), "127.0.0.1")
	apiHosts = append(apiHosts, apiDNS...)

	own := func(h Host, name, ca, cn string, org []string, purpose string, eku []x509.ExtKeyUsage, sans []string) {
		dns, ips := splitSANs(sans)
		base := hostsDir + "/" + h.Name + "/" + name
		inv.Certs = append(inv.Certs, Cert{
			Name: name, Host: h.Name, Hosts: []string{h.Name}, Purpose: purpose, CA: ca,
			CommonName: cn, Organization: org, DNSNames: dns, IPAddresses: ips,
			ExtKeyUsages: eku, Validity: certValidity,
			CertFile: base + ".crt", KeyFile: base + ".key",
		})
	}
	for _, m := range masters {
		local := []string{m.Name, "localhost", m.Address, "127.0.0.1"}
		own(m, "etcd-server", EtcdCA, m.Name, nil, "etcd client API server (:2379)", server2, local)
		own(m, "etcd-peer", EtcdCA, m.Name, nil, "etcd peer (:2380), server and client", both, local)
		own(m, "apiserver", ClusterCA, "kube-apiserver", nil, "apiserver serving (:6443 and the LB)", server2, apiHosts)
		own(m, "apiserver-etcd-client", EtcdCA, "kforge:apiserver-etcd-client", nil, "apiserver client of etcd", client, nil)
		own(m, "apiserver-kubelet-client", ClusterCA, "kforge:apiserver-kubelet-client", nil, "apiserver client of the agents (:10250)", client, nil)
	}
	for _, w := range workers {
		own(w, "agent-client", ClusterCA, "system:node:"+w.Name, []string{"system:nodes"}, "agent (kubelet) client", client, nil)
		own(w, "agent-server", ClusterCA, w.Name, nil, "agent API serving (:10250)", server2, []string{w.Name, w.Address})
		inv.Kubeconfigs = append(inv.Kubeconfigs, Kubeconfig{
			Name: "agent:" + w.Name, Cert: w.Name + "/agent-client", Server: AgentLocalAPIServer,
			File: hostsDir + "/" + w.Name + "/agent.kubeconfig", Hosts: []string{w.Name},
		})
	}

	// Each host's folder: copies of the CA certs (never a CA key) and of
	// what its roles share, then its own certs and keys.
	copyCA := func(host, ca string) File {
		return File{Path: hostsDir + "/" + host + "/" + ca + ".crt", Kind: KindCert, Source: caDir + "/" + ca + ".crt"}
	}
	kubeconfigCopy := func(host, name string) File {
		return File{Path: hostsDir + "/" + host + "/" + name + ".kubeconfig", Kind: KindKubeconfig, Secret: true, Source: kubeconfigDir + "/" + name + ".kubeconfig"}
	}
	ownFiles := func(host string) []File {
		var out []File
		for _, ct := range inv.Certs {
			if ct.Host == host {
				out = append(out,
					File{Path: ct.CertFile, Kind: KindCert},
					File{Path: ct.KeyFile, Kind: KindKey, Secret: true})
			}
		}
		return out
	}
	for _, m := range masters {
		fs := []File{
			copyCA(m.Name, ClusterCA), copyCA(m.Name, EtcdCA),
			{Path: hostsDir + "/" + m.Name + "/sa.key", Kind: KindKey, Secret: true, Source: inv.ServiceAccountKey},
			{Path: hostsDir + "/" + m.Name + "/sa.pub", Kind: KindPublicKey, Source: inv.ServiceAccountPub},
		}
		fs = append(fs, ownFiles(m.Name)...)
		fs = append(fs, kubeconfigCopy(m.Name, "scheduler"), kubeconfigCopy(m.Name, "controller-manager"))
		inv.HostFiles[m.Name] = fs
	}
	for _, w := range workers {
		fs := []File{copyCA(w.Name, ClusterCA)}
		fs = append(fs, ownFiles(w.Name)...)
		fs = append(fs,
			File{Path: hostsDir + "/" + w.Name + "/agent.kubeconfig", Kind: KindKubeconfig, Secret: true},
			kubeconfigCopy(w.Name, "proxy"), kubeconfigCopy(w.Name, "ingress"), kubeconfigCopy(w.Name, "dns"))
		inv.HostFiles[w.Name] = fs
	}
	for i := range inv.Certs {
		inv.Certs[i].Where = where(&inv.Certs[i], masterNames, workerNames, all)
	}
	// The load balancer only needs the cluster CA, to check the
	// apiservers' /readyz over TLS.
	for _, l := range lbs {
		inv.HostFiles[l.Name] = []File{copyCA(l.Name, ClusterCA)}
	}
	return inv, nil
}

func where(c *Cert, masters, workers, all []string) string {
	switch {
	case c.Host != "":
		return c.Host
	case len(c.Hosts) == 0:
		return "operator"
	case slices.Equal(c.Hosts, all):
		return "all"
	case slices.Equal(c.Hosts, masters):
		return "masters"
	case slices.Equal(c.Hosts, workers):
		return "workers"
	}
	return strings.Join(c.Hosts, ",")
}

func names(hs []Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}

// splitSANs sorts subject alternative names into DNS names and IP
// addresses, dropping duplicates but keeping order.
func splitSANs(sans []string) (dns, ips []string) {
	seen := map[string]bool{}
	for _, s := range sans {
		if a, err := netip.ParseAddr(s); err == nil {
			s = a.Unmap().String()
			if !seen[s] {
				ips = append(ips, s)
			}
		} else if !seen[strings.ToLower(s)] {
			s = strings.ToLower(s)
			dns = append(dns, s)
		}
		seen[s] = true
	}
	return dns, ips
}

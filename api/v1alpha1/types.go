package v1alpha1

// APIVersion and Kind identify a cluster.yaml document.
const (
	APIVersion = "kforge.dev/v1alpha1"
	Kind       = "Cluster"
)

// Host roles.
const (
	RoleMaster       = "master"
	RoleWorker       = "worker"
	RoleLoadBalancer = "loadbalancer"
)

// Defaults applied by Load when a field is left out.
const (
	DefaultSSHUser       = "root"
	DefaultSSHPort       = 22
	DefaultLBPort        = 6443
	DefaultClusterDomain = "cluster.local"
	DefaultCAValidity    = "87600h"
	DefaultCertValidity  = "8760h"
	DefaultPKIDir        = "./pki"
)

// Cluster is the whole cluster.yaml document.
type Cluster struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	Spec       Spec     `yaml:"spec" json:"spec"`

	// Path is the file the cluster was loaded from (empty when built in code).
	// Relative paths in the spec have already been resolved against its folder.
	Path string `yaml:"-" json:"-"`

	// lines maps field paths to their line in the file, for errors.
	lines map[string]int
}

// Metadata names the cluster.
type Metadata struct {
	Name string `yaml:"name" json:"name"`
}

// Spec describes the hosts and how to reach and configure them.
type Spec struct {
	SSH          SSH          `yaml:"ssh" json:"ssh"`
	LoadBalancer LoadBalancer `yaml:"loadBalancer,omitempty" json:"loadBalancer,omitempty"`
	Hosts        []Host       `yaml:"hosts" json:"hosts"`
	Network      Network      `yaml:"network" json:"network"`
	PKI          PKI          `yaml:"pki" json:"pki"`
	// AllowEvenMasters accepts an even number of masters. etcd needs a
	// majority, so 4 masters tolerate no more failures than 3.
	AllowEvenMasters bool `yaml:"allowEvenMasters,omitempty" json:"allowEvenMasters,omitempty"`
}

// SSH says how the installer logs in to hosts. Every field may be
// overridden per host.
type SSH struct {
	User         string `yaml:"user,omitempty" json:"user,omitempty"`
	Port         int    `yaml:"port,omitempty" json:"port,omitempty"`
	IdentityFile string `yaml:"identityFile,omitempty" json:"identityFile,omitempty"`
	KnownHosts   string `yaml:"knownHosts,omitempty" json:"knownHosts,omitempty"`
	// SudoPasswordEnv names an environment variable holding the sudo
	// password for a non-root user whose sudo asks for one.
	SudoPasswordEnv string `yaml:"sudoPasswordEnv,omitempty" json:"sudoPasswordEnv,omitempty"`
	// Bastion is an optional jump host, "user@host:port".
	Bastion string `yaml:"bastion,omitempty" json:"bastion,omitempty"`
}

// LoadBalancer is the address clients use to reach the apiservers.
type LoadBalancer struct {
	Address string `yaml:"address,omitempty" json:"address,omitempty"`
	Port    int    `yaml:"port,omitempty" json:"port,omitempty"`
	// Host names the host (role loadbalancer) that runs `kforge lb`.
	// Empty for an external load balancer.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
}

// Host is one machine of the cluster.
type Host struct {
	Name    string `yaml:"name" json:"name"`
	Address string `yaml:"address" json:"address"`
	Role    string `yaml:"role" json:"role"`
	// SSH overrides spec.ssh for this host; empty fields inherit.
	SSH *SSH `yaml:"ssh,omitempty" json:"ssh,omitempty"`
}

// Network holds the cluster's address ranges.
type Network struct {
	PodCIDR       string `yaml:"podCIDR" json:"podCIDR"`
	ServiceCIDR   string `yaml:"serviceCIDR" json:"serviceCIDR"`
	ClusterDomain string `yaml:"clusterDomain,omitempty" json:"clusterDomain,omitempty"`
}

// PKI says where the certificates live and how long they last.
type PKI struct {
	Dir          string `yaml:"dir,omitempty" json:"dir,omitempty"`
	CAValidity   string `yaml:"caValidity,omitempty" json:"caValidity,omitempty"`
	CertValidity string `yaml:"certValidity,omitempty" json:"certValidity,omitempty"`
}

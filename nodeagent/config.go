package nodeagent

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/lb"
	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify an agent role config document.
const (
	APIVersion = "kforge.dev/v1alpha1"
	Kind       = "AgentConfig"
)

// DefaultConfigPath is where the role config lives on a worker.
const DefaultConfigPath = "/etc/kforge/agent.yaml"

// Defaults applied by NewConfig.
const (
	DefaultContainerdSocket = "/run/containerd/containerd.sock"
	DefaultContainerdNS     = "k8s.io"
	DefaultSnapshotter      = "overlayfs"
	DefaultRootDir          = "/var/lib/kforge/agent"
	DefaultRunDir           = "/run/kforge/agent"
	DefaultPodLogDir        = "/var/log/pods"
	DefaultImageDir         = "/var/lib/kforge/images"
	// DefaultRegistryConfigDir is containerd's own registry host
	// configuration (HOST/hosts.toml: mirrors, plain HTTP, CAs).
	DefaultRegistryConfigDir = "/etc/containerd/certs.d"
	DefaultCNIConfDir        = "/etc/cni/net.d"
	DefaultCNIBridge         = "cni0"
	DefaultClusterDomain     = "cluster.local"
	DefaultHealthAddress     = "127.0.0.1:10248"
	DefaultMaxPods           = 110
	DefaultLeaseDuration     = 40 * time.Second
	DefaultLeaseRenew        = 10 * time.Second
	DefaultStatusUpdate      = 10 * time.Second
	DefaultStatusReport      = time.Minute
	DefaultPodCIDRSourceNode = PodCIDRFromNode
	// DefaultServerAddress is the agent API's listener, upstream's
	// kubelet port.
	DefaultServerAddress = "0.0.0.0:10250"
	// DefaultContainerLogMaxSize and DefaultContainerLogMaxFiles bound a
	// container's log files, as upstream's kubelet defaults.
	DefaultContainerLogMaxSize  = "10Mi"
	DefaultContainerLogMaxFiles = 5
)

// DefaultCNIBinDirs are searched in order: upstream's folder, then
// Debian's (containernetworking-plugins installs into /usr/lib/cni).
var DefaultCNIBinDirs = []string{"/opt/cni/bin", "/usr/lib/cni"}

// Pod CIDR sources.
const (
	// PodCIDRFromNode waits for node IPAM to set spec.podCIDR.
	PodCIDRFromNode = "node"
	// PodCIDRStatic uses Config.PodCIDR.
	PodCIDRStatic = "static"
)

// Config is the agent role's configuration, read from
// /etc/kforge/agent.yaml. Build one with NewConfig (defaults) or
// LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// NodeName is the Node this agent registers and runs pods for; the
	// host name when empty.
	NodeName string `yaml:"nodeName" json:"nodeName"`
	// NodeAddress is the node's InternalIP, also each pod's hostIP.
	NodeAddress string `yaml:"nodeAddress" json:"nodeAddress"`
	// NodeLabels are added to the Node's labels at registration.
	NodeLabels map[string]string `yaml:"nodeLabels" json:"nodeLabels"`
	// Kubeconfig is the agent's client identity (system:node:NAME);
	// relative to the config file's folder.
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`

	Containerd Containerd `yaml:"containerd" json:"containerd"`
	CNI        CNI        `yaml:"cni" json:"cni"`

	// PodCIDRSource is "node" (wait for spec.podCIDR from node IPAM) or
	// "static" (use PodCIDR).
	PodCIDRSource string `yaml:"podCIDRSource" json:"podCIDRSource"`
	// PodCIDR is the node's pod range when PodCIDRSource is "static".
	PodCIDR string `yaml:"podCIDR" json:"podCIDR"`

	// ClusterDNS is the cluster DNS Service's address, the nameserver of
	// pods with dnsPolicy ClusterFirst; empty gives them the node's
	// resolv.conf as upstream does without one.
	ClusterDNS string `yaml:"clusterDNS" json:"clusterDNS"`
	// ClusterDomain is the cluster's DNS domain.
	ClusterDomain string `yaml:"clusterDomain" json:"clusterDomain"`
	// ResolvConf is the node's resolver file, used for dnsPolicy Default.
	ResolvConf string `yaml:"resolvConf" json:"resolvConf"`

	// Reserved is subtracted from capacity to give allocatable (cpu,
	// memory, ephemeral-storage, pods as quantities).
	Reserved map[string]string `yaml:"reserved" json:"reserved"`
	// MaxPods is the node's pods capacity.
	MaxPods int `yaml:"maxPods" json:"maxPods"`

	// RootDir holds the agent's state: pods/UID/ (volumes, the sandbox
	// record, etc-hosts, resolv.conf) and cni/ (IPAM and result caches).
	RootDir string `yaml:"rootDir" json:"rootDir"`
	// RunDir holds the pods' network namespace mounts (netns/).
	RunDir string `yaml:"runDir" json:"runDir"`
	// PodLogDir holds container logs: NS_NAME_UID/CONTAINER/N.log.
	PodLogDir string `yaml:"podLogDir" json:"podLogDir"`
	// ImageDir holds OCI image archives (*.tar) imported when a pod needs
	// an image containerd does not have.
	ImageDir string `yaml:"imageDir" json:"imageDir"`
	// RegistryConfigDir holds per-registry host configuration in
	// containerd's hosts.toml layout (REGISTRY/hosts.toml and
	// certificates), read when the agent pulls an image. A registry with
	// no folder is reached over HTTPS (plain HTTP for localhost:PORT).
	RegistryConfigDir string `yaml:"registryConfigDir" json:"registryConfigDir"`

	// HealthAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics; empty disables it.
	HealthAddress string `yaml:"healthAddress" json:"healthAddress"`

	// Server is the agent API (logs, exec, attach, port-forward, stats)
	// over HTTPS; off without a certificate.
	Server Server `yaml:"server,omitempty" json:"server,omitempty"`

	// ContainerLogMaxSize is the size (a quantity: 10Mi) past which a
	// container's log file is rotated.
	ContainerLogMaxSize string `yaml:"containerLogMaxSize" json:"containerLogMaxSize"`
	// ContainerLogMaxFiles is how many log files a container keeps, the
	// current one included.
	ContainerLogMaxFiles int `yaml:"containerLogMaxFiles" json:"containerLogMaxFiles"`

	// APIServerProxy is the node-local load balancer for the apiservers
	// that the agent's kubeconfig points at; off without backends.
	APIServerProxy APIServerProxy `yaml:"apiServerProxy,omitempty" json:"apiServerProxy,omitempty"`

	// LeaseDuration is the node Lease's leaseDurationSeconds.
	LeaseDuration time.Duration `yaml:"leaseDuration" json:"leaseDuration"`
	// LeaseRenewInterval is how often the Lease is renewed.
	LeaseRenewInterval time.Duration `yaml:"leaseRenewInterval" json:"leaseRenewInterval"`
	// StatusUpdateInterval is how often node status is computed (and
	// written when it changed).
	StatusUpdateInterval time.Duration `yaml:"statusUpdateInterval" json:"statusUpdateInterval"`
	// StatusReportInterval is the longest the node status goes unwritten.
	StatusReportInterval time.Duration `yaml:"statusReportInterval" json:"statusReportInterval"`

	// Version is the kubelet version the Node reports; the binary sets it.
	Version string `yaml:"-" json:"-"`

	// serverPort is the agent API's bound port, published in the Node's
	// status.daemonEndpoints; 0 without the API.
	serverPort int32
}

// Server configures the agent API: HTTPS with the agent's serving
// certificate; clients present certificates signed by ClientCAFile and
// are authorized by the apiserver (SubjectAccessReview).
type Server struct {
	// Address is host:port of the listener; 0.0.0.0:10250 by default.
	Address string `yaml:"address,omitempty" json:"address,omitempty"`
	// CertFile and KeyFile are the serving certificate; the API is off
	// without them.
	CertFile string `yaml:"certFile,omitempty" json:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	// ClientCAFile is the cluster CA, which signs the clients'
	// certificates (the apiserver's kubelet client, admins).
	ClientCAFile string `yaml:"clientCAFile,omitempty" json:"clientCAFile,omitempty"`
}

// Enabled reports whether the agent API is configured.
func (s Server) Enabled() bool { return s.CertFile != "" }

// Containerd says how to reach the container runtime.
type Containerd struct {
	// Socket is containerd's gRPC socket.
	Socket string `yaml:"socket" json:"socket"`
	// Namespace is the containerd namespace the agent's containers live in.
	Namespace string `yaml:"namespace" json:"namespace"`
	// Snapshotter unpacks images and makes root filesystems.
	Snapshotter string `yaml:"snapshotter" json:"snapshotter"`
}

// CNI configures pod networking through CNI plugins.
type CNI struct {
	// BinDirs are searched for plugin binaries, in order.
	BinDirs []string `yaml:"binDirs" json:"binDirs"`
	// ConfDir receives the agent's network list, written once the pod CIDR
	// is known.
	ConfDir string `yaml:"confDir" json:"confDir"`
	// Bridge is the node's pod bridge; its first address is the pods'
	// gateway.
	Bridge string `yaml:"bridge" json:"bridge"`
	// MTU of the bridge and pod interfaces; 0 lets the plugin choose.
	MTU int `yaml:"mtu" json:"mtu"`
	// Masquerade NATs traffic from pods to outside the pod range: the
	// cluster's (ClusterCIDR) when set, else the node's.
	Masquerade bool `yaml:"masquerade" json:"masquerade"`
	// ClusterCIDR is the whole cluster's pod range, of which each node's
	// pod CIDR is a part. When set, the agent routes every other node's pod
	// CIDR to that node's InternalIP and masquerades only traffic leaving
	// this range (its own nftables table), so pods on different nodes see
	// each other's addresses. Empty leaves routing between nodes to the
	// network, and the bridge plugin masquerades everything leaving the
	// node's pod CIDR.
	ClusterCIDR string `yaml:"clusterCIDR,omitempty" json:"clusterCIDR,omitempty"`
}

// NewConfig returns a Config with every default filled in. Kubeconfig and
// NodeAddress have no default.
func NewConfig() *Config {
	return &Config{
		APIVersion: APIVersion,
		Kind:       Kind,
		Containerd: Containerd{Socket: DefaultContainerdSocket, Namespace: DefaultContainerdNS, Snapshotter: DefaultSnapshotter},
		CNI: CNI{BinDirs: append([]string(nil), DefaultCNIBinDirs...), ConfDir: DefaultCNIConfDir,
			Bridge: DefaultCNIBridge, Masquerade: true},
		PodCIDRSource:        DefaultPodCIDRSourceNode,
		ClusterDomain:        DefaultClusterDomain,
		ResolvConf:           "/etc/resolv.conf",
		MaxPods:              DefaultMaxPods,
		RootDir:              DefaultRootDir,
		RunDir:               DefaultRunDir,
		PodLogDir:            DefaultPodLogDir,
		ImageDir:             DefaultImageDir,
		RegistryConfigDir:    DefaultRegistryConfigDir,
		HealthAddress:        DefaultHealthAddress,
		Server:               Server{Address: DefaultServerAddress},
		ContainerLogMaxSize:  DefaultContainerLogMaxSize,
		ContainerLogMaxFiles: DefaultContainerLogMaxFiles,
		LeaseDuration:        DefaultLeaseDuration,
		LeaseRenewInterval:   DefaultLeaseRenew,
		StatusUpdateInterval: DefaultStatusUpdate,
		StatusReportInterval: DefaultStatusReport,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults
// (an unknown field is an error), resolves relative paths against the
// file's folder and validates the result.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("agent", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("agent", data, baseDir, NewConfig)
}

// FilePaths points at the fields holding a file path resolved against the
// config file's folder.
func (c *Config) FilePaths() []*string {
	return []*string{&c.Kubeconfig, &c.APIServerProxy.CAFile, &c.Server.CertFile, &c.Server.KeyFile, &c.Server.ClientCAFile}
}

// DefaultAPIServerProxyAddress is where the node-local load balancer
// listens: the address the agent's kubeconfig names.
const DefaultAPIServerProxyAddress = "127.0.0.1:6444"

// APIServerProxy configures the node-local apiserver load balancer: the
// lb role's balancer embedded in the agent, with the same active /readyz
// checks, so the node keeps reaching the API while any apiserver answers
// even when the cluster's own load balancer is down.
type APIServerProxy struct {
	// ListenAddress defaults to 127.0.0.1:6444.
	ListenAddress string `yaml:"listenAddress,omitempty" json:"listenAddress,omitempty"`
	// Backends are the apiservers, host:port.
	Backends []string `yaml:"backends,omitempty" json:"backends,omitempty"`
	// CAFile verifies the apiservers' certificates in the health checks.
	CAFile string `yaml:"caFile,omitempty" json:"caFile,omitempty"`
}

// lbConfig is the embedded balancer's config: no metrics listener of its
// own (the agent's /metrics is the node's).
func (p APIServerProxy) lbConfig() *lb.Config {
	c := lb.NewConfig()
	c.ListenAddress = p.ListenAddress
	if c.ListenAddress == "" {
		c.ListenAddress = DefaultAPIServerProxyAddress
	}
	c.Backends = p.Backends
	c.HealthCheck.CAFile = p.CAFile
	c.MetricsAddress = ""
	return c
}

// reservedResources are the names Reserved accepts.
var reservedResources = []string{"cpu", "memory", "ephemeral-storage", "pods"}

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects.
func (c *Config) Validate() field.ErrorList {
	var errs field.ErrorList
	add := func(f, format string, args ...any) {
		errs = append(errs, field.Invalid(field.NewPath(f), nil, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)...)
	if p := c.APIServerProxy; len(p.Backends) > 0 {
		for _, e := range p.lbConfig().Validate() {
			e.Field = "apiServerProxy." + e.Field
			errs = append(errs, e)
		}
	} else if p.CAFile != "" || p.ListenAddress != "" {
		errs = append(errs, field.Required(field.NewPath("apiServerProxy", "backends"), "the proxy needs at least one apiserver"))
	}
	if c.Kubeconfig == "" {
		errs = append(errs, field.Required(field.NewPath("kubeconfig"), ""))
	}
	if c.NodeAddress == "" {
		errs = append(errs, field.Required(field.NewPath("nodeAddress"), "the node's InternalIP"))
	} else if net.ParseIP(c.NodeAddress) == nil {
		add("nodeAddress", "%q is not an IP address", c.NodeAddress)
	}
	if c.Containerd.Socket == "" {
		add("containerd.socket", "is required")
	}
	if c.Containerd.Namespace == "" {
		add("containerd.namespace", "is required")
	}
	if c.Containerd.Snapshotter == "" {
		add("containerd.snapshotter", "is required")
	}
	if len(c.CNI.BinDirs) == 0 {
		add("cni.binDirs", "needs at least one folder")
	}
	if c.CNI.ConfDir == "" {
		add("cni.confDir", "is required")
	}
	if c.CNI.Bridge == "" || len(c.CNI.Bridge) > 15 {
		add("cni.bridge", "must be an interface name of 1 to 15 characters")
	}
	if c.CNI.MTU < 0 {
		add("cni.mtu", "must not be negative")
	}
	if c.CNI.ClusterCIDR != "" {
		if p, err := netip.ParsePrefix(c.CNI.ClusterCIDR); err != nil {
			add("cni.clusterCIDR", "%q is not a CIDR", c.CNI.ClusterCIDR)
		} else if !p.Addr().Is4() {
			add("cni.clusterCIDR", "%q: only IPv4 pod ranges are supported", c.CNI.ClusterCIDR)
		}
	}
	switch c.PodCIDRSource {
	case PodCIDRFromNode:
		if c.PodCIDR != "" {
			add("podCIDR", "is only used with podCIDRSource %q", PodCIDRStatic)
		}
	case PodCIDRStatic:
		if _, n, err := net.ParseCIDR(c.PodCIDR); err != nil {
			add("podCIDR", "%q is not a CIDR", c.PodCIDR)
		} else if n.IP.To4() == nil {
			add("podCIDR", "%q: only IPv4 pod ranges are supported", c.PodCIDR)
		}
	default:
		add("podCIDRSource", "must be %q or %q, not %q", PodCIDRFromNode, PodCIDRStatic, c.PodCIDRSource)
	}
	if c.ClusterDNS != "" && net.ParseIP(c.ClusterDNS) == nil {
		add("clusterDNS", "%q is not an IP address", c.ClusterDNS)
	}
	if c.ClusterDomain == "" {
		add("clusterDomain", "is required")
	}
	for name, q := range c.Reserved {
		if !contains(reservedResources, name) {
			add("reserved."+name, "unknown resource (known: %v)", reservedResources)
		} else if v, err := resource.ParseQuantity(q); err != nil {
			add("reserved."+name, "%q is not a quantity: %v", q, err)
		} else if v.Sign() < 0 {
			add("reserved."+name, "must not be negative")
		}
	}
	if c.MaxPods < 1 {
		add("maxPods", "must be at least 1")
	}
	for _, d := range []struct{ field, path string }{
		{"rootDir", c.RootDir}, {"runDir", c.RunDir}, {"podLogDir", c.PodLogDir}, {"imageDir", c.ImageDir},
		{"registryConfigDir", c.RegistryConfigDir},
	} {
		if d.path == "" || !filepath.IsAbs(d.path) {
			add(d.field, "must be an absolute path, not %q", d.path)
		}
	}
	if c.HealthAddress != "" {
		if err := roleconfig.CheckListenAddress(c.HealthAddress); err != nil {
			add("healthAddress", "%v", err)
		}
	}
	if srv := c.Server; srv.Enabled() || srv.KeyFile != "" || srv.ClientCAFile != "" {
		if srv.CertFile == "" || srv.KeyFile == "" || srv.ClientCAFile == "" {
			add("server", "certFile, keyFile and clientCAFile go together")
		}
		if err := roleconfig.CheckListenAddress(srv.Address); err != nil {
			add("server.address", "%v", err)
		}
	}
	if q, err := resource.ParseQuantity(c.ContainerLogMaxSize); err != nil {
		add("containerLogMaxSize", "%q is not a quantity: %v", c.ContainerLogMaxSize, err)
	} else if q.Value() < 1024 {
		add("containerLogMaxSize", "must be at least 1Ki")
	}
	if c.ContainerLogMaxFiles < 1 {
		add("containerLogMaxFiles", "must be at least 1")
	}
	if c.LeaseDuration < time.Second {
		add("leaseDuration", "must be at least 1s")
	}
	if c.LeaseRenewInterval <= 0 || c.LeaseRenewInterval >= c.LeaseDuration {
		add("leaseRenewInterval", "must be positive and shorter than leaseDuration")
	}
	if c.StatusUpdateInterval <= 0 {
		add("statusUpdateInterval", "must be positive")
	}
	if c.StatusReportInterval < c.StatusUpdateInterval {
		add("statusReportInterval", "must not be shorter than statusUpdateInterval")
	}
	return errs
}

// containerLogMaxBytes is ContainerLogMaxSize in bytes (validated).
func (c *Config) containerLogMaxBytes() int64 {
	q, err := resource.ParseQuantity(c.ContainerLogMaxSize)
	if err != nil {
		return 10 << 20
	}
	return q.Value()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

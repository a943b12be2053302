package clusterdns

import (
	"net"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a dns role config document.
const (
	APIVersion = roleconfig.APIVersion
	Kind       = "DNSConfig"
)

// DefaultConfigPath is where the role config lives on a worker.
const DefaultConfigPath = "/etc/kforge/dns.yaml"

// Defaults applied by NewConfig.
const (
	DefaultListenAddress    = ":53"
	DefaultClusterDomain    = "cluster.local"
	DefaultServiceName      = "kube-dns"
	DefaultServiceNamespace = "kube-system"
	DefaultResolvConf       = "/etc/resolv.conf"
	DefaultHealthAddress    = "127.0.0.1:9153"
	DefaultTTL              = 5 * time.Second
	DefaultForwardTimeout   = 2 * time.Second
	DefaultCacheSize        = 10000
	DefaultCacheMaxTTL      = 30 * time.Second
	DefaultCacheFailureTTL  = 5 * time.Second
	DefaultResyncPeriod     = 10 * time.Second
	DefaultLameDuck         = 2 * time.Second
)

// Config is the dns role's configuration, read from /etc/kforge/dns.yaml.
// Build one with NewConfig (defaults) or LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// Kubeconfig is the role's client identity (system:kforge:dns);
	// relative to the config file's folder.
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`
	// NodeName is the worker this instance runs on: it names the
	// instance's EndpointSlice and its endpoint's nodeName.
	NodeName string `yaml:"nodeName" json:"nodeName"`
	// ListenAddress is host:port served over UDP and TCP. The installer
	// binds the node's own address so a stub resolver on 127.0.0.53:53
	// (systemd-resolved) does not stop it.
	ListenAddress string `yaml:"listenAddress" json:"listenAddress"`
	// AdvertiseAddress is the IP written into the kube-dns EndpointSlice:
	// where the service proxy sends the Service's traffic. It defaults to
	// ListenAddress's host when that is a specific IP.
	AdvertiseAddress string `yaml:"advertiseAddress,omitempty" json:"advertiseAddress,omitempty"`
	// ClusterDomain is the zone answered from the API (cluster.local).
	ClusterDomain string `yaml:"clusterDomain" json:"clusterDomain"`
	// TTL of the records answered from the API.
	TTL time.Duration `yaml:"ttl" json:"ttl"`

	Service  ServiceConfig  `yaml:"service" json:"service"`
	Upstream UpstreamConfig `yaml:"upstream" json:"upstream"`
	Cache    CacheConfig    `yaml:"cache" json:"cache"`

	// HealthAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics. Empty disables it.
	HealthAddress string `yaml:"healthAddress" json:"healthAddress"`
	// LameDuck is how long the instance keeps answering after removing
	// its endpoint on shutdown, while the service proxies stop sending
	// it queries.
	LameDuck time.Duration `yaml:"lameDuck" json:"lameDuck"`
}

// ServiceConfig is the Service the instances register behind.
type ServiceConfig struct {
	Name      string `yaml:"name" json:"name"`
	Namespace string `yaml:"namespace" json:"namespace"`
	// ClusterIP, when set, makes each instance create the Service (no
	// selector, ports dns 53/UDP and dns-tcp 53/TCP) with this address if
	// it does not exist.
	ClusterIP string `yaml:"clusterIP,omitempty" json:"clusterIP,omitempty"`
	// Register keeps an EndpointSlice per instance pointing at
	// AdvertiseAddress, ready while the instance is.
	Register bool `yaml:"register" json:"register"`
	// ResyncPeriod is how often the instance re-checks its EndpointSlice
	// (and the Service) against what it should be.
	ResyncPeriod time.Duration `yaml:"resyncPeriod" json:"resyncPeriod"`
}

// UpstreamConfig is where names outside the cluster domain go.
type UpstreamConfig struct {
	// ResolvConf is read once at start; its loopback nameservers (local
	// stubs, which could send queries back here) are skipped.
	ResolvConf string `yaml:"resolvConf" json:"resolvConf"`
	// Servers, when set, replace the ones from ResolvConf (IP or IP:port).
	Servers []string `yaml:"servers,omitempty" json:"servers,omitempty"`
	// Timeout bounds one forwarded query over every upstream tried.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
}

// CacheConfig bounds the cache of forwarded answers.
type CacheConfig struct {
	// Size is the number of answers kept.
	Size int `yaml:"size" json:"size"`
	// MaxTTL caps how long an upstream answer is kept (and the TTL it is
	// served with).
	MaxTTL time.Duration `yaml:"maxTTL" json:"maxTTL"`
	// FailureTTL is how long an upstream failure (SERVFAIL, timeout) is
	// remembered, so a missing upstream costs one timeout, not one per
	// query.
	FailureTTL time.Duration `yaml:"failureTTL" json:"failureTTL"`
}

// NewConfig returns a Config with every default filled in. Kubeconfig
// and NodeName have no default.
func NewConfig() *Config {
	return &Config{
		APIVersion:    APIVersion,
		Kind:          Kind,
		ListenAddress: DefaultListenAddress,
		ClusterDomain: DefaultClusterDomain,
		TTL:           DefaultTTL,
		Service: ServiceConfig{
			Name: DefaultServiceName, Namespace: DefaultServiceNamespace,
			Register: true, ResyncPeriod: DefaultResyncPeriod,
		},
		Upstream:      UpstreamConfig{ResolvConf: DefaultResolvConf, Timeout: DefaultForwardTimeout},
		Cache:         CacheConfig{Size: DefaultCacheSize, MaxTTL: DefaultCacheMaxTTL, FailureTTL: DefaultCacheFailureTTL},
		HealthAddress: DefaultHealthAddress,
		LameDuck:      DefaultLameDuck,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults
// (an unknown field is an error), resolves relative paths against the
// file's folder and validates the result.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("dns", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths. yaml.Marshal of a valid Config is a document
// it reads back unchanged.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("dns", data, baseDir, NewConfig)
}

// FilePaths points at the kubeconfig and resolv.conf paths.
func (c *Config) FilePaths() []*string {
	return []*string{&c.Kubeconfig, &c.Upstream.ResolvConf}
}

// ConfigError lists every problem found in a Config.
type ConfigError = roleconfig.Error

// advertise is the endpoint address: AdvertiseAddress or the listen host.
func (c *Config) advertise() (netip.Addr, bool) {
	if c.AdvertiseAddress != "" {
		a, err := netip.ParseAddr(c.AdvertiseAddress)
		return a.Unmap(), err == nil
	}
	host, _, err := net.SplitHostPort(c.ListenAddress)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects.
func (c *Config) Validate() field.ErrorList {
	errs := roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)
	if c.Kubeconfig == "" {
		errs = append(errs, field.Required(field.NewPath("kubeconfig"), ""))
	}
	if c.NodeName == "" {
		errs = append(errs, field.Required(field.NewPath("nodeName"), ""))
	} else if msgs := validation.IsDNS1123Subdomain(c.NodeName); len(msgs) > 0 {
		errs = append(errs, field.Invalid(field.NewPath("nodeName"), c.NodeName, msgs[0]))
	}
	if err := roleconfig.CheckListenAddress(c.ListenAddress); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("listenAddress"), c.ListenAddress, err.Error()))
	}
	if c.AdvertiseAddress != "" {
		if _, err := netip.ParseAddr(c.AdvertiseAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("advertiseAddress"), c.AdvertiseAddress, "not an IP address"))
		}
	} else if _, ok := c.advertise(); !ok && c.Service.Register {
		errs = append(errs, field.Required(field.NewPath("advertiseAddress"),
			"needed to register the instance when listenAddress has no specific IP"))
	}
	if c.ClusterDomain == "" {
		errs = append(errs, field.Required(field.NewPath("clusterDomain"), ""))
	} else if msgs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, field.Invalid(field.NewPath("clusterDomain"), c.ClusterDomain, msgs[0]))
	}
	if c.TTL < time.Second || c.TTL > time.Hour {
		errs = append(errs, field.Invalid(field.NewPath("ttl"), c.TTL.String(), "must be from 1s to 1h"))
	}
	sp := field.NewPath("service")
	if msgs := validation.IsDNS1035Label(c.Service.Name); len(msgs) > 0 {
		errs = append(errs, field.Invalid(sp.Child("name"), c.Service.Name, msgs[0]))
	}
	if msgs := validation.IsDNS1123Label(c.Service.Namespace); len(msgs) > 0 {
		errs = append(errs, field.Invalid(sp.Child("namespace"), c.Service.Namespace, msgs[0]))
	}
	if c.Service.ClusterIP != "" {
		if _, err := netip.ParseAddr(c.Service.ClusterIP); err != nil {
			errs = append(errs, field.Invalid(sp.Child("clusterIP"), c.Service.ClusterIP, "not an IP address"))
		}
	}
	if c.Service.Register && c.Service.ResyncPeriod < time.Second {
		errs = append(errs, field.Invalid(sp.Child("resyncPeriod"), c.Service.ResyncPeriod.String(), "must be at least 1s"))
	}
	up := field.NewPath("upstream")
	if c.Upstream.ResolvConf == "" && len(c.Upstream.Servers) == 0 {
		errs = append(errs, field.Required(up.Child("resolvConf"), "or upstream.servers"))
	}
	for i, s := range c.Upstream.Servers {
		if _, err := upstreamAddr(s); err != nil {
			errs = append(errs, field.Invalid(up.Child("servers").Index(i), s, err.Error()))
		}
	}
	if c.Upstream.Timeout < 10*time.Millisecond || c.Upstream.Timeout > 30*time.Second {
		errs = append(errs, field.Invalid(up.Child("timeout"), c.Upstream.Timeout.String(), "must be from 10ms to 30s"))
	}
	cp := field.NewPath("cache")
	if c.Cache.Size < 0 {
		errs = append(errs, field.Invalid(cp.Child("size"), c.Cache.Size, "must not be negative (0 turns the cache off)"))
	}
	if c.Cache.MaxTTL < 0 {
		errs = append(errs, field.Invalid(cp.Child("maxTTL"), c.Cache.MaxTTL.String(), "must not be negative"))
	}
	if c.Cache.FailureTTL < 0 {
		errs = append(errs, field.Invalid(cp.Child("failureTTL"), c.Cache.FailureTTL.String(), "must not be negative"))
	}
	if c.LameDuck < 0 || c.LameDuck > time.Minute {
		errs = append(errs, field.Invalid(field.NewPath("lameDuck"), c.LameDuck.String(), "must be from 0 to 1m"))
	}
	if c.HealthAddress != "" {
		if err := roleconfig.CheckListenAddress(c.HealthAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("healthAddress"), c.HealthAddress, err.Error()))
		}
	}
	return errs
}

// upstreamAddr turns "IP" or "IP:port" into "IP:port" (port 53 by
// default).
func upstreamAddr(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", err
	}
	return ap.String(), nil
}

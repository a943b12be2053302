package apiserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"kforge.dev/kforge/controlplane/apiserver/encryption"
	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify an apiserver role config document.
const (
	APIVersion = "kforge.dev/v1alpha1"
	Kind       = "APIServerConfig"
)

// DefaultConfigPath is where the installer puts the role config on a master.
const DefaultConfigPath = "/etc/kforge/apiserver.yaml"

// Defaults applied by NewConfig.
const (
	DefaultBindAddress     = "0.0.0.0:6443"
	DefaultServiceCIDR     = "10.96.0.0/16"
	DefaultEtcdEndpoint    = "https://127.0.0.1:2379"
	DefaultEtcdDialTimeout = 5 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultEventTTL is how long an Event is kept after its last write,
	// as kube-apiserver's --event-ttl.
	DefaultEventTTL = time.Hour
)

// Config is the apiserver role's configuration, read from
// /etc/kforge/apiserver.yaml. Build one with NewConfig (defaults) or
// LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// BindAddress is host:port the HTTPS API listens on.
	BindAddress string `yaml:"bindAddress" json:"bindAddress"`
	// AdvertiseAddress is IP:port where other hosts reach this apiserver;
	// it is published in the "kubernetes" Service's Endpoints. Empty means
	// BindAddress when that names one IP, else nothing is published.
	AdvertiseAddress string `yaml:"advertiseAddress,omitempty" json:"advertiseAddress,omitempty"`
	// TLS is the serving certificate and the CA that signs client
	// certificates (users are x509 client certificates: CN user, O groups).
	TLS ServingTLS `yaml:"tls" json:"tls"`
	// Etcd says how to reach the etcd members, always with mutual TLS.
	Etcd Etcd `yaml:"etcd" json:"etcd"`
	// ServiceCIDR is the range ClusterIPs are allocated from.
	ServiceCIDR string `yaml:"serviceCIDR" json:"serviceCIDR"`
	// ServiceAccount holds the token signing key pair. Carried for the
	// service-account token work; the server does not use it yet.
	ServiceAccount ServiceAccount `yaml:"serviceAccount,omitempty" json:"serviceAccount,omitempty"`
	// Metrics configures /metrics on the API port.
	Metrics Metrics `yaml:"metrics" json:"metrics"`
	// Limits bound what one client can make the server do: requests in
	// flight, their duration, JSON patch size, HTTP/2 streams, watches.
	Limits Limits `yaml:"limits" json:"limits"`
	// EventTTL is how long an Event lives after its last write (etcd
	// deletes it then), as kube-apiserver's --event-ttl.
	EventTTL time.Duration `yaml:"eventTTL" json:"eventTTL"`
	// Encryption encrypts resources (Secrets) at rest in etcd; none when
	// empty.
	Encryption Encryption `yaml:"encryption,omitempty" json:"encryption,omitempty"`

	// Listener, when set, is used instead of binding BindAddress: tests
	// and `kforge local up` bind first to learn the port.
	Listener net.Listener `yaml:"-" json:"-"`
	// Version and Commit are what /version reports; the binary sets them.
	Version string `yaml:"-" json:"-"`
	Commit  string `yaml:"-" json:"-"`
}

// ServingTLS holds the apiserver's own certificate and its client CA.
type ServingTLS struct {
	CertFile string `yaml:"certFile" json:"certFile"`
	KeyFile  string `yaml:"keyFile" json:"keyFile"`
	// ClientCAFile is the cluster CA: client certificates it signed are users.
	ClientCAFile string `yaml:"clientCAFile" json:"clientCAFile"`
}

// Etcd is the apiserver's etcd client configuration.
type Etcd struct {
	// Endpoints are https:// URLs of every member.
	Endpoints []string `yaml:"endpoints" json:"endpoints"`
	// CAFile is the etcd CA; CertFile and KeyFile the apiserver's etcd
	// client certificate.
	CAFile      string        `yaml:"caFile" json:"caFile"`
	CertFile    string        `yaml:"certFile" json:"certFile"`
	KeyFile     string        `yaml:"keyFile" json:"keyFile"`
	DialTimeout time.Duration `yaml:"dialTimeout" json:"dialTimeout"`
}

// ServiceAccount is the service-account token key pair.
type ServiceAccount struct {
	KeyFile       string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	PublicKeyFile string `yaml:"publicKeyFile,omitempty" json:"publicKeyFile,omitempty"`
}

// Encryption is encryption at rest, in the model of kube-apiserver's
// EncryptionConfiguration: either a file holding such a document (as
// --encryption-provider-config; what `kforge up` generates) or its
// resource entries inline. Not both.
type Encryption struct {
	// ProviderConfigFile is an EncryptionConfiguration document.
	ProviderConfigFile string `yaml:"providerConfigFile,omitempty" json:"providerConfigFile,omitempty"`
	// Resources are the document's entries, inline.
	Resources []encryption.ResourceConfig `yaml:"resources,omitempty" json:"resources,omitempty"`
}

// Load returns the resource entries in effect: the file's, or the inline
// ones; none when encryption is off.
func (e Encryption) Load() ([]encryption.ResourceConfig, error) {
	if e.ProviderConfigFile == "" {
		return e.Resources, nil
	}
	c, err := encryption.Load(e.ProviderConfigFile)
	if err != nil {
		return nil, err
	}
	return c.Resources, nil
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Enabled serves /metrics on the API port to system:masters; true by default.
	Enabled bool `yaml:"enabled" json:"enabled"`
}

// NewConfig returns a Config with every default filled in. TLS files have
// no default.
func NewConfig() *Config {
	return &Config{
		APIVersion:  APIVersion,
		Kind:        Kind,
		BindAddress: DefaultBindAddress,
		Etcd: Etcd{
			Endpoints:   []string{DefaultEtcdEndpoint},
			DialTimeout: DefaultEtcdDialTimeout,
		},
		ServiceCIDR: DefaultServiceCIDR,
		Metrics:     Metrics{Enabled: true},
		Limits:      NewLimits(),
		EventTTL:    DefaultEventTTL,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults
// (an unknown field is an error), resolves relative file paths against
// the file's folder and validates the result.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("apiserver", path, ParseConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	c := NewConfig()
	// A list in the file replaces the default rather than merging into it.
	c.Etcd.Endpoints = nil
	if err := roleconfig.Decode(data, c); err != nil {
		return nil, err
	}
	if c.Etcd.Endpoints == nil {
		c.Etcd.Endpoints = []string{DefaultEtcdEndpoint}
	}
	c.ResolvePaths(baseDir)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ResolvePaths makes every file path absolute, relative to baseDir.
func (c *Config) ResolvePaths(baseDir string) {
	roleconfig.ResolvePaths(baseDir,
		&c.TLS.CertFile, &c.TLS.KeyFile, &c.TLS.ClientCAFile,
		&c.Etcd.CAFile, &c.Etcd.CertFile, &c.Etcd.KeyFile,
		&c.ServiceAccount.KeyFile, &c.ServiceAccount.PublicKeyFile,
		&c.Encryption.ProviderConfigFile,
	)
}

// ConfigError lists every problem found in a Config.
type ConfigError = roleconfig.Error

// Validate checks the whole config and returns a *ConfigError listing
// every problem, or nil. It has no side effects (it does not open files).
func (c *Config) Validate() error {
	probs := roleconfig.NewProblems("apiserver")
	add := probs.Add

	if c.APIVersion != APIVersion {
		add("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		add("kind", "must be %q, not %q", Kind, c.Kind)
	}
	if c.Listener == nil {
		if err := checkBindAddress(c.BindAddress); err != nil {
			add("bindAddress", "%v", err)
		}
		if c.AdvertiseAddress != "" {
			if ap, err := netip.ParseAddrPort(c.AdvertiseAddress); err != nil || ap.Addr().IsUnspecified() {
				add("advertiseAddress", "%q is not an IP:port other hosts can reach", c.AdvertiseAddress)
			}
		}
	}

	required := func(field, v, why string) {
		if v == "" {
			add(field, "is required (%s)", why)
		}
	}
	required("tls.certFile", c.TLS.CertFile, "the API is HTTPS only")
	required("tls.keyFile", c.TLS.KeyFile, "the API is HTTPS only")
	required("tls.clientCAFile", c.TLS.ClientCAFile, "users are client certificates signed by the cluster CA")

	if len(c.Etcd.Endpoints) == 0 {
		add("etcd.endpoints", "needs at least one https:// URL")
	}
	seen := map[string]bool{}
	for i, e := range c.Etcd.Endpoints {
		if err := checkEndpoint(e); err != nil {
			add(fmt.Sprintf("etcd.endpoints[%d]", i), "%v", err)
		} else if seen[e] {
			add(fmt.Sprintf("etcd.endpoints[%d]", i), "%s is listed twice", e)
		}
		seen[e] = true
	}
	required("etcd.caFile", c.Etcd.CAFile, "etcd uses mutual TLS")
	required("etcd.certFile", c.Etcd.CertFile, "etcd uses mutual TLS")
	required("etcd.keyFile", c.Etcd.KeyFile, "etcd uses mutual TLS")
	if c.Etcd.DialTimeout <= 0 {
		add("etcd.dialTimeout", "must be positive, not %s", c.Etcd.DialTimeout)
	}

	if c.ServiceCIDR == "" {
		add("serviceCIDR", "is required")
	} else if p, err := netip.ParsePrefix(c.ServiceCIDR); err != nil {
		add("serviceCIDR", "%q is not a CIDR: %v", c.ServiceCIDR, err)
	} else if p != p.Masked() {
		add("serviceCIDR", "%s has host bits set (did you mean %s?)", c.ServiceCIDR, p.Masked())
	} else if hostBits := p.Addr().BitLen() - p.Bits(); hostBits < 2 || hostBits > 20 {
		add("serviceCIDR", "%s must hold between 4 and 2^20 addresses (a prefix of /%d to /%d)", c.ServiceCIDR, p.Addr().BitLen()-20, p.Addr().BitLen()-2)
	}

	for _, p := range c.Limits.problems() {
		add("limits."+p.field, "%s", p.msg)
	}

	sa := c.ServiceAccount
	if (sa.KeyFile == "") != (sa.PublicKeyFile == "") {
		add("serviceAccount", "keyFile and publicKeyFile go together: set both or neither")
	}

	if c.EventTTL < time.Second {
		add("eventTTL", "must be at least 1s, not %s", c.EventTTL)
	}
	if c.Encryption.ProviderConfigFile != "" && len(c.Encryption.Resources) > 0 {
		add("encryption", "providerConfigFile and resources exclude each other: the file holds the resources")
	}
	encryption.ValidateResources("encryption.", c.Encryption.Resources, probs)
	for i, e := range c.Encryption.Resources {
		for j, r := range e.Resources {
			if !servedResourceName(r) {
				add(fmt.Sprintf("encryption.resources[%d].resources[%d]", i, j), "%q is not a resource this apiserver serves", r)
			}
		}
	}

	return probs.Err()
}

// checkBindAddress accepts host:port where host is an IP address or
// empty (every address) and port is 0-65535.
func checkBindAddress(s string) error {
	if s == "" {
		return errors.New("is required (host:port)")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: the host must be an IP address (or empty for every address)", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: %q is not a TCP port", s, port)
	}
	return nil
}

// checkEndpoint accepts https://host:port only: etcd is reached with
// mutual TLS, and a path would be meaningless.
func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%q must use https (etcd uses mutual TLS)", s)
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || port == "0" {
		return fmt.Errorf("%q needs host:port", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q must be https://host:port only", s)
	}
	return nil
}

// Advertise is the address published for this apiserver: AdvertiseAddress,
// or BindAddress when it names one IP; empty when there is none.
func (c *Config) Advertise() string {
	if c.AdvertiseAddress != "" {
		return c.AdvertiseAddress
	}
	if ap, err := netip.ParseAddrPort(c.BindAddress); err == nil && !ap.Addr().IsUnspecified() {
		return ap.String()
	}
	return ""
}

// servedResourceName reports whether an encryption entry's resource name
// covers at least one stored resource.
func servedResourceName(name string) bool {
	for _, r := range DefaultResources() {
		if r.Review == nil && encryption.Covers(name, r.Group, r.Plural) {
			return true
		}
	}
	return false
}

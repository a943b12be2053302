package apiserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/apiserver/encryption"
	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify an apiserver role config document.
const (
	APIVersion = roleconfig.APIVersion
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
	// KubeletClient is the apiserver's client certificate toward the node
	// agents, for pods/log, exec, attach, portforward and nodes/proxy;
	// without it those answer 503.
	KubeletClient KubeletClient `yaml:"kubeletClient,omitempty" json:"kubeletClient,omitempty"`
	// ServiceCIDR is the range ClusterIPs are allocated from.
	ServiceCIDR string `yaml:"serviceCIDR" json:"serviceCIDR"`
	// ServiceAccount holds the token signing key pair, the issuer and the
	// audiences of service-account tokens. Without the key pair the
	// server serves no TokenRequest, authenticates no bearer token and
	// runs no ServiceAccount admission.
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

// KubeletClient is the apiserver's identity toward the node agents (the
// PKI's apiserver-kubelet-client). The agents' serving certificates are
// verified against CAFile, the TLS client CA (the cluster CA) when empty.
type KubeletClient struct {
	CertFile string `yaml:"certFile,omitempty" json:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	CAFile   string `yaml:"caFile,omitempty" json:"caFile,omitempty"`
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

// ServiceAccount configures service-account tokens, as kube-apiserver's
// --service-account-key-file, --service-account-signing-key-file,
// --service-account-issuer and --api-audiences.
type ServiceAccount struct {
	// KeyFile is the ECDSA P-256 signing key (PEM); PublicKeyFile its
	// public key, which verifies tokens.
	KeyFile       string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	PublicKeyFile string `yaml:"publicKeyFile,omitempty" json:"publicKeyFile,omitempty"`
	// Issuer is the tokens' "iss" and the OIDC discovery issuer;
	// DefaultServiceAccountIssuer when empty.
	Issuer string `yaml:"issuer,omitempty" json:"issuer,omitempty"`
	// Audiences are the API's audiences: a bearer token must name one.
	// [Issuer] when empty.
	Audiences []string `yaml:"audiences,omitempty" json:"audiences,omitempty"`
}

// DefaultServiceAccountIssuer is the issuer for the default cluster
// domain: https://kubernetes.default.svc.DOMAIN, as upstream's installers
// set it.
const DefaultServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// IssuerOrDefault is Issuer, or the default.
func (sa ServiceAccount) IssuerOrDefault() string {
	if sa.Issuer == "" {
		return DefaultServiceAccountIssuer
	}
	return sa.Issuer
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
	return roleconfig.Load("apiserver", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths. yaml.Marshal of a valid Config is a document
// it reads back unchanged.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("apiserver", data, baseDir, NewConfig)
}

// FilePaths points at every file path: the paths ParseConfig resolves
// against the config file's folder.
func (c *Config) FilePaths() []*string {
	return []*string{
		&c.TLS.CertFile, &c.TLS.KeyFile, &c.TLS.ClientCAFile,
		&c.Etcd.CAFile, &c.Etcd.CertFile, &c.Etcd.KeyFile,
		&c.ServiceAccount.KeyFile, &c.ServiceAccount.PublicKeyFile,
		&c.Encryption.ProviderConfigFile,
		&c.KubeletClient.CertFile, &c.KubeletClient.KeyFile, &c.KubeletClient.CAFile,
	}
}

// ConfigError lists every problem found in a Config (ParseConfig's and
// NewInstance's validation error).
type ConfigError = roleconfig.Error

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects (it does not open files).
func (c *Config) Validate() field.ErrorList {
	errs := roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)
	add := func(err *field.Error) { errs = append(errs, err) }

	if c.Listener == nil {
		bind := field.NewPath("bindAddress")
		if c.BindAddress == "" {
			add(field.Required(bind, "host:port"))
		} else if err := checkBindAddress(c.BindAddress); err != nil {
			add(field.Invalid(bind, c.BindAddress, err.Error()))
		}
		if c.AdvertiseAddress != "" {
			if ap, err := netip.ParseAddrPort(c.AdvertiseAddress); err != nil || ap.Addr().IsUnspecified() {
				add(field.Invalid(field.NewPath("advertiseAddress"), c.AdvertiseAddress, "not an IP:port other hosts can reach"))
			}
		}
	}

	required := func(p *field.Path, v, why string) {
		if v == "" {
			add(field.Required(p, why))
		}
	}
	tlsPath := field.NewPath("tls")
	required(tlsPath.Child("certFile"), c.TLS.CertFile, "the API is HTTPS only")
	required(tlsPath.Child("keyFile"), c.TLS.KeyFile, "the API is HTTPS only")
	required(tlsPath.Child("clientCAFile"), c.TLS.ClientCAFile, "users are client certificates signed by the cluster CA")

	etcdPath := field.NewPath("etcd")
	endpoints := etcdPath.Child("endpoints")
	if len(c.Etcd.Endpoints) == 0 {
		add(field.Required(endpoints, "needs at least one https:// URL"))
	}
	seen := map[string]bool{}
	for i, e := range c.Etcd.Endpoints {
		if err := checkEndpoint(e); err != nil {
			add(field.Invalid(endpoints.Index(i), e, err.Error()))
		} else if seen[e] {
			add(field.Duplicate(endpoints.Index(i), e))
		}
		seen[e] = true
	}
	required(etcdPath.Child("caFile"), c.Etcd.CAFile, "etcd uses mutual TLS")
	required(etcdPath.Child("certFile"), c.Etcd.CertFile, "etcd uses mutual TLS")
	required(etcdPath.Child("keyFile"), c.Etcd.KeyFile, "etcd uses mutual TLS")
	if c.Etcd.DialTimeout <= 0 {
		add(field.Invalid(etcdPath.Child("dialTimeout"), c.Etcd.DialTimeout.String(), "must be positive"))
	}

	cidr := field.NewPath("serviceCIDR")
	if c.ServiceCIDR == "" {
		add(field.Required(cidr, ""))
	} else if p, err := netip.ParsePrefix(c.ServiceCIDR); err != nil {
		add(field.Invalid(cidr, c.ServiceCIDR, fmt.Sprintf("not a CIDR: %v", err)))
	} else if p != p.Masked() {
		add(field.Invalid(cidr, c.ServiceCIDR, fmt.Sprintf("has host bits set (did you mean %s?)", p.Masked())))
	} else if hostBits := p.Addr().BitLen() - p.Bits(); hostBits < 2 || hostBits > 20 {
		add(field.Invalid(cidr, c.ServiceCIDR, fmt.Sprintf("must hold between 4 and 2^20 addresses (a prefix of /%d to /%d)", p.Addr().BitLen()-20, p.Addr().BitLen()-2)))
	}

	for _, err := range c.Limits.validate(field.NewPath("limits")) {
		add(err)
	}

	sa, saPath := c.ServiceAccount, field.NewPath("serviceAccount")
	if sa.KeyFile != "" && sa.PublicKeyFile == "" {
		add(field.Required(saPath.Child("publicKeyFile"), "keyFile and publicKeyFile go together: set both or neither"))
	}
	if sa.KeyFile == "" && sa.PublicKeyFile != "" {
		add(field.Required(saPath.Child("keyFile"), "keyFile and publicKeyFile go together: set both or neither"))
	}
	if sa.Issuer != "" {
		if u, err := url.Parse(sa.Issuer); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			add(field.Invalid(saPath.Child("issuer"), sa.Issuer, "must be an https:// URL without query or fragment (OIDC discovery)"))
		}
	}
	for i, a := range sa.Audiences {
		if a == "" {
			add(field.Required(saPath.Child("audiences").Index(i), "an audience may not be empty"))
		}
	}

	if kc := c.KubeletClient; (kc.CertFile == "") != (kc.KeyFile == "") || (kc.CAFile != "" && kc.CertFile == "") {
		add(field.Required(field.NewPath("kubeletClient"), "certFile and keyFile go together (caFile needs them)"))
	}

	if c.EventTTL < time.Second {
		add(field.Invalid(field.NewPath("eventTTL"), c.EventTTL.String(), "must be at least 1s"))
	}
	encPath := field.NewPath("encryption")
	if c.Encryption.ProviderConfigFile != "" && len(c.Encryption.Resources) > 0 {
		add(field.Forbidden(encPath.Child("resources"), "providerConfigFile and resources exclude each other: the file holds the resources"))
	}
	errs = append(errs, encryption.ValidateResources(encPath, c.Encryption.Resources)...)
	for i, e := range c.Encryption.Resources {
		for j, r := range e.Resources {
			if !servedResourceName(r) {
				add(field.Invalid(encPath.Child("resources").Index(i).Child("resources").Index(j), r, "not a resource this apiserver serves"))
			}
		}
	}
	return errs
}

// checkBindAddress accepts host:port where host is an IP address or
// empty (every address) and port is 0-65535.
func checkBindAddress(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("not host:port: %v", err)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return errors.New("the host must be an IP address (or empty for every address)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q is not a TCP port", port)
	}
	return nil
}

// checkEndpoint accepts https://host:port only: etcd is reached with
// mutual TLS, and a path would be meaningless.
func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "https" {
		return errors.New("must use https (etcd uses mutual TLS)")
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || port == "0" {
		return errors.New("needs host:port")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("must be https://host:port only")
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

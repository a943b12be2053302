package ingress

import (
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify an ingress role config document.
const (
	APIVersion = roleconfig.APIVersion
	Kind       = "IngressConfig"
)

// DefaultConfigPath is where the role config lives on a worker.
const DefaultConfigPath = "/etc/kforge/ingress.yaml"

// Names of the IngressClass the controller serves.
const (
	DefaultClassName  = "kforge"
	DefaultController = "kforge.dev/ingress"
)

// Defaults applied by NewConfig.
const (
	DefaultHTTPAddress       = ":80"
	DefaultHTTPSAddress      = ":443"
	DefaultHealthAddress     = "127.0.0.1:10254"
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultIdleTimeout       = 75 * time.Second
	DefaultMaxHeaderBytes    = 32 << 10
	DefaultConnectTimeout    = 5 * time.Second
	DefaultUpstreamTimeout   = 60 * time.Second
	DefaultFailTimeout       = 10 * time.Second
	DefaultMaxIdlePerHost    = 1024
	DefaultMaxRetries        = 2
	DefaultShutdownGrace     = 10 * time.Second
)

// Config is the ingress role's configuration, read from
// /etc/kforge/ingress.yaml. Build one with NewConfig (defaults) or
// LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// Kubeconfig is the role's client identity (system:kforge:ingress);
	// relative to the config file's folder.
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`
	// NodeName is the worker this instance runs on (events name it).
	NodeName string `yaml:"nodeName" json:"nodeName"`

	// HTTPAddress and HTTPSAddress are host:port the data path listens
	// on (":80" and ":443"). An empty HTTPSAddress turns TLS off.
	HTTPAddress  string `yaml:"httpAddress" json:"httpAddress"`
	HTTPSAddress string `yaml:"httpsAddress" json:"httpsAddress"`
	// HealthAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics. Empty disables it.
	HealthAddress string `yaml:"healthAddress" json:"healthAddress"`

	// StatusAddresses are this instance's addresses: each instance adds
	// them to status.loadBalancer.ingress of every Ingress it serves.
	StatusAddresses []string `yaml:"statusAddresses,omitempty" json:"statusAddresses,omitempty"`

	Class    ClassConfig    `yaml:"class" json:"class"`
	Client   ClientConfig   `yaml:"client" json:"client"`
	Upstream UpstreamConfig `yaml:"upstream" json:"upstream"`

	// AccessLog writes one JSON line per request to stdout.
	AccessLog bool `yaml:"accessLog" json:"accessLog"`
	// ShutdownGrace bounds how long in-flight requests may finish after
	// the first SIGTERM.
	ShutdownGrace time.Duration `yaml:"shutdownGrace" json:"shutdownGrace"`
}

// ClassConfig names the IngressClass this controller serves.
type ClassConfig struct {
	// Name of the IngressClass (kforge).
	Name string `yaml:"name" json:"name"`
	// Controller is spec.controller of the classes served
	// (kforge.dev/ingress).
	Controller string `yaml:"controller" json:"controller"`
	// Create makes each instance create the IngressClass, marked as the
	// cluster's default, when it does not exist.
	Create bool `yaml:"create" json:"create"`
}

// ClientConfig bounds what clients of the data path may do.
type ClientConfig struct {
	ReadHeaderTimeout time.Duration `yaml:"readHeaderTimeout" json:"readHeaderTimeout"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration `yaml:"readTimeout" json:"readTimeout"`
	// IdleTimeout closes a keep-alive connection that stays idle.
	IdleTimeout time.Duration `yaml:"idleTimeout" json:"idleTimeout"`
	// MaxHeaderBytes: larger request headers get 431.
	MaxHeaderBytes int `yaml:"maxHeaderBytes" json:"maxHeaderBytes"`
	// MaxBodyBytes is the default request body limit (413 above it); 0
	// means none. The proxy-body-size annotation overrides it.
	MaxBodyBytes int64 `yaml:"maxBodyBytes" json:"maxBodyBytes"`
}

// UpstreamConfig is how the data path talks to pods.
type UpstreamConfig struct {
	// ConnectTimeout bounds one connection attempt to an endpoint.
	ConnectTimeout time.Duration `yaml:"connectTimeout" json:"connectTimeout"`
	// Timeout bounds the wait for an endpoint's response headers.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// MaxIdlePerEndpoint is the keep-alive pool size per endpoint.
	MaxIdlePerEndpoint int `yaml:"maxIdlePerEndpoint" json:"maxIdlePerEndpoint"`
	// FailTimeout is how long an endpoint that failed is skipped.
	FailTimeout time.Duration `yaml:"failTimeout" json:"failTimeout"`
	// MaxRetries is how many other endpoints a request may try.
	MaxRetries int `yaml:"maxRetries" json:"maxRetries"`
}

// NewConfig returns a Config with every default filled in. Kubeconfig
// and NodeName have no default.
func NewConfig() *Config {
	return &Config{
		APIVersion: APIVersion, Kind: Kind,
		HTTPAddress: DefaultHTTPAddress, HTTPSAddress: DefaultHTTPSAddress,
		HealthAddress: DefaultHealthAddress,
		Class:         ClassConfig{Name: DefaultClassName, Controller: DefaultController, Create: true},
		Client: ClientConfig{
			ReadHeaderTimeout: DefaultReadHeaderTimeout, ReadTimeout: DefaultReadTimeout,
			IdleTimeout: DefaultIdleTimeout, MaxHeaderBytes: DefaultMaxHeaderBytes,
		},
		Upstream: UpstreamConfig{
			ConnectTimeout: DefaultConnectTimeout, Timeout: DefaultUpstreamTimeout,
			MaxIdlePerEndpoint: DefaultMaxIdlePerHost, FailTimeout: DefaultFailTimeout,
			MaxRetries: DefaultMaxRetries,
		},
		AccessLog:     true,
		ShutdownGrace: DefaultShutdownGrace,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults,
// resolves relative paths against the file's folder and validates it.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("ingress", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("ingress", data, baseDir, NewConfig)
}

// FilePaths points at the kubeconfig path.
func (c *Config) FilePaths() []*string { return []*string{&c.Kubeconfig} }

// ConfigError lists every problem found in a Config.
type ConfigError = roleconfig.Error

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
	if err := roleconfig.CheckListenAddress(c.HTTPAddress); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("httpAddress"), c.HTTPAddress, err.Error()))
	}
	if c.HTTPSAddress != "" {
		if err := roleconfig.CheckListenAddress(c.HTTPSAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("httpsAddress"), c.HTTPSAddress, err.Error()))
		}
	}
	if c.HealthAddress != "" {
		if err := roleconfig.CheckListenAddress(c.HealthAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("healthAddress"), c.HealthAddress, err.Error()))
		}
	}
	for i, a := range c.StatusAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			if msgs := validation.IsDNS1123Subdomain(a); len(msgs) > 0 {
				errs = append(errs, field.Invalid(field.NewPath("statusAddresses").Index(i), a, "neither an IP address nor a DNS name"))
			}
		}
	}
	cp := field.NewPath("class")
	if msgs := validation.IsDNS1123Subdomain(c.Class.Name); len(msgs) > 0 {
		errs = append(errs, field.Invalid(cp.Child("name"), c.Class.Name, msgs[0]))
	}
	if c.Class.Controller == "" {
		errs = append(errs, field.Required(cp.Child("controller"), ""))
	}
	positive := func(p *field.Path, d time.Duration) {
		if d <= 0 {
			errs = append(errs, field.Invalid(p, d.String(), "must be positive"))
		}
	}
	cl := field.NewPath("client")
	positive(cl.Child("readHeaderTimeout"), c.Client.ReadHeaderTimeout)
	positive(cl.Child("idleTimeout"), c.Client.IdleTimeout)
	if c.Client.ReadTimeout < 0 {
		errs = append(errs, field.Invalid(cl.Child("readTimeout"), c.Client.ReadTimeout.String(), "must not be negative (0 means none)"))
	}
	if c.Client.MaxHeaderBytes < 1024 {
		errs = append(errs, field.Invalid(cl.Child("maxHeaderBytes"), c.Client.MaxHeaderBytes, "must be at least 1024"))
	}
	if c.Client.MaxBodyBytes < 0 {
		errs = append(errs, field.Invalid(cl.Child("maxBodyBytes"), c.Client.MaxBodyBytes, "must not be negative (0 means no limit)"))
	}
	up := field.NewPath("upstream")
	positive(up.Child("connectTimeout"), c.Upstream.ConnectTimeout)
	positive(up.Child("timeout"), c.Upstream.Timeout)
	positive(up.Child("failTimeout"), c.Upstream.FailTimeout)
	if c.Upstream.MaxIdlePerEndpoint < 1 {
		errs = append(errs, field.Invalid(up.Child("maxIdlePerEndpoint"), c.Upstream.MaxIdlePerEndpoint, "must be at least 1"))
	}
	if c.Upstream.MaxRetries < 0 || c.Upstream.MaxRetries > 10 {
		errs = append(errs, field.Invalid(up.Child("maxRetries"), c.Upstream.MaxRetries, "must be from 0 to 10"))
	}
	if c.ShutdownGrace < 0 || c.ShutdownGrace > 5*time.Minute {
		errs = append(errs, field.Invalid(field.NewPath("shutdownGrace"), c.ShutdownGrace.String(), "must be from 0 to 5m"))
	}
	return errs
}

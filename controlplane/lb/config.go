package lb

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a load balancer role config document.
const (
	APIVersion = roleconfig.APIVersion
	Kind       = "LoadBalancerConfig"
)

// DefaultConfigPath is where the installer puts the role config on the lb host.
const DefaultConfigPath = "/etc/kforge/lb.yaml"

// Balancing policies.
const (
	// BalanceLeastConnections picks the healthy backend with the fewest
	// active connections, rotating among ties. It suits apiservers, whose
	// watches keep connections open for minutes.
	BalanceLeastConnections = "least-connections"
	// BalanceRoundRobin picks healthy backends in turn.
	BalanceRoundRobin = "round-robin"
)

// Defaults applied by NewConfig.
const (
	DefaultListenAddress       = "0.0.0.0:6443"
	DefaultMetricsAddress      = "127.0.0.1:9443"
	DefaultBalance             = BalanceLeastConnections
	DefaultDialTimeout         = time.Second
	DefaultShutdownGracePeriod = 5 * time.Second

	DefaultHealthCheckPath    = "/readyz"
	DefaultHealthCheckPeriod  = time.Second
	DefaultHealthCheckTimeout = 800 * time.Millisecond
	// Two failures one second apart, each given 800 ms, take a failed
	// backend out within 3 s of its failure.
	DefaultUnhealthyThreshold = 2
	DefaultHealthyThreshold   = 1
)

// Config is the lb role's configuration, read from /etc/kforge/lb.yaml,
// and also what an in-process Balancer (the agent's node-local LB) is
// built from. Build one with NewConfig (defaults) or LoadConfig (file),
// then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// ListenAddress is host:port the TCP proxy accepts on. TLS passes
	// through untouched: the apiservers terminate it.
	ListenAddress string `yaml:"listenAddress" json:"listenAddress"`
	// Backends are host:port of every apiserver.
	Backends []string `yaml:"backends" json:"backends"`
	// Balance is least-connections (default) or round-robin.
	Balance string `yaml:"balance" json:"balance"`
	// DialTimeout bounds one connection attempt to a backend; a failed
	// attempt is retried on another healthy backend.
	DialTimeout time.Duration `yaml:"dialTimeout" json:"dialTimeout"`
	// ShutdownGracePeriod is how long Close waits for open connections
	// to end by themselves before it closes them.
	ShutdownGracePeriod time.Duration `yaml:"shutdownGracePeriod" json:"shutdownGracePeriod"`

	HealthCheck HealthCheck `yaml:"healthCheck" json:"healthCheck"`

	// MetricsAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics; keep it on loopback or a management
	// address. Empty disables the listener (an embedding process mounts
	// Balancer.Handler on its own server instead).
	MetricsAddress string `yaml:"metricsAddress" json:"metricsAddress"`
}

// HealthCheck configures the active checks: an HTTPS GET of Path on every
// backend each Period. Our apiserver serves /readyz and /healthz before
// authentication, so the CA alone is enough; a client certificate is
// presented when CertFile and KeyFile are set.
type HealthCheck struct {
	Path    string        `yaml:"path" json:"path"`
	Period  time.Duration `yaml:"period" json:"period"`
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// UnhealthyThreshold consecutive failures take a backend out;
	// HealthyThreshold consecutive successes bring it back.
	UnhealthyThreshold int `yaml:"unhealthyThreshold" json:"unhealthyThreshold"`
	HealthyThreshold   int `yaml:"healthyThreshold" json:"healthyThreshold"`
	// CAFile verifies the backends' serving certificates (the cluster CA).
	CAFile string `yaml:"caFile" json:"caFile"`
	// CertFile and KeyFile are an optional client certificate.
	CertFile string `yaml:"certFile,omitempty" json:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	// ServerName, when set, is the name verified in every backend's
	// certificate instead of the backend's host.
	ServerName string `yaml:"serverName,omitempty" json:"serverName,omitempty"`
}

// NewConfig returns a Config with every default filled in. Backends and
// the CA file have no default.
func NewConfig() *Config {
	return &Config{
		APIVersion:          APIVersion,
		Kind:                Kind,
		ListenAddress:       DefaultListenAddress,
		Balance:             DefaultBalance,
		DialTimeout:         DefaultDialTimeout,
		ShutdownGracePeriod: DefaultShutdownGracePeriod,
		HealthCheck: HealthCheck{
			Path:               DefaultHealthCheckPath,
			Period:             DefaultHealthCheckPeriod,
			Timeout:            DefaultHealthCheckTimeout,
			UnhealthyThreshold: DefaultUnhealthyThreshold,
			HealthyThreshold:   DefaultHealthyThreshold,
		},
		MetricsAddress: DefaultMetricsAddress,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults
// (an unknown field is an error), resolves relative file paths against
// the file's folder and validates the result.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("lb", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths. yaml.Marshal of a valid Config is a document
// it reads back unchanged.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("lb", data, baseDir, NewConfig)
}

// FilePaths points at the health check's TLS files: the paths
// ParseConfig resolves against the config file's folder.
func (c *Config) FilePaths() []*string {
	return []*string{&c.HealthCheck.CAFile, &c.HealthCheck.CertFile, &c.HealthCheck.KeyFile}
}

// ConfigError lists every problem found in a Config (ParseConfig's and
// New's validation error).
type ConfigError = roleconfig.Error

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects (it does not open files).
func (c *Config) Validate() field.ErrorList {
	errs := roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)
	add := func(err *field.Error) { errs = append(errs, err) }

	listen := field.NewPath("listenAddress")
	if c.ListenAddress == "" {
		add(field.Required(listen, ""))
	} else if err := roleconfig.CheckListenAddress(c.ListenAddress); err != nil {
		add(field.Invalid(listen, c.ListenAddress, err.Error()))
	}
	backends := field.NewPath("backends")
	if len(c.Backends) == 0 {
		add(field.Required(backends, "needs at least one host:port"))
	}
	seen := map[string]bool{}
	for i, b := range c.Backends {
		if err := checkBackend(b); err != nil {
			add(field.Invalid(backends.Index(i), b, err.Error()))
			continue
		}
		if seen[b] {
			add(field.Duplicate(backends.Index(i), b))
		}
		seen[b] = true
	}
	switch c.Balance {
	case BalanceLeastConnections, BalanceRoundRobin:
	default:
		add(field.NotSupported(field.NewPath("balance"), c.Balance, []string{BalanceLeastConnections, BalanceRoundRobin}))
	}
	if c.DialTimeout <= 0 {
		add(field.Invalid(field.NewPath("dialTimeout"), c.DialTimeout.String(), "must be positive"))
	}
	if c.ShutdownGracePeriod < 0 {
		add(field.Invalid(field.NewPath("shutdownGracePeriod"), c.ShutdownGracePeriod.String(), "must not be negative (0 closes open connections at once)"))
	}

	h, hp := c.HealthCheck, field.NewPath("healthCheck")
	if !strings.HasPrefix(h.Path, "/") {
		add(field.Invalid(hp.Child("path"), h.Path, "must start with /"))
	}
	if h.Period <= 0 {
		add(field.Invalid(hp.Child("period"), h.Period.String(), "must be positive"))
	}
	if h.Timeout <= 0 {
		add(field.Invalid(hp.Child("timeout"), h.Timeout.String(), "must be positive"))
	} else if h.Period > 0 && h.Timeout >= h.Period {
		add(field.Invalid(hp.Child("timeout"), h.Timeout.String(), fmt.Sprintf("must be shorter than the period (%s)", h.Period)))
	}
	if h.UnhealthyThreshold < 1 {
		add(field.Invalid(hp.Child("unhealthyThreshold"), h.UnhealthyThreshold, "must be at least 1"))
	}
	if h.HealthyThreshold < 1 {
		add(field.Invalid(hp.Child("healthyThreshold"), h.HealthyThreshold, "must be at least 1"))
	}
	if h.CAFile == "" {
		add(field.Required(hp.Child("caFile"), "it verifies the backends' serving certificates"))
	}
	if h.CertFile != "" && h.KeyFile == "" {
		add(field.Required(hp.Child("keyFile"), "certFile and keyFile go together"))
	}
	if h.CertFile == "" && h.KeyFile != "" {
		add(field.Required(hp.Child("certFile"), "certFile and keyFile go together"))
	}

	if c.MetricsAddress != "" {
		metrics := field.NewPath("metricsAddress")
		if err := roleconfig.CheckListenAddress(c.MetricsAddress); err != nil {
			add(field.Invalid(metrics, c.MetricsAddress, err.Error()))
		} else if c.MetricsAddress == c.ListenAddress && !strings.HasSuffix(c.MetricsAddress, ":0") {
			add(field.Invalid(metrics, c.MetricsAddress, "is also the listenAddress"))
		}
	}
	return errs
}

// checkBackend accepts host:port with a host and a non-zero port.
func checkBackend(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("not host:port: %v", err)
	}
	if host == "" {
		return errors.New("has no host")
	}
	p, err := parsePort(port)
	if err != nil {
		return err
	}
	if p == 0 {
		return errors.New("needs a real port")
	}
	return nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 0 to 65535", s)
	}
	return p, nil
}

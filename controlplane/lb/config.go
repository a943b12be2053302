package lb

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a load balancer role config document.
const (
	APIVersion = "kforge.dev/v1alpha1"
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
	return roleconfig.Load("lb", path, ParseConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	c := NewConfig()
	if err := roleconfig.Decode(data, c); err != nil {
		return nil, err
	}
	c.ResolvePaths(baseDir)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ResolvePaths makes the TLS file paths absolute, relative to baseDir.
func (c *Config) ResolvePaths(baseDir string) {
	roleconfig.ResolvePaths(baseDir,
		&c.HealthCheck.CAFile, &c.HealthCheck.CertFile, &c.HealthCheck.KeyFile,
	)
}

// ConfigError lists every problem found in a Config.
type ConfigError = roleconfig.Error

// Validate checks the whole config and returns a *ConfigError listing
// every problem, or nil. It has no side effects (it does not open files).
func (c *Config) Validate() error {
	probs := roleconfig.NewProblems("lb")
	add := probs.Add

	if c.APIVersion != APIVersion {
		add("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		add("kind", "must be %q, not %q", Kind, c.Kind)
	}
	if c.ListenAddress == "" {
		add("listenAddress", "is required")
	} else if err := checkListen(c.ListenAddress); err != nil {
		add("listenAddress", "%v", err)
	}
	if len(c.Backends) == 0 {
		add("backends", "needs at least one host:port")
	}
	seen := map[string]int{}
	for i, b := range c.Backends {
		field := fmt.Sprintf("backends[%d]", i)
		if err := checkBackend(b); err != nil {
			add(field, "%v", err)
			continue
		}
		if j, dup := seen[b]; dup {
			add(field, "%s is also backends[%d]", b, j)
		}
		seen[b] = i
	}
	switch c.Balance {
	case BalanceLeastConnections, BalanceRoundRobin:
	default:
		add("balance", "must be %q or %q, not %q", BalanceLeastConnections, BalanceRoundRobin, c.Balance)
	}
	if c.DialTimeout <= 0 {
		add("dialTimeout", "must be positive, not %s", c.DialTimeout)
	}
	if c.ShutdownGracePeriod < 0 {
		add("shutdownGracePeriod", "must not be negative (0 closes open connections at once)")
	}

	h := c.HealthCheck
	if !strings.HasPrefix(h.Path, "/") {
		add("healthCheck.path", "must start with /, not %q", h.Path)
	}
	if h.Period <= 0 {
		add("healthCheck.period", "must be positive, not %s", h.Period)
	}
	if h.Timeout <= 0 {
		add("healthCheck.timeout", "must be positive, not %s", h.Timeout)
	} else if h.Period > 0 && h.Timeout >= h.Period {
		add("healthCheck.timeout", "%s must be shorter than the period %s", h.Timeout, h.Period)
	}
	if h.UnhealthyThreshold < 1 {
		add("healthCheck.unhealthyThreshold", "must be at least 1, not %d", h.UnhealthyThreshold)
	}
	if h.HealthyThreshold < 1 {
		add("healthCheck.healthyThreshold", "must be at least 1, not %d", h.HealthyThreshold)
	}
	if h.CAFile == "" {
		add("healthCheck.caFile", "is required (it verifies the backends' serving certificates)")
	}
	if (h.CertFile == "") != (h.KeyFile == "") {
		add("healthCheck.certFile", "certFile and keyFile go together")
	}

	if c.MetricsAddress != "" {
		if err := checkListen(c.MetricsAddress); err != nil {
			add("metricsAddress", "%v", err)
		} else if c.MetricsAddress == c.ListenAddress && !strings.HasSuffix(c.MetricsAddress, ":0") {
			add("metricsAddress", "%s is also the listenAddress", c.MetricsAddress)
		}
	}

	return probs.Err()
}

// checkListen accepts IP:port, localhost:port or :port (every address);
// port 0 picks a free port.
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: a listen address needs an IP address (or localhost)", s)
	}
	if _, err := parsePort(port); err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	return nil
}

// checkBackend accepts host:port with a host and a non-zero port.
func checkBackend(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	p, err := parsePort(port)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	if p == 0 {
		return fmt.Errorf("%q needs a real port", s)
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

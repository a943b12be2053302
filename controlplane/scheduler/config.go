package scheduler

import (
	"fmt"
	"net"
	"strconv"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a scheduler role config document.
const (
	APIVersion = "kforge.dev/v1alpha1"
	Kind       = "SchedulerConfig"
)

// DefaultConfigPath is where the role config lives on a master.
const DefaultConfigPath = "/etc/kforge/scheduler.yaml"

// Defaults applied by NewConfig.
const (
	DefaultSchedulerName  = "default-scheduler"
	DefaultHealthAddress  = "127.0.0.1:10259"
	DefaultLeaseName      = "kforge-scheduler"
	DefaultLeaseNamespace = roleconfig.DefaultLeaseNamespace
	DefaultLeaseDuration  = roleconfig.DefaultLeaseDuration
	DefaultRenewDeadline  = roleconfig.DefaultRenewDeadline
	DefaultRetryPeriod    = roleconfig.DefaultRetryPeriod
)

// Config is the scheduler role's configuration, read from
// /etc/kforge/scheduler.yaml. Build one with NewConfig (defaults) or
// LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// Kubeconfig is the scheduler's client identity
	// (system:kube-scheduler); relative to the config file's folder.
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`
	// SchedulerName selects the pods this scheduler places: those whose
	// spec.schedulerName is this name.
	SchedulerName string `yaml:"schedulerName" json:"schedulerName"`
	// HealthAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics. Empty disables it.
	HealthAddress string `yaml:"healthAddress" json:"healthAddress"`

	LeaderElection LeaderElection `yaml:"leaderElection" json:"leaderElection"`
}

// LeaderElection configures the role's Lease (shared with the other
// leader-elected role).
type LeaderElection = roleconfig.LeaderElection

// NewConfig returns a Config with every default filled in. Kubeconfig has
// no default.
func NewConfig() *Config {
	return &Config{
		APIVersion:     APIVersion,
		Kind:           Kind,
		SchedulerName:  DefaultSchedulerName,
		HealthAddress:  DefaultHealthAddress,
		LeaderElection: roleconfig.DefaultLeaderElection(DefaultLeaseName),
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults
// (an unknown field is an error), resolves the kubeconfig path against
// the file's folder and validates the result.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("scheduler", path, ParseConfig)
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

// ResolvePaths makes the kubeconfig path absolute, relative to baseDir.
func (c *Config) ResolvePaths(baseDir string) {
	roleconfig.ResolvePaths(baseDir, &c.Kubeconfig)
}

// ConfigError lists every problem found in a Config.
type ConfigError = roleconfig.Error

// Validate checks the whole config and returns a *ConfigError listing
// every problem, or nil. It has no side effects.
func (c *Config) Validate() error {
	probs := roleconfig.NewProblems("scheduler")
	add := probs.Add
	if c.APIVersion != APIVersion {
		add("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		add("kind", "must be %q, not %q", Kind, c.Kind)
	}
	if c.Kubeconfig == "" {
		add("kubeconfig", "is required")
	}
	if c.SchedulerName == "" {
		add("schedulerName", "is required")
	}
	if c.HealthAddress != "" {
		if err := checkListen(c.HealthAddress); err != nil {
			add("healthAddress", "%v", err)
		}
	}
	c.LeaderElection.Validate(probs)
	return probs.Err()
}

// checkListen accepts IP:port, localhost:port or :port; port 0 picks a
// free port.
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: a listen address needs an IP address (or localhost)", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	return nil
}

package controllers

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a controller-manager role config document.
const (
	APIVersion = "kforge.dev/v1alpha1"
	Kind       = "ControllerManagerConfig"
)

// DefaultConfigPath is where the role config lives on a master.
const DefaultConfigPath = "/etc/kforge/controller-manager.yaml"

// Controller names, in the order they start.
const (
	NameReplicaSet       = "replicaset"
	NameDeployment       = "deployment"
	NameEndpoints        = "endpoints"
	NameServiceAccount   = "serviceaccount"
	NameGarbageCollector = "garbagecollector"
	NameNamespace        = "namespace"
)

// AllControllers lists every controller this package has.
var AllControllers = []string{
	NameReplicaSet, NameDeployment, NameEndpoints,
	NameServiceAccount, NameGarbageCollector, NameNamespace,
}

// Defaults applied by NewConfig.
const (
	DefaultLeaseName      = "kforge-controller-manager"
	DefaultLeaseNamespace = roleconfig.DefaultLeaseNamespace
	DefaultLeaseDuration  = roleconfig.DefaultLeaseDuration
	DefaultRenewDeadline  = roleconfig.DefaultRenewDeadline
	DefaultRetryPeriod    = roleconfig.DefaultRetryPeriod
	DefaultWorkers        = 2
	DefaultMetricsAddress = "127.0.0.1:10257"
	DefaultResync         = 10 * time.Minute
)

// Config is the controller-manager role's configuration. Build one with
// NewConfig (defaults) or LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// Kubeconfig is the path of the kubeconfig the controllers use
	// (the controller-manager client certificate).
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`

	LeaderElection LeaderElection `yaml:"leaderElection" json:"leaderElection"`

	// Controllers names the controllers to run; empty runs them all.
	Controllers []string `yaml:"controllers" json:"controllers"`
	// Workers is the number of workers per controller.
	Workers int `yaml:"workers" json:"workers"`
	// Resync is the shared informers' resync period.
	Resync time.Duration `yaml:"resync" json:"resync"`

	// MetricsAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics; empty disables it.
	MetricsAddress string `yaml:"metricsAddress" json:"metricsAddress"`
}

// LeaderElection configures the role's Lease (shared with the other
// leader-elected role).
type LeaderElection = roleconfig.LeaderElection

// NewConfig returns a Config with every default filled in; Kubeconfig has
// no default.
func NewConfig() *Config {
	return &Config{
		APIVersion:     APIVersion,
		Kind:           Kind,
		LeaderElection: roleconfig.DefaultLeaderElection(DefaultLeaseName),
		Workers:        DefaultWorkers,
		Resync:         DefaultResync,
		MetricsAddress: DefaultMetricsAddress,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults,
// resolves the kubeconfig path against the file's folder and validates.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("controller-manager", path, ParseConfig)
}

// ParseConfig is LoadConfig for a document held in memory.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	c := NewConfig()
	if err := roleconfig.Decode(data, c); err != nil {
		return nil, err
	}
	roleconfig.ResolvePaths(baseDir, &c.Kubeconfig)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Enabled reports whether the named controller runs.
func (c *Config) Enabled(name string) bool {
	return len(c.Controllers) == 0 || slices.Contains(c.Controllers, name)
}

// Validate checks the whole config and returns a *roleconfig.Error
// listing every problem, or nil. It has no side effects.
func (c *Config) Validate() error {
	probs := roleconfig.NewProblems("controller-manager")
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
	c.LeaderElection.Validate(probs)
	for i, name := range c.Controllers {
		if !slices.Contains(AllControllers, name) {
			add(fmt.Sprintf("controllers[%d]", i), "unknown controller %q (known: %v)", name, AllControllers)
		}
	}
	if c.Workers < 1 {
		add("workers", "must be at least 1, not %d", c.Workers)
	}
	if c.Resync < 0 {
		add("resync", "must not be negative")
	}
	if c.MetricsAddress != "" {
		host, port, err := net.SplitHostPort(c.MetricsAddress)
		if err != nil {
			add("metricsAddress", "%q is not host:port: %v", c.MetricsAddress, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			add("metricsAddress", "port %q is not a number from 0 to 65535", port)
		} else if host != "" && host != "localhost" && net.ParseIP(host) == nil {
			add("metricsAddress", "%q needs an IP address (or localhost)", c.MetricsAddress)
		}
	}
	return probs.Err()
}

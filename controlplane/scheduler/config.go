package scheduler

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a scheduler role config document.
const (
	APIVersion = roleconfig.APIVersion
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
	return roleconfig.Load("scheduler", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths. yaml.Marshal of a valid Config is a document
// it reads back unchanged.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("scheduler", data, baseDir, NewConfig)
}

// FilePaths points at the kubeconfig path, which ParseConfig resolves
// against the config file's folder.
func (c *Config) FilePaths() []*string { return []*string{&c.Kubeconfig} }

// ConfigError lists every problem found in a Config (ParseConfig's and
// New's validation error).
type ConfigError = roleconfig.Error

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects.
func (c *Config) Validate() field.ErrorList {
	errs := roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)
	if c.Kubeconfig == "" {
		errs = append(errs, field.Required(field.NewPath("kubeconfig"), ""))
	}
	if c.SchedulerName == "" {
		errs = append(errs, field.Required(field.NewPath("schedulerName"), ""))
	}
	if c.HealthAddress != "" {
		if err := roleconfig.CheckListenAddress(c.HealthAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("healthAddress"), c.HealthAddress, err.Error()))
		}
	}
	return append(errs, c.LeaderElection.Validate(field.NewPath("leaderElection"))...)
}

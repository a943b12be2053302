package serviceproxy

import (
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a proxy role config document.
const (
	APIVersion = roleconfig.APIVersion
	Kind       = "ProxyConfig"
)

// DefaultConfigPath is where the role config lives on a worker.
const DefaultConfigPath = "/etc/kforge/proxy.yaml"

// Defaults applied by NewConfig: kube-proxy's health port, a full
// rebuild every hour (changes in between are applied incrementally) and
// at most ten syncs a second, so a burst of changes is one transaction.
const (
	DefaultHealthAddress   = "127.0.0.1:10256"
	DefaultSyncPeriod      = time.Hour
	DefaultMinSyncInterval = 100 * time.Millisecond
)

// Config is the proxy role's configuration, read from
// /etc/kforge/proxy.yaml. Build one with NewConfig (defaults) or
// LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// Kubeconfig is the proxy's client identity (system:kube-proxy);
	// relative to the config file's folder.
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`
	// NodeName is this node's Node: its endpoints are the local ones
	// for the Local traffic policies.
	NodeName string `yaml:"nodeName" json:"nodeName"`
	// NodePortAddresses are the addresses NodePorts answer on. Empty
	// means the node's InternalIP addresses, read from its Node at start.
	NodePortAddresses []string `yaml:"nodePortAddresses,omitempty" json:"nodePortAddresses,omitempty"`
	// ClusterCIDR is the cluster's pod range: traffic to a ClusterIP from
	// outside it is masqueraded, so replies come back through this node.
	// Empty masquerades no ClusterIP traffic by source.
	ClusterCIDR string `yaml:"clusterCIDR,omitempty" json:"clusterCIDR,omitempty"`
	// HealthAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics. Empty disables it.
	HealthAddress string `yaml:"healthAddress" json:"healthAddress"`
	// SyncPeriod is how often the whole table is rebuilt even when
	// nothing changed (someone may have altered it).
	SyncPeriod time.Duration `yaml:"syncPeriod" json:"syncPeriod"`
	// MinSyncInterval is the shortest time between two syncs: changes
	// arriving closer together are applied in one transaction.
	MinSyncInterval time.Duration `yaml:"minSyncInterval" json:"minSyncInterval"`
}

// NewConfig returns a Config with every default filled in. Kubeconfig and
// NodeName have no default.
func NewConfig() *Config {
	return &Config{
		APIVersion:      APIVersion,
		Kind:            Kind,
		HealthAddress:   DefaultHealthAddress,
		SyncPeriod:      DefaultSyncPeriod,
		MinSyncInterval: DefaultMinSyncInterval,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults
// (an unknown field is an error), resolves the kubeconfig path against
// the file's folder and validates the result.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("proxy", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("proxy", data, baseDir, NewConfig)
}

// FilePaths points at the kubeconfig path, which ParseConfig resolves
// against the config file's folder.
func (c *Config) FilePaths() []*string { return []*string{&c.Kubeconfig} }

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects.
func (c *Config) Validate() field.ErrorList {
	errs := roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)
	if c.Kubeconfig == "" {
		errs = append(errs, field.Required(field.NewPath("kubeconfig"), ""))
	}
	if c.NodeName == "" {
		errs = append(errs, field.Required(field.NewPath("nodeName"), ""))
	}
	for i, a := range c.NodePortAddresses {
		if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
			errs = append(errs, field.Invalid(field.NewPath("nodePortAddresses").Index(i), a, "must be an IPv4 address"))
		}
	}
	if c.ClusterCIDR != "" {
		if p, err := netip.ParsePrefix(c.ClusterCIDR); err != nil || !p.Addr().Is4() {
			errs = append(errs, field.Invalid(field.NewPath("clusterCIDR"), c.ClusterCIDR, "must be an IPv4 CIDR"))
		}
	}
	if c.HealthAddress != "" {
		if err := roleconfig.CheckListenAddress(c.HealthAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("healthAddress"), c.HealthAddress, err.Error()))
		}
	}
	if c.SyncPeriod <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("syncPeriod"), c.SyncPeriod.String(), "must be positive"))
	}
	if c.MinSyncInterval < 0 || c.MinSyncInterval > c.SyncPeriod {
		errs = append(errs, field.Invalid(field.NewPath("minSyncInterval"), c.MinSyncInterval.String(), "must be between 0 and syncPeriod"))
	}
	return errs
}

package controllers

import (
	"fmt"
	"net"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify a controller-manager role config document.
const (
	APIVersion = roleconfig.APIVersion
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
	NameNodeIPAM         = "nodeipam"
	NameNodeLifecycle    = "nodelifecycle"
	NameDaemonSet        = "daemonset"
	NameStatefulSet      = "statefulset"
	NameJob              = "job"
	NameTTLAfterFinished = "ttl-after-finished"
	NameCronJob          = "cronjob"
	NameDisruption       = "disruption"
	// NameRootCACertPublisher keeps kube-root-ca.crt in every namespace.
	NameRootCACertPublisher = "root-ca-cert-publisher"
	// NameClusterRoleAggregation fills aggregated ClusterRoles.
	NameClusterRoleAggregation = "clusterrole-aggregation"
)

// AllControllers lists every controller this package has.
var AllControllers = []string{
	NameReplicaSet, NameDeployment, NameEndpoints,
	NameServiceAccount, NameGarbageCollector, NameNamespace, NameNodeIPAM,
	NameNodeLifecycle, NameDaemonSet, NameStatefulSet, NameJob, NameTTLAfterFinished, NameCronJob,
	NameDisruption,
	NameRootCACertPublisher, NameClusterRoleAggregation,
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
	DefaultNodeCIDRMask   = 24
	// DefaultNodeMonitorGracePeriod is upstream's node-monitor-grace-period.
	DefaultNodeMonitorGracePeriod = 40 * time.Second
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
	Controllers []string `yaml:"controllers,omitempty" json:"controllers,omitempty"`
	// Workers is the number of workers per controller.
	Workers int `yaml:"workers" json:"workers"`
	// Resync is the shared informers' resync period.
	Resync time.Duration `yaml:"resync" json:"resync"`

	// ClusterCIDR is the pod range node IPAM cuts each Node's
	// spec.podCIDR from; empty turns node IPAM off.
	ClusterCIDR string `yaml:"clusterCIDR" json:"clusterCIDR"`
	// NodeCIDRMaskSize is the prefix length of each Node's range.
	NodeCIDRMaskSize int `yaml:"nodeCIDRMaskSize" json:"nodeCIDRMaskSize"`

	// RootCAFile is the cluster CA bundle the root-ca-cert-publisher puts
	// in every namespace's kube-root-ca.crt; empty takes the CA of the
	// kubeconfig (the CA that signed the apiserver's certificate).
	RootCAFile string `yaml:"rootCAFile,omitempty" json:"rootCAFile,omitempty"`

	// NodeMonitorGracePeriod is how long a Node's heartbeats (its Lease
	// and its Ready condition) may stand still before the node lifecycle
	// controller marks it Unknown and taints it unreachable.
	NodeMonitorGracePeriod time.Duration `yaml:"nodeMonitorGracePeriod" json:"nodeMonitorGracePeriod"`

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
		APIVersion:       APIVersion,
		Kind:             Kind,
		LeaderElection:   roleconfig.DefaultLeaderElection(DefaultLeaseName),
		Workers:          DefaultWorkers,
		Resync:           DefaultResync,
		MetricsAddress:   DefaultMetricsAddress,
		NodeCIDRMaskSize: DefaultNodeCIDRMask,

		NodeMonitorGracePeriod: DefaultNodeMonitorGracePeriod,
	}
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults,
// resolves the kubeconfig path against the file's folder and validates.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("controller-manager", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths. yaml.Marshal of a valid Config is a document
// it reads back unchanged.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("controller-manager", data, baseDir, NewConfig)
}

// FilePaths points at the kubeconfig and root CA paths, which ParseConfig resolves
// against the config file's folder.
func (c *Config) FilePaths() []*string { return []*string{&c.Kubeconfig, &c.RootCAFile} }

// ConfigError lists every problem found in a Config (ParseConfig's and
// NewManager's validation error).
type ConfigError = roleconfig.Error

// Enabled reports whether the named controller runs.
func (c *Config) Enabled(name string) bool {
	return len(c.Controllers) == 0 || slices.Contains(c.Controllers, name)
}

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects.
func (c *Config) Validate() field.ErrorList {
	errs := roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)
	if c.Kubeconfig == "" {
		errs = append(errs, field.Required(field.NewPath("kubeconfig"), ""))
	}
	errs = append(errs, c.LeaderElection.Validate(field.NewPath("leaderElection"))...)
	for i, name := range c.Controllers {
		if !slices.Contains(AllControllers, name) {
			errs = append(errs, field.NotSupported(field.NewPath("controllers").Index(i), name, AllControllers))
		}
	}
	if c.Workers < 1 {
		errs = append(errs, field.Invalid(field.NewPath("workers"), c.Workers, "must be at least 1"))
	}
	if c.Resync < 0 {
		errs = append(errs, field.Invalid(field.NewPath("resync"), c.Resync.String(), "must not be negative"))
	}
	if c.ClusterCIDR != "" {
		if _, n, err := net.ParseCIDR(c.ClusterCIDR); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("clusterCIDR"), c.ClusterCIDR, "not a CIDR"))
		} else if n.IP.To4() == nil {
			errs = append(errs, field.Invalid(field.NewPath("clusterCIDR"), c.ClusterCIDR, "only IPv4 is supported"))
		} else if ones, _ := n.Mask.Size(); c.NodeCIDRMaskSize < ones || c.NodeCIDRMaskSize > 30 {
			errs = append(errs, field.Invalid(field.NewPath("nodeCIDRMaskSize"), c.NodeCIDRMaskSize,
				fmt.Sprintf("does not fit in %s (from /%d to /30)", c.ClusterCIDR, ones)))
		}
	}
	if c.NodeMonitorGracePeriod <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("nodeMonitorGracePeriod"), c.NodeMonitorGracePeriod.String(), "must be positive"))
	}
	if c.MetricsAddress != "" {
		if err := roleconfig.CheckListenAddress(c.MetricsAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("metricsAddress"), c.MetricsAddress, err.Error()))
		}
	}
	return errs
}

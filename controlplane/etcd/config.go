package etcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind identify an etcd role config document.
const (
	APIVersion = roleconfig.APIVersion
	Kind       = "EtcdConfig"
)

// Initial cluster states.
const (
	ClusterStateNew      = "new"
	ClusterStateExisting = "existing"
)

// DefaultConfigPath is where the installer puts the role config on a master.
const DefaultConfigPath = "/etc/kforge/etcd.yaml"

// Defaults applied by NewConfig.
const (
	DefaultDataDir             = "/var/lib/kforge/etcd"
	DefaultListenPeerURL       = "https://127.0.0.1:2380"
	DefaultListenClientURL     = "https://127.0.0.1:2379"
	DefaultMetricsAddress      = "127.0.0.1:2381"
	DefaultInitialClusterToken = "kforge-etcd"

	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultElectionTimeout   = 1000 * time.Millisecond
	// 8 GiB is etcd's recommended maximum; its own default is 2 GiB.
	DefaultQuotaBackendBytes = 8 << 30

	DefaultCompactionInterval     = time.Minute
	DefaultCompactionMinRetention = 5 * time.Minute
	DefaultCompactionMinRevisions = 1000

	DefaultDefragInterval      = 10 * time.Minute
	DefaultDefragMinDBSize     = 100 << 20
	DefaultDefragMaxInUseRatio = 0.5
)

// Config is the etcd role's configuration, read from /etc/kforge/etcd.yaml.
// Build one with NewConfig (defaults) or LoadConfig (file), then Validate.
type Config struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`

	// Name is this member's name; it appears in InitialCluster.
	Name string `yaml:"name" json:"name"`
	// DataDir holds the WAL, snapshots and the bbolt database.
	DataDir string `yaml:"dataDir" json:"dataDir"`

	// ListenPeerURLs and ListenClientURLs are the https:// URLs this member
	// binds; the Advertise* URLs are what other members and clients use to
	// reach it (they default to the listen URLs).
	ListenPeerURLs      []string `yaml:"listenPeerURLs" json:"listenPeerURLs"`
	AdvertisePeerURLs   []string `yaml:"advertisePeerURLs,omitempty" json:"advertisePeerURLs,omitempty"`
	ListenClientURLs    []string `yaml:"listenClientURLs" json:"listenClientURLs"`
	AdvertiseClientURLs []string `yaml:"advertiseClientURLs,omitempty" json:"advertiseClientURLs,omitempty"`

	// InitialCluster is "name=peerURL,name=peerURL,..." and must name this
	// member with one of its advertised peer URLs.
	InitialCluster string `yaml:"initialCluster" json:"initialCluster"`
	// InitialClusterState is "new" when bootstrapping, "existing" when
	// joining a running cluster (after `member add`).
	InitialClusterState string `yaml:"initialClusterState" json:"initialClusterState"`
	InitialClusterToken string `yaml:"initialClusterToken" json:"initialClusterToken"`

	TLS TLS `yaml:"tls" json:"tls"`

	// MetricsAddress is host:port of a plain-HTTP listener serving
	// /healthz, /readyz and /metrics (and etcd's own /health, /livez).
	// Keep it on a loopback or management address.
	MetricsAddress string `yaml:"metricsAddress" json:"metricsAddress"`

	HeartbeatInterval time.Duration `yaml:"heartbeatInterval" json:"heartbeatInterval"`
	ElectionTimeout   time.Duration `yaml:"electionTimeout" json:"electionTimeout"`
	// QuotaBackendBytes raises the NOSPACE alarm when the database grows past it.
	QuotaBackendBytes int64 `yaml:"quotaBackendBytes" json:"quotaBackendBytes"`

	Compaction Compaction `yaml:"compaction" json:"compaction"`
	Defrag     Defrag     `yaml:"defrag" json:"defrag"`
}

// TLS holds the PKI files. Peers and clients both use mutual TLS: every
// connection must present a certificate signed by TrustedCAFile.
type TLS struct {
	// CertFile and KeyFile are the client-facing serving certificate.
	CertFile string `yaml:"certFile" json:"certFile"`
	KeyFile  string `yaml:"keyFile" json:"keyFile"`
	// PeerCertFile and PeerKeyFile are used both to serve and to dial
	// peers, so the certificate needs server and client auth usages.
	PeerCertFile string `yaml:"peerCertFile" json:"peerCertFile"`
	PeerKeyFile  string `yaml:"peerKeyFile" json:"peerKeyFile"`
	// TrustedCAFile is the etcd CA; it verifies clients and peers.
	TrustedCAFile string `yaml:"trustedCAFile" json:"trustedCAFile"`
}

// Compaction configures the leader's periodic compaction. Each run
// compacts to the newest revision that is both older than MinRetention
// and at least MinRevisions behind the head, so both are always kept.
type Compaction struct {
	// Interval between runs; 0 disables compaction.
	Interval     time.Duration `yaml:"interval" json:"interval"`
	MinRetention time.Duration `yaml:"minRetention" json:"minRetention"`
	MinRevisions int64         `yaml:"minRevisions" json:"minRevisions"`
}

// Defrag configures this member's defragmentation policy (see doc.go).
type Defrag struct {
	// Interval is the length of one round; 0 disables defragmentation.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// MinDBSize is the smallest database file, in bytes, worth defragmenting.
	MinDBSize int64 `yaml:"minDBSize" json:"minDBSize"`
	// MaxInUseRatio: defragment when in-use/size falls below it (0 < r < 1).
	MaxInUseRatio float64 `yaml:"maxInUseRatio" json:"maxInUseRatio"`
}

// NewConfig returns a Config with every default filled in: a single
// member on 127.0.0.1 named after the host. TLS files have no default.
func NewConfig() *Config {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "default"
	}
	c := &Config{
		APIVersion:          APIVersion,
		Kind:                Kind,
		Name:                name,
		DataDir:             DefaultDataDir,
		ListenPeerURLs:      []string{DefaultListenPeerURL},
		ListenClientURLs:    []string{DefaultListenClientURL},
		InitialClusterState: ClusterStateNew,
		InitialClusterToken: DefaultInitialClusterToken,
		MetricsAddress:      DefaultMetricsAddress,
		HeartbeatInterval:   DefaultHeartbeatInterval,
		ElectionTimeout:     DefaultElectionTimeout,
		QuotaBackendBytes:   DefaultQuotaBackendBytes,
		Compaction: Compaction{
			Interval:     DefaultCompactionInterval,
			MinRetention: DefaultCompactionMinRetention,
			MinRevisions: DefaultCompactionMinRevisions,
		},
		Defrag: Defrag{
			Interval:      DefaultDefragInterval,
			MinDBSize:     DefaultDefragMinDBSize,
			MaxInUseRatio: DefaultDefragMaxInUseRatio,
		},
	}
	c.InitialCluster = c.Name + "=" + DefaultListenPeerURL
	return c
}

// LoadConfig reads path, decodes it strictly over NewConfig's defaults
// (an unknown field is an error), resolves relative file paths against
// the file's folder and validates the result.
func LoadConfig(path string) (*Config, error) {
	return roleconfig.Load("etcd", path, NewConfig)
}

// ParseConfig is LoadConfig for a document held in memory; baseDir
// resolves relative paths. yaml.Marshal of a valid Config is a document
// it reads back unchanged.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	return roleconfig.Parse("etcd", data, baseDir, NewConfig)
}

// FilePaths points at the data dir and the TLS files: the paths
// ParseConfig resolves against the config file's folder.
func (c *Config) FilePaths() []*string {
	return []*string{&c.DataDir, &c.TLS.CertFile, &c.TLS.KeyFile, &c.TLS.PeerCertFile, &c.TLS.PeerKeyFile, &c.TLS.TrustedCAFile}
}

// advertisePeerURLs returns the advertised peer URLs, defaulting to the listen ones.
func (c *Config) advertisePeerURLs() []string {
	if len(c.AdvertisePeerURLs) > 0 {
		return c.AdvertisePeerURLs
	}
	return c.ListenPeerURLs
}

func (c *Config) advertiseClientURLs() []string {
	if len(c.AdvertiseClientURLs) > 0 {
		return c.AdvertiseClientURLs
	}
	return c.ListenClientURLs
}

// ConfigError lists every problem found in a Config (ParseConfig's and
// NewMember's validation error).
type ConfigError = roleconfig.Error

var memberName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// Validate checks the whole config and returns every problem, each with
// its field. It has no side effects (it does not open files).
func (c *Config) Validate() field.ErrorList {
	errs := roleconfig.ValidateTypeMeta(c.APIVersion, c.Kind, Kind)
	add := func(err *field.Error) { errs = append(errs, err) }

	if c.Name == "" {
		add(field.Required(field.NewPath("name"), ""))
	} else if !memberName.MatchString(c.Name) || len(c.Name) > 63 {
		add(field.Invalid(field.NewPath("name"), c.Name, "not a valid member name (letters, digits, '-', '_', '.'; at most 63)"))
	}
	if c.DataDir == "" {
		add(field.Required(field.NewPath("dataDir"), ""))
	}

	urlList := func(name string, list []string, listen bool) {
		p := field.NewPath(name)
		if len(list) == 0 {
			add(field.Required(p, "needs at least one URL"))
		}
		for i, s := range list {
			if err := checkURL(s, listen); err != nil {
				add(field.Invalid(p.Index(i), s, err.Error()))
			}
		}
	}
	urlList("listenPeerURLs", c.ListenPeerURLs, true)
	urlList("listenClientURLs", c.ListenClientURLs, true)
	if len(c.AdvertisePeerURLs) > 0 {
		urlList("advertisePeerURLs", c.AdvertisePeerURLs, false)
	}
	if len(c.AdvertiseClientURLs) > 0 {
		urlList("advertiseClientURLs", c.AdvertiseClientURLs, false)
	}

	switch c.InitialClusterState {
	case ClusterStateNew, ClusterStateExisting:
	default:
		add(field.NotSupported(field.NewPath("initialClusterState"), c.InitialClusterState, []string{ClusterStateNew, ClusterStateExisting}))
	}
	if c.InitialClusterToken == "" {
		add(field.Required(field.NewPath("initialClusterToken"), ""))
	}
	errs = append(errs, c.validateInitialCluster(field.NewPath("initialCluster"))...)

	tlsPath := field.NewPath("tls")
	for _, f := range []struct{ name, value string }{
		{"certFile", c.TLS.CertFile}, {"keyFile", c.TLS.KeyFile},
		{"peerCertFile", c.TLS.PeerCertFile}, {"peerKeyFile", c.TLS.PeerKeyFile},
		{"trustedCAFile", c.TLS.TrustedCAFile},
	} {
		if f.value == "" {
			add(field.Required(tlsPath.Child(f.name), "peers and clients use mutual TLS"))
		}
	}

	metrics := field.NewPath("metricsAddress")
	if c.MetricsAddress == "" {
		add(field.Required(metrics, "it serves /healthz, /readyz and /metrics"))
	} else if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
		add(field.Invalid(metrics, c.MetricsAddress, fmt.Sprintf("not host:port: %v", err)))
	}

	if c.HeartbeatInterval <= 0 || c.HeartbeatInterval%time.Millisecond != 0 {
		add(field.Invalid(field.NewPath("heartbeatInterval"), c.HeartbeatInterval.String(), "must be a positive whole number of milliseconds"))
	}
	election := field.NewPath("electionTimeout")
	if c.ElectionTimeout < 5*c.HeartbeatInterval {
		add(field.Invalid(election, c.ElectionTimeout.String(), fmt.Sprintf("must be at least 5 × heartbeatInterval (%s)", c.HeartbeatInterval)))
	}
	if c.ElectionTimeout > 50*time.Second {
		add(field.Invalid(election, c.ElectionTimeout.String(), "more than etcd's 50s maximum"))
	}
	notNegative := func(p *field.Path, v int64, value any, why string) {
		if v < 0 {
			add(field.Invalid(p, value, "must not be negative"+why))
		}
	}
	notNegative(field.NewPath("quotaBackendBytes"), c.QuotaBackendBytes, c.QuotaBackendBytes, "")
	cp, dp := field.NewPath("compaction"), field.NewPath("defrag")
	notNegative(cp.Child("interval"), int64(c.Compaction.Interval), c.Compaction.Interval.String(), " (0 disables compaction)")
	notNegative(cp.Child("minRetention"), int64(c.Compaction.MinRetention), c.Compaction.MinRetention.String(), "")
	notNegative(cp.Child("minRevisions"), c.Compaction.MinRevisions, c.Compaction.MinRevisions, "")
	notNegative(dp.Child("interval"), int64(c.Defrag.Interval), c.Defrag.Interval.String(), " (0 disables defragmentation)")
	notNegative(dp.Child("minDBSize"), c.Defrag.MinDBSize, c.Defrag.MinDBSize, "")
	if r := c.Defrag.MaxInUseRatio; !(r > 0 && r < 1) {
		add(field.Invalid(dp.Child("maxInUseRatio"), r, "must be between 0 and 1 (exclusive)"))
	}
	return errs
}

// checkURL accepts only https URLs with an explicit host and port and
// nothing else: etcd serves TLS only here, and paths are meaningless.
func checkURL(s string, listen bool) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "https" {
		return errors.New("must use https (mutual TLS is required)")
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" {
		return errors.New("needs host:port")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("must be scheme://host:port only")
	}
	if listen && net.ParseIP(host) == nil && host != "localhost" {
		return errors.New("a listen URL needs an IP address (or localhost)")
	}
	if !listen && port == "0" {
		return errors.New("an advertised URL needs a real port")
	}
	return nil
}

// parseInitialCluster splits "a=u1,a=u2,b=u3" into name → URLs.
func parseInitialCluster(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("%q is not name=peerURL", part)
		}
		out[name] = append(out[name], u)
	}
	return out, nil
}

func (c *Config) validateInitialCluster(p *field.Path) field.ErrorList {
	if c.InitialCluster == "" {
		return field.ErrorList{field.Required(p, "name=peerURL,...")}
	}
	members, err := parseInitialCluster(c.InitialCluster)
	if err != nil {
		return field.ErrorList{field.Invalid(p, c.InitialCluster, err.Error())}
	}
	var errs field.ErrorList
	bad := func(detail string) { errs = append(errs, field.Invalid(p, c.InitialCluster, detail)) }
	names := make([]string, 0, len(members))
	seen := map[string]string{}
	for name := range members {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, u := range members[name] {
			if err := checkURL(u, false); err != nil {
				bad(fmt.Sprintf("member %s: %s: %v", name, u, err))
			}
			if other, dup := seen[u]; dup && other != name {
				bad(fmt.Sprintf("%s is used by both %s and %s", u, other, name))
			}
			seen[u] = name
		}
	}
	own, ok := members[c.Name]
	if !ok {
		bad(fmt.Sprintf("does not name this member %q", c.Name))
		return errs
	}
	adv := map[string]bool{}
	for _, u := range c.advertisePeerURLs() {
		adv[u] = true
	}
	for _, u := range own {
		if !adv[u] {
			bad(fmt.Sprintf("member %s's URL %s is not one of its advertised peer URLs %v", c.Name, u, c.advertisePeerURLs()))
		}
	}
	return errs
}

package templates

import (
	"bytes"
	"embed"
	"fmt"
	"text/template"
)

//go:embed files/*.tmpl
var files embed.FS

var parsed = template.Must(template.New("").Option("missingkey=error").ParseFS(files, "files/*.tmpl"))

// Where kforge puts things on a host (DESIGN.md, "On a host").
const (
	BinaryPath = "/usr/local/bin/kforge"
	ConfigDir  = "/etc/kforge"
	PKIDir     = "/etc/kforge/pki"
	StateDir   = "/var/lib/kforge"
	UnitDir    = "/etc/systemd/system"
)

// Roles with a systemd unit rendered from this package.
const (
	RoleEtcd      = "etcd"
	RoleAPIServer = "apiserver"
	RoleLB        = "lb"
	// RoleControllerManager and RoleScheduler run on every master,
	// leader-elected.
	RoleControllerManager = "controller-manager"
	RoleScheduler         = "scheduler"
)

// Roles lists every role with a unit, in start order.
var Roles = []string{RoleEtcd, RoleAPIServer, RoleLB, RoleControllerManager, RoleScheduler}

// UnitName is the systemd unit of a role: kforge-<role>.service.
func UnitName(role string) string { return "kforge-" + role + ".service" }

// UnitPath is where a role's unit is written.
func UnitPath(role string) string { return UnitDir + "/" + UnitName(role) }

// ConfigPath is where a role's config is written: /etc/kforge/<role>.yaml.
func ConfigPath(role string) string { return ConfigDir + "/" + role + ".yaml" }

// UnitData fills a unit template.
type UnitData struct {
	// Binary is the kforge binary; Config the role config it is given.
	Binary, Config string
}

// EtcdData fills etcd.yaml for one master.
type EtcdData struct {
	// Name is the member name (the host's name); Address its IP.
	Name, Address string
	DataDir       string
	// InitialCluster is name=https://addr:2380,... for every master.
	InitialCluster      string
	InitialClusterState string
	Token               string
	PKIDir              string
}

// APIServerData fills apiserver.yaml for one master.
type APIServerData struct {
	Name             string
	BindAddress      string
	AdvertiseAddress string
	EtcdEndpoints    []string
	ServiceCIDR      string
	PKIDir           string
}

// LBData fills lb.yaml for the load-balancer host.
type LBData struct {
	Name           string
	ListenAddress  string
	Backends       []string
	MetricsAddress string
	PKIDir         string
}

// ClientRoleData fills controller-manager.yaml or scheduler.yaml for one
// master.
type ClientRoleData struct {
	Name           string
	MetricsAddress string
	PKIDir         string
}

// Unit renders kforge-<role>.service.
func Unit(role string, d UnitData) ([]byte, error) {
	return render(UnitName(role)+".tmpl", d)
}

// Etcd renders etcd.yaml.
func Etcd(d EtcdData) ([]byte, error) { return render("etcd.yaml.tmpl", d) }

// APIServer renders apiserver.yaml.
func APIServer(d APIServerData) ([]byte, error) { return render("apiserver.yaml.tmpl", d) }

// ControllerManager renders controller-manager.yaml.
func ControllerManager(d ClientRoleData) ([]byte, error) {
	return render("controller-manager.yaml.tmpl", d)
}

// Scheduler renders scheduler.yaml.
func Scheduler(d ClientRoleData) ([]byte, error) { return render("scheduler.yaml.tmpl", d) }

// LB renders lb.yaml.
func LB(d LBData) ([]byte, error) { return render("lb.yaml.tmpl", d) }

func render(name string, data any) ([]byte, error) {
	if parsed.Lookup(name) == nil {
		return nil, fmt.Errorf("templates: no template %s", name)
	}
	var buf bytes.Buffer
	if err := parsed.ExecuteTemplate(&buf, name, data); err != nil {
		return nil, fmt.Errorf("templates: rendering %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

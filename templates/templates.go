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

// Where kforge puts things on a host.
const (
	BinaryPath = "/usr/local/bin/kforge"
	ConfigDir  = "/etc/kforge"
	PKIDir     = "/etc/kforge/pki"
	StateDir   = "/var/lib/kforge"
	UnitDir    = "/etc/systemd/system"
)

// UnitName is the systemd unit of a role: kforge-<role>.service.
func UnitName(role string) string { return "kforge-" + role + ".service" }

// UnitPath is where a role's unit is written.
func UnitPath(role string) string { return UnitDir + "/" + UnitName(role) }

// ConfigPath is where a role's config is written: /etc/kforge/<role>.yaml.
func ConfigPath(role string) string { return ConfigDir + "/" + role + ".yaml" }

// UnitData fills the unit template of a role.
type UnitData struct {
	// Role is the kforge command the unit runs (`kforge ROLE --config
	// CONFIG`); Description says what it is.
	Role, Description string
	// After are units that start before this one.
	After []string
	// Binary is the kforge binary; Config the role config it is given.
	Binary, Config string
}

// Unit renders kforge-<role>.service.
func Unit(d UnitData) ([]byte, error) {
	if d.Role == "" || d.Description == "" || d.Binary == "" || d.Config == "" {
		return nil, fmt.Errorf("templates: unit for %q: role, description, binary and config are required", d.Role)
	}
	return render("unit.service.tmpl", d)
}

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

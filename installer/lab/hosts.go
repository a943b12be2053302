package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/installer/ssh"
)

// Hosts returns the hosts of the lab in dir as the installer sees them:
// one installer.Host per lab host, logging in as root with the lab key,
// host keys checked strictly against DIR/ssh/known_hosts. They are not
// connected yet.
func Hosts(dir string) ([]installer.Host, error) {
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("no lab in %s (no %s); start one with `kforge lab up --dir %s`", dir, stateFile, dir)
	}
	hk := hostKeys(dir)
	out := make([]installer.Host, 0, len(st.Hosts))
	for _, h := range st.Hosts {
		out = append(out, newHost(h.HostSpec, sshConfig(dir, h.HostSpec, "root", hk, nil)))
	}
	return out, nil
}

// hostKeys checks host keys against the lab's known_hosts; unknown keys
// are refused (the lab wrote every host's key before booting it).
func hostKeys(dir string) *ssh.HostKeys {
	return &ssh.HostKeys{File: filepath.Join(dir, sshDirName, knownHostsName)}
}

// sshConfig is how installer/ssh reaches lab host h as user: the lab key,
// and for the sudo user the password in DIR/ssh/sudo-password.
func sshConfig(dir string, h HostSpec, user string, hk *ssh.HostKeys, log *slog.Logger) ssh.Config {
	if user == "" {
		user = "root"
	}
	return ssh.Config{
		Name:         h.Name,
		Address:      h.Address.String(),
		Port:         22,
		User:         user,
		IdentityFile: filepath.Join(dir, sshDirName, identityName),
		HostKeys:     hk,
		SudoPassword: func(context.Context) (string, error) {
			data, err := os.ReadFile(filepath.Join(dir, sshDirName, sudoPasswordName))
			if err != nil {
				return "", fmt.Errorf("lab sudo password: %w", err)
			}
			return strings.TrimSpace(string(data)), nil
		},
		Log: log,
	}
}

func newHost(h HostSpec, cfg ssh.Config) installer.Host {
	return installer.NewSSHHost(h.Name, h.Role, h.Address.String(), cfg)
}

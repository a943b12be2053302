// Package templates holds what the installer writes onto hosts as text:
// the one systemd unit template every role's kforge-ROLE.service is
// rendered from, and where kforge puts its binary, configs, certificates
// and state on a host. Role configs are not templates: the installer builds
// them as each role's own config type and marshals them.
package templates

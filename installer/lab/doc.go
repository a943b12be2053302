// Package lab owns the local multi-host lab: a handful of systemd-nspawn
// containers ("hosts") that boot Debian bookworm with systemd, sshd and
// containerd on one Linux machine, so the installer has real hosts to
// install onto in tests, in CI and for a first try.
//
// What it makes and therefore removes again:
//
//   - a cached base root filesystem under /var/cache/kforge (debootstrap,
//     keyed by a hash of its recipe, built in a temporary folder and renamed
//     into place so a crashed build is never taken for a cache);
//   - a bridge (kforge0 by default, 198.18.0.1/24) whose alias names the lab
//     that made it, so a bridge that belongs to something else is refused;
//   - per host an overlayfs writable layer over the base, its own hostname,
//     machine-id, SSH host key and static address, booted by a detached
//     systemd-nspawn whose PID is recorded in DIR/lab.json;
//   - DIR/ssh (the lab key pair, known_hosts, the sudo password of the
//     non-root user "kforge"), DIR/cluster.yaml for the installer and
//     DIR/images/busybox.tar, an OCI archive imported into every worker's
//     containerd.
//
// Up, Down, Status and SSH are the entry points; Down is idempotent and
// also cleans up after an Up that crashed half-way, because Up records
// every resource in DIR/lab.json before it makes it. Up and Down are each
// a plain ordered list of named steps (up.go, down.go), reported through
// the installer's Reporter (✓/✗ per step and per host on stderr).
//
// The lab is a host provider for the installer: Hosts returns an
// installer.Host per lab host, and everything the lab itself does over
// SSH — waiting for the hosts to boot, importing the image, status, `lab
// ssh` — goes through installer/ssh with strict host key checking against
// DIR/ssh/known_hosts.
package lab

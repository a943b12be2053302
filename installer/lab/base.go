package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCacheDir holds built base images.
const DefaultCacheDir = "/var/cache/kforge"

// Recipe describes the base root file system. Its hash names the cache
// entry, so any change to it (packages, script, suite) builds a new base.
type Recipe struct {
	Suite    string   `json:"suite"`
	Variant  string   `json:"variant"`
	Packages []string `json:"packages"`
	// Script runs in the new root (chroot, /bin/sh -e) after debootstrap.
	Script string `json:"script"`
}

// DefaultRecipe is the lab's base: Debian bookworm minbase with systemd,
// sshd, containerd and the tools the installer and agent need, plus
// busybox-static for the workload image.
func DefaultRecipe() Recipe {
	return Recipe{
		Suite:   "bookworm",
		Variant: "minbase",
		Packages: []string{
			"systemd", "systemd-sysv", "openssh-server", "dbus", "iproute2", "sudo",
			"containerd", "runc", "containernetworking-plugins", "nftables", "conntrack",
			"ca-certificates", "busybox-static",
		},
		Script: baseScript,
	}
}

// baseScript turns the debootstrapped tree into a template: no host keys,
// machine-id or hostname of its own (each host gets fresh ones), the sudo
// user, networkd on, and the units that only slow a boot masked.
const baseScript = `
rm -f /etc/ssh/ssh_host_*
useradd --create-home --uid 1000 --user-group --groups sudo --shell /bin/bash kforge
systemctl enable systemd-networkd.service
systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@tty1.service \
  systemd-pstore.service
cat > /etc/ssh/sshd_config.d/10-kforge-lab.conf <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
CONF
: > /etc/machine-id
rm -f /etc/hostname
: > /etc/resolv.conf
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/*
`

// Hash is the recipe's cache key.
func (r Recipe) Hash() string {
	data, _ := json.Marshal(r)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:16]
}

// baseImage is a built, cached base.
type baseImage struct {
	Dir    string // cacheDir/base-HASH
	RootFS string // Dir/rootfs
}

const baseComplete = "complete.json"

func baseImageOf(cacheDir string, r Recipe) baseImage {
	d := filepath.Join(cacheDir, "base-"+r.Hash())
	return baseImage{Dir: d, RootFS: filepath.Join(d, "rootfs")}
}

// baseCached reports whether the base for r is built and complete.
func baseCached(cacheDir string, r Recipe) bool {
	_, err := os.Stat(filepath.Join(baseImageOf(cacheDir, r).Dir, baseComplete))
	return err == nil
}

// baseStepTitle says what ensureBase is about to do: use the cache, or
// build (which takes minutes, so the line says so and where from).
func baseStepTitle(cacheDir string, r Recipe) string {
	if baseCached(cacheDir, r) {
		return "Base image " + r.Hash() + " (cached)"
	}
	from := ""
	if m, err := debianMirror(); err == nil {
		from = " from " + m
	}
	return fmt.Sprintf("Building the base image %s%s (once; about two minutes)", r.Hash(), from)
}

// ensureBase returns the cached base for the recipe, building it first if
// it is missing. The build runs in cacheDir/.build-HASH-*, and only a
// finished build is renamed to cacheDir/base-HASH, so a crashed build is
// never mistaken for a cache. A lock file serialises concurrent builds.
func ensureBase(ctx context.Context, log *slog.Logger, cacheDir string, r Recipe) (baseImage, error) {
	img := baseImageOf(cacheDir, r)
	if _, err := os.Stat(filepath.Join(img.Dir, baseComplete)); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return img, fmt.Errorf("base image cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return img, fmt.Errorf("base image cache lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return img, fmt.Errorf("base image cache lock: %w", err)
	}
	defer func() { _ = unix.Flock(int(lock.Fd()), unix.LOCK_UN) }()
	if _, err := os.Stat(filepath.Join(img.Dir, baseComplete)); err == nil {
		return img, nil // another process built it while we waited
	}
	if err := ensureTools(ctx, log, toolsBuild); err != nil {
		return img, err
	}
	// Leftovers of crashed builds: unmount what debootstrap may have left
	// mounted, then remove without crossing into other file systems.
	stale, _ := filepath.Glob(filepath.Join(cacheDir, ".build-*"))
	if _, err := os.Stat(img.Dir); err == nil {
		stale = append(stale, img.Dir) // a base without its completion marker
	}
	for _, s := range stale {
		log.Info("removing an unfinished base build", "dir", s)
		if err := unmountAll(s); err != nil {
			return img, err
		}
		if err := removeTree(s); err != nil {
			return img, err
		}
	}

	mirror, err := debianMirror()
	if err != nil {
		return img, err
	}
	log.Info("building the base image", "hash", r.Hash(), "mirror", mirror)
	start := time.Now()
	tmp, err := os.MkdirTemp(cacheDir, ".build-"+r.Hash()+"-")
	if err != nil {
		return img, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = unmountAll(tmp)
			_ = removeTree(tmp)
		}
	}()
	rootfs := filepath.Join(tmp, "rootfs")
	args := []string{"--variant=" + r.Variant, "--include=" + strings.Join(r.Packages, ","), r.Suite, rootfs, mirror}
	logPath := filepath.Join(tmp, "debootstrap.log")
	if out, err := run(ctx, "debootstrap", args...); err != nil {
		_ = os.WriteFile(logPath, []byte(out), 0o644)
		return img, fmt.Errorf("debootstrap failed: %w", err)
	} else {
		_ = os.WriteFile(logPath, []byte(out), 0o644)
	}
	if out, err := run(ctx, "chroot", rootfs, "/bin/sh", "-ec", r.Script); err != nil {
		return img, fmt.Errorf("customising the base image: %w\n%s", err, lastLines(out, 20))
	}
	if mps, _ := mountsUnder(tmp); len(mps) > 0 {
		return img, fmt.Errorf("debootstrap left mounts behind: %s", strings.Join(mps, ", "))
	}
	meta, _ := json.MarshalIndent(struct {
		Recipe Recipe    `json:"recipe"`
		Mirror string    `json:"mirror"`
		Built  time.Time `json:"built"`
	}{r, mirror, time.Now().UTC()}, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, baseComplete), meta, 0o644); err != nil {
		return img, err
	}
	if err := os.Rename(tmp, img.Dir); err != nil {
		return img, fmt.Errorf("moving the finished base into the cache: %w", err)
	}
	ok = true
	log.Info("built the base image", "dir", img.Dir, "took", time.Since(start).Round(time.Second))
	return img, nil
}

// debianMirror finds the Debian archive in the machine's apt sources
// (deb822 .sources files and one-line sources.list), skipping the
// security archive.
func debianMirror() (string, error) {
	var files []string
	files = append(files, "/etc/apt/sources.list")
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, more...)
	more, _ = filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(files, more...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uris []string
		if strings.HasSuffix(f, ".sources") {
			uris = deb822URIs(string(data))
		} else {
			uris = oneLineURIs(string(data))
		}
		for _, u := range uris {
			u = strings.TrimRight(u, "/")
			if strings.HasSuffix(u, "/debian") {
				return u, nil
			}
		}
	}
	return "", errors.New("no Debian archive (a URI ending in /debian) in /etc/apt/sources.list or /etc/apt/sources.list.d; the lab's base image needs one")
}

// deb822URIs returns the URIs of stanzas that are of type deb and carry a
// bookworm suite with the main component.
func deb822URIs(s string) []string {
	var out []string
	for _, stanza := range strings.Split(s, "\n\n") {
		fields := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(stanza))
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if ok && !strings.HasPrefix(line, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !hasWord(fields["types"], "deb") || !hasWord(fields["suites"], "bookworm") || !hasWord(fields["components"], "main") {
			continue
		}
		out = append(out, strings.Fields(fields["uris"])...)
	}
	return out
}

// oneLineURIs parses "deb [opts] URI suite components..." lines.
func oneLineURIs(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "deb" {
			continue
		}
		i := 1
		if strings.HasPrefix(f[i], "[") {
			for i < len(f) && !strings.HasSuffix(f[i], "]") {
				i++
			}
			i++
		}
		if i+2 >= len(f)+1 || i+1 >= len(f) {
			continue
		}
		if f[i+1] == "bookworm" && hasWord(strings.Join(f[i+2:], " "), "main") {
			out = append(out, f[i])
		}
	}
	return out
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

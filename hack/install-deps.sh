#!/usr/bin/env bash
# Installs the Debian packages kforge's tests need, only when missing.
# Safe to run again; needs root (or sudo) only when something is missing.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [openssl]=openssl
  [debootstrap]=debootstrap
  [systemd-nspawn]=systemd-container
  [ip]=iproute2
  [ssh-keygen]=openssh-client
  # the node agent's integration test runs a real containerd and CNI plugins
  [containerd]=containerd
  [runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/bin/busybox]=busybox-static
)

missing=()
for cmd in "${!need[@]}"; do
  if [[ "$cmd" == /* ]]; then
    [ -x "$cmd" ] || missing+=("${need[$cmd]}")
  else
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only those missing.
# Idempotent and quiet when everything is present; needs root for apt-get.
set -euo pipefail

# command -> package that provides it
declare -A need=(
  [mkfs.ext4]=e2fsprogs
  [mkfs.xfs]=xfsprogs
  [mkfs.btrfs]=btrfs-progs
  [btrfs]=btrfs-progs
  [losetup]=mount
  [setpriv]=util-linux
  [sqlite3]=sqlite3
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: $pkgs (run as root to install them)" >&2
  exit 1
fi
echo "install-deps: installing $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null

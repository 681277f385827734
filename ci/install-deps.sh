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
  # the database writer hooks' tests (crates/snapshot-cli/tests/dbwriters.rs) run real servers
  [psql]=postgresql-client
  [mariadb]=mariadb-client
  [mariadbd]=mariadb-server
  [mariadb-install-db]=mariadb-server
  # the backup clients of the README's recipes (crates/snapshot-cli/tests/recipes.rs)
  [restic]=restic
  [borg]=borgbackup
  [borgmatic]=borgmatic
  [rsync]=rsync
  # the coordinator of --barrier across hosts (crates/snapshot-cli/tests/ansible.rs)
  [ansible-playbook]=ansible-core
  # cargo xtask dist: debug symbols split off, the packages checked
  [objcopy]=binutils
  [lintian]=lintian
  [rpm]=rpm
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# initdb and pg_ctl are not on PATH: Debian puts them in /usr/lib/postgresql/VERSION/bin.
# (Installing the package creates and may start Debian's default cluster; the tests neither
# use nor touch it, and no service is enabled here.)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
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

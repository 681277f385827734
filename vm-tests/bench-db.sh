#!/bin/bash
# Guest script: the commit stall a real MariaDB and PostgreSQL client sees during a session on
# LVM (`bench --db --lvm`: each server's data on an ext4 on a classic LV, the shipped hook,
# against FLUSH TABLES WITH READ LOCK + raw `lvcreate --snapshot` + UNLOCK TABLES, or the raw
# snapshot alone). The root image has no database server: the packages come with the payload
# and are installed into this boot's overlay only. From the host, as root:
#   cargo xtask vm-test --release --memory 2048 --timeout 2400 \
#       --guest-packages mariadb-server,postgresql \
#       --payload-file writers.d/mariadb --payload-file writers.d/postgresql \
#       --script vm-tests/bench-db.sh -- RUNS RATE
# (harness arguments: bench runs, default 5; commits per second, default 20 — TCG is slow:
# the figures are for ratios, not absolute times).
set -u
mapfile -t args < /run/vmtest/harness-args
runs=${args[0]:-5}
rate=${args[1]:-20}
bin=/run/vmtest/bin
cd /tmp || exit 1
rc=0
up() { cut -d' ' -f1 /proc/uptime; }

echo "VMTEST: installing $(ls /run/vmtest/*.deb | wc -l) packages at $(up)s"
# No service starts (no init system to start them with), no cluster of the package's own:
# the bench makes its servers.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
mkdir -p /etc/postgresql-common
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
# apt, not one dpkg -i: it orders the unpacks by Pre-Depends (gawk's libraries, mariadb-common
# before mariadb-server). Everything it needs is in the payload; it fetches nothing.
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  -o Dpkg::Use-Pty=0 /run/vmtest/*.deb > /tmp/apt.log 2>&1; then
  echo "VMTEST: apt-get install failed:"
  tail -40 /tmp/apt.log
  exit 1
fi
echo "VMTEST: installed at $(up)s: $(mariadbd --version 2>&1 | head -1); $(ls /usr/lib/postgresql)"

# The hooks, in a root-owned directory of their own (the payload's top directory holds more).
hooks=/run/bench-db-hooks
mkdir -p "$hooks"
install -m 755 /run/vmtest/mariadb /run/vmtest/postgresql "$hooks/"

echo "VMTEST: bench --db --lvm --runs $runs --db-rate $rate at $(up)s"
"$bin/xtask" bench --db --lvm --runs "$runs" --db-rate "$rate" --db-hooks "$hooks" \
  --snapshot-bin "$bin/snapshot" </dev/null >/tmp/bench.txt || rc=1
echo "VMTEST-BENCH-BEGIN"; cat /tmp/bench.txt; echo "VMTEST-BENCH-END"
bash /run/vmtest/leak-check.sh || rc=1
echo "VMTEST: done at $(up)s"
exit $rc

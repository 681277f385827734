#!/bin/bash
# Guest script: bench the ZFS provider (one pool on a sparse file in /var/tmp, two datasets;
# sessions over 1 dataset and over both) against raw `zfs snapshot` + `zfs hold` + mount in the
# same guest. From the host, as root:
#   cargo xtask vm-test --release --test zfs --memory 2048 --timeout 1800 \
#       --script vm-tests/bench-zfs.sh -- RUNS [SCALE]
# (harness arguments: bench runs, default 3; SCALE, e.g. 8,32: also sessions over that many
# datasets of the pool, bench --scale). TCG is slow: the figures are for ratios, not
# absolute times.
set -u
mapfile -t args < /run/vmtest/harness-args
runs=${args[0]:-3}
scale=${args[1]:-}
bin=/run/vmtest/bin
cd /tmp || exit 1
rc=0
echo "VMTEST: tmpfs: $(df -h /tmp /dev/shm | tail -2 | tr -s ' ' | tr '\n' ';') scratch: $(df -h /var/tmp | tail -1 | tr -s ' ')"
# The guest's init does not load ZFS (the tests load it on first use); the fixture would too.
echo "VMTEST: modprobe zfs at $(cut -d' ' -f1 /proc/uptime)s"
modprobe zfs </dev/null || { echo "VMTEST: modprobe zfs failed"; exit 1; }
echo "VMTEST: zfs $(cat /sys/module/zfs/version 2>/dev/null) loaded at $(cut -d' ' -f1 /proc/uptime)s"
echo "VMTEST: bench --zfs --runs $runs ${scale:+--scale $scale }at $(cut -d' ' -f1 /proc/uptime)s"
"$bin/xtask" bench --zfs --runs "$runs" ${scale:+--scale "$scale"} --snapshot-bin "$bin/snapshot" </dev/null \
  >/tmp/bench.txt || rc=1
echo "VMTEST-BENCH-BEGIN"; cat /tmp/bench.txt; echo "VMTEST-BENCH-END"
bash /run/vmtest/leak-check.sh || rc=1
if [ $rc -ne 0 ]; then
  echo "VMTEST: kernel messages (last 40):"
  dmesg | tail -40
fi
echo "VMTEST: done at $(cut -d' ' -f1 /proc/uptime)s"
exit $rc

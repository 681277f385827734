#!/bin/bash
# Guest script: certify the ZFS provider (one pool on a sparse file in /var/tmp, two datasets:
# the cross-filesystem pair crosses two datasets of one pool). From the host, as root:
#   cargo xtask vm-test --release --test zfs --memory 2048 --timeout 2400 \
#       --script vm-tests/certify-zfs.sh -- CYCLES
# (harness argument: certify cycles, default 5). TCG is slow: the times are for ratios, not
# absolute figures.
set -u
mapfile -t args < /run/vmtest/harness-args
cycles=${args[0]:-5}
bin=/run/vmtest/bin
cd /tmp || exit 1
rc=0
echo "VMTEST: tmpfs: $(df -h /tmp /dev/shm | tail -2 | tr -s ' ' | tr '\n' ';') scratch: $(df -h /var/tmp | tail -1 | tr -s ' ')"
# The guest's init does not load ZFS (the tests load it on first use); the fixture would too.
echo "VMTEST: modprobe zfs at $(cut -d' ' -f1 /proc/uptime)s"
modprobe zfs </dev/null || { echo "VMTEST: modprobe zfs failed"; exit 1; }
echo "VMTEST: zfs $(cat /sys/module/zfs/version 2>/dev/null) loaded at $(cut -d' ' -f1 /proc/uptime)s"
echo "VMTEST: certify --provider zfs --cycles $cycles at $(cut -d' ' -f1 /proc/uptime)s"
"$bin/xtask" certify --provider zfs --cycles "$cycles" --snapshot-bin "$bin/snapshot" \
  --report /tmp/certify-zfs.md </dev/null >/dev/null || rc=1
echo "VMTEST-CERTIFY-BEGIN zfs"; cat /tmp/certify-zfs.md; echo "VMTEST-CERTIFY-END zfs"
bash /run/vmtest/leak-check.sh || rc=1
if [ $rc -ne 0 ]; then
  echo "VMTEST: kernel messages (last 40):"
  dmesg | tail -40
fi
echo "VMTEST: done at $(cut -d' ' -f1 /proc/uptime)s"
exit $rc

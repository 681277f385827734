#!/bin/bash
# Guest script: certify the shipped example provider scripts, written to the original tool's
# convention, as the `script` provider: examples/filesystems.d/50-lvm over two classic LVs of
# one VG (ext4 and XFS) and examples/filesystems.d/60-zfs over two datasets of one pool. The
# xtask binary carries the examples (`certify --provider script-lvm|script-zfs` without
# --scripts-dir installs them, root's and 0755, in its snaptest-certify-* scratch directory)
# and gives every session `--providers script`, so no built-in provider can take the
# fixtures. From the host, as root:
#   cargo xtask vm-test --release --memory 2048 --timeout 2400 \
#       --script vm-tests/certify-script.sh -- CYCLES
# (harness argument: certify cycles per provider x filesystem, default 5). TCG is slow: the
# times are for ratios, not absolute figures.
set -u
mapfile -t args < /run/vmtest/harness-args
cycles=${args[0]:-5}
bin=/run/vmtest/bin
cd /tmp || exit 1
rc=0
echo "VMTEST: tmpfs: $(df -h /tmp /dev/shm | tail -2 | tr -s ' ' | tr '\n' ';') scratch: $(df -h /var/tmp | tail -1 | tr -s ' ')"
# The guest's init does not load ZFS (the tests load it on first use).
echo "VMTEST: modprobe zfs at $(cut -d' ' -f1 /proc/uptime)s"
modprobe zfs </dev/null || { echo "VMTEST: modprobe zfs failed"; exit 1; }
echo "VMTEST: zfs $(cat /sys/module/zfs/version 2>/dev/null) loaded at $(cut -d' ' -f1 /proc/uptime)s"
for p in script-lvm script-zfs; do
  echo "VMTEST: certify --provider $p --cycles $cycles at $(cut -d' ' -f1 /proc/uptime)s"
  "$bin/xtask" certify --provider "$p" --cycles "$cycles" --snapshot-bin "$bin/snapshot" \
    --report "/tmp/certify-$p.md" </dev/null >/dev/null || rc=1
  echo "VMTEST-CERTIFY-BEGIN $p"; cat "/tmp/certify-$p.md"; echo "VMTEST-CERTIFY-END $p"
done
bash /run/vmtest/leak-check.sh || rc=1
if [ $rc -ne 0 ]; then
  echo "VMTEST: kernel messages (last 40):"
  dmesg | tail -40
fi
echo "VMTEST: done at $(cut -d' ' -f1 /proc/uptime)s"
exit $rc

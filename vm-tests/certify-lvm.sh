#!/bin/bash
# Guest script: certify the LVM providers (classic and thin, ext4 and XFS) and bench them
# against raw `lvcreate --snapshot` in the same guest. From the host, as root:
#   cargo xtask vm-test --release --memory 2048 --timeout 2400 \
#       --script vm-tests/certify-lvm.sh -- CYCLES BENCH_RUNS [SCALE]
# (harness arguments: certify cycles per provider x filesystem, default 5, 0 to skip the
# certification; bench runs, default 3; SCALE, e.g. 8,32: also sessions over that many thin
# LVs, bench --scale). TCG is slow: the figures are for ratios, not absolute times.
set -u
mapfile -t args < /run/vmtest/harness-args
cycles=${args[0]:-5}
runs=${args[1]:-3}
scale=${args[2]:-}
bin=/run/vmtest/bin
cd /tmp || exit 1
rc=0
echo "VMTEST: tmpfs: $(df -h /tmp /dev/shm | tail -2 | tr -s ' ' | tr '\n' ';') scratch: $(df -h /var/tmp | tail -1 | tr -s ' ')"
[ "$cycles" -gt 0 ] && for p in lvm lvm-thin; do
  echo "VMTEST: certify --provider $p --cycles $cycles at $(cut -d' ' -f1 /proc/uptime)s"
  "$bin/xtask" certify --provider "$p" --cycles "$cycles" --snapshot-bin "$bin/snapshot" \
    --report "/tmp/certify-$p.md" </dev/null >/dev/null || rc=1
  echo "VMTEST-CERTIFY-BEGIN $p"; cat "/tmp/certify-$p.md"; echo "VMTEST-CERTIFY-END $p"
done
echo "VMTEST: bench --lvm --runs $runs ${scale:+--scale $scale }at $(cut -d' ' -f1 /proc/uptime)s"
"$bin/xtask" bench --lvm --runs "$runs" ${scale:+--scale "$scale"} --snapshot-bin "$bin/snapshot" </dev/null \
  >/tmp/bench.txt || rc=1
echo "VMTEST-BENCH-BEGIN"; cat /tmp/bench.txt; echo "VMTEST-BENCH-END"
bash /run/vmtest/leak-check.sh || rc=1
echo "VMTEST: done at $(cut -d' ' -f1 /proc/uptime)s"
exit $rc

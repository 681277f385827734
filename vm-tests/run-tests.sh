#!/bin/bash
# Runs every test executable of the payload (/run/vmtest/tests/*) with the harness arguments
# the host passed (a name filter, --nocapture…), one test at a time, and checks that the
# tests left nothing behind. Exit status: 0 when everything passed.
set -u
mapfile -t args < /run/vmtest/harness-args
rc=0
cd /tmp || exit 1
for t in /run/vmtest/tests/*; do
  name=${t##*/}
  echo "VMTEST: running $name at $(cut -d' ' -f1 /proc/uptime)s"
  "$t" --test-threads=1 --color=never "${args[@]}" </dev/null || rc=1
done

# Leak check: what a test run may create is named snaptest-*/snapshot-*; nothing may remain.
left=$(lvs --noheadings -o vg_name,lv_name 2>/dev/null | grep -E 'snaptest-|snapshot-')
[ -n "$left" ] && { echo "VMTEST-LEAK: logical volumes left: $left"; rc=1; }
left=$(grep -E 'snaptest-|snapshot-' /proc/self/mountinfo)
[ -n "$left" ] && { echo "VMTEST-LEAK: mounts left: $left"; rc=1; }
left=$(losetup -n -O NAME,BACK-FILE 2>/dev/null | grep snaptest-)
[ -n "$left" ] && { echo "VMTEST-LEAK: loop devices left: $left"; rc=1; }
# ZFS (only when a test loaded the module): the tests' pools, the tool's snapshots (their
# holds go with them).
if [ -e /dev/zfs ]; then
  left=$(zpool list -H -o name 2>/dev/null | grep snaptest-)
  [ -n "$left" ] && { echo "VMTEST-LEAK: ZFS pools left: $left"; rc=1; }
  left=$(zfs list -H -t snapshot -o name 2>/dev/null | grep '@snapshot-')
  [ -n "$left" ] && { echo "VMTEST-LEAK: ZFS snapshots left: $left"; rc=1; }
fi
if [ $rc -ne 0 ]; then
  echo "VMTEST: kernel messages (last 40):"
  dmesg | tail -40
fi
exit $rc

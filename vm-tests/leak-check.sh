#!/bin/bash
# The guest's leak check, run by every guest script after its work (as
# `bash /run/vmtest/leak-check.sh`): what tests, certification and benches create is named
# snaptest-* (fixtures) or snapshot-* (the tool's objects: LVs, btrfs subvolumes, ZFS
# snapshots), and nothing of it may remain.
# Prints each leak as a VMTEST-LEAK line; exit status 1 if any.
rc=0
left=$(lvs --noheadings -o vg_name,lv_name 2>/dev/null | grep -E 'snaptest-|snapshot-')
[ -n "$left" ] && { echo "VMTEST-LEAK: logical volumes left: $left"; rc=1; }
left=$(grep -E 'snaptest-|snapshot-' /proc/self/mountinfo)
[ -n "$left" ] && { echo "VMTEST-LEAK: mounts left: $left"; rc=1; }
left=$(losetup -n -O NAME,BACK-FILE 2>/dev/null | grep snaptest-)
[ -n "$left" ] && { echo "VMTEST-LEAK: loop devices left: $left"; rc=1; }
left=$(ls /var/tmp 2>/dev/null | grep snaptest-)
[ -n "$left" ] && { echo "VMTEST-LEAK: files left in /var/tmp: $left"; rc=1; }
# btrfs: the tool's snapshots (`.snapshot-<session>-N` in the top level) and fixtures'
# subvolumes, on every mounted btrfs (the server guest's root and /home among them).
left=$(findmnt -l -n -t btrfs -o TARGET 2>/dev/null | while read -r mp; do
  btrfs subvolume list -a "$mp" 2>/dev/null
done | grep -E 'snaptest-|snapshot-' | sort -u)
[ -n "$left" ] && { echo "VMTEST-LEAK: btrfs subvolumes left: $left"; rc=1; }
# Session journals in the default state directory (the whole-system tests use it).
left=$(ls -A /var/lib/snapshot/sessions 2>/dev/null)
[ -n "$left" ] && { echo "VMTEST-LEAK: session journals left in /var/lib/snapshot/sessions: $left"; rc=1; }
# ZFS (only when something loaded the module): the fixtures' pools, their snapshots and the
# tool's (holds go with them).
if [ -e /dev/zfs ]; then
  left=$(zpool list -H -o name 2>/dev/null | grep snaptest-)
  [ -n "$left" ] && { echo "VMTEST-LEAK: ZFS pools left: $left"; rc=1; }
  left=$(zfs list -H -t snapshot -o name 2>/dev/null | grep -E 'snaptest-|@snapshot-')
  [ -n "$left" ] && { echo "VMTEST-LEAK: ZFS snapshots left: $left"; rc=1; }
fi
exit $rc

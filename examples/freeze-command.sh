#!/bin/sh
# Example device-snapshot command for the freeze provider (snapshot --freeze-command PATH).
#
#   PATH create DEVICE NAME              run while the filesystem on DEVICE is frozen: make a
#                                        point-in-time copy of DEVICE named NAME and print the
#                                        block device that holds it (last line of stdout)
#   PATH remove DEVICE NAME COPY_DEVICE  remove that copy; COPY_DEVICE is empty when the
#                                        session died before it was known: find it by NAME.
#                                        Succeed when it is already gone.
#
# stdin is /dev/null; stderr ends up in snapshot's error message. `create` runs inside the
# frozen window: be quick, and write nothing to a filesystem being snapshotted (the write
# would block until the watchdog thaws it at --freeze-timeout).
#
# This example copies a loop device's backing file (a reflink where the filesystem under it
# can, a full copy otherwise) into COPY_DIR and attaches the copy read-only. A real command
# would call a SAN, hypervisor or cloud API instead, e.g. for an EBS volume:
#   create: aws ec2 create-snapshot …, create-volume from it, attach-volume, print /dev/…
#   remove: detach-volume, delete-volume, delete-snapshot (found by the NAME tag).
set -eu

COPY_DIR=${COPY_DIR:-/var/lib/snapshot/copies}

case "${1:-}" in
create)
    device=$2 name=$3
    backing=$(losetup --noheadings --output BACK-FILE "$device" | sed 's/ *$//')
    [ -n "$backing" ] || { echo "$device is not a loop device" >&2; exit 1; }
    mkdir -p "$COPY_DIR"
    cp --reflink=auto --sparse=always "$backing" "$COPY_DIR/$name.img"
    losetup --find --show --read-only "$COPY_DIR/$name.img"
    ;;
remove)
    name=$3 copy=${4:-}
    if [ -z "$copy" ]; then
        # Died before create printed it: whatever loop device reads our copy.
        copy=$(losetup --noheadings --output NAME --associated "$COPY_DIR/$name.img" 2>/dev/null || true)
    fi
    for dev in $copy; do
        losetup --detach "$dev" 2>/dev/null || true
    done
    # A device some other program holds open for a moment (a tool probing every block device,
    # like mkfs.btrfs or blkid) is only detached once it is closed: wait for that (at most
    # 10 s), so that a removed copy is gone.
    i=0
    while [ $i -lt 100 ] && [ -n "$(losetup --noheadings --output NAME --associated "$COPY_DIR/$name.img" 2>/dev/null)" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    rm -f "$COPY_DIR/$name.img"
    ;;
*)
    echo "usage: $0 create DEVICE NAME | remove DEVICE NAME COPY_DEVICE" >&2
    exit 64
    ;;
esac

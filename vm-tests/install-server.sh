#!/bin/bash
# The installer (run by `init` in place of run-tests.sh, from xtask/src/vm/server.rs): makes the
# server disks from the pristine root image, like a distribution installer would.
#
# Disks, by virtio serial: `source` (the root image, read-only), `server-lvm` and
# `server-btrfs` (blank, written in place; cached by the host afterwards). Parameters, one
# NAME=VALUE a line in /run/vmtest/harness-args: VG (the LVM server's volume group) and
# BTRFS_UUID (the btrfs server's filesystem UUID, named on its kernel command line).
#
# - server-lvm:   p1 /boot ext4 | p2 LVM PV: VG $VG, LV root (ext4, /), LV home (ext4, /home),
#                 free extents left for snapshots.
# - server-btrfs: p1 /boot ext4 | p2 btrfs: subvolumes @ (/) and @home (/home).
# Each root's /etc/fstab mounts /home and /boot (and names /); /etc/hostname is its name.
set -euo pipefail
while IFS='=' read -r k v; do
  [ -n "$k" ] && declare -x "$k=$v"
done < /run/vmtest/harness-args
: "${VG:?}" "${BTRFS_UUID:?}"
up() { cut -d' ' -f1 /proc/uptime; }
declare -A disk
for d in /sys/block/vd*; do
  s=$(cat "$d/serial" 2>/dev/null) && disk[$s]=/dev/${d##*/}
done
src=${disk[source]:?no source disk} lvmdisk=${disk[server-lvm]:?} btrfsdisk=${disk[server-btrfs]:?}
echo "VMTEST install: source $src, lvm $lvmdisk, btrfs $btrfsdisk at $(up)s"

# Sizes: the root image holds ~0.5 GiB; each root gets about 1 GiB more for the tests' files and
# what CoW needs; the VG keeps ~1.7 GiB of free extents for classic snapshots.
ROOT_SIZE=1536M HOME_SIZE=512M
# Inode tables and journal written now: no lazy init thread writing in every later boot.
MKFS_EXT4=(mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0)

mkdir -p /mnt/src /mnt/boot /mnt/root /mnt/home
mount -o ro "$src" /mnt/src

partition() { # DISK TYPE-OF-PARTITION-2
  sfdisk -q "$1" <<PT
label: gpt
size=256MiB, type=linux, name=boot
type=$2, name=system
PT
  local i
  for i in $(seq 100); do
    [ -b "${1}1" ] && [ -b "${1}2" ] && return 0
    sleep 0.1
  done
  echo "VMTEST install: partitions of $1 did not appear"; return 1
}

# /boot: what a server keeps there (here a note; the guest boots a kernel the host gives QEMU).
fill_boot() { # MOUNTPOINT LAYOUT
  mkdir -p "$1/grub"
  printf 'This /boot belongs to the %s test server of snapshot'"'"'s VM tier.\n' "$2" > "$1/README"
  printf '# the kernel comes from QEMU -kernel; this file only makes /boot look like one\n' \
    > "$1/grub/grub.cfg"
  cp -a /mnt/src/etc/os-release "$1/os-release"
}

# /home: a user's files.
fill_home() { # MOUNTPOINT
  mkdir -p "$1/admin/notes"
  cp -a /mnt/src/etc/skel/. "$1/admin/"
  for i in $(seq 20); do
    printf 'note %d\n' "$i" > "$1/admin/notes/note-$i.txt"
  done
  chown -R 1000:1000 "$1/admin"
}

# The root: the source image's files, this machine's name and fstab.
fill_root() { # MOUNTPOINT HOSTNAME FSTAB
  cp -a /mnt/src/. "$1/"
  echo "$2" > "$1/etc/hostname"
  printf '%s\n' "$3" > "$1/etc/fstab"
}

t=$(up)
partition "$lvmdisk" lvm
"${MKFS_EXT4[@]}" -L boot "${lvmdisk}1"
pvcreate -q "${lvmdisk}2"
vgcreate -q "$VG" "${lvmdisk}2"
lvcreate -q -y -L "$ROOT_SIZE" -n root "$VG"
lvcreate -q -y -L "$HOME_SIZE" -n home "$VG"
"${MKFS_EXT4[@]}" -L root "/dev/mapper/$VG-root"
"${MKFS_EXT4[@]}" -L home "/dev/mapper/$VG-home"
boot_uuid=$(blkid -s UUID -o value "${lvmdisk}1")
mount "/dev/mapper/$VG-root" /mnt/root
mount "/dev/mapper/$VG-home" /mnt/home
mount "${lvmdisk}1" /mnt/boot
fill_root /mnt/root server-lvm "# <file system> <mount point> <type> <options> <dump> <pass>
/dev/mapper/$VG-root / ext4 errors=remount-ro 0 1
/dev/mapper/$VG-home /home ext4 defaults 0 2
UUID=$boot_uuid /boot ext4 defaults 0 2"
fill_home /mnt/home
fill_boot /mnt/boot lvm
df -h /mnt/root /mnt/home /mnt/boot
umount /mnt/boot /mnt/home /mnt/root
vgchange -q -an "$VG"
vgs -o vg_name,vg_size,vg_free "$VG" 2>/dev/null || vgs
echo "VMTEST install: server-lvm done at $(up)s (started at ${t}s)"

t=$(up)
partition "$btrfsdisk" linux
"${MKFS_EXT4[@]}" -L boot "${btrfsdisk}1"
mkfs.btrfs -q -f -L system -U "$BTRFS_UUID" "${btrfsdisk}2"
boot_uuid=$(blkid -s UUID -o value "${btrfsdisk}1")
mkdir -p /mnt/top
mount "${btrfsdisk}2" /mnt/top
btrfs -q subvolume create /mnt/top/@
btrfs -q subvolume create /mnt/top/@home
mount "${btrfsdisk}1" /mnt/boot
fill_root /mnt/top/@ server-btrfs "# <file system> <mount point> <type> <options> <dump> <pass>
UUID=$BTRFS_UUID / btrfs subvol=@ 0 0
UUID=$BTRFS_UUID /home btrfs subvol=@home 0 0
UUID=$boot_uuid /boot ext4 defaults 0 2"
fill_home /mnt/top/@home
fill_boot /mnt/boot btrfs
btrfs subvolume list /mnt/top
btrfs filesystem df /mnt/top
umount /mnt/boot /mnt/top
echo "VMTEST install: server-btrfs done at $(up)s (started at ${t}s)"

umount /mnt/src
sync
bash /run/vmtest/leak-check.sh

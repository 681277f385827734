#!/bin/bash
# The systemd guest's tests (issue 16), run by vmtest.service (vm-tests/systemd-init) on the
# server-lvm disk booted with systemd as init. They work on the package as an administrator
# would: the .deb from `cargo xtask dist` installed with apt, its units run by systemd.
#
# Each test is a function t_NAME run in a subshell with `set -e`; the results are printed as
# libtest prints them (`test NAME ... ok|FAILED`, one `test result:` line per boot), so the host
# counts them with the Rust targets'. The first line of the harness arguments, if any, is a
# filter: only the tests whose name contains it (the package's installation always runs).
# Everything made here is named snaptest-* (or, for the decoys, like the tool's objects of a
# session that never existed) and removed at the end; then the leak check.
#
# Two boots: the power cut test starts a session holding LVM classic, LVM thin, ZFS and btrfs
# snapshots, writes $STATE/armed and resets the guest (sysrq b: no sync, no shutdown); QEMU
# boots it again with the same disks, and this script, seeing the marker, checks what
# snapshot-cleanup.service did at boot.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
up() { cut -d' ' -f1 /proc/uptime; }
mapfile -t args < /run/vmtest/harness-args
filter=
for a in "${args[@]}"; do
  case $a in -*) ;; *) filter=$a; break ;; esac
done

STATE=/var/lib/snaptest-systemd       # on the root: survives the reset
mkdir -p "$STATE"
PASSWORD=snaptest-password
REPO=/var/tmp/snaptest-restic
DECOY=dec0de00                         # a session id no session has
PC_DIRS=(/srv/snaptest-classic /srv/snaptest-thin /srv/snaptest-btrfs /srv/snaptest-zfs)
declare -A disk
for d in /sys/block/vd*; do
  s=$(cat "$d/serial" 2>/dev/null) && disk[$s]=/dev/${d##*/}
done

passed=0 failed=0 filtered=0 started=$(up)
fail() { echo "  FAILED: $*"; exit 1; }
selected() { [ -z "$filter" ] || [[ $1 == *"$filter"* ]]; }
run_test() { # NAME [always]
  local name=$1 rc t0
  if [ "${2:-}" != always ] && ! selected "$name"; then
    filtered=$((filtered + 1)); return 0
  fi
  t0=$(up)
  echo "VMTEST: test $name at ${t0}s"
  ( set -eE -o pipefail
    trap 'echo "  line $LINENO: $BASH_COMMAND (status $?)"' ERR
    trap 'if [ -n "${WRITER:-}" ]; then kill "$WRITER" 2>/dev/null || true; fi' EXIT
    "t_${name//::/_}" )
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "test $name ... ok ($(awk -v a="$t0" -v b="$(up)" 'BEGIN{printf "%.1f", b-a}') s)"
    passed=$((passed + 1))
  else
    echo "test $name ... FAILED"
    failed=$((failed + 1))
  fi
  return $rc
}
summary() {
  local verdict=ok
  [ $failed -eq 0 ] || verdict=FAILED
  echo "test result: $verdict. $passed passed; $failed failed; 0 ignored; 0 measured; $filtered filtered out; finished in $(awk -v a="$started" -v b="$(up)" 'BEGIN{printf "%.2f", b-a}')s"
}

# A unit's property.
prop() { systemctl show -p "$2" --value "$1"; }
# Nothing of any session left: snapshot LVs, mounts, journals, btrfs/ZFS snapshots.
nothing_left() {
  local left
  left=$(lvs --noheadings -o lv_name 2>/dev/null | grep 'lvm-snapshot-' | grep -v "$DECOY" || true)
  [ -z "$left" ] || fail "snapshot LVs left: $left"
  left=$(grep -E '/run/snapshot|snapshot-[0-9a-f]{8}' /proc/self/mountinfo || true)
  [ -z "$left" ] || fail "mounts left: $left"
  left=$(ls -A /var/lib/snapshot/sessions 2>/dev/null || true)
  [ -z "$left" ] || fail "session journals left: $left"
  if [ -e /dev/zfs ]; then
    left=$(zfs list -H -t snapshot -o name 2>/dev/null | grep '@snapshot-' | grep -v "$DECOY" || true)
    [ -z "$left" ] || fail "ZFS snapshots left: $left"
  fi
  left=$(findmnt -l -n -t btrfs -o TARGET | while read -r mp; do btrfs subvolume list -a "$mp"; done \
         | grep '\.snapshot-' | grep -v "$DECOY" || true)
  [ -z "$left" ] || fail "btrfs snapshots left: $left"
}

# --- the concurrent writer: numbered files and a log of the numbers written, in order -----
# File N is complete before N is appended to the log. In a copy taken at one instant, with L
# the log's last number: the log is 1..L, files 1..L hold their numbers, and no file beyond
# L+1 exists (L+1 may: written, not yet logged).
writer_start() { # DIR
  mkdir -p "$1"
  ( i=0
    while :; do
      i=$((i + 1))
      echo "$i" > "$1/file-$i"
      echo "$i" >> "$1/log"
      sleep 0.05
    done ) </dev/null >/dev/null 2>&1 &
  WRITER=$!
  local n=0
  until [ "$(wc -l < "$1/log" 2>/dev/null || echo 0)" -ge 20 ]; do
    n=$((n + 1)); [ $n -lt 600 ] || fail "the writer did not start"
    sleep 0.1
  done
}
writer_stop() { kill "$WRITER" 2>/dev/null || true; wait "$WRITER" 2>/dev/null || true; WRITER=; }
one_instant() { # COPY LIVE
  local copy=$1 live=$2 last i n
  last=$(tail -n 1 "$copy/log")
  [ -n "$last" ] || fail "empty log in the copy"
  [ "$(wc -l < "$copy/log")" -eq "$last" ] || fail "the copy's log is not 1..$last"
  [ "$(seq "$last" | cmp - "$copy/log" && echo same)" = same ] || fail "the copy's log is not 1..$last"
  for i in $(seq "$last"); do
    [ "$(cat "$copy/file-$i" 2>/dev/null)" = "$i" ] || fail "file-$i missing or wrong in the copy (log says $last)"
  done
  n=$(ls "$copy" | grep -c '^file-')
  [ "$n" -le $((last + 1)) ] || fail "$n files in the copy, its log ends at $last: not one instant"
  [ "$(wc -l < "$live/log")" -gt "$last" ] || fail "the writer did not write during the backup"
  echo "  one instant: log 1..$last, $n files in the copy; live log now $(wc -l < "$live/log")"
}

# --- tests -------------------------------------------------------------------------------

t_install_deb() {
  local deb
  deb=$(ls /run/vmtest/snapshot_*.deb)
  cd /run/vmtest
  # Offline: the guest has no network; the package depends on libc6 alone.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "./${deb##*/}"
  cd /
  dpkg -L snapshot > "$STATE/dpkg-L"
  echo "  $(wc -l < "$STATE/dpkg-L") paths in dpkg -L snapshot"
  snapshot --version
  [ "$(command -v snapshot)" = /usr/sbin/snapshot ] || fail "snapshot is $(command -v snapshot)"
  for b in start-snapshot stop-snapshot; do [ -x "/usr/sbin/$b" ] || fail "/usr/sbin/$b missing"; done
  # man-db is not in the image: the pages where `man -w` would find them.
  if command -v man >/dev/null; then man -w snapshot; fi
  for p in snapshot snapshot-run snapshot-cleanup start-snapshot stop-snapshot; do
    gzip -t "/usr/share/man/man1/$p.1.gz" || fail "man page $p missing"
    zcat "/usr/share/man/man1/$p.1.gz" | grep -q '^\.TH' || fail "man page $p has no .TH"
  done
  for f in /usr/share/bash-completion/completions/snapshot /usr/share/zsh/vendor-completions/_snapshot \
           /usr/share/fish/vendor_completions.d/snapshot.fish; do
    [ -s "$f" ] || fail "completion $f missing"
  done
  # The bash completion loads and completes a subcommand.
  bash -c 'source /usr/share/bash-completion/completions/snapshot
           COMP_WORDS=(snapshot ru); COMP_CWORD=1; COMP_LINE="snapshot ru"; COMP_POINT=11
           _snapshot snapshot ru snapshot 2>/dev/null; printf "%s\n" "${COMPREPLY[@]}"' | grep -qx run \
    || fail "bash completion of 'snapshot ru' does not offer run"
  [ "$(systemctl is-enabled snapshot-cleanup.service)" = enabled ] || fail "snapshot-cleanup.service not enabled"
  systemctl cat snapshot-backup@.service >/dev/null
  [ "$(stat -c %a /run/snapshot)" = 700 ] && [ "$(stat -c %a /var/lib/snapshot)" = 700 ] \
    || fail "runtime/state directories: $(stat -c '%n %a' /run/snapshot /var/lib/snapshot)"
  [ -f /etc/snapshot/snapshot.toml ] || fail "/etc/snapshot/snapshot.toml missing"
  mkdir -p /etc/snapshot/backup
  printf '%s\n' "$PASSWORD" > /etc/snapshot/backup/snaptest-restic.password
  RESTIC_PASSWORD=$PASSWORD restic -q -r "$REPO" init
}

t_backup_service() {
  cat > /etc/snapshot/backup/snaptest-demo.conf <<CONF
SNAPSHOT_DIRS="/home"
SNAPSHOT_OPTIONS="-v --require-snapshot"
SNAPSHOT_COMMAND="restic backup --one-file-system --tag snaptest-demo /home"
RESTIC_REPOSITORY=$REPO
RESTIC_PASSWORD_FILE=/etc/snapshot/backup/snaptest-restic.password
CONF
  ln -sf snaptest-demo.conf /etc/snapshot/backup/demo.conf
  local w=/home/snaptest-writer t0
  writer_start "$w"
  t0=$(up)
  systemctl start snapshot-backup@demo || { journalctl -u snapshot-backup@demo --no-pager | tail -30; fail "the unit failed"; }
  echo "  systemctl start snapshot-backup@demo: $(awk -v a="$t0" -v b="$(up)" 'BEGIN{printf "%.1f", b-a}') s"
  sleep 1
  writer_stop
  [ "$(prop snapshot-backup@demo.service Result)" = success ] || fail "Result=$(prop snapshot-backup@demo.service Result)"
  local log
  log=$(journalctl -u snapshot-backup@demo --no-pager -o cat)
  echo "$log" | sed 's/^/  journal: /' | tail -25
  echo "$log" | grep -q '"/home" (ext4 on .*): lvm' || fail "the journal does not show the plan"
  echo "$log" | grep -q 'frozen window' || fail "the journal does not show the frozen window"
  echo "$log" | grep -Eq 'snapshot [0-9a-f]+ saved' || fail "the journal does not show restic's snapshot"
  rm -rf /var/tmp/snaptest-restore
  RESTIC_PASSWORD=$PASSWORD restic -q -r "$REPO" restore latest --tag snaptest-demo \
    --target /var/tmp/snaptest-restore --include "$w"
  one_instant "/var/tmp/snaptest-restore$w" "$w"
  rm -rf /var/tmp/snaptest-restore "$w"
  nothing_left
}

t_stop_during_hold() {
  cat > /etc/snapshot/backup/snaptest-hold.conf <<'CONF'
SNAPSHOT_DIRS="/ /home"
SNAPSHOT_OPTIONS="-v"
SNAPSHOT_COMMAND="touch /run/snaptest-holding; exec sleep 600"
CONF
  ln -sf snaptest-hold.conf /etc/snapshot/backup/hold.conf
  rm -f /run/snaptest-holding
  systemctl start --no-block snapshot-backup@hold
  local n=0
  until [ -e /run/snaptest-holding ]; do
    n=$((n + 1)); [ $n -lt 1200 ] || fail "the backup command did not start"
    [ "$(prop snapshot-backup@hold.service ActiveState)" != failed ] || fail "the unit failed"
    sleep 0.1
  done
  local lvs_held
  lvs_held=$(lvs --noheadings -o lv_name sysvg | grep -c 'lvm-snapshot-' || true)
  [ "$lvs_held" -eq 2 ] || fail "$lvs_held snapshot LVs while holding (expected 2: / and /home)"
  [ -n "$(ls -A /var/lib/snapshot/sessions)" ] || fail "no session journal while holding"
  local t0; t0=$(up)
  systemctl stop snapshot-backup@hold
  echo "  systemctl stop: $(awk -v a="$t0" -v b="$(up)" 'BEGIN{printf "%.1f", b-a}') s"
  local log
  log=$(journalctl -u snapshot-backup@hold --no-pager -o cat)
  echo "$log" | sed 's/^/  journal: /' | tail -12
  echo "  unit: Result=$(prop snapshot-backup@hold.service Result) ExecMainStatus=$(prop snapshot-backup@hold.service ExecMainStatus) ActiveState=$(prop snapshot-backup@hold.service ActiveState)"
  # Ended by SIGTERM after an orderly teardown: 128+15, and no SIGKILL was needed.
  [ "$(prop snapshot-backup@hold.service ExecMainStatus)" = 143 ] || fail "exit status $(prop snapshot-backup@hold.service ExecMainStatus), expected 143"
  echo "$log" | grep -qi 'sigkill\|killing' && fail "something was killed: $log"
  nothing_left
  systemctl reset-failed snapshot-backup@hold.service 2>/dev/null || true
}

t_in_place_nonempty_mnt() {
  mkdir -p /mnt/snaptest-busy
  echo busy > /mnt/snaptest-busy/file
  echo "in the snapshot" > /home/snaptest-inplace
  local out=/var/tmp/snaptest-inplace.out
  # No -t: the view goes to a private directory of the session's, not the busy /mnt.
  snapshot run --in-place /home -- sh -c \
    'cat /home/snaptest-inplace; touch /home/snaptest-w 2>/dev/null && echo WRITABLE; true' > "$out"
  echo "  the command saw: $(tr '\n' ' ' < "$out")"
  [ "$(cat "$out")" = "in the snapshot" ] || fail "run --in-place: $(cat "$out")"
  rm -f /home/snaptest-inplace /home/snaptest-w "$out"
  rm -rf /mnt/snaptest-busy
  nothing_left
}

# The sandboxing options snapshot-backup@.service lists as unusable, each added alone by a
# drop-in, with a short backup (/ and /home, a listing): information for the unit's comments.
t_sandboxing() {
  cat > /etc/snapshot/backup/snaptest-sandbox.conf <<'CONF'
SNAPSHOT_DIRS="/ /home"
SNAPSHOT_OPTIONS="--require-snapshot"
SNAPSHOT_COMMAND="test -f /var/lib/snaptest-sandbox && test -f /home/snaptest-sandbox && test -d /run/snapshot"
CONF
  # The job must see these (files in the snapshots of / and /home), and take real snapshots
  # (--require-snapshot: a view that falls back to a live bind, e.g. /home hidden by
  # ProtectHome=, fails).
  touch /var/lib/snaptest-sandbox /home/snaptest-sandbox
  ln -sf snaptest-sandbox.conf /etc/snapshot/backup/sandbox.conf
  local drop=/run/systemd/system/snapshot-backup@sandbox.service.d opt verdict
  # The options the unit uses are all in it: the other tests ran with them. Its own baseline:
  systemctl start snapshot-backup@sandbox || fail "the sandbox job fails without any drop-in"
  mkdir -p "$drop"
  for opt in RestrictSUIDSGID=yes ProtectSystem=strict ProtectSystem=full ProtectHome=yes ProtectHome=read-only \
             PrivateTmp=yes PrivateDevices=yes DevicePolicy=closed ProtectKernelModules=yes \
             RestrictNamespaces=yes SystemCallFilter=@system-service ProtectKernelTunables=yes \
             ProtectControlGroups=yes MemoryDenyWriteExecute=yes PrivateNetwork=yes \
             ProtectClock=yes ProtectKernelLogs=yes ProtectHostname=yes; do
    printf '[Service]\n%s\n' "$opt" > "$drop/snaptest.conf"
    systemctl daemon-reload
    if systemctl start snapshot-backup@sandbox 2>/dev/null; then
      verdict=works
    else
      verdict="breaks (status $(prop snapshot-backup@sandbox.service ExecMainStatus): $(journalctl -u snapshot-backup@sandbox -n 20 --no-pager -o cat | grep -E '^snapshot: (error|warning)' | tail -1 | cut -c1-200))"
      systemctl reset-failed snapshot-backup@sandbox.service
      # A session killed by the sandbox (SystemCallFilter='s SIGSYS) leaves a dead session:
      # what `snapshot cleanup` (the boot-time unit's command) is for.
      if [ -n "$(ls -A /var/lib/snapshot/sessions)" ]; then
        snapshot cleanup >/dev/null
        verdict="$verdict; it left a dead session, removed by snapshot cleanup"
      fi
    fi
    echo "VMTEST-SANDBOX: $opt: $verdict"
    nothing_left
  done
  rm -rf "$drop"
  rm -f /var/lib/snaptest-sandbox /home/snaptest-sandbox
  systemctl daemon-reload
}

zfs_ok() { [ -e /dev/zfs ] || modprobe zfs 2>/dev/null; }

# Boot 1: fixtures of every kind (on disks that stay: the data disks, the scratch disk), decoys
# named like the tool's objects of a session that never existed, a session holding snapshots
# of all four, then the reset.
t_power_cut_before_reset() {
  local classic=/srv/snaptest-classic thin=/srv/snaptest-thin btr=/srv/snaptest-btrfs zfsdir=/srv/snaptest-zfs
  local d1=${disk[data1]:?} d2=${disk[data2]:?}
  pvcreate -q "$d1"
  vgcreate -q snaptest-pcvg "$d1"
  lvcreate -q -y -L 256M -n classic snaptest-pcvg
  lvcreate -q -y --type thin-pool -L 512M -n pool snaptest-pcvg
  lvcreate -q -y -V 256M --thinpool pool -n thin snaptest-pcvg
  mkfs.ext4 -q /dev/snaptest-pcvg/classic
  mkfs.ext4 -q /dev/snaptest-pcvg/thin
  mkfs.btrfs -q -f -L snaptest-btrfs "$d2"
  mkdir -p "$classic" "$thin" "$btr" "$zfsdir"
  local uuid; uuid=$(blkid -s UUID -o value "$d2")
  # As an administrator's: in fstab, so they are mounted at boot (nofail: a test failure, not
  # an emergency shell, if one is missing).
  cat >> /etc/fstab <<FSTAB
/dev/snaptest-pcvg/classic $classic ext4 nofail,x-systemd.device-timeout=60s 0 2 # snaptest
/dev/snaptest-pcvg/thin $thin ext4 nofail,x-systemd.device-timeout=60s 0 2 # snaptest
UUID=$uuid $btr btrfs nofail,x-systemd.device-timeout=60s 0 0 # snaptest
FSTAB
  systemctl daemon-reload
  mount "$classic"; mount "$thin"; mount "$btr"
  if zfs_ok; then
    truncate -s 512M /var/tmp/snaptest-pcpool.img
    zpool create -f -o cachefile=/etc/zfs/zpool.cache snaptest-pcpool /var/tmp/snaptest-pcpool.img
    zfs create -o mountpoint="$zfsdir" snaptest-pcpool/fs
    echo "  zfs: module loaded; zfs-import-cache $(systemctl is-enabled zfs-import-cache.service), zfs-mount $(systemctl is-enabled zfs-mount.service)"
    echo zfs > "$STATE/kinds"
  else
    echo "  zfs: the module does not load in this guest: the power cut test covers LVM and btrfs only"
    rmdir "$zfsdir"
    : > "$STATE/kinds"
  fi
  local dir
  for dir in "${PC_DIRS[@]}"; do
    [ -d "$dir" ] || continue
    echo "before the power cut" > "$dir/snaptest-data"
  done
  # Decoys: the same kinds, named as a session's objects, of a session that has no journal.
  lvcreate -q -y -s -L 64M -n "lvm-snapshot-$DECOY-0" snaptest-pcvg/classic
  lvcreate -q -y -s -n "lvm-snapshot-$DECOY-1" snaptest-pcvg/thin
  btrfs -q subvolume snapshot -r "$btr" "$btr/.snapshot-$DECOY-3"
  [ -s "$STATE/kinds" ] && zfs snapshot "snaptest-pcpool/fs@snapshot-$DECOY-2"
  # Everything so far is old news on a real machine: written back long before the cut.
  sync
  local dirs=() out
  for dir in "${PC_DIRS[@]}"; do [ -d "$dir" ] && dirs+=("$dir"); done
  mkdir -p /mnt/snaptest-pc
  out=$(start-snapshot --json -t /mnt/snaptest-pc "${dirs[@]}")
  echo "  start-snapshot: $out" | cut -c1-600
  local id; id=$(grep -o 'snapshot-[0-9a-f]\{8\}' <<<"$out" | head -1)
  [ -n "$id" ] || fail "no session id in the manifest"
  local p
  for p in '"lvm"' '"lvm-thin"' '"btrfs"'; do grep -q "\"provider\": *$p" <<<"$out" || fail "no $p unit"; done
  [ -s "$STATE/kinds" ] && { grep -q '"provider": *"zfs"' <<<"$out" || fail "no zfs unit"; }
  # The session's objects, as the system shows them.
  { lvs --noheadings -o vg_name,lv_name snaptest-pcvg | awk -v id="$id" '$2 ~ id {print "lv " $1 "/" $2}'
    btrfs subvolume list -a "$btr" | awk -v id="$id" '$NF ~ id {print "btrfs " $NF}'
    [ -s "$STATE/kinds" ] && zfs list -H -t snapshot -o name | awk -v id="$id" '$1 ~ id {print "zfs " $1}'
    true; } > "$STATE/objects"
  sed 's/^/  held: /' "$STATE/objects"
  [ "$(grep -c '^lv ' "$STATE/objects")" -eq 2 ] || fail "expected 2 snapshot LVs of the session"
  [ "$(grep -c '^btrfs ' "$STATE/objects")" -eq 1 ] || fail "expected 1 btrfs snapshot of the session"
  if [ -s "$STATE/kinds" ]; then
    [ "$(grep -c '^zfs ' "$STATE/objects")" -eq 1 ] || fail "expected 1 ZFS snapshot of the session"
  fi
  ls /var/lib/snapshot/sessions | grep -q "$id" || fail "no journal of $id"
  echo "$id" > "$STATE/session"
  echo "$(up)" > "$STATE/armed"
  # Only the marker is made durable; the power cut takes the rest as it is.
  sync "$STATE/session" "$STATE/objects" "$STATE/kinds" "$STATE/armed" "$STATE"
}

# Boot 2: snapshot-cleanup.service ran at boot; the session's objects are gone, the decoys are
# not; a new session over the same filesystems works.
t_power_cut_after_reboot() {
  local id; id=$(cat "$STATE/session")
  echo "  the session that held at the power cut: $id"
  echo "  snapshot-cleanup.service: ActiveState=$(prop snapshot-cleanup.service ActiveState) Result=$(prop snapshot-cleanup.service Result) ExecMainStatus=$(prop snapshot-cleanup.service ExecMainStatus)"
  journalctl -b -u snapshot-cleanup.service --no-pager -o short-monotonic | sed 's/^/  journal: /' | tail -25
  [ "$(prop snapshot-cleanup.service ActiveState)" = active ] || fail "snapshot-cleanup.service did not run"
  [ "$(prop snapshot-cleanup.service Result)" = success ] || fail "snapshot-cleanup.service failed"
  systemd-analyze critical-chain snapshot-cleanup.service --no-pager 2>/dev/null | sed 's/^/  /' | head -12 || true
  local kind name
  while read -r kind name; do
    case $kind in
      lv) lvs "$name" >/dev/null 2>&1 && fail "LV $name still exists" ;;
      btrfs) btrfs subvolume list -a /srv/snaptest-btrfs | grep -q "$name" && fail "btrfs $name still exists" ;;
      zfs) zfs list -H "$name" >/dev/null 2>&1 && fail "ZFS $name still exists" ;;
    esac
    echo "  removed at boot: $kind $name"
  done < "$STATE/objects"
  [ -z "$(ls -A /var/lib/snapshot/sessions)" ] || fail "journals left: $(ls /var/lib/snapshot/sessions)"
  lvs "snaptest-pcvg/lvm-snapshot-$DECOY-0" >/dev/null || fail "the classic decoy was removed"
  lvs "snaptest-pcvg/lvm-snapshot-$DECOY-1" >/dev/null || fail "the thin decoy was removed"
  btrfs subvolume list -a /srv/snaptest-btrfs | grep -q "\.snapshot-$DECOY-3" || fail "the btrfs decoy was removed"
  if [ -s "$STATE/kinds" ]; then
    zfs list -H "snaptest-pcpool/fs@snapshot-$DECOY-2" >/dev/null || fail "the ZFS decoy was removed"
  fi
  local dir dirs=()
  for dir in "${PC_DIRS[@]}"; do
    [ -d "$dir" ] && [ -e "$dir/snaptest-data" ] && dirs+=("$dir")
  done
  [ "${#dirs[@]}" -eq $((3 + $(grep -c zfs "$STATE/kinds"))) ] || fail "fixtures not mounted after the reboot: ${dirs[*]}"
  echo "  decoys kept; a new session:"
  local out
  out=$(snapshot run --in-place "${dirs[@]}" -- sh -c 'cat "$@"' sh "${dirs[@]/%//snaptest-data}")
  [ "$(grep -c 'before the power cut' <<<"$out")" -eq "${#dirs[@]}" ] || fail "the new session read: $out"
  nothing_left
}

# Issue 20: certification from the installed package, without cargo: snapshot-certify drives
# /usr/sbin/snapshot over LVM classic, LVM thin and ZFS fixtures of its own.
t_certify_installed() {
  local deb p
  deb=$(ls /run/vmtest/snapshot-certify_*.deb)
  cd /run/vmtest
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "./${deb##*/}"
  cd /
  command -v cargo >/dev/null && fail "cargo is in the guest: the run must not need it"
  for p in lvm lvm-thin zfs; do
    local fs=ext4
    [ "$p" = zfs ] && fs=zfs
    snapshot-certify --provider "$p" --fs "$fs" --cycles 2 --junit "/tmp/snaptest-certify-$p.xml" \
      > "/tmp/snaptest-certify-$p.md" || { cat "/tmp/snaptest-certify-$p.md"; fail "certify $p"; }
    grep -q '<testsuites[^>]* failures="0"' "/tmp/snaptest-certify-$p.xml" \
      || fail "certify $p: the JUnit report has failures"
    grep -E "^\| $p \|" "/tmp/snaptest-certify-$p.md" | head -1
  done
  rm -f /tmp/snaptest-certify-*
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q snapshot-certify
}

t_purge() {
  # The administrator's files go first: dpkg keeps a directory that holds files not its own
  # (here /etc/snapshot/backup with the jobs above), as it should.
  rm -f /etc/snapshot/backup/snaptest-* /etc/snapshot/backup/demo.conf /etc/snapshot/backup/hold.conf \
        /etc/snapshot/backup/sandbox.conf
  cp "$STATE/dpkg-L" /var/tmp/snaptest-dpkg-L
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q snapshot
  local p left=()
  while read -r p; do
    [ "$p" = /. ] && continue
    if [ -d "$p" ] && [ ! -L "$p" ]; then
      # Directories of the package's own (not shared ones like /usr/share/man/man1).
      case $p in /etc/snapshot*|/usr/lib/snapshot*|/usr/share/doc/snapshot*) left+=("$p/") ;; esac
    elif [ -e "$p" ] || [ -L "$p" ]; then
      left+=("$p")
    fi
  done < /var/tmp/snaptest-dpkg-L
  rm -f /var/tmp/snaptest-dpkg-L
  [ ${#left[@]} -eq 0 ] || fail "left after apt purge: ${left[*]}"
  for p in /var/lib/snapshot /run/snapshot /etc/snapshot; do
    [ ! -e "$p" ] || fail "$p left after apt purge: $(ls -lA "$p")"
  done
  [ ! -e /etc/systemd/system/multi-user.target.wants/snapshot-cleanup.service ] || fail "the cleanup unit is still enabled"
  dpkg -s snapshot >/dev/null 2>&1 && fail "dpkg still knows snapshot"
  return 0
}

# Removes what the tests made (also after a failure). Not a test.
teardown() {
  [ -n "${WRITER:-}" ] && kill "$WRITER" 2>/dev/null
  stop-snapshot -t /mnt/snaptest-pc >/dev/null 2>&1 || true
  rmdir /mnt/snaptest-pc 2>/dev/null
  rm -rf /home/snaptest-writer /var/tmp/snaptest-restore "$REPO" /etc/snapshot/backup/snaptest-* \
         /etc/snapshot/backup/demo.conf /etc/snapshot/backup/hold.conf /etc/snapshot/backup/sandbox.conf \
         /run/systemd/system/snapshot-backup@sandbox.service.d /run/snaptest-holding
  [ -d /srv/snaptest-btrfs ] && btrfs subvolume delete "/srv/snaptest-btrfs/.snapshot-$DECOY-3" >/dev/null 2>&1
  if [ -e /dev/zfs ] && zpool list snaptest-pcpool >/dev/null 2>&1; then
    zpool destroy -f snaptest-pcpool
  fi
  rm -f /var/tmp/snaptest-pcpool.img
  for d in "${PC_DIRS[@]}"; do mountpoint -q "$d" && umount "$d"; rmdir "$d" 2>/dev/null; done
  sed -i '/# snaptest$/d' /etc/fstab
  systemctl daemon-reload
  if vgs snaptest-pcvg >/dev/null 2>&1; then
    vgremove -q -f snaptest-pcvg >/dev/null
    pvremove -q "${disk[data1]}" >/dev/null
  fi
  true
}

echo "VMTEST: systemd tests at $(up)s; filter '${filter}'"
if [ ! -e "$STATE/armed" ]; then
  ok=true
  run_test install_deb always || ok=false
  if $ok; then
    run_test backup_service
    run_test stop_during_hold
    run_test in_place_nonempty_mnt
    run_test sandboxing
    if selected power_cut; then
      if run_test power_cut::before_reset; then
        summary
        echo "VMTEST: power cut at $(up)s: sysrq b (no sync, no shutdown)"
        echo b > /proc/sysrq-trigger
        sleep 60
        fail "still running after sysrq b"
      fi
    fi
  fi
else
  echo "VMTEST: boot 2: after the power cut (armed at $(cat "$STATE/armed")s of boot 1)"
  run_test power_cut::after_reboot
fi
# A session the power cut test left holding after a failure goes before the package.
stop-snapshot -t /mnt/snaptest-pc >/dev/null 2>&1
dpkg -s snapshot >/dev/null 2>&1 && run_test certify_installed
if dpkg -s snapshot >/dev/null 2>&1; then
  # After a failure above, the package goes too, so the leak check can run.
  run_test purge always
fi
teardown
rm -rf "$STATE"
summary
bash /run/vmtest/leak-check.sh || failed=$((failed + 1))
[ $failed -eq 0 ]

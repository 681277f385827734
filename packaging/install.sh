#!/bin/sh
# Installs snapshot from this tarball: the files listed in MANIFEST (mode and path, the same
# files the .deb and the RPM install), copied from root/. A configuration file that exists
# already is kept and the new one written beside it as FILE.new. Then, on a live system
# (no DESTDIR), the runtime directories (systemd-tmpfiles) and the boot-time cleanup
# (snapshot-cleanup.service) are set up.
#
#   sudo ./install.sh              install
#   sudo ./install.sh --uninstall  remove every file of MANIFEST (the configuration too)
#   DESTDIR=/some/root ./install.sh   install into another root (no systemd steps)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
action=install
case ${1:-} in
  '') ;;
  --uninstall) action=uninstall ;;
  *) echo "usage: $0 [--uninstall]" >&2; exit 64 ;;
esac
live() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

if [ "$action" = uninstall ] && live; then
  systemctl disable snapshot-cleanup.service >/dev/null 2>&1 || true
fi
while read -r mode path; do
  dest=$DESTDIR$path
  if [ "$action" = uninstall ]; then
    rm -f "$dest"
    continue
  fi
  case $path in
    /etc/*)
      if [ -e "$dest" ]; then
        install -m "$mode" "$here/root$path" "$dest.new"
        echo "install.sh: kept $dest; the shipped version is $dest.new"
        continue
      fi ;;
  esac
  install -D -m "$mode" "$here/root$path" "$dest"
done <"$here/MANIFEST"

if [ "$action" = uninstall ]; then
  for d in /usr/lib/snapshot/writers.d /usr/lib/snapshot /usr/share/doc/snapshot/examples \
           /usr/share/doc/snapshot /etc/snapshot; do
    rmdir "$DESTDIR$d" 2>/dev/null || true
  done
  if live; then systemctl daemon-reload || true; fi
  echo "install.sh: removed snapshot (journals of dead sessions, if any, stay in /var/lib/snapshot)"
  exit 0
fi
if live; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/snapshot.conf || true
  systemctl daemon-reload || true
  systemctl enable snapshot-cleanup.service || true
elif [ -z "$DESTDIR" ]; then
  install -d -m 0700 /run/snapshot /var/lib/snapshot
fi
echo "install.sh: installed snapshot $(sed -n 's/^.* //p' "$here/MANIFEST" | wc -l) files"

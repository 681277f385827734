#!/bin/sh
# Installs snapshot-certify from this tarball: the files listed in MANIFEST (mode and path, the
# same files its .deb and RPM install), copied from root/. It drives the installed snapshot
# (/usr/sbin/snapshot: install snapshot's tarball first).
#
#   sudo ./install.sh              install
#   sudo ./install.sh --uninstall  remove every file of MANIFEST
#   DESTDIR=/some/root ./install.sh   install into another root
set -eu
here=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
case ${1:-} in
  '') action=install ;;
  --uninstall) action=uninstall ;;
  *) echo "usage: $0 [--uninstall]" >&2; exit 64 ;;
esac
while read -r mode path; do
  if [ "$action" = uninstall ]; then
    rm -f "$DESTDIR$path"
  else
    install -D -m "$mode" "$here/root$path" "$DESTDIR$path"
  fi
done <"$here/MANIFEST"
if [ "$action" = uninstall ]; then
  rmdir "$DESTDIR/usr/share/doc/snapshot-certify" 2>/dev/null || true
  echo "install.sh: removed snapshot-certify"
else
  echo "install.sh: installed snapshot-certify ($(wc -l <"$here/MANIFEST") files)"
fi

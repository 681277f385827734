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

# Leak check: nothing the tests made may remain.
bash /run/vmtest/leak-check.sh || rc=1
if [ $rc -ne 0 ]; then
  echo "VMTEST: kernel messages (last 40):"
  dmesg | tail -40
fi
exit $rc

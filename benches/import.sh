#!/usr/bin/env bash
# Import benchmark (issue 16): `kestrel import-kestrel` of a Kestrel 2.x
# journal of 1 KiB items, printed as a markdown table: journal bytes, items
# imported, seconds, and journal MB/s read (journal bytes / wall time).
# Rows: every item live, and half of them consumed (REMOVE records).
#
#   benches/import.sh [--items N] [--size BYTES] [--dir DIR]
#
# Needs about 3 × N × SIZE bytes of free disk (the Kestrel journal and the
# imported journals). The page cache is dropped before each run when run as
# root, so the journal is read from the disk.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

items=1000000
size=1024
work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --items) items="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --dir) work="$2"; shift 2 ;;
    *) echo "usage: $0 [--items N] [--size BYTES] [--dir DIR]" >&2; exit 2 ;;
  esac
done
work=${work:-$(mktemp -d)}

echo "| Kestrel journal | items imported | journal bytes | seconds | journal MB/s |"
echo "|---|---|---|---|---|"
for consumed in 0 $((items / 2)); do
  rm -rf "$work/kestrel" "$work/data"
  mkdir -p "$work/kestrel"
  python3 benches/kestrel-journal.py "$work/kestrel/jobs" "$items" "$size" "$consumed"
  bytes=$(stat -c %s "$work/kestrel/jobs")
  sync
  if [ "$(id -u)" -eq 0 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  start=$(date +%s.%N)
  "$K" import-kestrel --from "$work/kestrel" --data-dir "$work/data" > "$work/report.txt"
  end=$(date +%s.%N)
  imported=$(awk '$1 == "total" {print $4}' "$work/report.txt")
  python3 - "$items" "$size" "$consumed" "$imported" "$bytes" "$start" "$end" <<'PY'
import sys
items, size, consumed, imported, nbytes = map(int, sys.argv[1:6])
secs = float(sys.argv[7]) - float(sys.argv[6])
what = f"{items:,} × {size} B" + (f", {consumed:,} consumed" if consumed else "")
print(f"| {what} | {imported:,} | {nbytes:,} | {secs:.2f} | {nbytes / secs / 1e6:,.0f} |")
PY
done
rm -rf "$work/kestrel" "$work/data"

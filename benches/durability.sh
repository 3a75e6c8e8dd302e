#!/usr/bin/env bash
# Durability benchmarks (issue 4), printed as markdown:
#   1. acknowledged puts/s for sync_journal always / 100ms / never, with 1 and
#      100 producers, 64 B and 1 KiB items (memcache set, one item per request);
#   2. restart time to the first served get with 1M and 4M queued 1 KiB items,
#      after SIGKILL and after a clean stop;
#   3. the server's RSS while those items are queued (default max_memory_size).
#
#   benches/durability.sh [--depths 1000000,4000000] [--dir DIR]
#
# Needs about 5 GB of free disk for the 4M-item queue. Everything runs on
# 127.0.0.1; servers are stopped at the end.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

depths="1000000,4000000"
work=""
write=1
while [ $# -gt 0 ]; do
  case "$1" in
    --depths) depths="$2"; shift 2 ;;
    --dir) work="$2"; shift 2 ;;
    --no-write) write=0; shift ;;
    *) echo "usage: $0 [--depths N,N] [--dir DIR] [--no-write]" >&2; exit 2 ;;
  esac
done
work=${work:-$(mktemp -d)}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

{
echo "Produced by \`benches/durability.sh\` on $(date -u +%Y-%m-%d), a fresh server per row."
echo
echo "### Acknowledged puts per second"
echo
echo "Commands: \`kestrel-bench put-many --clients P --items N --size S\` against a fresh server with"
echo "\`KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL=<mode>\`; one item per request."
echo
echo "| sync_journal | producers | size | puts/s | p50 ms | p99 ms | server CPU s |"
echo "|---|---|---|---|---|---|---|"
for sync in always 100ms never; do
  for producers in 1 100; do
    for size in 64 1024; do
      items=$(( producers == 1 ? 30000 : 300000 ))
      start_kestrel "$work/puts-$sync-$producers-$size" KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL=$sync
      "$B" --quiet --server-pid "$pid" --target "$mc" --json "$work/r.json" \
        put-many --clients "$producers" --items "$items" --size "$size" > /dev/null
      f() { field "$work/r.json" "$@"; }
      echo "| $sync | $producers | $size | $(f items_per_sec .0f) | $(f p50_ms .3f) | $(f p99_ms .3f) | $(f server_cpu_secs .2f) |"
      stop_server
      rm -rf "$work/puts-$sync-$producers-$size"
    done
  done
done

echo
echo "### Restart with a deep queue"
echo
echo "Filled with \`kestrel-bench --protocol thrift put-many --clients 4 --batch 100 --size 1024\`;"
echo "restart time is from process start to the first item served (\`kestrel-bench first-get\`, started"
echo "with the server). RSS is the server's resident memory (default max_memory_size, 128 MiB)."
echo
echo "| items queued | journal on disk | fill items/s | peak RSS while filling | RSS when full | restart after SIGKILL | restart after clean stop | RSS after restart + first get |"
echo "|---|---|---|---|---|---|---|---|"
export TPORT=42229 MPORT=42133
for n in ${depths//,/ }; do
  dir="$work/deep-$n"
  start_kestrel "$dir"
  "$B" --quiet --server-pid "$pid" --protocol thrift --target "$th" --json "$work/r.json" \
    put-many --clients 4 --batch 100 --items "$n" --size 1024 > /dev/null
  fill_rate=$(field "$work/r.json" items_per_sec .0f)
  fill_rss=$(field "$work/r.json" server_peak_rss_mib .1f)
  sleep 3 # let the journal checkpoint and settle
  full_rss=$(rss_mib "$pid")
  disk=$(du -sh "$dir/queues" | cut -f1)
  kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
  start_kestrel "$dir" & "$B" --quiet --protocol thrift --target "127.0.0.1:$TPORT" --json "$work/r.json" first-get > /dev/null; wait
  pid=$(pgrep -f "data-dir $dir" | head -1)
  killed="$(field "$work/r.json" seconds .3f) s"
  after_rss=$(rss_mib "$pid")
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  start_kestrel "$dir" & "$B" --quiet --protocol thrift --target "127.0.0.1:$TPORT" --json "$work/r.json" first-get > /dev/null; wait
  pid=$(pgrep -f "data-dir $dir" | head -1)
  clean="$(field "$work/r.json" seconds .3f) s"
  echo "| $n | $disk | $fill_rate | ${fill_rss} MiB | ${full_rss} MiB | $killed | $clean | ${after_rss} MiB |"
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -rf "$dir" "$dir.log"
done
} > "$work/report.md"
cat "$work/report.md"
if [ "$write" = 1 ]; then
  $REPORT splice docs/BENCHMARKS.md durability < "$work/report.md"
  echo "docs/BENCHMARKS.md updated" >&2
fi

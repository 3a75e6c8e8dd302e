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
cd "$(dirname "$0")/.."

depths="1000000,4000000"
work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --depths) depths="$2"; shift 2 ;;
    --dir) work="$2"; shift 2 ;;
    *) echo "usage: $0 [--depths N,N] [--dir DIR]" >&2; exit 2 ;;
  esac
done
cargo build --release --bins -q
K=target/release/kestrel
B=target/release/kestrel-bench
work=${work:-$(mktemp -d)}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# Starts kestrel on $1 (data dir) with the given KESTREL_ settings; sets $pid,
# $mc (memcache address) and $th (thrift address).
start() {
  local dir=$1; shift
  mkdir -p "$dir"
  env "$@" "$K" --data-dir "$dir" --thrift-port "${TPORT:-0}" --memcache-port "${MPORT:-0}" --text-port off \
    2> "$dir.log" &
  pid=$!
  for _ in $(seq 600); do grep -q "ready to serve" "$dir.log" 2>/dev/null && break; sleep 0.05; done
  mc=$(sed -n 's/.*memcache listening on \([^ ]*\).*/\1/p' "$dir.log" | tail -1)
  th=$(sed -n 's/.*thrift listening on \([^ ]*\).*/\1/p' "$dir.log" | tail -1)
}

stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; }

# Prints field $2 of the last row in kestrel-bench's JSON file $1, formatted
# with the Python format spec $3 (default: as is).
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[-1]; v=r[sys.argv[2]]; print(format(v, sys.argv[3]) if v is not None else '-')" "$1" "$2" "${3:-}"; }

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
      start "$work/puts-$sync-$producers-$size" KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL=$sync
      "$B" --quiet --server-pid "$pid" --target "$mc" --json "$work/r.json" \
        put-many --clients "$producers" --items "$items" --size "$size" > /dev/null
      f() { field "$work/r.json" "$@"; }
      echo "| $sync | $producers | $size | $(f items_per_sec .0f) | $(f p50_ms .3f) | $(f p99_ms .3f) | $(f server_cpu_secs .2f) |"
      stop
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
  start "$dir"
  "$B" --quiet --server-pid "$pid" --protocol thrift --target "$th" --json "$work/r.json" \
    put-many --clients 4 --batch 100 --items "$n" --size 1024 > /dev/null
  fill_rate=$(field "$work/r.json" items_per_sec .0f)
  fill_rss=$(field "$work/r.json" server_peak_rss_mib .1f)
  sleep 3 # let the journal checkpoint and settle
  full_rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  disk=$(du -sh "$dir/queues" | cut -f1)
  kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
  start "$dir" & "$B" --quiet --protocol thrift --target "127.0.0.1:$TPORT" --json "$work/r.json" first-get > /dev/null; wait
  pid=$(pgrep -f "data-dir $dir" | head -1)
  killed="$(field "$work/r.json" seconds .3f) s"
  after_rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  start "$dir" & "$B" --quiet --protocol thrift --target "127.0.0.1:$TPORT" --json "$work/r.json" first-get > /dev/null; wait
  pid=$(pgrep -f "data-dir $dir" | head -1)
  clean="$(field "$work/r.json" seconds .3f) s"
  echo "| $n | $disk | $fill_rate | ${fill_rss} MiB | ${full_rss} MiB | $killed | $clean | ${after_rss} MiB |"
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -rf "$dir" "$dir.log"
done

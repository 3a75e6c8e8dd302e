#!/usr/bin/env bash
# Side-by-side benchmarks: this server, memcached (Debian's package: the
# round-trip ceiling for the same protocol) and any extra server given with
# --peer, on loopback, through the same kestrel-bench scenarios in one run.
# Results (median of --runs runs, with ratios to memcached) are spliced into
# docs/BENCHMARKS.md, with the machine, the date, the versions and each side's
# durability settings.
#
#   benches/compare.sh [--peer NAME=HOST:PORT[:PID]]... [--runs N] [--quick] [--no-write]
#
# A peer is measured with every memcache scenario; scenarios it does not
# support (reliable reads, for instance) show as failed rows.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

runs=3
quick=0
write=1
peers=()
while [ $# -gt 0 ]; do
  case "$1" in
    --peer) peers+=("$2"); shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --quick) quick=1; runs=1; shift ;;
    --no-write) write=0; shift ;;
    *) echo "usage: $0 [--peer NAME=HOST:PORT[:PID]]... [--runs N] [--quick] [--no-write]" >&2; exit 2 ;;
  esac
done
command -v memcached >/dev/null || { echo "memcached not found: apt-get install -y memcached" >&2; exit 2; }
scale=$(( quick ? 10 : 1 ))

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
rows=$work/rows.jsonl
: > "$rows"

# The servers: name|address|pid.
start_kestrel "$work/kestrel"
kpid=$pid
targets=("kestrel|$mc|$pid")
kestrel_thrift=$th
idle_kestrel=$(rss_mib "$kpid")
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
memcached -l 127.0.0.1 -p "$mport" -t 2 -U 0 -I 16m -m 1024 -u "$(id -un)" &
mpid=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break; sleep 0.05; done
targets+=("memcached|127.0.0.1:$mport|$mpid")
idle_memcached=$(rss_mib "$mpid")
for p in "${peers[@]}"; do
  name=${p%%=*}; rest=${p#*=}
  IFS=: read -r host port ppid <<< "$rest"
  targets+=("$name|$host:$port|${ppid:-}")
done

# Runs kestrel-bench $runs times against target $1 (name|addr|pid) and keeps
# the median run's rows.
bench() {
  local name addr tpid; IFS='|' read -r name addr tpid <<< "$1"; shift
  local i
  for i in $(seq "$runs"); do
    if ! "$B" --quiet --label "$name" --target "$addr" ${tpid:+--server-pid "$tpid"} --json "$work/run$i.json" "$@" \
      > /dev/null 2> "$work/err"; then
      echo "{\"scenario\": \"$2 (failed: $(tr -d '"\n' < "$work/err" | cut -c1-60))\", \"target\": \"$name\", \"protocol\": \"\", \"connections\": 0, \"item_size\": 0, \"ops\": 0, \"items\": 0, \"seconds\": 0, \"ops_per_sec\": 0, \"items_per_sec\": 0, \"p50_ms\": 0, \"p99_ms\": 0, \"p999_ms\": 0, \"max_ms\": 0, \"server_cpu_secs\": null, \"server_cpu_us_per_op\": null, \"server_peak_rss_mib\": null, \"verified\": \"unsupported\", \"note\": \"\"}" >> "$rows"
      return 0
    fi
  done
  $REPORT median "$work/median.json" $(seq -f "$work/run%g.json" 1 "$runs")
  python3 -c 'import json,sys; [print(json.dumps(r)) for r in json.load(open(sys.argv[1]))]' "$work/median.json" >> "$rows"
  rm -f "$work"/run*.json
}

echo "flood..." >&2
# 100k sets and 100k gets per row (50k of each with one connection).
for size in 64 1024; do
  for conns in 1 10 100; do
    [ "$size" = 1024 ] && [ "$conns" = 1 ] && continue
    items=$(( (conns == 1 ? 50000 : 100000) / scale ))
    for t in "${targets[@]}"; do bench "$t" flood --connections "$conns" --items "$items" --size "$size"; done
  done
done
echo "fairness..." >&2
for t in "${targets[@]}"; do bench "$t" fairness --clients 10 --large-clients 1 --seconds $(( 8 / scale + 1 )); done
echo "reliable reads..." >&2
for t in "${targets[@]}"; do
  [ "${t%%|*}" = memcached ] && continue # no reliable reads in memcached
  # The reliable loop: round-trip bound with 2 producers, server-bound with 4.
  bench "$t" reliable --producers 2 --consumers 4 --items $(( 20000 / scale )) --size 64
  bench "$t" reliable --producers 4 --consumers 4 --items $(( 10000 / scale )) --size 64
  bench "$t" leaky --producers 4 --consumers 4 --items $(( 5000 / scale )) --size 64 --drop-percent 5
done
echo "thrift..." >&2
kt="kestrel|$kestrel_thrift|$kpid"
bench "$kt" --protocol thrift reliable --producers 4 --consumers 4 --items $(( 10000 / scale )) --size 64 --batch 10
bench "$kt" --protocol thrift batch --clients 4 --items $(( 2000000 / scale )) --size 64 --batch 100
echo "backlog..." >&2
for t in "${targets[@]}"; do
  [ "${t%%|*}" = memcached ] && continue # memcached keeps one value per key: no backlog
  runs_saved=$runs; runs=1
  bench "$t" backlog --depths 0,$(( 1000000 / scale )) --connections 10 --pairs $(( 100000 / scale )) --size 1024
  runs=$runs_saved
done

echo "memory..." >&2
# On a fresh server, so that nothing else is queued.
start_kestrel "$work/memory"
"$B" --quiet --protocol thrift --target "$th" put-many --clients 4 --batch 100 \
  --items $(( 1000000 / scale )) --size 1024 > /dev/null
"$B" --quiet --protocol thrift --target "$th" drain --clients 4 --batch 100 > /dev/null
sleep 1 # the next maintenance pass hands freed memory back
drained_kestrel=$(rss_mib "$pid")
stop_server
echo "{\"idle_rss_mib\": $idle_kestrel, \"drained_rss_mib\": $drained_kestrel}" > "$work/mem.json"

kversion=$("$K" --version | awk '{print $2}')
mversion=$(memcached -V | awk '{print $2}')
report=$(cat <<MD
Produced by \`benches/compare.sh\` on $(date -u +%Y-%m-%d) ($runs runs per row, median shown).

- Machine: $(nproc) vCPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM,
  $(uname -sr); client and server share the CPUs over loopback.
- kestrel $kversion (release build), defaults: every queue journaled, \`sync_journal = 100ms\`
  (acknowledged after the write to the OS: a process crash loses nothing acknowledged).
- memcached $mversion (Debian package), \`-t 2 -I 16m -m 1024\`: memory only, nothing durable;
  it overwrites one value per key, so it has no backlog and no reliable reads.
$(for t in "${targets[@]:2}"; do IFS='|' read -r name addr _ <<< "$t"; echo "- $name at $addr, as started by the caller (see below for its settings)."; done)
- Client: \`kestrel-bench\`, every connection a task on one thread (async, one request in flight
  per connection), random payloads per item. Requests/s counts sets and gets; items/s counts
  items put (the reliable loop: items confirmed, each a \`set\` and a \`get q/close/open\`).
  Server CPU is the server process's user+system time over the run (\`/proc/PID/stat\`), per
  request. † marks a row whose client thread was busy at least 90% of the run: the client set
  its pace, so its rate is a floor for the server, and CPU per request is the fairer comparison.

### Side by side

Flood: requests/s (half sets, half gets, one queue) and the server's CPU µs per request; reliable
loop: items/s.

$($REPORT matrix "$rows")

### Goals

$($REPORT goals "$rows" "$work/mem.json")

### All rows

$($REPORT table "$rows" memcached)

Idle RSS: kestrel $idle_kestrel MiB, memcached $idle_memcached MiB. kestrel after filling and draining
$(( 1000000 / scale )) x 1 KiB: $drained_kestrel MiB.
MD
)
echo "$report"
if [ "$write" = 1 ]; then
  echo "$report" | $REPORT splice docs/BENCHMARKS.md compare
  echo "docs/BENCHMARKS.md updated" >&2
fi

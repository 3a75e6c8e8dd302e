#!/usr/bin/env bash
# Where a fresh server's time goes during one kestrel-bench scenario: the
# server CPU per request, then `perf record` (DWARF call graphs) split into
# the costs that the "Where the time goes" tables of docs/BENCHMARKS.md list,
# each as a share of the server's samples and in µs per request; with
# --syscalls, `strace -c` counts instead (strace slows the server down, so
# that run's rate means nothing; its counts per request do).
#
#   benches/profile.sh [--syscalls] [--env KEY=VALUE]... SCENARIO [ARGS]...
#   benches/profile.sh flood --connections 10 --items 30000 --size 64
#
# Needs perf (Debian: linux-perf) or strace. Loopback only.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

syscalls=0
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --syscalls) syscalls=1; shift ;;
    --env) envs+=("$2"); shift 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--syscalls] [--env KEY=VALUE]... SCENARIO [ARGS]..." >&2; exit 2; }
tool=perf; [ "$syscalls" = 1 ] && tool=strace
command -v "$tool" > /dev/null || { echo "$tool not found" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
start_kestrel "$work/kestrel" ${envs[@]+"${envs[@]}"}
addr=$mc
case " $* " in *" --protocol thrift "*) addr=$th ;; esac

if [ "$syscalls" = 1 ]; then
  strace -c -f -p "$pid" -o "$work/strace" & tracer=$!
else
  perf record -q --call-graph dwarf,16384 -F 2000 -p "$pid" -o "$work/perf.data" 2> /dev/null & tracer=$!
fi
sleep 0.5 # the tracer attaches
"$B" --quiet --target "$addr" --server-pid "$pid" --json "$work/rows.json" "$@"
kill -INT "$tracer"; wait "$tracer" 2> /dev/null || true
ops=$(field "$work/rows.json" ops)
us=$(field "$work/rows.json" server_cpu_us_per_op)

if [ "$syscalls" = 1 ]; then
  echo
  echo "| syscall | calls | per request |"
  echo "|---|---|---|"
  awk -v ops="$ops" '$1 ~ /^[0-9.]+$/ && NF >= 5 { n = $4; printf "| %s | %d | %.2f |\n", $NF, n, n / ops }' "$work/strace" | head -8
  exit 0
fi

# Inclusive share of the first symbol matching $1; exclusive shares summed
# over the symbols matching the regular expression $2.
children=$(perf report -i "$work/perf.data" --children --stdio --sort symbol -g none 2> /dev/null | grep -E '^ +[0-9]')
self=$(perf report -i "$work/perf.data" --no-children --stdio --sort symbol -g none 2> /dev/null | grep -E '^ +[0-9]')
dso=$(perf report -i "$work/perf.data" --no-children --stdio --sort dso -g none 2> /dev/null | grep -E '^ +[0-9]')
inclusive() { echo "$children" | grep -F "$1" | head -1 | awk '{print $1+0}'; }
exclusive() { echo "$self" | grep -E "$1" | awk '{s += $1} END {print s+0}'; }
python3 - "$us" \
  "$(inclusive 'TcpStream::poll_write_priv')" \
  "$(inclusive 'TcpStream::poll_read_priv')" \
  "$(inclusive 'JournalIo::write_pending')" \
  "$(inclusive 'worker::Context::park_internal')" \
  "$(exclusive '\] (malloc|_int_malloc|_int_free|cfree@GLIBC_2.2.5|malloc_consolidate|realloc|_int_realloc|unlink_chunk.constprop.0|sysmalloc|__rdl_alloc|__rust_realloc)( |$)')" \
  "$(exclusive '__vdso_clock_gettime|Timespec>::now|clock_gettime@@')" \
  "$(echo "$dso" | awk '/kernel/ {print $1+0}')" <<'PY'
import sys
us = float(sys.argv[1])
send, recv, journal, park, malloc, clock, kernel = (float(x or 0) for x in sys.argv[2:])
rest = 100 - send - recv - journal - park - malloc - clock
print()
print("| where | share of server time | µs per request |")
print("|---|---|---|")
for name, share in [
    ("reply `send` (the kernel's TCP path, waking the client included)", send),
    ("request `recv`", recv),
    ("journal `write`", journal),
    ("waiting for events (epoll, the scheduler parking)", park),
    ("malloc and free", malloc),
    ("clock reads", clock),
    ("the rest of user space (codec, queue, journal records, tokio)", rest),
]:
    print(f"| {name} | {share:.1f}% | {us * share / 100:.2f} |")
print(f"| *kernel, all causes* | {kernel:.1f}% | {us * kernel / 100:.2f} |")
PY

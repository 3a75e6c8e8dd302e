#!/usr/bin/env bash
# Soak under hostile load (issue 11): the release server on loopback under
# 10,000 idle connections, 1,000 slow-drip connections, 500 header-only Thrift
# frames, a client that never reads, a 64 B flood on 10 connections and a
# prober doing a memcache set+get every 10 ms. Prints a table and PASS/FAIL for
# each goal; exits non-zero if one fails. benches/soak.py does the work.
#
#   benches/soak.sh [--duration SECONDS] [--baseline-items N] [--no-lock] [soak.py run options]
#
# --duration (default 60) sizes the flood under hostile load: about that many
# seconds at the rate measured alone; the whole run takes half as long again,
# plus the build. Other options (--idle, --drippers, --headers,
# --drip-interval, --server-env NAME=VALUE, --json FILE; paths are relative to
# the repository root): `python3 benches/soak.py run --help`.
# The run is CPU-heavy on a shared machine, so it holds /tmp/kestrel-cargo.lock
# for the build and the run; --no-lock is for a caller that holds it already
# (wrapping this script in `flock` on the same file would wait forever).
set -euo pipefail

lock=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-lock) lock=0; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ "$lock" = 1 ]; then
  exec 9> /tmp/kestrel-cargo.lock
  echo "soak: waiting for /tmp/kestrel-cargo.lock" >&2
  flock 9
fi
# Builds the release binaries (under the lock taken above) and sets $K and $B.
source "$(dirname "$0")/lib.sh"

# 11,512 client connections, all from this process tree.
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/kestrel-soak.XXXXXX)
py=
cleanup() {
  if [ -n "$py" ]; then kill -TERM "$py" 2>/dev/null || true; wait "$py" 2>/dev/null || true; fi
  # Whatever soak.py could not stop itself (it writes each child's pid here).
  for f in "$work"/*.pid; do
    [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 benches/soak.py run --kestrel "$K" --bench "$B" --work "$work" "${args[@]}" &
py=$!
status=0
wait "$py" || status=$?
py=
exit "$status"

# Shared by the benchmark scripts: building, starting and stopping servers,
# and reading kestrel-bench results. Source it; it does not run anything.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The bench tool is a workspace member of its own: name both packages.
cargo build --release --bins -q -p kestrel -p kestrel-bench
K=$PWD/target/release/kestrel
B=$PWD/target/release/kestrel-bench
REPORT="python3 $PWD/benches/report.py"

# Starts kestrel on data dir $1 with the given KESTREL_ settings and the
# ports in $TPORT/$MPORT (0 when unset); sets $pid, $mc and $th (addresses).
start_kestrel() {
  local dir=$1; shift
  mkdir -p "$dir"
  env "$@" "$K" --data-dir "$dir" --thrift-port "${TPORT:-0}" --memcache-port "${MPORT:-0}" --text-port off --admin-port off \
    2> "$dir.log" &
  pid=$!
  for _ in $(seq 600); do grep -q "ready to serve" "$dir.log" 2>/dev/null && break; sleep 0.05; done
  grep -q "ready to serve" "$dir.log" || { echo "kestrel did not start: $(cat "$dir.log")" >&2; exit 1; }
  mc=$(sed -n 's/.*memcache listening on \([^ ]*\).*/\1/p' "$dir.log" | tail -1)
  th=$(sed -n 's/.*thrift listening on \([^ ]*\).*/\1/p' "$dir.log" | tail -1)
}

# Stops the server $pid and waits for it.
stop_server() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }

# Resident memory of process $1 in MiB.
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Prints field $2 of the last row in kestrel-bench's JSON file $1, formatted
# with the Python format spec $3 (default: as is).
field() { $REPORT field "$@"; }

#!/usr/bin/env bash
# Builds the fuzz targets and runs each from its seeds and its growing corpus
# (under target/, never committed), one target at a time; stops at the first
# crash. Used by .ci/run (briefly) and for the long campaign.
#
#   tests/fuzz/run.sh [--seconds N | --runs N] [--chunk S] [--sanitizer S] [target...]
#
#   --seconds N  run each target for N seconds (default 20)
#   --runs N     run each target until it has executed N inputs, in chunks of
#                at most --chunk seconds (default 540), each resuming from the
#                corpus the previous one grew
#   --sanitizer S  address (default: catches any out-of-bounds access and
#                enforces -malloc_limit_mb) or none (several times the
#                executions per second; the RSS limit still holds)
#   target...    default: every target in fuzz_targets/
#
# With FUZZ_LOCK=FILE, every build and chunk runs under `flock FILE`, so a
# long campaign shares the machine with other work between chunks.
# Prints executions, seconds, exec/s and corpus size per target at the end.
set -euo pipefail
cd "$(dirname "$0")"

seconds=20 runs="" chunk=540 sanitizer=address targets=()
while (($#)); do
    case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --chunk) chunk="$2"; shift 2 ;;
    --sanitizer) sanitizer="$2"; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
if ((${#targets[@]} == 0)); then
    for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

locked() {
    if [[ -n "${FUZZ_LOCK:-}" ]]; then flock "$FUZZ_LOCK" "$@"; else "$@"; fi
}

export RUSTC_BOOTSTRAP=1
locked cargo fuzz build --fuzz-dir . --sanitizer "$sanitizer" >&2
bin=target/x86_64-unknown-linux-gnu/release

# A tight allocation bound: a buffer sized from a length on the wire or on
# disk, rather than from the bytes there, fails the target.
limits=(-malloc_limit_mb=64 -rss_limit_mb=1024 -max_len=4096)

scratch=$(mktemp -d "$( [[ -d /dev/shm ]] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/kestrel-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export KESTREL_FUZZ_SCRATCH="$scratch"

summary=()
for t in "${targets[@]}"; do
    corpus=target/corpus/$t artifacts=target/artifacts/$t/
    mkdir -p "$corpus" "$artifacts"
    done_runs=0 elapsed=0
    while :; do
        if [[ -n "$runs" ]]; then
            left=$((runs - done_runs))
            ((left > 0)) || break
            budget=(-runs="$left" -max_total_time="$chunk")
        else
            budget=(-max_total_time="$seconds")
        fi
        log=$(mktemp)
        start=$(date +%s.%N)
        status=0
        locked "$bin/$t" "${limits[@]}" "${budget[@]}" -print_final_stats=1 \
            -artifact_prefix="$artifacts" "$corpus" "seeds/$t" >"$log" 2>&1 || status=$?
        end=$(date +%s.%N)
        if ((status != 0)); then
            grep -v '^#' "$log" | tail -40 >&2
            echo "FUZZ FAILURE in $t (exit $status); input saved under tests/fuzz/$artifacts" >&2
            rm -f "$log"
            exit 1
        fi
        n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        rm -f "$log"
        done_runs=$((done_runs + n))
        elapsed=$(awk "BEGIN { print $elapsed + $end - $start }")
        echo "$t: $n executions in this chunk, $done_runs in all" >&2
        [[ -n "$runs" ]] || break
    done
    files=$(find "$corpus" -type f | wc -l)
    bytes=$(du -sb "$corpus" | cut -f1)
    rate=$(awk "BEGIN { printf \"%d\", $done_runs / $elapsed }")
    summary+=("$(printf '%-15s %12d %8.0f %8d %7d %9d' "$t" "$done_runs" "$elapsed" "$rate" "$files" "$bytes")")
done
printf '%-15s %12s %8s %8s %7s %9s\n' target executions seconds exec/s corpus bytes
printf '%s\n' "${summary[@]}"

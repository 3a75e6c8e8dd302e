#!/usr/bin/env bash
# Builds the Debian package target/debian/kestrel_<version>-1_<arch>.deb and
# prints its path (the only thing on stdout):
#   1. the release binary (cargo build --release);
#   2. the man pages, from the command-line definition (contrib/man.rs, a
#      debug build: it shares the test suite's build) into target/man;
#   3. `cargo deb --no-build`, with the metadata in Cargo.toml's
#      [package.metadata.deb]: binary, unit, /etc/kestrel/kestrel.toml, man
#      pages, README and docs; the binary's debug info goes to a
#      kestrel-dbgsym_*.ddeb beside it (path on stderr).
# Needs cargo-deb: `cargo install --locked cargo-deb`. Extra arguments go to
# cargo deb (e.g. --fast).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "contrib/deb/build.sh: cargo-deb is missing; install it with: cargo install --locked cargo-deb" >&2
    exit 2
fi

echo "== release binary" >&2
cargo build --release -p kestrel --bin kestrel >&2
echo "== man pages" >&2
rm -rf target/man
cargo run --quiet -p kestrel --example man -- target/man >&2
echo "== package" >&2
# cargo deb prints the paths of what it wrote: the package and, beside it,
# kestrel-dbgsym_<version>-1_<arch>.ddeb with the binary's debug info.
written=$(cargo deb -p kestrel --no-build "$@")
deb=$(grep '\.deb$' <<<"$written" | tail -n 1 || true)
grep -v '\.deb$' <<<"$written" >&2 || true
[ -f "$deb" ] || { echo "contrib/deb/build.sh: cargo deb wrote no package" >&2; exit 1; }
echo "$deb"

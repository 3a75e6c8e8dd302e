#!/usr/bin/env bash
# Regenerates gen/ from idl/kestrel.thrift with the Apache Thrift compiler.
#
#   idl/generate.sh          rewrite gen/ in place
#   idl/generate.sh --check  regenerate into a temp dir; exit 1 if gen/ differs
#
# The compiler must be exactly 0.17.0 (Debian's thrift-compiler), the version of
# the `thrift` crate the server is built on. gen/ is checked in so that building
# the server never needs the compiler; CI runs --check so it cannot drift.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
want="0.17.0"

if ! command -v thrift >/dev/null 2>&1; then
  echo "generate.sh: thrift compiler not found; install it with: apt-get install -y thrift-compiler" >&2
  exit 2
fi
have=$(thrift --version | awk '{print $3}')
if [ "$have" != "$want" ]; then
  echo "generate.sh: thrift $have found, $want required (apt-get install -y thrift-compiler)" >&2
  exit 2
fi

tmp=$(mktemp -d)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

# One directory per target language. Java's dated @Generated annotation is
# suppressed so that output is byte-identical from one day to the next.
for target in rs py js:node java:generated_annotations=suppress go:skip_remote; do
  dir="$tmp/${target%%:*}"
  mkdir -p "$dir"
  thrift --gen "$target" -out "$dir" "$here/kestrel.thrift"
done
# The Python generator always writes an executable *-remote script, which
# needs the service on sys.path and is not used by anything here.
find "$tmp/py" -name '*-remote' -delete

if [ "${1:-}" = "--check" ]; then
  if diff -r "$root/gen" "$tmp"; then
    echo "gen/ is up to date"
  else
    echo "gen/ is stale: run idl/generate.sh and commit the result" >&2
    exit 1
  fi
else
  rm -rf "$root/gen"
  cp -r "$tmp" "$root/gen"
  echo "regenerated $root/gen"
fi

#!/usr/bin/env bash
# Builds, tests and runs the Go client in GOPATH mode against Debian's golang-thrift-dev
# (apt-get install golang-go golang-thrift-dev; tested with Go 1.19 and thrift 0.17.0). The
# Debian package has no go.mod, so no module mode: a throwaway GOPATH links this checkout
# as "kestrel", which makes the stubs "kestrel/gen/go/kestrel" and this package
# "kestrel/clients/go".
#   clients/go/run.sh test                    gofmt and go vet, then test against real servers
#   clients/go/run.sh example HOST:PORT S     round trips per second
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
[ -d /usr/share/gocode/src/github.com/apache/thrift/lib/go/thrift ] ||
  { echo "golang-thrift-dev missing: apt-get install -y golang-go golang-thrift-dev" >&2; exit 2; }
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src"
ln -s "$root" "$gopath/src/kestrel"
export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS=
export KESTREL_BIN=${KESTREL_BIN:-$root/target/debug/kestrel}
case "${1:-}" in
  test)
    unformatted=$(gofmt -l "$root/clients/go")
    [ -z "$unformatted" ] || { echo "gofmt wants to change: $unformatted" >&2; exit 1; }
    go vet kestrel/clients/go kestrel/clients/go/examples/roundtrip
    go test -count=1 -v kestrel/clients/go # -v: shows each test and the discovery timing
    ;;
  example) go run kestrel/clients/go/examples/roundtrip "${2:-127.0.0.1:2229}" "${3:-5}" ;;
  *) echo "usage: $0 test | example HOST:PORT SECONDS" >&2; exit 2 ;;
esac

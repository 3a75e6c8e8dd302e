#!/usr/bin/env bash
# The Debian package, installed into this machine: builds it with
# contrib/deb/build.sh, installs it with dpkg, checks the files it put down,
# that `kestrel --version` and `kestrel check-config` work with the packaged
# configuration and that the installed unit passes `systemd-analyze verify`
# (where systemd is installed), then purges it and checks nothing is left.
# It never starts the service.
#
# Runs only as root on a machine with dpkg, and only where no kestrel is
# installed already (it would be replaced, then purged); otherwise it says why
# and exits 0. Without cargo-deb it skips too, except under CI=true (.ci/run
# installs cargo-deb), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "tests/package.sh: skipped: $*" >&2
  exit 0
}
fail() {
  echo "tests/package.sh: FAILED: $*" >&2
  exit 1
}

command -v dpkg >/dev/null || skip "no dpkg here (not a Debian-like system)"
[ "$(id -u)" -eq 0 ] || skip "needs root to install the package (run tests/run as root)"
if ! cargo deb --version >/dev/null 2>&1; then
  [ "${CI:-}" = true ] && fail "cargo-deb is missing (.ci/run installs it)"
  skip "cargo-deb is missing; install it with: cargo install --locked cargo-deb"
fi
if dpkg-query -W -f='${Status}' kestrel 2>/dev/null | grep -qv 'not-installed'; then
  skip "a kestrel package is installed on this machine; remove it first (dpkg --purge kestrel)"
fi
for path in /usr/bin/kestrel /etc/kestrel /usr/lib/systemd/system/kestrel.service; do
  [ ! -e "$path" ] || skip "$path exists (not from a package); the package would replace it"
done

start=$SECONDS
installed=false
cleanup() {
  if $installed; then
    echo "tests/package.sh: purging the package" >&2
    DEBIAN_FRONTEND=noninteractive dpkg --purge kestrel >/dev/null || true
  fi
}
trap cleanup EXIT

echo "tests/package.sh: building the package" >&2
deb=$(contrib/deb/build.sh --fast)  # lighter compression: the package is thrown away
echo "tests/package.sh: installing $deb" >&2
installed=true
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
[ "$(dpkg-query -W -f='${Status}' kestrel)" = "install ok installed" ] ||
  fail "dpkg does not list kestrel as installed"

# The files, and /etc/kestrel/kestrel.toml as a conffile (an upgrade keeps edits).
files=$(dpkg -L kestrel)
for path in \
  /usr/bin/kestrel \
  /usr/lib/systemd/system/kestrel.service \
  /etc/kestrel/kestrel.toml \
  /usr/share/man/man1/kestrel.1.gz \
  /usr/share/man/man1/kestrel-check-config.1.gz \
  /usr/share/man/man1/kestrel-admin.1.gz \
  /usr/share/doc/kestrel/README.md \
  /usr/share/doc/kestrel/copyright \
  /usr/share/doc/kestrel/docs/operations.md \
  /usr/share/doc/kestrel/docs/configuration.md \
  /usr/share/doc/kestrel/examples/kestrel.toml; do
  grep -qxF "$path" <<<"$files" || fail "dpkg -L kestrel does not list $path"
  [ -e "$path" ] || fail "$path is listed but missing"
done
dpkg-query -W -f='${Conffiles}\n' kestrel | grep -q '^ /etc/kestrel/kestrel.toml ' ||
  fail "/etc/kestrel/kestrel.toml is not a conffile"
cmp -s /usr/lib/systemd/system/kestrel.service contrib/systemd/kestrel.service ||
  fail "the installed unit differs from contrib/systemd/kestrel.service"
page=$(zcat /usr/share/man/man1/kestrel.1.gz)
grep -q '^\.TH kestrel 1' <<<"$page" || fail "kestrel.1.gz is not the kestrel(1) man page"
grep -qF 'kestrel\-check\-config(1)' <<<"$page" || fail "kestrel(1) does not refer to kestrel-check-config(1)"

# The binary runs from the PATH, in a clean environment (no KESTREL_* of ours).
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin kestrel --version)
echo "$out"
[ "$out" = "kestrel $version" ] || fail "kestrel --version said \"$out\", not \"kestrel $version\""

out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin kestrel check-config --config /etc/kestrel/kestrel.toml) ||
  fail "kestrel check-config refused the packaged configuration"
echo "$out"
grep -Eq '^data_dir = /var/lib/kestrel +# file' <<<"$out" ||
  fail "check-config does not show data_dir = /var/lib/kestrel from the file"

# The installed unit, against the installed binary and man page.
if command -v systemd-analyze >/dev/null; then
  man_check=()
  command -v man >/dev/null || man_check=(--man=no)
  systemd-analyze verify "${man_check[@]}" /usr/lib/systemd/system/kestrel.service ||
    fail "systemd-analyze verify rejects the installed unit"
  echo "tests/package.sh: systemd-analyze verify: ok" >&2
else
  echo "tests/package.sh: systemd-analyze not installed; unit not verified" >&2
fi

# Purge: nothing of the package is left, the configuration included.
DEBIAN_FRONTEND=noninteractive dpkg --purge kestrel >/dev/null
installed=false
if dpkg-query -W -f='${Status}' kestrel 2>/dev/null | grep -qv 'not-installed'; then
  fail "kestrel is still known to dpkg after --purge"
fi
for path in /usr/bin/kestrel /etc/kestrel /usr/lib/systemd/system/kestrel.service /usr/share/doc/kestrel; do
  [ ! -e "$path" ] || fail "$path is left after dpkg --purge"
done
echo "tests/package.sh: ok ($((SECONDS - start)) s)" >&2

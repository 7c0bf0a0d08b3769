#!/usr/bin/env bash
# Builds CRIU 4.1.1 from Debian 13's source tarball into a cache directory and prints the binary's path.
# Debian 12's own criu (3.17) fails on kernels >= 6.13 ("Unexpected rt vDSO area bounds") and Debian 13's
# binary package needs a newer glibc, so the tests build it once per machine. Idempotent: a machine whose
# cache holds the binary does nothing. Needs root (apt-get) only when it has to build.
set -euo pipefail

version=4.1.1
sha256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
cache=${UFFD_CRIU_CACHE:-/var/cache/uffd-criu}
bin="$cache/$version/criu"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

log() { echo "install-criu: $*" >&2; }
start=$SECONDS

deps=(build-essential pkg-config xz-utils python3 python3-protobuf libprotobuf-dev libprotobuf-c-dev
  protobuf-c-compiler protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev libgnutls28-dev
  libnftables-dev uuid-dev)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing build dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
fi

# The archive the machine's apt already uses; the tarball is the one the signed trixie Sources index lists.
archive=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
archive=${archive:-http://deb.debian.org/debian}
mkdir -p "$cache/src"
tarball="$cache/src/criu_$version.orig.tar.xz"
if ! echo "$sha256  $tarball" | sha256sum -c --status 2>/dev/null; then
  log "downloading $archive/pool/main/c/criu/criu_$version.orig.tar.xz"
  /usr/lib/apt/apt-helper download-file "$archive/pool/main/c/criu/criu_$version.orig.tar.xz" "$tarball" \
    "SHA256:$sha256" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$tarball" -C "$work"
log "building criu $version (make -j$(nproc))"
make -C "$work/criu-$version" -j"$(nproc)" criu >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
mkdir -p "$cache/$version"
install -m 0755 "$work/criu-$version/criu/criu" "$bin.tmp"
mv "$bin.tmp" "$bin"
log "criu $version built in $((SECONDS - start))s"
echo "$bin"

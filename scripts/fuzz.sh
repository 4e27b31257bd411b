#!/usr/bin/env bash
# Runs each libFuzzer harness for SECONDS on a copy of its corpus (tests/fuzz/corpus/<name>) with
# AddressSanitizer and UndefinedBehaviorSanitizer, stopping at the first finding. With --merge, the
# inputs that add coverage are merged back into the corpus kept in the repository.
# Usage: scripts/fuzz.sh [--merge] BUILDDIR SECONDS [name ...]
#   BUILDDIR is configured with:
#   CC=clang meson setup BUILDDIR -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=false
set -euo pipefail
cd "$(dirname "$0")/.."
merge=
if [ "${1:-}" = --merge ]; then merge=1; shift; fi
builddir=${1:?builddir}; seconds=${2:?seconds}; shift 2
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for d in tests/fuzz/corpus/*/; do names+=("$(basename "$d")"); done
fi
ninja -C "$builddir" $(printf 'tests/fuzz/fuzz-%s ' "${names[@]}")
export G_SLICE=always-malloc UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for n in "${names[@]}"; do
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$n" "$work/corpus"
  echo "== fuzz-$n: ${seconds}s"
  (cd "$work" && "$OLDPWD/$builddir/tests/fuzz/fuzz-$n" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -print_final_stats=1 corpus 2>&1 | grep -E '^(stat::|SUMMARY|==[0-9]+==|Done)' ) || true
  found=$(find "$work" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) -print)
  if [ -n "$found" ]; then
    echo "fuzz-$n: finding kept in $work: $found" >&2
    exit 1
  fi
  if [ -n "$merge" ]; then
    "$builddir/tests/fuzz/fuzz-$n" -merge=1 "tests/fuzz/corpus/$n" "$work/corpus" >/dev/null 2>&1
  fi
  rm -rf "$work"
done

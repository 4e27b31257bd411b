#!/usr/bin/env bash
# Every C source and header of the project matches .clang-format (the README's test command runs
# this as the unit test "format"). Usage: scripts/check-format.sh [--fix]
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find bench daemons examples include lib tests tools bindings \
  -path 'tests/fuzz/corpus' -prune -o \( -name '*.c' -o -name '*.h' \) -type f -print | sort)
[ ${#files[@]} -gt 0 ] || { echo "check-format: no C files found" >&2; exit 1; }
if [ "${1:-}" = --fix ]; then
  exec clang-format -i "${files[@]}"
fi
if ! clang-format --dry-run --Werror "${files[@]}"; then
  echo "check-format: run scripts/check-format.sh --fix (${#files[@]} files checked)" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files match .clang-format"

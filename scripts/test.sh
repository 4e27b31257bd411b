#!/usr/bin/env bash
# The README's test command: installs Debian dependencies, builds with warnings as errors, and runs
# every test suite. Usage: scripts/test.sh [suite ...]   (default: all suites)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh all
builddir=${OAKUK_BUILDDIR:-build}
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" -Dwerror=true
fi
ninja -C "$builddir"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(unit python integration e2e chaos install)
args=()
for s in "${suites[@]}"; do args+=(--suite "$s"); done
meson test -C "$builddir" --print-errorlogs --num-processes 2 "${args[@]}"

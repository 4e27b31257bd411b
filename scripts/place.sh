#!/usr/bin/env bash
# Main job (for now): builds the library and runs the placement example on a descriptor and node reports.
# Usage: scripts/place.sh [descriptor.json] [nodes.json]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
builddir=${OAKUK_BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" -Dwerror=true >/dev/null
ninja -C "$builddir" examples/place >/dev/null
exec "$builddir/examples/place" "${1:-examples/descriptors/mixed-app.json}" "${2:-examples/nodes/edge.json}"

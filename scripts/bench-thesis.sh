#!/usr/bin/env bash
# The thesis's evaluation on this machine (docs/evaluation.md): startup split into its phases,
# throughput through the instance IP, the service IP and a port mapping, image sizes and memory per
# instance, CPU at a fixed request rate; unikernel vs container vs an nginx container. Needs root.
#
# Usage: scripts/bench-thesis.sh [--unikernel-image URL|FILE|OCI-REF] [--container-image REF]
#                                [--runs N] [--wrk-seconds S] [--out DIR]
#   --unikernel-image  a unikernel serving HTTP on port 80: a URL or file of an Oakestra tarball or a
#                      bare kernel's tar.gz, or an OCI reference (default: the project's amd64 Linux
#                      test guest, busybox httpd)
#   --container-image  a container image serving HTTP on port 80 that the node can pull (default:
#                      busybox httpd, built here from busybox-static)
#   --runs N           startup runs per kind, interleaved (default 10)
#   --wrk-seconds S    seconds of each wrk run (default 10)
#   --out DIR          where report.md, results.json and the PNGs go (default bench-thesis-out)
# It installs what it needs from Debian (scripts/install-deps.sh, wrk, python3-matplotlib), builds
# into build/ (OAKUK_BUILDDIR overrides) and brings up a scratch edge of its own in network
# namespaces (underlay 172.31.249.0/24), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
for a in "$@"; do
  case $a in
  -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-thesis.sh: run as root (it creates network namespaces, QEMU guests and containers)" >&2
  exit 1
fi
scripts/install-deps.sh all
builddir=${OAKUK_BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" -Dwerror=true
ninja -C "$builddir"
exec /usr/bin/python3 bench/thesis/bench_thesis.py --build "$builddir" "$@"

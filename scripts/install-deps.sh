#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the local edge need.
# Usage: scripts/install-deps.sh [build|all]   (default: all)
set -euo pipefail
what=${1:-all}
updated=
build_pkgs=(
  meson ninja-build pkg-config gcc clang clang-format libclang-rt-14-dev binutils
  libglib2.0-dev libjson-glib-dev libsoup-3.0-dev libarchive-dev
  libnl-3-dev libnl-route-3-dev libnftnl-dev libmnl-dev libsqlite3-dev libacl1-dev libgnutls28-dev
  python3
)
run_pkgs=(
  qemu-system-x86 qemu-system-arm qemu-utils mosquitto mosquitto-clients runc nftables iproute2
  busybox-static linux-image-amd64 cpio gzip ca-certificates
  python3-requests docker-registry curl iptables glib-networking systemd
  # the install suite: man pages formatted with groff/man, a second CA made with openssl
  groff-base man-db openssl
  # the cli test parses `oakuk ... -o yaml`; /metrics are read with Prometheus' own parser too
  python3-yaml python3-prometheus-client
  # the root's web pages are tested in a real browser: headless Chromium driven by selenium
  chromium chromium-driver python3-selenium
  # bench-thesis (bench/thesis, its short mode is a test): wrk and the figures; bench/scale's nodes
  wrk python3-matplotlib python3-paho-mqtt
)
# The arm64 test guest (tests/guests) is built from Debian's arm64 kernel and busybox-static,
# fetched with apt-get download: the arm64 architecture must be known to apt.
if [ "$what" = all ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root to add the arm64 architecture (test guests)" >&2
    exit 1
  fi
  dpkg --add-architecture arm64
  apt-get update
  updated=1
fi
pkgs=("${build_pkgs[@]}")
[ "$what" = all ] && pkgs+=("${run_pkgs[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
[ -n "${updated:-}" ] || apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

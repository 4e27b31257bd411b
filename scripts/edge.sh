#!/usr/bin/env bash
# The main job: a whole local edge on this machine, deploying examples/descriptors/hello-edge.json
# (a unikernel HTTP server on service IP 10.30.0.10 and a busybox container calling it).
#
#   scripts/edge.sh [--once] [--state-dir DIR]
#
# Installs the Debian dependencies, builds into build/ ($OAKUK_BUILDDIR), then starts, with TLS on
# every hop of the control plane (the root's CA, pinned everywhere; no --insecure):
#   - in this network namespace: oakuk-root (https://127.0.0.1:10000), oakuk-cluster
#     (https://172.31.250.1:10100, with its own mosquitto, TLS on 10883), an HTTP server on
#     172.31.250.1:8000 serving the unikernel test guest;
#   - in a dedicated network namespace "oakuk-edge-node" (veth 172.31.250.1 <-> 172.31.250.2, no route
#     anywhere else, so the machine's network is untouched): oakuk-node --allow-emulation and a
#     docker-registry on that host's 127.0.0.1:5000 holding the busybox client image, pushed there
#     with liboakuk's oakuk_container_build_rootfs_image.
# The admin password is the one the root wrote to <state>/root/admin-password; `oakuk login` pins the
# root's CA from <state>/root/pki/ca.crt; the cluster's and the node's join tokens come from
# `oakuk token create` and are passed as files (0600). Then `oakuk apply`, `oakuk deploy --wait`
# both services, `oakuk status` and the client's output. Without --once it keeps running until
# Ctrl-C; with --once it checks that the client got the unikernel's answer (exit 0, else 1 with
# what failed). Either way everything it started or made is stopped and removed at the end. State
# directories are 0700, logs and tokens 0600. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
once=0
state=
while [ $# -gt 0 ]; do
  case $1 in
  --once) once=1 ;;
  --state-dir) state=${2:?--state-dir needs a directory}; shift ;;
  --state-dir=*) state=${1#*=} ;;
  -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "edge.sh: unknown argument '$1' (usage: scripts/edge.sh [--once] [--state-dir DIR])" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" -ne 0 ]; then
  echo "edge.sh: run as root (it creates a network namespace, QEMU guests and containers)" >&2
  exit 1
fi

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\nedge.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- dependencies and build ----
if [ -z "${OAKUK_EDGE_SKIP_DEPS:-}" ]; then
  say "installing Debian dependencies (scripts/install-deps.sh all)"
  scripts/install-deps.sh all
fi
builddir=${OAKUK_BUILDDIR:-build}
say "building into $builddir"
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" -Dwerror=true
ninja -C "$builddir"
bin_root=$builddir/daemons/oakuk-root
bin_cluster=$builddir/daemons/oakuk-cluster
bin_node=$builddir/daemons/oakuk-node
oakuk=$builddir/tools/oakuk/oakuk
lib=$builddir/lib/liboakuk.so.0
guests=$builddir/tests/guests
for f in "$bin_root" "$bin_cluster" "$bin_node" "$oakuk" "$lib"; do [ -x "$f" ] || [ -f "$f" ] || fail "$f was not built"; done
[ -f "$guests/guest-amd64.tar.gz" ] || fail "$guests/guest-amd64.tar.gz missing (the test guest is built only as root)"
for p in ip docker-registry python3 qemu-system-x86_64 runc; do
  command -v "$p" >/dev/null || fail "$p not found (scripts/install-deps.sh all installs it)"
done

# ---- state, names, cleanup ----
made_state=
if [ -z "$state" ]; then
  state=$(mktemp -d /tmp/oakuk-edge.XXXXXX)
  made_state=1
fi
mkdir -p "$state"
state=$(cd "$state" && pwd)
chmod 0700 "$state"   # tokens, the CLI's credentials and the daemons' secrets live below
NS=oakuk-edge-node
HOST_IF=oakuk-edge0
HOST_IP=172.31.250.1
NODE_IP=172.31.250.2
ROOT_URL=https://127.0.0.1:10000
CLUSTER_URL=https://$HOST_IP:10100
ROOT_CA=$state/root/pki/ca.crt
export XDG_CONFIG_HOME=$state/config   # the CLI's stored credentials stay in the state dir
export OAKUK_URL=$ROOT_URL
pids=()
made_ns=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  say "stopping everything"
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM -- "-${pids[$i]}" 2>/dev/null || kill -TERM "${pids[$i]}" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  # instance namespaces of hello-edge (the node removes them with --stop-instances; be sure)
  for n in /run/netns/hello.edge.*; do
    [ -e "$n" ] || continue
    for p in $(ip netns pids "${n##*/}" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "${n##*/}" 2>/dev/null || true
  done
  if [ -n "$made_ns" ]; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip link del "$HOST_IF" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
  fi
  if [ -n "$made_state" ] && [ "$rc" -eq 0 ]; then
    rm -rf "$state"
  else
    echo "logs and state kept in $state"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in its own process group, output to $state/NAME.log (0600)
start() {
  local name=$1
  shift
  (umask 077 && : >>"$state/$name.log")
  setsid "$@" >"$state/$name.log" 2>&1 </dev/null &
  pids+=($!)
}
wait_file() { # wait_file FILE WHAT LOG
  for _ in $(seq 1 150); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  fail "$2 ($1) never appeared: $(tail -5 "$3")"
}
wait_http() { # wait_http URL WHAT [netns]: plain HTTP
  local end=$((SECONDS + 30))
  while [ $SECONDS -lt $end ]; do
    if [ -n "${3:-}" ]; then
      ip netns exec "$3" busybox wget -q -O /dev/null "$1" 2>/dev/null && return 0
    else
      python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null && return 0
    fi
    sleep 0.2
  done
  fail "$2 does not answer at $1"
}
wait_https() { # wait_https URL WHAT: answers with a certificate from the root's CA, for that host
  local end=$((SECONDS + 30))
  while [ $SECONDS -lt $end ]; do
    python3 -c "
import ssl, sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2, context=ssl.create_default_context(cafile=sys.argv[2]))" \
      "$1" "$ROOT_CA" 2>/dev/null && return 0
    sleep 0.2
  done
  fail "$2 does not answer at $1 with a certificate of the root's CA"
}

# ---- KVM or emulation ----
kvm_reason=$(OAKUK_LIB=$lib python3 - <<'EOF'
import ctypes, os
lib = ctypes.CDLL(os.environ["OAKUK_LIB"])
lib.oakuk_qemu_probe.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_void_p]
lib.oakuk_qemu_caps_kvm.argtypes = [ctypes.c_void_p]
lib.oakuk_qemu_caps_kvm.restype = ctypes.c_bool
lib.oakuk_qemu_caps_kvm_reason.argtypes = [ctypes.c_void_p]
lib.oakuk_qemu_caps_kvm_reason.restype = ctypes.c_char_p
caps = ctypes.c_void_p()
if lib.oakuk_qemu_probe(ctypes.byref(caps), None, None) != 0:
    print("the QEMU/KVM probe failed")
elif not lib.oakuk_qemu_caps_kvm(caps):
    print((lib.oakuk_qemu_caps_kvm_reason(caps) or b"KVM unusable").decode())
EOF
)
if [ -n "$kvm_reason" ]; then
  say "NOTE: this machine has no usable KVM ($kvm_reason)."
  echo "   The node runs with --allow-emulation: the unikernel boots under QEMU TCG emulation (slower, same behaviour)."
fi

# ---- the node's host: a network namespace joined by a veth ----
say "network namespace $NS ($NODE_IP) <-> this namespace ($HOST_IP on $HOST_IF)"
[ -e "/run/netns/$NS" ] && fail "namespace $NS exists already (another edge.sh running? remove it with: ip netns del $NS)"
ip link set lo up   # local addresses need it (already up in a machine's own namespace)
ip netns add "$NS"
made_ns=1
ip -n "$NS" link set lo up
ip link add "$HOST_IF" type veth peer name eth0 netns "$NS"
ip addr add "$HOST_IP/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" addr add "$NODE_IP/30" dev eth0
ip -n "$NS" link set eth0 up

# ---- registry on the node host's loopback, with the busybox client image ----
say "docker-registry on $NS's 127.0.0.1:5000, busybox image pushed with oakuk_container_build_rootfs_image"
mkdir -p "$state/registry"
cat >"$state/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry/data
http:
  addr: 127.0.0.1:5000
EOF
start registry nsenter --net="/run/netns/$NS" docker-registry serve "$state/registry/config.yml"
wait_http http://127.0.0.1:5000/v2/ "the registry" "$NS"
rootfs=$state/busybox-rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc"
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh nc printf sleep echo cat timeout; do ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
nsenter --net="/run/netns/$NS" env OAKUK_LIB="$lib" ROOTFS="$rootfs" python3 - <<'EOF' || fail "pushing the busybox image"
import ctypes, os, sys
lib = ctypes.CDLL(os.environ["OAKUK_LIB"])
f = lib.oakuk_container_build_rootfs_image
f.argtypes = [ctypes.c_char_p] * 6 + [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_void_p)]
lib.oakuk_error_message.restype = ctypes.c_char_p
lib.oakuk_error_message.argtypes = [ctypes.c_void_p]
digest, err = ctypes.c_char_p(), ctypes.c_void_p()
if f(os.environ["ROOTFS"].encode(), b"127.0.0.1:5000", b"oakuk/busybox", b"1", None, None, None,
     ctypes.byref(digest), ctypes.byref(err)) != 0:
    sys.exit("push: " + lib.oakuk_error_message(err).decode())
print("   pushed 127.0.0.1:5000/oakuk/busybox:1", digest.value.decode())
EOF

# ---- guest file server ----
say "HTTP server on $HOST_IP:8000 serving the unikernel test guest ($guests)"
start files python3 -m http.server --bind "$HOST_IP" --directory "$guests" 8000
wait_http "http://$HOST_IP:8000/guest-amd64.tar.gz" "the guest file server"

# ---- root, cluster, node ----
say "oakuk-root on $ROOT_URL"
start root "$bin_root" --state-dir "$state/root" --listen 127.0.0.1:10000
wait_file "$ROOT_CA" "the root's CA" "$state/root.log"
wait_file "$state/root/admin-password" "the root's admin password" "$state/root.log"
wait_https "$ROOT_URL/healthz" "oakuk-root"
"$oakuk" login "$ROOT_URL" --ca-file "$ROOT_CA" --password-file "$state/root/admin-password" || fail "oakuk login"
(umask 077 && "$oakuk" token create cluster --ttl 10m >"$state/cluster-join-token") || fail "oakuk token create cluster"

say "oakuk-cluster on $CLUSTER_URL (its own mosquitto, TLS on port 10883)"
start cluster "$bin_cluster" --state-dir "$state/cluster" --listen "$HOST_IP:10100" --root-url "$ROOT_URL" \
  --advertise-url "$CLUSTER_URL" --join-token "@$state/cluster-join-token" --name edge --location this-machine \
  --mqtt-port 10883
wait_https "$CLUSTER_URL/healthz" "oakuk-cluster"   # once the root signed its certificate
# the node's join token: made by the cluster when the root asks it (it is registered by now)
for i in $(seq 1 30); do
  (umask 077 && "$oakuk" token create node --cluster edge --ttl 10m >"$state/node-join-token" 2>"$state/token.err") && break
  [ "$i" -eq 30 ] && fail "oakuk token create node: $(cat "$state/token.err")"
  sleep 1
done
rm -f "$state/token.err"

say "oakuk-node 'edge-node' in $NS (--allow-emulation)"
start node nsenter --net="/run/netns/$NS" "$bin_node" --state-dir "$state/node" --cluster-url "$CLUSTER_URL" \
  --join-token "@$state/node-join-token" --name edge-node --underlay-ip "$NODE_IP" --allow-emulation \
  --stop-instances --report-interval 1
for i in $(seq 1 60); do
  "$oakuk" nodes 2>/dev/null | grep -q edge-node && break
  [ "$i" -eq 60 ] && fail "the node never showed up at the root: $(tail -5 "$state/node.log")"
  sleep 1
done
"$oakuk" nodes

# ---- the application ----
say "oakuk apply examples/descriptors/hello-edge.json"
"$oakuk" apply "$src/examples/descriptors/hello-edge.json" || fail "oakuk apply"
say "oakuk deploy --wait hello.edge.web.edge   (unikernel, boots under TCG)"
"$oakuk" deploy --wait --timeout 240 hello.edge.web.edge || fail "deploying the unikernel; node log: $(tail -5 "$state/node.log")"
say "oakuk deploy --wait hello.edge.client.edge   (busybox container)"
"$oakuk" deploy --wait --timeout 120 hello.edge.client.edge || fail "deploying the client; node log: $(tail -5 "$state/node.log")"
say "oakuk status"
"$oakuk" status

# The client's output: `oakuk logs` when the control plane serves it, else the node's output file.
client_out=$state/node/container/instances/hello.edge.client.edge.instance.0/output.log
client_logs() {
  local out
  if out=$("$oakuk" logs -n 20 hello.edge.client.edge 2>/dev/null) && [ -n "$out" ]; then
    echo "$out"
  elif [ -f "$client_out" ]; then
    tail -n 20 "$client_out"
  fi
}
got=
for _ in $(seq 1 60); do
  if client_logs | grep -q "oakuk-guest"; then got=1; break; fi
  sleep 1
done
say "the client's output (oakuk logs hello.edge.client.edge)"
client_logs || true
if [ -z "$got" ]; then
  fail "the client never got the unikernel's answer from http://10.30.0.10:8080/ within 60 s"
fi
say "OK: the busybox container got the unikernel's answer through service IP 10.30.0.10"

if [ "$once" = 1 ]; then
  exit 0
fi
say "running; Ctrl-C stops everything. Try: XDG_CONFIG_HOME=$XDG_CONFIG_HOME $oakuk status"
while :; do
  sleep 10
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a daemon exited; logs in $state"; done
  client_logs | tail -n 4
done

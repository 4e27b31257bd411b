"""Shared machinery of the end-to-end suite (tests/e2e) and bench/e2e-deploy.py.

Every "host" is a network namespace with lo up and one veth leg on an underlay bridge that lives in
its own namespace (<prefix>ul), so nothing touches the machine's own network. The driving process
moves itself into the control host's namespace (setns on the main thread, before any thread is
started), so the daemons it spawns there and its own HTTP requests share that namespace; nodes are
spawned with `nsenter --net` (not `ip netns exec`, whose private /sys hides the cgroup tree). Everything made here (namespaces, processes, temp dirs) is
recorded and removed by Edge.close(), which also runs at exit and on SIGTERM/SIGINT."""
import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from edgelib import wait_until  # noqa: E402,F401  (one polling helper for every test suite)

CLONE_NEWNET = 0x40000000
UNDERLAY = "172.31.251"   # <UNDERLAY>.0/24: the test underlay
MOSQUITTO = "/usr/sbin/mosquitto"
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv, check=True):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), r.stderr.strip()))
    return r


def setns(name):
    """Moves the calling thread into network namespace /run/netns/<name>."""
    fd = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns %s: %s" % (name, os.strerror(e)))
    finally:
        os.close(fd)


class Daemon:
    """A process whose stderr (and stdout) go to a log file."""

    def __init__(self, edge, name, argv, netns=None, env=None):
        self.edge, self.name, self.argv, self.netns, self.env = edge, name, argv, netns, env
        self.log_path = os.path.join(edge.tmp, name + ".log")
        self.proc = None

    def start(self):
        argv = self.argv if self.netns is None else ["nsenter", "--net=/run/netns/" + self.netns] + self.argv
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()
        self.edge.procs.append(self.proc)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def kill(self):
        self.stop(signal.SIGKILL)

    def text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def tail(self, n=30):
        return "\n".join(self.text().splitlines()[-n:])

    def grep(self, prefix, timeout=15):
        return wait_until("'%s' in %s" % (prefix, self.log_path), lambda: next(
            (l.split(prefix, 1)[1].strip() for l in self.text().splitlines() if prefix in l), None),
            timeout=timeout)


def descendants(pid):
    """Pids of every process below pid (from /proc/*/stat)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def netns_of(pid):
    try:
        return os.readlink("/proc/%d/ns/net" % pid)
    except OSError:
        return None


def make_busybox_rootfs(dest, loop_script=None):
    """A busybox-static rootfs: /bin/busybox with applet links, /etc, /tmp."""
    os.makedirs(os.path.join(dest, "bin"))
    for d in ("tmp", "proc", "sys", "dev", "etc", "www"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(dest, "bin", "busybox"))
    os.chmod(os.path.join(dest, "bin", "busybox"), 0o755)
    for a in ("sh", "wget", "httpd", "nc", "printf", "cat", "echo", "sleep", "ls", "date", "ip", "hostname", "timeout"):
        os.symlink("busybox", os.path.join(dest, "bin", a))
    with open(os.path.join(dest, "www", "index.html"), "w") as f:
        f.write("hello from the busybox container\n")
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\n")
    return dest


def push_rootfs_image(lib_path, rootfs, registry, name, tag):
    """Pushes rootfs as registry/name:tag with liboakuk's oakuk_container_build_rootfs_image."""
    lib = ctypes.CDLL(lib_path)
    f = lib.oakuk_container_build_rootfs_image
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_char_p] * 6 + [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                          ctypes.POINTER(ctypes.c_void_p)]
    lib.oakuk_error_message.restype = ctypes.c_char_p
    lib.oakuk_error_message.argtypes = [ctypes.c_void_p]
    digest = ctypes.c_char_p()
    err = ctypes.c_void_p()
    rc = f(rootfs.encode(), registry.encode(), name.encode(), tag.encode(), None, None, None,
           ctypes.byref(digest), ctypes.byref(err))
    if rc != 0:
        raise RuntimeError("push %s/%s:%s: %s" % (registry, name, tag, lib.oakuk_error_message(err).decode()))
    return digest.value.decode()


class Edge:
    """Namespaces, daemons and servers of one end-to-end run."""

    def __init__(self, build_root, tag=None):
        self.build = build_root
        self.tag = tag or "e%d" % (os.getpid() % 100000)
        # application namespace of every descriptor of this run: instance names (and so their netns
        # and cgroups) contain it, which is how close() finds what the nodes left behind
        self.marker = "x" + self.tag.replace("-", "")
        self.tmp = tempfile.mkdtemp(prefix="oakuk-e2e-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.extra_markers = []
        self.node_mntns = set()
        self.hosts = {}      # name -> (netns, underlay ip)
        self.netns = []
        self.closed = False
        self.ul = self.tag + "-ul"
        self.root_bin = os.path.join(build_root, "daemons", "oakuk-root")
        self.cluster_bin = os.path.join(build_root, "daemons", "oakuk-cluster")
        self.node_bin = os.path.join(build_root, "daemons", "oakuk-node")
        self.cli_bin = os.path.join(build_root, "tools", "oakuk", "oakuk")
        self.lib_path = os.path.join(build_root, "lib", "liboakuk.so.0")
        self.guests = os.path.join(build_root, "tests", "guests")
        atexit.register(self.close)
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._on_signal)

    def _on_signal(self, sig, frame):
        self.close()
        raise SystemExit(128 + sig)

    # ---- hosts ----
    def _ns_add(self, name):
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def underlay(self):
        self._ns_add(self.ul)
        sh("ip", "-n", self.ul, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.ul, "link", "set", "br0", "up")

    def host(self, short, index):
        """A host namespace <tag>-<short> at <UNDERLAY>.<index> on the underlay bridge."""
        ns = "%s-%s" % (self.tag, short)
        ip = "%s.%d" % (UNDERLAY, index)
        self._ns_add(ns)
        leg = "u%d" % index
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", leg, "netns", self.ul)
        sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.ul, "link", "set", leg, "master", "br0")
        sh("ip", "-n", self.ul, "link", "set", leg, "up")
        self.hosts[short] = (ns, ip)
        return ns, ip

    def enter(self, short):
        """Moves this process (its main thread: call before starting threads) into host short."""
        setns(self.hosts[short][0])

    # ---- control plane ----
    def start_root(self, port=10000):
        self.root_port = port
        self.root_url = "http://127.0.0.1:%d" % port
        self.root = Daemon(self, "root", [self.root_bin, "--state-dir", os.path.join(self.tmp, "root"),
                                          "--listen", "0.0.0.0:%d" % port]).start()
        self.admin_password = self.root.grep("admin password:")
        self.token = wait_until("root login", lambda: requests.post(self.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": self.admin_password}).json()["token"])
        self.h = {"Authorization": "Bearer " + self.token}

    def start_cluster(self, ip, port=10100, mqtt_port=10883, node_timeout=5, extra=()):
        r = requests.post(self.root_url + "/api/v1/clusters/tokens", headers=self.h, timeout=5)
        r.raise_for_status()
        self.cluster_port, self.mqtt_port = port, mqtt_port
        self.cluster_url = "http://%s:%d" % (ip, port)
        self.cluster_ip = ip
        self.node_timeout = node_timeout
        self.cluster_args = [self.cluster_bin, "--state-dir", os.path.join(self.tmp, "cluster"), "--listen",
                             "%s:%d" % (ip, port), "--root-url", self.root_url, "--name", "edge1", "--location",
                             "e2e", "--mqtt-port", str(mqtt_port), "--node-timeout", str(node_timeout),
                             "--aggregate-interval", "1"] + list(extra)
        self.cluster = Daemon(self, "cluster", self.cluster_args + ["--join-token", r.json()["token"]]).start()
        self.node_join_token = self.cluster.grep("node join token:")
        wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
            requests.get(self.cluster_url + "/healthz", timeout=5).json()))

    def restart_cluster(self):
        self.cluster.stop()
        self.cluster = Daemon(self, "cluster", self.cluster_args).start()
        wait_until("cluster back", lambda: requests.get(self.cluster_url + "/healthz", timeout=5).json()[
            "mqtt_connected"], timeout=30)

    def restart_root(self):
        self.root.stop()
        self.root = Daemon(self, "root", self.root.argv).start()
        wait_until("root back", lambda: requests.get(self.root_url + "/healthz", timeout=5).ok)

    def cluster_token(self):
        """The token the root issued to the cluster (what the root sends it with)."""
        import sqlite3
        db = sqlite3.connect(os.path.join(self.tmp, "cluster", "cluster.db"))
        try:
            return db.execute("SELECT value FROM kv WHERE key = 'token'").fetchone()[0]
        finally:
            db.close()

    def broker_pid(self):
        for pid in descendants(self.cluster.pid):
            if "mosquitto" in cmdline(pid):
                return pid
        raise AssertionError("the cluster runs no mosquitto")

    # ---- nodes ----
    def node_argv(self, name, ip, extra=()):
        return [self.node_bin, "--state-dir", os.path.join(self.tmp, "node-" + name), "--cluster-url",
                self.cluster_url, "--join-token", self.node_join_token, "--name", name, "--underlay-ip", ip,
                "--report-interval", "1"] + list(extra)

    def start_node(self, short, name, extra=(), env=None):
        """oakuk-node in host short's network namespace and in a mount namespace of its own with a
        private /run/netns: on one machine the nodes' instance namespaces (named after instances)
        would otherwise share one directory, and an instance moving to another node would find its
        old namespace there, which separate machines never do."""
        ns, ip = self.hosts[short]
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o mode=0755 oakuk-e2e-netns /run/netns && exec "$0" "$@"'] + \
            self.node_argv(name, ip, extra)
        d = Daemon(self, "node-" + name, argv, netns=ns, env=env).start()
        mine = os.readlink("/proc/self/ns/mnt")
        wait_until("node %s in its mount namespace" % name, lambda: (lambda m: m and m != mine and "oakuk-node" in cmdline(
            d.pid))(os.readlink("/proc/%d/ns/mnt" % d.pid)), timeout=10, interval=0.02)
        self.node_mntns.add(os.readlink("/proc/%d/ns/mnt" % d.pid))
        return d

    def api(self, method, path, **kw):
        kw.setdefault("timeout", 10)
        kw.setdefault("headers", self.h)
        return requests.request(method, self.root_url + path, **kw)

    def cluster_nodes(self):
        return requests.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()

    def wait_nodes(self, names, timeout=40):
        wait_until("nodes %s active" % names, lambda: {n["id"] for n in self.cluster_nodes() if n["active"]}
                   >= set(names), timeout=timeout)

    # ---- servers ----
    def file_server(self, directory, bind_ip, port):
        d = Daemon(self, "files-%d" % port, ["/usr/bin/python3", "-m", "http.server", "--bind", bind_ip,
                                              "--directory", directory, str(port)]).start()
        wait_until("file server", lambda: requests.get("http://%s:%d/" % (bind_ip, port), timeout=2).ok)
        return d

    def registry(self, bind_ip, port, store=None, name="registry", netns=None):
        """docker-registry on bind_ip:port (in netns, default: here) over storage dir store."""
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        store = store or os.path.join(d, "data")
        cfg = os.path.join(d, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                    "http:\n  addr: %s:%d\n" % (store, bind_ip, port))
        r = Daemon(self, name, ["/usr/bin/docker-registry", "serve", cfg], netns=netns).start()
        if netns is None:
            wait_until(name, lambda: requests.get("http://%s:%d/v2/" % (bind_ip, port), timeout=2).ok)
        else:
            wait_until(name, lambda: sh("ip", "netns", "exec", netns, "busybox", "wget", "-q", "-O", "/dev/null",
                                        "http://%s:%d/v2/" % (bind_ip, port), check=False).returncode == 0)
        return r

    def path_without(self, names, tag):
        """An environment whose PATH is one directory linking every program of the usual PATH
        except those named: how a node is made to see only some qemu-system-* binaries."""
        d = os.path.join(self.tmp, "bin-" + tag)
        os.makedirs(d)
        for src in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if not os.path.isdir(src):
                continue
            for e in os.listdir(src):
                link = os.path.join(d, e)
                if e not in names and not os.path.lexists(link):
                    os.symlink(os.path.join(src, e), link)
        return dict(os.environ, PATH=d)

    # ---- teardown ----
    def close(self):
        if self.closed:
            return
        self.closed = True
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.time() + 20
        for p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
        # whatever still runs in one of our namespaces or in a node's mount namespace (QEMU,
        # containers) goes too
        ours = {netns_of_path("/run/netns/" + n) for n in self.netns} - {None}
        for pid in [int(e) for e in os.listdir("/proc") if e.isdigit()]:
            try:
                mnt = os.readlink("/proc/%d/ns/mnt" % pid)
            except OSError:
                mnt = None
            if pid != os.getpid() and (netns_of(pid) in ours or mnt in self.node_mntns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        # instance namespaces the nodes made (named after instances: they carry the marker)
        markers = [self.marker] + list(self.extra_markers)
        inst_ns = [n for n in os.listdir("/run/netns") if any(m in n for m in markers)] \
            if os.path.isdir("/run/netns") else []
        ours = {netns_of_path("/run/netns/" + n) for n in inst_ns} - {None}
        for pid in [int(e) for e in os.listdir("/proc") if e.isdigit()]:
            if pid != os.getpid() and netns_of(pid) in ours:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.3 if ours else 0)
        for n in inst_ns + list(reversed(self.netns)):
            sh("ip", "netns", "del", n, check=False)
        for base in ("/sys/fs/cgroup/oakuk", "/sys/fs/cgroup/memory/oakuk", "/sys/fs/cgroup/cpu,cpuacct/oakuk",
                     "/sys/fs/cgroup/pids/oakuk"):
            if os.path.isdir(base):
                for e in os.listdir(base):
                    if any(m in e for m in markers):
                        subprocess.run(["find", os.path.join(base, e), "-depth", "-type", "d", "-exec", "rmdir",
                                        "{}", ";"], stderr=subprocess.DEVNULL)
        if os.environ.get("KEEP_TMP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def netns_of_path(path):
    try:
        st = os.stat(path)
        return "net:[%d]" % st.st_ino
    except OSError:
        return None

"""Shared machinery of the end-to-end suite (tests/e2e) and bench/e2e-deploy.py.

Every "host" is a network namespace with lo up and one veth leg on an underlay bridge that lives in
its own namespace (<prefix>ul), so nothing touches the machine's own network. The driving process
moves itself into the control host's namespace (setns on the main thread, before any thread is
started), so the daemons it spawns there and its own HTTP requests share that namespace; nodes are
spawned with `nsenter --net` (not `ip netns exec`, whose private /sys hides the cgroup tree). Everything made here (namespaces, processes, temp dirs) is
recorded and removed by Edge.close(), which also runs at exit and on SIGTERM/SIGINT.

For fault injection and the reconciliation scenarios (tests/chaos, tests/e2e/test_reconcile.py):
more clusters (add_cluster), nodes that can be killed and started again into the mount namespace
of a holder process (start_node(..., keep_mntns=True)), link cuts (cut_link/heal_link), and what
runs where, read from /proc and the nodes' hosts (runtime_units, node_view)."""
import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from edgelib import wait_until, read_text, write_secret  # noqa: E402,F401  (one polling helper for every test suite)

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

    def restart(self):
        """Starts the same argv again (after stop or kill); the log goes on."""
        return self.start()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

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

    def __init__(self, build_root, tag=None, underlay=UNDERLAY, insecure=False):
        """insecure: every daemon runs with --insecure (plain HTTP and MQTT), for bench/e2e-deploy's
        price of TLS; the suites never do."""
        self.build = build_root
        self.insecure = insecure
        self.scheme = "http" if insecure else "https"
        self.tag = tag or "e%d" % (os.getpid() % 100000)
        self.prefix = underlay   # <prefix>.0/24: this run's underlay
        # application namespace of every descriptor of this run: instance names (and so their netns
        # and cgroups) contain it, which is how close() finds what the nodes left behind
        self.marker = "x" + self.tag.replace("-", "")
        self.tmp = tempfile.mkdtemp(prefix="oakuk-e2e-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.extra_markers = []
        self.node_mntns = set()
        self.hosts = {}      # name -> (netns, underlay ip)
        self.holders = {}    # host short name -> Daemon holding that host's node mount namespace
        self.clusters = {}   # name -> Cluster (add_cluster)
        self.node_daemons = {}  # node name -> its Daemon (the latest start)
        self.here = None
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
        """A host namespace <tag>-<short> at <prefix>.<index> on the underlay bridge."""
        ns = "%s-%s" % (self.tag, short)
        ip = "%s.%d" % (self.prefix, index)
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
        self.here = short

    def cut_link(self, short):
        """Cuts host short off the underlay: nftables drop rules (a table of ours, chaoscut) on its
        eth0 for input, output and forwarding. Loopback and its own instances stay reachable."""
        rules = ("table inet chaoscut {\n"
                 " chain cut_in { type filter hook input priority -300; policy accept; iifname \"eth0\" drop; }\n"
                 " chain cut_out { type filter hook output priority -300; policy accept; oifname \"eth0\" drop; }\n"
                 " chain cut_fwd { type filter hook forward priority -300; policy accept; iifname \"eth0\" drop; "
                 "oifname \"eth0\" drop; }\n}\n")
        r = subprocess.run(["nsenter", "--net=/run/netns/" + self.hosts[short][0], "nft", "-f", "-"], input=rules,
                           text=True, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError("cut %s: %s" % (short, r.stderr.strip()))

    def heal_link(self, short):
        sh("nsenter", "--net=/run/netns/" + self.hosts[short][0], "nft", "delete", "table", "inet", "chaoscut",
           check=False)

    # ---- control plane ----
    def start_root(self, port=10000, config=None):
        """oakuk-root here, over TLS with its own CA (docs/security.md): its certificate names
        127.0.0.1 and this host's underlay address; .ca_file is the CA, which signs every cluster's
        certificate too, and REQUESTS_CA_BUNDLE points this process's requests calls at it. The admin
        password is read from the file the root writes. config: {key: value} of its [root] config
        group (a file in tmp)."""
        self.root_port = port
        self.root_url = "%s://127.0.0.1:%d" % (self.scheme, port)
        extra = ["--tls-san", self.hosts[self.here][1]] if self.here else []
        if self.insecure:
            extra.append("--insecure")
        if config:
            path = os.path.join(self.tmp, "root.conf")
            with open(path, "w") as f:
                f.write("[root]\n" + "".join("%s=%s\n" % kv for kv in config.items()))
            extra += ["--config", path]
        self.root = Daemon(self, "root", [self.root_bin, "--state-dir", os.path.join(self.tmp, "root"),
                                          "--listen", "0.0.0.0:%d" % port] + extra).start()
        self.ca_file = os.path.join(self.tmp, "root", "pki", "ca.crt")
        wait_until("the root's CA", lambda: os.path.exists(self.ca_file), timeout=10)
        if not self.insecure:
            os.environ["REQUESTS_CA_BUNDLE"] = self.ca_file
        self.admin_password = wait_until("the root's admin password", lambda: read_text(
            os.path.join(self.tmp, "root", "admin-password")), timeout=10)
        self.token = wait_until("root login", lambda: requests.post(self.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": self.admin_password}).json()["token"])
        self.h = {"Authorization": "Bearer " + self.token}
        # The operator's CLI, logged in as the admin: it makes the join tokens (docs/deploy.md).
        self.cli("login", self.root_url, "--password-stdin",
                 *(["--insecure"] if self.insecure else ["--ca-file", self.ca_file]), stdin=self.admin_password + "\n")

    def cli(self, *args, stdin=None):
        """oakuk ARGS as an operator runs it (its credentials in tmp/cli-config); its stdout."""
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(self.tmp, "cli-config"))
        p = subprocess.run([self.cli_bin] + list(args), env=env, input=stdin, capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            raise RuntimeError("oakuk %s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
        return p.stdout.strip()

    def join(self, what, url, token, state, name):
        """`oakuk-cluster join` or `oakuk-node join` URL @TOKEN-FILE --no-start, as docs/deploy.md
        has it: the state directory and the configuration (its path returned), which the daemon
        then starts with (--config)."""
        binary = self.cluster_bin if what == "cluster" else self.node_bin
        token_file = write_secret(os.path.join(self.tmp, "%s-join-token-%s" % (what, name)), token)
        conf = os.path.join(self.tmp, "%s-%s.conf" % (what, name))
        argv = [binary, "join", url, "@" + token_file, "--no-start", "--state-dir", state, "--config", conf,
                "--name", name] + (["--insecure"] if self.insecure else [])
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), p.returncode, p.stderr.strip()))
        return conf

    def node_token(self, cluster):
        """A node join token of cluster (its name), from `oakuk token create node` (many nodes).
        The root asks the cluster for it once the cluster's first aggregate is in (until then
        the command says to try again, and it is tried again)."""
        def create():
            try:
                return self.cli("token", "create", "node", "--cluster", cluster, "--uses", "1000", "--ttl", "1h")
            except RuntimeError as e:
                if "try again" not in str(e):
                    raise
                return None
        return wait_until("a node join token of cluster %s" % cluster, create, timeout=30)

    def start_cluster(self, ip, port=10100, mqtt_port=10883, node_timeout=5, extra=()):
        state = os.path.join(self.tmp, "cluster")
        conf = self.join("cluster", self.root_url, self.cli("token", "create", "cluster"), state, "edge1")
        self.cluster_port, self.mqtt_port = port, mqtt_port
        self.cluster_url = "%s://%s:%d" % (self.scheme, ip, port)
        self.cluster_ip = ip
        self.node_timeout = node_timeout
        self.cluster_args = [self.cluster_bin, "--config", conf, "--state-dir", state, "--listen",
                             "%s:%d" % (ip, port), "--location", "e2e", "--mqtt-port", str(mqtt_port),
                             "--node-timeout", str(node_timeout), "--aggregate-interval", "1"] + \
            (["--insecure"] if self.insecure else []) + list(extra)
        self.cluster = Daemon(self, "cluster", self.cluster_args).start()
        wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
            requests.get(self.cluster_url + "/healthz", timeout=5).json()))
        self.node_join_token = self.node_token("edge1")

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

    def add_cluster(self, name, short, port=10100, mqtt_port=10883, node_timeout=5, aggregate_interval=1,
                    extra=()):
        """Another oakuk-cluster (with its own mosquitto), in host short's namespace: a Cluster."""
        c = Cluster(self, name, short, port, mqtt_port, node_timeout, aggregate_interval, extra)
        self.clusters[name] = c
        return c.start()

    # ---- nodes ----
    def node_argv(self, name, ip, extra=(), cluster=None):
        """The node's command line, after `oakuk-node join` wrote its configuration and state."""
        url, token = (cluster.url, cluster.join_token) if cluster else (self.cluster_url, self.node_join_token)
        conf = self.join("node", url, token, self.node_state(name), name)
        return [self.node_bin, "--config", conf, "--state-dir", self.node_state(name), "--underlay-ip", ip,
                "--report-interval", "1"] + (["--insecure"] if self.insecure else []) + list(extra)

    def node_state(self, name):
        return os.path.join(self.tmp, "node-" + name)

    def holder(self, short):
        """A process (sleep) that keeps host short's node mount namespace, with its private
        /run/netns, for as long as the run: a node restarted into it finds the instance namespaces
        its predecessor made, as a node restarted on its own machine would."""
        h = self.holders.get(short)
        if h is not None and h.alive():
            return h
        h = Daemon(self, "holder-" + short, ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                             "mount -t tmpfs -o mode=0755 oakuk-e2e-netns /run/netns && "
                                             "exec sleep infinity"], netns=self.hosts[short][0]).start()
        mine = os.readlink("/proc/self/ns/mnt")
        wait_until("mount namespace holder of %s" % short, lambda: (lambda m: m and m != mine and cmdline(
            h.pid).endswith("sleep"))(os.readlink("/proc/%d/ns/mnt" % h.pid)), timeout=10, interval=0.02)
        self.node_mntns.add(os.readlink("/proc/%d/ns/mnt" % h.pid))
        self.holders[short] = h
        return h

    def node_netns_dir(self, short):
        """/run/netns as host short's node sees it (needs start_node(..., keep_mntns=True))."""
        return "/proc/%d/root/run/netns" % self.holders[short].pid

    def start_node(self, short, name, extra=(), env=None, cluster=None, keep_mntns=False):
        """oakuk-node in host short's network namespace and in a mount namespace of its own with a
        private /run/netns: on one machine the nodes' instance namespaces (named after instances)
        would otherwise share one directory, and an instance moving to another node would find its
        old namespace there, which separate machines never do. It registers with cluster (an
        add_cluster Cluster; default: the start_cluster one). keep_mntns: the mount namespace is the
        host's holder's (see holder()), so that Daemon.restart() brings the node back to its
        instances' namespaces; otherwise the node's own, which ends with it."""
        if keep_mntns:
            ns, ip = self.hosts[short]
            h = self.holder(short)
            argv = ["nsenter", "--net=/run/netns/" + ns, "--mount=/proc/%d/ns/mnt" % h.pid] + \
                self.node_argv(name, ip, extra, cluster)
            d = Daemon(self, "node-" + name, argv, env=env).start()
            wait_until("node %s started" % name, lambda: "oakuk-node" in cmdline(d.pid), timeout=10, interval=0.02)
            d.host = short
            self.node_daemons[name] = d
            return d
        return self._start_node_private(short, name, extra, env, cluster)

    def _start_node_private(self, short, name, extra, env, cluster):
        ns, ip = self.hosts[short]
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o mode=0755 oakuk-e2e-netns /run/netns && exec "$0" "$@"'] + \
            self.node_argv(name, ip, extra, cluster)
        d = Daemon(self, "node-" + name, argv, netns=ns, env=env).start()
        d.host = short
        self.node_daemons[name] = d
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
        # first, while the nodes' mount namespaces still exist: the instance namespaces they made
        # (containers run in them, in mount namespaces of their own)
        try:
            inst_nets = set(self._node_namespaces()[1])
        except OSError:
            inst_nets = set()
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    os.killpg(p.pid, signal.SIGCONT)  # a paused one (fault injection) too
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
        killed = []
        for pid in [int(e) for e in os.listdir("/proc") if e.isdigit()]:
            try:
                mnt = os.readlink("/proc/%d/ns/mnt" % pid)
            except OSError:
                mnt = None
            if pid != os.getpid() and (netns_of(pid) in ours or mnt in self.node_mntns or netns_of(pid) in inst_nets
                                       or self._in_our_cgroup(pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except OSError:
                    pass
        # a killed process leaves its cgroup only once it is gone
        deadline = time.time() + 5
        while killed and time.time() < deadline:
            killed = [p for p in killed if os.path.exists("/proc/%d" % p)]
            time.sleep(0.05)
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
        # cgroup v2, or every v1 hierarchy (runc makes its cgroup in each of them)
        bases = ["/sys/fs/cgroup/oakuk"] + [os.path.join("/sys/fs/cgroup", h, "oakuk") for h in sorted(
            os.listdir("/sys/fs/cgroup")) if os.path.isdir(os.path.join("/sys/fs/cgroup", h, "oakuk"))]
        for base in bases:
            if os.path.isdir(base):
                for e in os.listdir(base):
                    if any(m in e for m in markers):
                        subprocess.run(["find", os.path.join(base, e), "-depth", "-type", "d", "-exec", "rmdir",
                                        "{}", ";"], stderr=subprocess.DEVNULL)
        if os.environ.get("KEEP_TMP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)


    def markers(self):
        return [self.marker] + list(self.extra_markers)

    def _in_our_cgroup(self, pid):
        """pid is in a cgroup /oakuk/<one of this run's instances> (a QEMU or a container)."""
        try:
            with open("/proc/%d/cgroup" % pid) as f:
                text = f.read()
        except OSError:
            return False
        return any("/oakuk/" in line and any(m in line for m in self.markers()) for line in text.splitlines())

    # ---- what runs where (fault injection and reconciliation tests) ----
    def _node_namespaces(self):
        """({mount namespace: host short}, {network namespace: (host short, name)}) of every node
        host: the mount namespaces the nodes run in and the instance namespaces in their /run/netns."""
        mnts, nets, dirs = {}, {}, []
        for short, h in self.holders.items():
            if h.alive():
                try:
                    mnts[os.readlink("/proc/%d/ns/mnt" % h.pid)] = short
                except OSError:
                    continue
                dirs.append((short, "/proc/%d/root/run/netns" % h.pid))
        for d in self.node_daemons.values():
            if d.alive() and d.host not in self.holders:
                try:
                    mnts[os.readlink("/proc/%d/ns/mnt" % d.pid)] = d.host
                except OSError:
                    continue
                dirs.append((d.host, "/proc/%d/root/run/netns" % d.pid))
        for short, path in dirs:
            try:
                names = os.listdir(path)
            except OSError:
                continue
            for n in names:
                ino = netns_of_path(os.path.join(path, n))
                if ino:
                    nets[ino] = (short, n)
        return mnts, nets

    def runtime_units(self):
        """Every QEMU and container of this run's instances, wherever it runs: {instance name:
        [{"kind": "qemu"|"container", "pid", "host", "netns"}]}. host is the node host (short name)
        whose namespaces it runs in, None for none of them. A QEMU is known by its -name; a container
        by the instance namespace it runs in (one unit per namespace with a process in it that is no
        QEMU; its lowest pid), or, outside every node's namespaces, by its cgroup /oakuk/<instance>."""
        mnts, nets = self._node_namespaces()
        markers = self.markers()
        units, ctr = {}, {}
        for e in os.listdir("/proc"):
            if not e.isdigit():
                continue
            pid = int(e)
            argv = proc_argv(pid)
            if not argv:
                continue
            net = netns_of(pid)
            if "qemu-system" in os.path.basename(argv[0]):
                name = argv[argv.index("-name") + 1] if "-name" in argv[:-1] else ""
                if any(m in name for m in markers):
                    try:
                        mnt = os.readlink("/proc/%d/ns/mnt" % pid)
                    except OSError:
                        mnt = None
                    host = mnts.get(mnt) or nets.get(net, (None, None))[0]
                    units.setdefault(name, []).append({"kind": "qemu", "pid": pid, "host": host, "netns": net})
                continue
            if net in nets:
                host, name = nets[net]
                if any(m in name for m in markers):
                    key = (name, net)
                    ctr[key] = min(ctr.get(key, (pid, host))[0], pid), host
                continue
            name = cgroup_instance(pid)
            if name and any(m in name for m in markers):
                key = (name, net)
                ctr[key] = min(ctr.get(key, (pid, None))[0], pid), None
        for (name, net), (pid, host) in ctr.items():
            units.setdefault(name, []).append({"kind": "container", "pid": pid, "host": host, "netns": net})
        return units

    def node_view(self, name):
        """What node name's host holds for instances, read from the kernel and the node's state dir:
        {"netns": [instance namespaces], "veths": {instance: ip} (host ends on the node bridge, by
        their alias oakuk:<mode>:<ip>:<instance>), "taps": [tun links in the host namespace],
        "nft": text of table ip oakuk, "runc": {container id: status}, "jobs": [job records]}."""
        d = self.node_daemons[name]
        ns = self.hosts[d.host][0]
        out = {"netns": [], "veths": {}, "taps": [], "nft": "", "runc": {}, "jobs": []}
        holder = self.holders.get(d.host)
        ns_dir = "/proc/%d/root/run/netns" % (holder.pid if holder else d.pid)
        try:
            out["netns"] = sorted(os.listdir(ns_dir))
        except OSError:
            pass
        r = sh("nsenter", "--net=/run/netns/" + ns, "ip", "-j", "-d", "link", "show", check=False)
        for link in (json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []):
            alias = link.get("ifalias") or ""
            if alias.startswith("oakuk:") and alias.count(":") >= 3:
                _, _mode, ip, inst = alias.split(":", 3)
                out["veths"][inst] = ip
            if (link.get("linkinfo") or {}).get("info_kind") == "tun":
                out["taps"].append(link.get("ifname"))
        r = sh("nsenter", "--net=/run/netns/" + ns, "nft", "list", "table", "ip", "oakuk", check=False)
        out["nft"] = r.stdout if r.returncode == 0 else ""
        state = self.node_state(name)
        r = sh("runc", "--root", os.path.join(state, "container", "runc"), "list", "-f", "json", check=False)
        if r.returncode == 0 and r.stdout.strip() not in ("", "null"):
            out["runc"] = {c["id"]: c["status"] for c in json.loads(r.stdout)}
        try:
            out["jobs"] = sorted(f[:-5] for f in os.listdir(os.path.join(state, "jobs")) if f.endswith(".json"))
        except OSError:
            pass
        return out


class Cluster:
    """One oakuk-cluster, with its own mosquitto, in host short's namespace, registered with the
    root (which must run in the host the driving process entered) under name."""

    def __init__(self, edge, name, short, port, mqtt_port, node_timeout, aggregate_interval, extra):
        self.edge, self.name, self.short = edge, name, short
        self.ns, self.ip = edge.hosts[short]
        self.url = "%s://%s:%d" % (edge.scheme, self.ip, port)
        self.mqtt_port, self.node_timeout = mqtt_port, node_timeout
        self.state = os.path.join(edge.tmp, "cluster-" + name)
        self.root_url = "%s://%s:%d" % (edge.scheme, edge.hosts[edge.here][1], edge.root_port)
        self.conf = os.path.join(edge.tmp, "cluster-%s.conf" % name)
        self.args = [edge.cluster_bin, "--config", self.conf, "--state-dir", self.state, "--listen",
                     "%s:%d" % (self.ip, port), "--location", edge.tag, "--mqtt-port", str(mqtt_port),
                     "--node-timeout", str(node_timeout), "--aggregate-interval", str(aggregate_interval)] + \
            (["--insecure"] if edge.insecure else []) + list(extra)
        self.daemon = None
        self._id = None

    def start(self):
        self.edge.join("cluster", self.root_url, self.edge.cli("token", "create", "cluster"), self.state, self.name)
        self.daemon = Daemon(self.edge, "cluster-" + self.name, self.args, netns=self.ns).start()
        wait_until("cluster %s registered and connected" % self.name, lambda: (
            lambda j: j["registered"] and j["mqtt_connected"])(self.healthz()), timeout=30)
        self.join_token = self.edge.node_token(self.name)
        return self

    def start_again(self, wait=True):
        """Starts it again (after stop), from its state dir."""
        self.daemon = Daemon(self.edge, "cluster-" + self.name, self.args, netns=self.ns).start()
        if wait:
            wait_until("cluster %s back" % self.name, lambda: self.healthz()["mqtt_connected"], timeout=30)
        return self

    def stop(self, sig=signal.SIGTERM):
        self.daemon.stop(sig)

    def healthz(self):
        return requests.get(self.url + "/healthz", timeout=5).json()

    def nodes(self):
        return requests.get(self.url + "/api/v1/nodes", timeout=5).json()

    def instances(self):
        return requests.get(self.url + "/api/v1/instances", timeout=5).json()

    @property
    def id(self):
        if self._id is None:
            self._id = next(c["id"] for c in self.edge.api("GET", "/api/v1/clusters").json()
                            if c.get("cluster_name", c.get("name")) == self.name)
        return self._id

    def broker_pid(self):
        for pid in descendants(self.daemon.pid):
            if "mosquitto" in cmdline(pid):
                return pid
        return None

    def wait_nodes(self, names, timeout=40):
        wait_until("nodes %s active at %s" % (names, self.name), lambda: {
            n["id"] for n in self.nodes() if n["active"]} >= set(names), timeout=timeout)


def proc_argv(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def cgroup_instance(pid):
    """The instance of cgroup /oakuk/<instance> that pid is in, or None."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            for line in f:
                path = line.rstrip("\n").split(":", 2)[-1]
                if path.startswith("/oakuk/"):
                    return path.split("/")[2]
    except OSError:
        pass
    return None


def netns_of_path(path):
    try:
        st = os.stat(path)
        return "net:[%d]" % st.st_ino
    except OSError:
        return None

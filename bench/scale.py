#!/usr/bin/python3
"""scale: how the control plane's cost grows with the work it is given.

Part 1, one cluster with N nodes: the real oakuk-root and oakuk-cluster (which runs its own
mosquitto), TLS on every hop as they run by default, and N simulated nodes (bench/scale/simnodes.py:
MQTT clients that register with a node join token of several uses, each with its own MQTT login,
report every 2 s, the node's default, and acknowledge deploys as a node that starts a container
does: CREATING, RUNNING ready). For N = 10, 100, 500, 1000 (and 0, the baseline):
  - the steady state: CPU % (of one core) and RSS (VmRSS) of oakuk-cluster, its mosquitto and
    oakuk-root over a window (CPU from /proc/<pid>/stat, in ns from /proc/<pid>/task/*/schedstat
    where that is finer; RSS from /proc/<pid>/status), once every node is
    active at the cluster and in the root's aggregate, and the load of the last burst is gone;
  - a burst of 100 deploys of one container service through the root's API (POST
    /api/v1/services/<id>/instances, one after the other, as fast as the root answers): from each
    request to the moment the root's API first shows the instance NODE_SCHEDULED or later, and
    RUNNING (median and p99; the bench polls GET /api/v1/services/<id>/instances every 25 ms, so
    each figure is known within about 25 ms). NODE_SCHEDULED reaches the root in the cluster's
    status batches (every 0.5 s at most), so that is in the figure too;
  - the time to register and connect the nodes added at that step, and the bytes of the retained
    net tables (nodes/<id>/net/peers and net/services) the nodes received while they registered,
    during the burst and during the window.
Each node takes a /24 of its cluster's share of the root's node pool: the root is configured
(node_pool, cluster_prefix) to give the cluster a share that holds the largest N. oakuk-root refuses a
share larger than a /16 (256 nodes) today; the levels above what it allows are then replaced by the
largest N that fits, and a note says so. A node the broker still refuses 5 s after its registration
(mosquitto did not reread the password file the cluster rewrote: a SIGHUP lost while it was reloading)
registers again with its credential, which the real node does not do; a note counts them.
Part 2, one root with M clusters: a fresh oakuk-root and M simulated clusters
(bench/scale/simclusters.py: fake clusters that register with a certificate request, serve HTTPS,
post an aggregate of 10 nodes and their full instance state every 5 s, the cluster's default, and
answer deploys NODE_SCHEDULED with an immediate status report). For M = 1, 10, 100 (and 0): the
root's steady state and the same burst.
The simulators' own CPU is shown too: on a small machine they share the cores with the daemons.

At the end, per daemon, the growth per added node (per added cluster in part 2): CPU in us/s and
memory in kB, a least-squares line over the levels, and a FLAG line for any quantity whose slope
over the upper half of the range is more than 1.5 times its slope over the lower half (and the
excess is above the noise: 1 % CPU, 2 MB, 50 ms).

Everything runs in a network namespace of its own (only lo, 127.0.0.1), made here and removed at
the end with every process, and in a temporary directory on disk (the daemons fsync as they do in
production). Needs root (network namespace) and python3-paho-mqtt.

Usage: scale.py [BUILD_DIR] [--quick] [--nodes 10,100,...] [--clusters 1,10,...] [--burst 100]
                [--window S]
  --quick: N = 10, 50; M = 1, 5; a burst of 20; 5 s windows (a couple of minutes)."""
import argparse
import ctypes
import importlib.util
import math
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from edgelib import wait_until  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
CLONE_NEWNET = 0x40000000
ROOT_PORT, CLUSTER_PORT, MQTT_PORT = 10000, 10100, 10883
SCHEDULED_OR_LATER = {"NODE_SCHEDULED", "CREATING", "RUNNING", "FAILED", "DEAD", "COMPLETED"}
POLL_S = 0.025
HZ = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("scale: %s\n" % msg)
    sys.stderr.flush()


class Skip(Exception):
    pass


# ---- /proc ----

def cpu_ticks(pid):
    """utime + stime of the whole process (every thread, the ended ones too), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_ns(pid):
    """{thread: ns on a CPU} from /proc/<pid>/task/*/schedstat: nanoseconds, where /proc/<pid>/stat
    counts 10 ms ticks, too coarse for a daemon that is nearly idle; it misses threads that end."""
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                out[t] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open("/proc/%s/stat" % e) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(e))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def measure(pids, seconds):
    """{name: (cpu % of one core, VmRSS kB at the end)} over a window of seconds. CPU: the threads'
    schedstat (ns), unless /proc/<pid>/stat (every thread, ended ones included) counts more, which it
    does when threads ended during the window."""
    ticks = {n: cpu_ticks(p) for n, p in pids.items()}
    ns = {n: cpu_ns(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    out = {}
    for n, p in pids.items():
        by_stat = (cpu_ticks(p) - ticks[n]) / HZ
        now = cpu_ns(p)
        by_ns = sum(v - ns[n].get(t, 0) for t, v in now.items()) / 1e9
        used = by_stat if by_stat > by_ns + 2.0 / HZ else by_ns
        out[n] = (used / wall * 100.0, rss_kb(p))
    return out


# ---- processes ----

class Proc:
    def __init__(self, bench, name, argv, stdin=False):
        self.name = name
        self.log_path = os.path.join(bench.tmp, name + ".log")
        log_f = open(self.log_path, "ab")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE if stdin else log_f, stderr=log_f,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, start_new_session=True)
        log_f.close()
        bench.procs.append(self)
        self.buf = b""

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def tail(self, n=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout=20):
        if self.p.poll() is not None:
            return
        try:
            if self.p.stdin:
                self.p.stdin.write(b"quit\n")
                self.p.stdin.flush()
                self.p.wait(5)
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
            self.p.wait()

    # line protocol of the simulators
    def send(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("%s: no answer within %d s\n%s" % (self.name, timeout, self.tail()))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                data = os.read(fd, 65536)
                if not data:
                    raise RuntimeError("%s exited (%s)\n%s" % (self.name, self.p.poll(), self.tail()))
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def ask(self, line, timeout):
        self.send(line)
        answer = self.readline(timeout)
        if answer.startswith("error"):
            raise RuntimeError("%s: %s\n%s" % (self.name, answer, self.tail()))
        return answer

    def stats(self):
        a = self.ask("stats", 30)
        return {k: int(v) for k, v in (w.split("=") for w in a.split()[1:])}


# ---- the root's API ----

class Api:
    def __init__(self, url, ca, state_dir, password=None):
        self.url, self.state_dir = url, state_dir
        self.s = requests.Session()
        self.s.trust_env = False   # REQUESTS_CA_BUNDLE would replace verify: trust the root's CA only
        self.s.verify = ca
        self.password = password
        self.login()

    def login(self):
        if self.password is None:
            pw = os.path.join(self.state_dir, "admin-password")
            def read():
                with open(pw) as f:
                    return f.read().strip()
            self.password = wait_until("the root's admin password", lambda: os.path.exists(pw) and read(), 15)
        tok = wait_until("root login", lambda: self.s.post(self.url + "/api/auth/login", timeout=10, json={
            "username": "Admin", "password": self.password}).json()["token"], 20)
        self.s.headers["Authorization"] = "Bearer " + tok

    def call(self, method, path, **kw):
        kw.setdefault("timeout", 30)
        r = self.s.request(method, self.url + path, **kw)
        if r.status_code == 401:   # the access token expired (15 min): log in again
            self.login()
            r = self.s.request(method, self.url + path, **kw)
        return r

    def ok(self, method, path, **kw):
        r = self.call(method, path, **kw)
        if r.status_code >= 300:
            raise RuntimeError("%s %s: HTTP %d %s" % (method, path, r.status_code, r.text[:300]))
        return r.json() if r.content else None


def sla(name):
    return {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
        "applicationID": "", "application_name": name, "application_namespace": "bench",
        "application_desc": "bench/scale", "microservices": [{
            "microserviceID": "", "microservice_name": "svc", "microservice_namespace": "bench",
            "virtualization": "container", "cmd": ["sleep", "3600"], "memory": 16, "vcpus": 1,
            "code": "docker.io/library/busybox:latest", "arch": ["amd64"]}]}]}


def pct(values, q):
    """Nearest-rank percentile."""
    v = sorted(values)
    return v[max(0, math.ceil(q / 100.0 * len(v)) - 1)]


# ---- the bench ----

class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.root_bin = os.path.join(self.build, "daemons", "oakuk-root")
        self.cluster_bin = os.path.join(self.build, "daemons", "oakuk-cluster")
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="oakuk-scale-")
        self.netns = "oakuk-scale-%d" % os.getpid()
        self.netns_made = False
        self.apps = 0
        self.notes = []

    # ---- setup and teardown ----
    def enter_netns(self):
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        self.netns_made = True
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True, capture_output=True)
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/run/netns/" + self.netns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns " + self.netns)
        finally:
            os.close(fd)

    def close(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []
        if self.netns_made:
            # anything left in our namespace (a broker whose cluster was killed) goes too
            try:
                ours = os.readlink("/proc/self/ns/net")
                for e in os.listdir("/proc"):
                    if e.isdigit() and int(e) != os.getpid():
                        try:
                            if os.readlink("/proc/%s/ns/net" % e) == ours:
                                os.kill(int(e), signal.SIGKILL)
                        except OSError:
                            pass
            except OSError:
                pass
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            self.netns_made = False
        if os.environ.get("KEEP_TMP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log("kept " + self.tmp)

    def start_root(self, name, port, config):
        """oakuk-root with TLS (its own CA) and the [root] config given; (process, Api, CA file).
        RuntimeError with its log when it exits at start (a config it refuses)."""
        state = os.path.join(self.tmp, name)
        conf = os.path.join(self.tmp, name + ".conf")
        with open(conf, "w") as f:
            f.write("[root]\n" + "".join("%s=%s\n" % kv for kv in config.items()))
        root = Proc(self, name, [self.root_bin, "--state-dir", state, "--listen", "127.0.0.1:%d" % port,
                                 "--config", conf])
        ca = os.path.join(state, "pki", "ca.crt")
        wait_until("the root's CA", lambda: os.path.exists(ca) or not root.alive(), 15)
        time.sleep(0.3)
        if not root.alive():
            raise RuntimeError("oakuk-root exited at start:\n" + root.tail(5))
        api = Api("https://127.0.0.1:%d" % port, ca, state)
        return root, api, ca

    def write_secret(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text + "\n")
        return path

    # ---- the burst ----
    def burst(self, api, count, tag):
        """count deploys of a fresh container service, one after the other; returns ({n: ms to
        NODE_SCHEDULED or later}, {n: ms to RUNNING}, problems), then deletes the application."""
        self.apps += 1
        doc = api.ok("POST", "/api/v1/applications", json=sla("scale%s%d" % (tag, self.apps)))
        app = doc["applications"][0]
        app_id, sid = app["applicationID"], app["microservices"][0]
        asked, post_error = {}, []
        poster = Api(api.url, api.s.verify, api.state_dir, api.password)   # a connection of its own

        def post_all():
            try:
                for _ in range(count):
                    t = time.monotonic()
                    r = poster.ok("POST", "/api/v1/services/%s/instances" % sid)
                    asked[r["instance_number"]] = t
            except (RuntimeError, requests.RequestException, ValueError, KeyError) as e:
                post_error.append(e)

        # the requests go out while the instances are polled: an instance placed during the burst
        # is seen then, not after the last request
        th = threading.Thread(target=post_all)
        th.start()
        sched, running, problems = {}, {}, {}
        deadline = time.monotonic() + 120 + count
        while (th.is_alive() or len(running) < len(asked)) and time.monotonic() < deadline:
            t_send = time.monotonic()
            lst = api.call("GET", "/api/v1/services/%s/instances" % sid).json()
            t_seen = (t_send + time.monotonic()) / 2
            for i in lst:
                n = i["instance_number"]
                if n not in asked or asked[n] > t_send:
                    continue
                st = i.get("status")
                if st in SCHEDULED_OR_LATER and n not in sched:
                    sched[n] = (t_seen - asked[n]) * 1000
                if st == "RUNNING" and n not in running:
                    running[n] = (t_seen - asked[n]) * 1000
                if st not in SCHEDULED_OR_LATER and st not in ("REQUESTED", "CLUSTER_SCHEDULED"):
                    problems[n] = "%s: %s" % (st, i.get("status_detail", ""))
            time.sleep(POLL_S)
        th.join()
        poster.s.close()
        if post_error:
            raise RuntimeError("burst: %s" % post_error[0])
        if len(running) < len(asked):
            log("burst: %d of %d instances not RUNNING within the time allowed (%s)" % (
                len(asked) - len(running), len(asked), "; ".join(sorted(set(problems.values()))[:3])))
        api.ok("DELETE", "/api/v1/applications/%s" % app_id)
        return sched, running, problems

    def wait_clean(self, api, what_else=None, timeout=120):
        """Every instance gone: the root lists no service; what_else() (the cluster, the simulators)."""
        wait_until("every instance deleted", lambda: not api.call("GET", "/api/v1/services").json() and
                   (what_else is None or what_else()), timeout, interval=0.5)

    # ---- part 1: one cluster, N nodes ----
    def part_nodes(self):
        a = self.args
        # Every node gets a /24 of its cluster's share of the root's node pool (docs/cluster.md), and
        # the default share, a /20, holds 16 nodes: the root is configured to give the cluster a share
        # that holds the largest N. It refuses shares larger than a /16 (256 nodes) today; then the
        # levels above 256 are skipped, and said so.
        want = max(8, 24 - math.ceil(math.log2(max(a.nodes))))
        try:
            root, api, ca = self.start_root("root-n", ROOT_PORT, {"node_pool": "10.0.0.0/8", "cluster_prefix": want})
            cap = 1 << (24 - want)
        except RuntimeError as e:
            self.notes.append("oakuk-root refuses cluster_prefix %d (a share of %d node /24s, for N=%d): %s" % (
                want, 1 << (24 - want), max(a.nodes), " ".join(str(e).split("\n")[1:]).strip()))
            self.procs = [p for p in self.procs if p.alive()]
            shutil.rmtree(os.path.join(self.tmp, "root-n"), ignore_errors=True)
            want = max(want, 16)
            root, api, ca = self.start_root("root-n", ROOT_PORT, {"node_pool": "10.0.0.0/8", "cluster_prefix": want})
            cap = 1 << (24 - want)
        levels = [n for n in a.nodes if n <= cap]
        skipped = [n for n in a.nodes if n > cap]
        if skipped:
            levels.append(cap)   # the most one cluster can hold stands in for them
            self.notes.append("N=%s skipped, N=%d measured instead: one cluster holds at most %d nodes (its share "
                              "of the node pool is a /%d, a /24 per node)" % (
                                  ",".join(map(str, skipped)), cap, cap, want))
            log(self.notes[-1])
        join = api.ok("POST", "/api/v1/tokens", json={"kind": "cluster"})["token"]
        cstate = os.path.join(self.tmp, "cluster")
        cluster = Proc(self, "cluster", [
            self.cluster_bin, "--state-dir", cstate, "--listen", "127.0.0.1:%d" % CLUSTER_PORT,
            "--root-url", "https://127.0.0.1:%d" % ROOT_PORT, "--name", "scale", "--location", "bench",
            "--mqtt-port", str(MQTT_PORT), "--join-token", "@" + self.write_secret("cluster-join-token", join)])
        curl = "https://127.0.0.1:%d" % CLUSTER_PORT
        cs = requests.Session()
        cs.trust_env = False
        cs.verify = ca
        wait_until("the cluster registered and on its broker", lambda: (
            lambda j: j["registered"] and j["mqtt_connected"])(cs.get(curl + "/healthz", timeout=5).json()), 60)
        broker = wait_until("the cluster's mosquitto", lambda: next(
            (p for p in children(cluster.pid) if "mosquitto" in cmdline(p)), None), 15)
        sim = Proc(self, "simnodes", [PY, os.path.join(HERE, "scale", "simnodes.py"), "--cluster-url", curl,
                                      "--ca", ca], stdin=True)
        if sim.readline(30) != "ready":
            raise RuntimeError("simnodes did not start:\n" + sim.tail())
        pids = {"cluster": cluster.pid, "broker": broker, "root": root.pid, "sim": sim.pid}
        rows = []
        have = 0
        # the baseline: registered, no node
        time.sleep(a.settle)
        rows.append({"n": 0, "m": measure(pids, a.window)})
        self.show_node_row(rows[-1])
        for n in levels:
            row = {"n": n}
            prev = have
            s0 = sim.stats()
            t0 = time.monotonic()
            while have < n:
                k = min(n - have, 1000)
                tok = wait_until("a node join token", lambda: (lambda r: r.status_code == 201 and r.json()["token"])(
                    api.call("POST", "/api/v1/tokens", json={"kind": "node", "cluster": "scale", "uses": k,
                                                             "ttl_s": 7200})), 60, interval=1)
                sim.ask("add %d %s" % (k, tok), 300 + 2 * k)
                have += k
            wait_until("%d nodes active at the cluster" % n, lambda: sum(
                1 for x in cs.get(curl + "/api/v1/nodes", timeout=30).json() if x["active"]) == n, 120, interval=1)
            row["register_s"] = time.monotonic() - t0
            wait_until("%d nodes in the root's aggregate" % n, lambda: api.call("GET", "/api/v1/clusters").json()[0]
                       .get("active_nodes") == n, 60, interval=1)
            s1 = sim.stats()
            row["net_reg_mb"] = (s1.get("net_bytes", 0) - s0.get("net_bytes", 0)) / 1e6
            renewed = s1.get("renewed_after_refusal", 0) - s0.get("renewed_after_refusal", 0)
            if renewed:
                self.notes.append("N=%d: %d of the %d nodes added were still refused by the broker %g s after the "
                                  "cluster registered them (their password line was written, the broker had not "
                                  "reread the file); they registered again with their credential to get in" % (
                                      n, renewed, n - prev, 5))
                log(self.notes[-1])
            # the burst, then its cleanup, then the steady state
            sched, running, problems = self.burst(api, a.burst, "n%d" % n)
            s2 = sim.stats()
            row["net_burst_mb"] = (s2.get("net_bytes", 0) - s1.get("net_bytes", 0)) / 1e6
            row["sched"], row["running"], row["problems"] = sched, running, problems
            self.wait_clean(api, lambda: not cs.get(curl + "/api/v1/instances", timeout=30).json() and
                            sim.stats().get("instances", 1) == 0)
            time.sleep(a.settle)
            s3 = sim.stats()
            row["m"] = measure(pids, a.window)
            s4 = sim.stats()
            row["net_steady_mb"] = (s4.get("net_bytes", 0) - s3.get("net_bytes", 0)) / 1e6
            row["reports_per_s"] = (s4.get("information", 0) - s3.get("information", 0)) / a.window
            row["disconnects"] = s4.get("disconnects", 0)
            if not all(p.alive() for p in (root, cluster)):
                raise RuntimeError("a daemon exited:\n" + cluster.tail() + root.tail())
            rows.append(row)
            self.show_node_row(row)
        for p in (sim, cluster, root):
            p.stop()
        return rows

    # ---- part 2: one root, M clusters ----
    def part_clusters(self):
        a = self.args
        # the default node pool (a /15) holds 32 clusters of the default share (a /20)
        root, api, ca = self.start_root("root-m", ROOT_PORT + 1, {"node_pool": "10.0.0.0/8"})
        sim = Proc(self, "simclusters", [PY, os.path.join(HERE, "scale", "simclusters.py"), "--root-url",
                                         api.url, "--ca", ca], stdin=True)
        if sim.readline(30) != "ready":
            raise RuntimeError("simclusters did not start:\n" + sim.tail())
        pids = {"root": root.pid, "sim": sim.pid}
        rows = []
        have = 0
        time.sleep(a.settle)
        rows.append({"n": 0, "m": measure(pids, a.window)})
        self.show_cluster_row(rows[-1])
        for m in a.clusters:
            row = {"n": m}
            t0 = time.monotonic()
            k = m - have
            tok = api.ok("POST", "/api/v1/tokens", json={"kind": "cluster", "uses": k, "ttl_s": 7200})["token"]
            sim.ask("add %d %s" % (k, tok), 120 + 2 * k)
            have = m
            wait_until("%d clusters active at the root" % m, lambda: sum(
                1 for c in api.call("GET", "/api/v1/clusters").json() if c.get("active")) == m, 60, interval=1)
            row["register_s"] = time.monotonic() - t0
            sched, running, problems = self.burst(api, a.burst, "m%d" % m)
            row["sched"], row["running"], row["problems"] = sched, running, problems
            self.wait_clean(api, lambda: sim.stats().get("instances", 1) == 0)
            time.sleep(a.settle)
            row["m"] = measure(pids, a.window)
            if not root.alive():
                raise RuntimeError("oakuk-root exited:\n" + root.tail())
            rows.append(row)
            self.show_cluster_row(row)
        for p in (sim, root):
            p.stop()
        return rows

    # ---- output ----
    @staticmethod
    def lat(d):
        if not d:
            return "-"
        v = list(d.values())
        return "%.0f/%.0f" % (statistics.median(v), pct(v, 99))

    def show_node_row(self, r):
        m = r["m"]
        if r["n"] == 0:
            log("N=0 (baseline): cluster %.2f%% %d kB, broker %.2f%% %d kB, root %.2f%% %d kB" % (
                m["cluster"][0], m["cluster"][1], m["broker"][0], m["broker"][1], m["root"][0], m["root"][1]))
            return
        log("N=%d: registered in %.1f s; cluster %.2f%% %d kB, broker %.2f%% %d kB, root %.2f%% %d kB, sim %.1f%%; "
            "NODE_SCHEDULED %s ms, RUNNING %s ms" % (
                r["n"], r["register_s"], m["cluster"][0], m["cluster"][1], m["broker"][0], m["broker"][1],
                m["root"][0], m["root"][1], m["sim"][0], self.lat(r["sched"]), self.lat(r["running"])))

    def show_cluster_row(self, r):
        m = r["m"]
        log("M=%d: root %.2f%% %d kB, sim %.1f%%%s" % (
            r["n"], m["root"][0], m["root"][1], m["sim"][0],
            "" if r["n"] == 0 else "; NODE_SCHEDULED %s ms, RUNNING %s ms" % (
                self.lat(r["sched"]), self.lat(r["running"]))))


# ---- growth and flags ----

def fit(xs, ys):
    """Least-squares slope and intercept."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return b, my - b * mx


def halves(xs, ys):
    """(slope over the lower half of the range, slope over the upper half, the middle level):
    from the first level to the one nearest the middle of the range, and from there to the last.
    None with fewer than three levels."""
    if len(xs) < 3:
        return None
    mid_x = (xs[0] + xs[-1]) / 2
    k = min(range(1, len(xs) - 1), key=lambda j: abs(xs[j] - mid_x))
    lo = (ys[k] - ys[0]) / (xs[k] - xs[0])
    hi = (ys[-1] - ys[k]) / (xs[-1] - xs[k])
    return lo, hi, xs[k]


def growth(out, flags, what, unit_per, xs, ys, scale, unit, noise, per):
    """One growth line: the fit's slope (times scale, in unit per added `per`), and a flag when the
    upper half's slope exceeds 1.5 times the lower half's by more than noise over the upper half."""
    b, _ = fit(xs, ys)
    h = halves(xs, ys)
    text = "%s: ours %.1f %s per added %s (least-squares over %s=%s)" % (
        what, b * scale, unit, per, unit_per, ",".join(str(x) for x in xs))
    if h:
        lo, hi, mid = h
        ratio = hi / lo if lo > 0 else float("inf") if hi > 0 else 1.0
        text += "; lower half %.1f, upper half %.1f, ratio %.2f" % (lo * scale, hi * scale, ratio)
        excess = (hi - max(lo, 0)) * (xs[-1] - mid)
        if hi > 1.5 * max(lo, 0) and excess > noise:
            flags.append("FLAG: %s grows faster than linearly: %.1f %s per added %s from %s=%s to %s vs %.1f "
                         "below (ratio %s)" % (what, hi * scale, unit, per, unit_per, mid, xs[-1], lo * scale,
                                               "%.2f" % ratio if ratio != float("inf") else "inf"))
    out.append(text)


def report(args, node_rows, cluster_rows, notes):
    if node_rows:
        node_table(args, node_rows)
    if cluster_rows:
        cluster_table(args, cluster_rows)
    growth_lines(node_rows, cluster_rows, notes)


def node_table(args, node_rows):
    print("scale: one oakuk-cluster (TLS, its own mosquitto) with N simulated nodes reporting every 2 s; steady "
          "state over %g s windows; a burst of %d deploys through oakuk-root at each N" % (args.window, args.burst))
    print("scale: cpu in %% of one core, rss = VmRSS in MB; latency = request -> the root's API shows the state, "
          "median/p99 ms (polled every %d ms)" % (POLL_S * 1000))
    hdr = "%6s %7s | %8s %7s | %8s %7s | %8s %7s | %6s | %13s %13s | %s" % (
        "N", "reg s", "cluster", "rss", "broker", "rss", "root", "rss", "sim", "NODE_SCHED", "RUNNING",
        "net tables MB (register/burst/steady)")
    print(hdr)
    for r in node_rows:
        m = r["m"]
        lat = (Bench.lat(r["sched"]), Bench.lat(r["running"])) if r["n"] else ("-", "-")
        net = "%.1f/%.1f/%.1f" % (r["net_reg_mb"], r["net_burst_mb"], r["net_steady_mb"]) if r["n"] else "-"
        print("%6d %7s | %7.2f%% %7.1f | %7.2f%% %7.1f | %7.2f%% %7.1f | %5.1f%% | %13s %13s | %s" % (
            r["n"], "%.1f" % r["register_s"] if r["n"] else "-", m["cluster"][0], m["cluster"][1] / 1024,
            m["broker"][0], m["broker"][1] / 1024, m["root"][0], m["root"][1] / 1024, m["sim"][0],
            lat[0], lat[1], net))
        if r["n"] and r.get("problems"):
            print("       problems: %s" % "; ".join(sorted(set(r["problems"].values()))[:3]))


def cluster_table(args, cluster_rows):
    print("scale: one oakuk-root with M simulated clusters (10 nodes each) posting aggregates every 5 s; a burst "
          "of %d deploys at each M" % args.burst)
    print("%6s %7s | %8s %7s | %6s | %13s %13s" % ("M", "reg s", "root", "rss", "sim", "NODE_SCHED", "RUNNING"))
    for r in cluster_rows:
        m = r["m"]
        lat = (Bench.lat(r["sched"]), Bench.lat(r["running"])) if r["n"] else ("-", "-")
        print("%6d %7s | %7.2f%% %7.1f | %5.1f%% | %13s %13s" % (
            r["n"], "%.1f" % r["register_s"] if r["n"] else "-", m["root"][0], m["root"][1] / 1024, m["sim"][0],
            lat[0], lat[1]))


def growth_lines(node_rows, cluster_rows, notes):
    out, flags = [], []
    # CPU: every level, the baseline included. Memory: the levels after a burst (N > 0): the baseline
    # has not had one, and the first burst's allocations would read as growth per node.
    for rows, per, x, daemons in ((node_rows, "node", "N", ("cluster", "broker", "root")),
                                  (cluster_rows, "cluster", "M", ("root",))):
        if len(rows) < 2:
            continue
        xs = [r["n"] for r in rows]
        for d in daemons:
            # % of one core -> us of CPU per second: 1 % = 10,000 us/s
            growth(out, flags, "scale %s cpu per %s" % (d, per), x, xs, [r["m"][d][0] for r in rows], 1e4,
                   "us/s", 1.0, per)
        later = [r for r in rows if r["n"] > 0]
        if len(later) >= 2:
            xl = [r["n"] for r in later]
            for d in daemons:
                growth(out, flags, "scale %s rss per %s" % (d, per), x, xl, [r["m"][d][1] for r in later], 1.0,
                       "kB", 2048, per)
            for key, name in (("sched", "NODE_SCHEDULED"), ("running", "RUNNING")):
                if all(r[key] for r in later):
                    growth(out, flags, "scale deploy -> %s p50 per %s" % (name, per), x, xl,
                           [statistics.median(r[key].values()) for r in later], 1.0, "ms", 50, per)
                    growth(out, flags, "scale deploy -> %s p99 per %s" % (name, per), x, xl,
                           [pct(list(r[key].values()), 99) for r in later], 1.0, "ms", 50, per)
    for line in notes:
        print("scale: note: " + line)
    for line in out:
        print(line)
    for line in flags:
        print(line)
    if not flags:
        print("scale: nothing grows faster than linearly%s" % (
            "" if len(node_rows) >= 3 or len(cluster_rows) >= 3 else " (too few levels to tell)"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nodes")
    ap.add_argument("--clusters")
    ap.add_argument("--burst", type=int)
    ap.add_argument("--window", type=float)
    ap.add_argument("--settle", type=float)
    ap.add_argument("--skip-nodes", action="store_true", help="only part 2 (clusters)")
    ap.add_argument("--skip-clusters", action="store_true", help="only part 1 (nodes)")
    a = ap.parse_args()
    a.nodes = [int(x) for x in (a.nodes or ("10,50" if a.quick else "10,100,500,1000")).split(",")]
    a.clusters = [int(x) for x in (a.clusters or ("1,5" if a.quick else "1,10,100")).split(",")]
    a.burst = a.burst or (20 if a.quick else 100)
    a.window = a.window or (5.0 if a.quick else 10.0)
    a.settle = a.settle if a.settle is not None else (3.0 if a.quick else 10.0)
    if sorted(a.nodes) != a.nodes or sorted(a.clusters) != a.clusters or min(a.nodes + a.clusters) < 1:
        ap.error("--nodes and --clusters: increasing positive counts")
    if os.geteuid() != 0:
        print("scale: SKIP: needs root (it makes a network namespace)")
        return 77
    if importlib.util.find_spec("paho") is None:   # the simulated nodes need it
        print("scale: SKIP: python3-paho-mqtt is missing (apt-get install python3-paho-mqtt)")
        return 77
    build = os.path.abspath(a.build)
    for f in (os.path.join(build, "daemons", "oakuk-root"), os.path.join(build, "daemons", "oakuk-cluster"),
              "/usr/sbin/mosquitto"):
        if not os.access(f, os.X_OK):
            print("scale: SKIP: %s is missing" % f)
            return 77
    b = Bench(a)

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)   # the finally below stops everything

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    node_rows, cluster_rows = [], []
    try:
        b.enter_netns()
        if not a.skip_nodes:
            node_rows = b.part_nodes()
        if not a.skip_clusters:
            cluster_rows = b.part_clusters()
    finally:
        b.close()
    report(a, node_rows, cluster_rows, b.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

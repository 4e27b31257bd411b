"""Shared helpers of the control-plane integration tests: start oakuk-root and oakuk-cluster as
real processes, and play nodes with mosquitto_pub/mosquitto_sub (the credentials come from the
cluster's node registration), and the process and port helpers of the other integration tests."""
import json
import os
import queue
import random
import signal
import socket
import subprocess
import threading
import time

import requests

MOSQUITTO = "/usr/sbin/mosquitto"
PROCS = []  # every process started here; stop_all() ends them


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def ports(n):
    """n consecutive TCP ports free on 127.0.0.1, below the kernel's ephemeral range: a port from
    that range can become the source port of some parallel test's outgoing connection between this
    choice and the daemon's bind (and then the daemon fails with EADDRINUSE)."""
    hi = min(_ephemeral_low(), 32768)
    for _ in range(200):
        base = random.randrange(20000, hi - n)
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return list(range(base, base + n))
    raise AssertionError("no %d free consecutive ports in 20000-%d" % (n, hi))


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p is not None and p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_all():
    for p in reversed(PROCS):
        stop(p)


def wait_until(what, fn, timeout=20, interval=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (requests.RequestException, OSError, KeyError, ValueError, IndexError, TypeError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


def report(node_id, memory, instances=(), ip="127.0.0.1", virtualization=("container",), unikernel=None,
           generations=None, statuses=None):
    """A node report. unikernel: the report's unikernel object (e.g. {"accel": "kvm"}); generations and
    statuses: instance name -> the generation / status the node reports for it (docs/reconcile.md; an
    instance without a generation is reported without one, as nodes before generations do)."""
    generations, statuses = generations or {}, statuses or {}
    rep = {"id": node_id, "host": node_id, "ip": ip, "architecture": "amd64", "cpu_percent": 25.0, "vcpus": 4,
           "memory": memory, "memory_total": 8192, "memory_percent": 10.0, "virtualization": list(virtualization),
           "instances": [dict({"name": n, "status": statuses.get(n, "RUNNING"), "cpu_percent": 1.0, "memory_mb": 10},
                              **({"generation": generations[n]} if n in generations else {})) for n in instances]}
    if unikernel is not None:
        rep["unikernel"] = unikernel
    return rep


class Daemon:
    def __init__(self, argv, log_path):
        self.argv, self.log_path = argv, log_path
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = spawn(self.argv, stdout=subprocess.DEVNULL, stderr=self.log)

    def stop(self):
        stop(self.proc)
        self.log.close()

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def grep(self, prefix):
        return wait_until(prefix, lambda: next((l.split(prefix, 1)[1].strip() for l in self.text().splitlines()
                                                if l.startswith(prefix)), None), timeout=10)


class ControlPlane:
    """A root and one cluster (with its own mosquitto) in tmp; admin token in .headers."""

    def __init__(self, tmp, root_bin, cluster_bin, cluster_name="edge1", node_timeout=5):
        root_port, self.cluster_port, self.mqtt_port = ports(3)
        self.root_url = "http://127.0.0.1:%d" % root_port
        self.cluster_url = "http://127.0.0.1:%d" % self.cluster_port
        self.root = Daemon([root_bin, "--state-dir", os.path.join(tmp, "root"), "--listen",
                            "127.0.0.1:%d" % root_port], os.path.join(tmp, "root.log"))
        self.root.start()
        self.admin_password = self.root.grep("admin password:")
        tok = wait_until("root login", lambda: requests.post(self.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": self.admin_password}).json()["token"])
        self.headers = {"Authorization": "Bearer " + tok}
        join = requests.post(self.root_url + "/api/v1/clusters/tokens", headers=self.headers, timeout=5).json()["token"]
        self.cluster = Daemon([cluster_bin, "--state-dir", os.path.join(tmp, "cluster"), "--listen",
                               "127.0.0.1:%d" % self.cluster_port, "--root-url", self.root_url, "--name", cluster_name,
                               "--location", "lab", "--mqtt-port", str(self.mqtt_port), "--mosquitto", MOSQUITTO,
                               "--node-timeout", str(node_timeout), "--aggregate-interval", "1",
                               "--join-token", join], os.path.join(tmp, "cluster.log"))
        self.cluster.start()
        self.node_join_token = self.cluster.grep("node join token:")
        wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
            requests.get(self.cluster_url + "/healthz", timeout=5).json()))


class FakeNode:
    """Registers over HTTP, listens on its control/net topics with mosquitto_sub, publishes a report
    every second while alive and subscribed, and status events on demand. Answers control/logs
    requests from .logs (instance name -> list of lines) unless .answer_logs is False.

    Like oakuk-node, which subscribes before it reports on each connection, it reports only while
    mosquitto_sub is subscribed: the cluster sends a node its deliveries once the node reported on
    the cluster's current connection, and a report from mosquitto_pub proves nothing about the
    subscriber, which may still be reconnecting after a broker restart."""

    def __init__(self, cp, node_id, memory, virtualization=("container",), unikernel=None):
        self.cp, self.id, self.memory, self.virtualization = cp, node_id, memory, virtualization
        self.unikernel = unikernel
        self.instances = set()
        self.generations = {}  # instance name -> generation it reports (none: no "generation" key)
        self.statuses = {}  # instance name -> status it reports (default RUNNING)
        self.logs = {}
        self.answer_logs = True
        self.logs_requests = []
        self.alive = False
        self.msgs = queue.Queue()
        self.seen = []
        r = requests.post(cp.cluster_url + "/api/node/register",
                          json={"join_token": cp.node_join_token,
                                "capabilities": report(node_id, memory, virtualization=virtualization,
                                                       unikernel=unikernel)}, timeout=10)
        assert r.status_code == 201, r.text
        self.creds = r.json()
        self.sub = None
        self.thread = None
        self.subscribed = threading.Event()

    def listen(self):
        c = self.creds
        self.sub = spawn(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(c["mqtt_port"]), "-u", c["mqtt_username"],
                          "-P", c["mqtt_password"], "-q", "1", "-c", "-i", "fake-" + self.id, "-v", "-d",
                          "-t", "nodes/%s/control/#" % self.id, "-t", "nodes/%s/net/#" % self.id],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, args=(self.sub,), daemon=True).start()
        self.alive = True
        self.thread = threading.Thread(target=self._report_loop, daemon=True)
        self.thread.start()

    def _read(self, sub):
        for line in sub.stdout:
            # -d: the client's protocol trace ("Client fake-x sending CONNECT", "... received SUBACK")
            if line.startswith("Client "):
                if " sending CONNECT" in line:
                    self.subscribed.clear()
                elif " received SUBACK" in line:
                    self.subscribed.set()
                continue
            if not line.startswith("nodes/"):
                continue
            topic, _, payload = line.rstrip("\n").partition(" ")
            if topic == "nodes/%s/control/logs" % self.id:
                self._answer_logs(json.loads(payload))
            self.msgs.put((topic, payload))

    def _answer_logs(self, req):
        self.logs_requests.append(req)
        if not self.answer_logs:
            return
        name = req["instance"]
        if name in self.logs:
            reply = {"request_id": req["request_id"], "instance": name, "lines": self.logs[name][-req["lines"]:]}
        else:
            reply = {"request_id": req["request_id"], "instance": name, "error": "no instance %s on this node" % name}
        self.publish("logs", reply)

    def _report_loop(self):
        while self.alive:
            if self.subscribed.is_set():
                self.publish("information", report(self.id, self.memory, sorted(self.instances),
                                                   virtualization=self.virtualization, unikernel=self.unikernel,
                                                   generations=self.generations, statuses=self.statuses))
            time.sleep(1)

    def publish(self, leaf, payload, user=None, password=None, topic=None):
        """Publishes on nodes/<id>/<leaf>, or on topic, as this node or as user/password; the exit
        code of mosquitto_pub."""
        c = self.creds
        data = payload if isinstance(payload, str) else json.dumps(payload)
        return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(c["mqtt_port"]),
                               "-u", user or c["mqtt_username"], "-P", password or c["mqtt_password"], "-q", "1",
                               "-t", topic or "nodes/%s/%s" % (self.id, leaf), "-m", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10).returncode

    def expect(self, leaf, pred=lambda m: True, timeout=20):
        topic = "nodes/%s/%s" % (self.id, leaf)
        for t, p in self.seen:
            if t == topic and pred(json.loads(p)):
                return json.loads(p)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                t, p = self.msgs.get(timeout=max(0.05, deadline - time.time()))
            except queue.Empty:
                break
            self.seen.append((t, p))
            if t == topic and pred(json.loads(p)):
                return json.loads(p)
        raise AssertionError("node %s never got %s; got %r" % (self.id, topic, [t for t, _ in self.seen]))

    def got(self, leaf, pred):
        while not self.msgs.empty():
            self.seen.append(self.msgs.get())
        return [json.loads(p) for t, p in self.seen if t == "nodes/%s/%s" % (self.id, leaf) and pred(json.loads(p))]

    def status(self, job_name, n, status, detail="", ready=None, ready_ms=None, generation=None, restarting=None):
        """Publishes a status event; ready, ready_ms, generation and restarting are left out unless
        given (a node older than readiness or generations sends none)."""
        event = {"job_name": job_name, "instance": n, "status": status, "status_detail": detail}
        if restarting is not None:
            event["restarting"] = restarting
        if generation is not None:
            event["generation"] = generation
        if ready is not None:
            event["ready"] = ready
        if ready_ms is not None:
            event["ready_ms"] = ready_ms
        rc = self.publish("job", event)
        assert rc == 0

    def silence(self):
        self.alive = False
        if self.thread:
            self.thread.join()

    def resume(self):
        """Reports again after silence()."""
        self.alive = True
        self.thread = threading.Thread(target=self._report_loop, daemon=True)
        self.thread.start()

#!/usr/bin/python3
"""Integration test of oakuk-node with a real oakuk-root and oakuk-cluster (and the cluster's own
mosquitto). The node runs in its own network namespace ("host"), joined to the test's namespace by a
veth on a private 172.31.<r>.0/24; it deploys the amd64 test guest under TCG, fetched over HTTP from
this test. Events and reports are watched with mosquitto_sub using the node's own credentials.

Usage: test-node.py <oakuk-root> <oakuk-cluster> <oakuk-node>  (as root)"""
import contextlib
import functools
import hashlib
import http.server
import json
import os
import pathlib
import pwd
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edgelib  # noqa: E402
from edgelib import MOSQUITTO, PROCS, ports, spawn  # noqa: E402

ROOT_BIN = CLUSTER_BIN = NODE_BIN = None
# Guest boots under TCG and daemons restarting: more patience than the control-plane tests.
stop = functools.partial(edgelib.stop, timeout=20)
wait_until = functools.partial(edgelib.wait_until, timeout=30, interval=0.3)
GUESTS = pathlib.Path(os.environ.get("OAKUK_GUESTS_DIR", "/nonexistent"))
IMAGE = GUESTS / "guest-amd64.tar.gz"
FILES = []  # log files handed to daemons, closed at the end


def log_file(path):
    f = open(path, "ab")
    FILES.append(f)
    return f
R = random.randrange(1, 250)
NS = "oakuk-t-node-%04x" % random.randrange(0x10000)
VETH_T, VETH_N = "otn%da" % R, "otn%db" % R
TEST_IP, NODE_IP = "172.31.%d.1" % R, "172.31.%d.2" % R
APP = "nt%04x" % random.randrange(0x10000)
QEMU_USER = "oakuk-tq%04x" % random.randrange(0x10000)  # the node creates it; the test removes it
JOB = "%s.test.web.test" % APP


def sh(*argv, check=True):
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("%s failed: %s" % (" ".join(argv), p.stderr))
    return p


def qemu_pids(instance):
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                argv = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-name" in argv and instance.encode() in argv:
                out.append(int(p.name))
    return out


def in_node_ns(*argv, timeout=15):
    return subprocess.run(["nsenter", "--net=/run/netns/" + NS, "--", *argv], capture_output=True, text=True,
                          timeout=timeout)


class Log:
    def __init__(self, path):
        self.path = path

    def text(self):
        with open(self.path, errors="replace") as f:
            return f.read()

    def grep(self, prefix, timeout=15):
        return wait_until(prefix, lambda: next((l.split(prefix, 1)[1].strip() for l in self.text().splitlines()
                                                if l.startswith(prefix)), None), timeout=timeout)


class Watcher:
    """mosquitto_sub on nodes/<id>/# with the node's credentials; keeps every message."""

    def __init__(self, creds, node_id):
        self.msgs = []
        self.lock = threading.Lock()
        self.q = queue.Queue()
        self.id = node_id
        self.creds = creds
        self.sub = spawn(["mosquitto_sub", "-h", TEST_IP, "-p", str(creds["mqtt_port"]), "-u", creds["mqtt_username"],
                          "-P", creds["mqtt_password"], "-q", "1", "-i", "watch-%d" % random.randrange(1 << 30),
                          "-v", "-t", "nodes/%s/#" % node_id], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.sub.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            with self.lock:
                self.msgs.append((time.time(), topic, payload))

    def since(self, t0, leaf):
        topic = "nodes/%s/%s" % (self.id, leaf)
        out = []
        with self.lock:
            for t, tp, p in self.msgs:
                if t >= t0 and tp == topic:
                    try:
                        out.append(json.loads(p))
                    except ValueError:
                        out.append(p)
        return out

    def wait(self, t0, leaf, pred, what, timeout=60):
        return wait_until(what, lambda: next((m for m in self.since(t0, leaf) if isinstance(m, dict) and pred(m)),
                                             None), timeout=timeout)

    def publish(self, leaf, data):
        return subprocess.run(["mosquitto_pub", "-h", TEST_IP, "-p", str(self.creds["mqtt_port"]),
                               "-u", self.creds["mqtt_username"], "-P", self.creds["mqtt_password"], "-q", "1",
                               "-t", "nodes/%s/%s" % (self.id, leaf), "-m", data],
                              capture_output=True, timeout=10).returncode

    def close(self):
        stop(self.sub)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@unittest.skipUnless(os.geteuid() == 0, "needs root (network namespaces, QEMU, cgroups)")
@unittest.skipUnless(IMAGE.exists(), "amd64 test guest not built (OAKUK_GUESTS_DIR)")
class NodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-node-test-")
        cls.node_state = os.path.join(cls.tmp, "node")
        cls.file_dir = os.path.join(cls.tmp, "files")  # the only directory file:// images may come from
        os.mkdir(cls.file_dir)
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", VETH_T, "type", "veth", "peer", "name", VETH_N)
        sh("ip", "link", "set", VETH_N, "netns", NS)
        sh("ip", "addr", "add", TEST_IP + "/24", "dev", VETH_T)
        sh("ip", "link", "set", VETH_T, "up")
        sh("ip", "-n", NS, "addr", "add", NODE_IP + "/24", "dev", VETH_N)
        sh("ip", "-n", NS, "link", "set", VETH_N, "up")
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        # the guest image over HTTP, from the test side of the veth
        cls.httpd = http.server.ThreadingHTTPServer((TEST_IP, 0), functools.partial(QuietHandler,
                                                                                    directory=str(GUESTS)))
        threading.Thread(target=cls.httpd.serve_forever, daemon=True).start()
        cls.image_url = "http://%s:%d/%s" % (TEST_IP, cls.httpd.server_address[1], IMAGE.name)
        cls.image_sha = hashlib.sha256(IMAGE.read_bytes()).hexdigest()
        root_port, cls.cluster_port, cls.mqtt_port = ports(3)
        cls.root_url = "http://127.0.0.1:%d" % root_port
        cls.cluster_url = "http://%s:%d" % (TEST_IP, cls.cluster_port)
        cls.root_log = Log(os.path.join(cls.tmp, "root.log"))
        spawn([ROOT_BIN, "--state-dir", os.path.join(cls.tmp, "root"), "--listen", "127.0.0.1:%d" % root_port],
              stdout=subprocess.DEVNULL, stderr=log_file(cls.root_log.path))
        password = cls.root_log.grep("admin password:")
        tok = wait_until("root login", lambda: requests.post(cls.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": password}).json()["token"])
        cls.h = {"Authorization": "Bearer " + tok}
        join = requests.post(cls.root_url + "/api/v1/clusters/tokens", headers=cls.h, timeout=5).json()["token"]
        cls.cluster_log = Log(os.path.join(cls.tmp, "cluster.log"))
        spawn([CLUSTER_BIN, "--state-dir", os.path.join(cls.tmp, "cluster"), "--listen",
               "%s:%d" % (TEST_IP, cls.cluster_port), "--root-url", cls.root_url, "--name", "edge-n",
               "--mqtt-port", str(cls.mqtt_port), "--mosquitto", MOSQUITTO, "--node-timeout", "30",
               "--aggregate-interval", "1", "--join-token", join],
              stdout=subprocess.DEVNULL, stderr=log_file(cls.cluster_log.path))
        cls.node_join = cls.cluster_log.grep("node join token:")
        wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
            requests.get(cls.cluster_url + "/healthz", timeout=5).json()))
        cls.node_log = Log(os.path.join(cls.tmp, "node.log"))
        cls.node = None
        cls.start_node()
        creds = wait_until("node registered", cls.node_identity)
        cls.watch = Watcher(creds, "node-t")
        r = requests.post(cls.root_url + "/api/application/", headers=cls.h, timeout=10, json=cls.sla())
        assert r.status_code == 200, r.text
        cls.sid = json.loads(r.json())[0]["microservices"][0]
        cls.instance = None

    @classmethod
    def sla(cls):
        return {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
            "applicationID": "", "application_name": APP, "application_namespace": "test",
            "application_desc": "node test", "microservices": [{
                "microserviceID": "", "microservice_name": "web", "microservice_namespace": "test",
                "virtualization": "unikernel", "cmd": ["hello"], "memory": 128, "vcpus": 1, "vgpus": 0, "vtpus": 0,
                "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0, "code": cls.image_url,
                "code_sha256": cls.image_sha, "arch": ["amd64"], "emulation": "allow", "state": "",
                "port": "", "added_files": []}]}]}

    @classmethod
    def start_node(cls, *extra):
        cls.node = spawn(["nsenter", "--net=/run/netns/" + NS, "--", NODE_BIN, "--state-dir", cls.node_state,
                          "--cluster-url", cls.cluster_url, "--join-token", cls.node_join, "--name", "node-t",
                          "--allow-emulation", "--report-interval", "1", "--verbose", "--qemu-user", QEMU_USER,
                          "--image-file-dirs", cls.file_dir, *extra],
                         stdout=subprocess.DEVNULL, stderr=log_file(cls.node_log.path))

    @classmethod
    def node_identity(cls):
        with open(os.path.join(cls.node_state, "node.json")) as f:
            return json.load(f)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "httpd", None):
            cls.httpd.shutdown()
        for p in reversed(PROCS):
            stop(p)
        for f in FILES:
            f.close()
        if getattr(cls, "httpd", None):
            cls.httpd.server_close()
        name = "%s.instance." % JOB
        for entry in os.listdir("/run/netns"):
            if entry.startswith(name):
                sh("ip", "netns", "del", entry, check=False)
        for pid in qemu_pids(name + "0"):
            os.kill(pid, signal.SIGKILL)
        sh("ip", "link", "del", VETH_T, check=False)
        sh("ip", "netns", "del", NS, check=False)
        sh("userdel", QEMU_USER, check=False)
        sh("groupdel", QEMU_USER, check=False)
        for cg in pathlib.Path("/sys/fs/cgroup").glob("**/oakuk/%s*" % JOB):
            try:
                cg.rmdir()
            except OSError:
                pass
        if os.environ.get("KEEP_TMP") is None:
            subprocess.run(["rm", "-rf", cls.tmp])

    # ---- helpers ----
    def last_report(self, t0):
        reports = [m for m in self.watch.since(t0, "information") if isinstance(m, dict)]
        return reports[-1] if reports else None

    def report_with(self, t0, pred, what, timeout=30):
        return wait_until(what, lambda: (lambda r: r if r and pred(r) else None)(self.last_report(t0)),
                          timeout=timeout)

    def instance_state(self):
        return {
            "netns": sorted(e for e in os.listdir("/run/netns") if e.startswith(JOB)),
            "qemu": qemu_pids(self.instance),
            "dirs": sorted(os.listdir(os.path.join(self.node_state, "instances"))),
            "jobs": sorted(os.listdir(os.path.join(self.node_state, "jobs"))),
            "links": sorted(l for l in in_node_ns("ip", "-o", "link").stdout.split("\n") if "oakuk-" in l and "oakuk-vx" not in l),
        }

    def guest_http(self, ip, timeout=120):
        url = "http://%s:8080/cgi-bin/index.cgi" % ip
        code = "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(%r, timeout=3).read().decode())" % url
        return wait_until("guest HTTP at %s from the node host" % ip, lambda: (lambda p: p.stdout if p.returncode == 0
                          else None)(in_node_ns(sys.executable, "-c", code)), timeout=timeout, interval=1)

    # ---- tests, in order ----
    def test_01_register_and_report(self):
        ident = self.node_identity()
        self.assertEqual(ident["id"], "node-t")
        self.assertTrue(ident["subnet"].startswith("10.18.") and ident["subnet"].endswith("/24"), ident)
        self.assertEqual(os.stat(os.path.join(self.node_state, "node.json")).st_mode & 0o077, 0)
        rep = self.report_with(0, lambda r: True, "a node report")
        self.assertEqual(rep["id"], "node-t")
        self.assertEqual(rep["ip"], NODE_IP)  # default underlay: source of the route to the cluster
        self.assertEqual(rep["architecture"], "amd64")
        self.assertIn("unikernel", rep["virtualization"])
        self.assertEqual(rep["unikernel"]["accel"], "tcg")
        self.assertLessEqual(rep["vcpus"], os.cpu_count())
        self.assertLessEqual(rep["memory"], rep["memory_total"])
        # the cluster accepted it (it validates reports with liboakuk)
        nodes = requests.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()
        self.assertIn("node-t", [n["id"] for n in nodes])
        # the node built its bridge with the first address of its subnet, in its own namespace only
        bridge_ip = ident["subnet"].rsplit(".", 1)[0] + ".1/24"
        self.assertIn(bridge_ip, in_node_ns("ip", "-o", "addr", "show", "oakuk0").stdout)
        self.assertNotIn("oakuk0", os.listdir("/sys/class/net"))

    def test_02_deploy_runs_guest(self):
        # the root places on clusters by their aggregates: wait until ours counts the node
        cid = requests.get(self.root_url + "/api/v1/clusters", headers=self.h, timeout=5).json()[0]["id"]
        wait_until("node active at the root", lambda: requests.get(
            self.root_url + "/api/v1/clusters/" + cid, headers=self.h, timeout=5).json()["active_nodes"] == 1)
        t0 = time.time()
        r = requests.post(self.root_url + "/api/service/%s/instance" % self.sid, headers=self.h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        n = r.json()["instance_number"]
        type(self).instance = "%s.instance.%d" % (JOB, n)
        deploy = self.watch.wait(t0, "control/deploy", lambda m: m.get("instance_number") == n, "deploy message")
        ip = deploy["instance_ip"]
        type(self).ip = ip
        self.watch.wait(t0, "job", lambda m: m["status"] == "CREATING" and m["instance"] == n, "CREATING")
        running = self.watch.wait(t0, "job", lambda m: m["status"] == "RUNNING" and m["instance"] == n, "RUNNING",
                                  timeout=120)
        self.assertEqual(running["job_name"], JOB)
        details = [m["status_detail"] for m in self.watch.since(t0, "job") if m["status"] == "CREATING"]
        self.assertTrue(any(d.startswith("fetching image") or d.startswith("downloading") for d in details), details)
        body = self.guest_http(ip)
        self.assertIn("args: hello", body)
        rep = self.report_with(t0, lambda r: any(i["name"] == self.instance and i["status"] == "RUNNING"
                                                 for i in r["instances"]), "report listing the instance")
        inst = next(i for i in rep["instances"] if i["name"] == self.instance)
        self.assertGreater(inst["memory_mb"], 0)
        st = self.instance_state()
        self.assertEqual(st["netns"], [self.instance])
        self.assertEqual(len(st["qemu"]), 1)
        # QEMU runs as the unprivileged user the node created, confined by seccomp, without privileges
        self.assertIn("created the user QEMU runs as", self.node_log.text())
        uid = pwd.getpwnam(QEMU_USER).pw_uid
        status = dict(l.split(":", 1) for l in pathlib.Path("/proc/%d/status" % st["qemu"][0]).read_text().splitlines())
        self.assertEqual(status["Uid"].split(), [str(uid)] * 4)
        self.assertEqual(status["Seccomp"].strip(), "2")
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        self.assertEqual(int(status["CapEff"].strip(), 16), 0)
        # the same deploy again is idempotent: its status is re-published, nothing new starts
        t1 = time.time()
        self.assertEqual(self.watch.publish("control/deploy", json.dumps(deploy)), 0)
        self.watch.wait(t1, "job", lambda m: m["status"] == "RUNNING" and m["instance"] == n, "re-published status")
        time.sleep(1)
        self.assertEqual(self.instance_state()["qemu"], st["qemu"])

    def test_03_malformed_payloads_are_ignored(self):
        self.assertIsNotNone(self.instance)
        before = self.instance_state()
        bad = [("control/deploy", "not json"), ("control/deploy", "[1, 2]"),
               ("control/deploy", json.dumps({"instance_number": "zero", "job_name": JOB})),
               ("control/deploy", json.dumps({"instance_number": 3, "virtualization": "unikernel"})),
               ("control/delete", "{"), ("control/delete", json.dumps({"job_name": 5, "instance_number": 0})),
               ("control/delete", json.dumps({"job_name": JOB})),
               ("net/services", "{]"), ("net/services", json.dumps([{"rr_ip": "not-an-ip", "instances": []}])),
               ("net/peers", json.dumps({"id": "x"})), ("net/peers", json.dumps([{"id": "p", "ip": "1.2.3"}]))]
        t0 = time.time()
        for leaf, payload in bad:
            self.assertEqual(self.watch.publish(leaf, payload), 0)
        wait_until("a warning per malformed payload", lambda: sum(
            1 for l in self.node_log.text().splitlines() if "mqtt-reject" in l and "topic=nodes/node-t/" in l)
            >= len(bad), timeout=15)
        log = self.node_log.text()
        for leaf in ("control/deploy", "control/delete", "net/services", "net/peers"):
            self.assertIn("topic=nodes/node-t/%s" % leaf, log)
        self.assertIn("instance_number: missing or not a non-negative integer", log)
        time.sleep(1.5)
        self.assertEqual(self.instance_state(), before)
        self.assertEqual([m for m in self.watch.since(t0, "job") if m.get("status") != "RUNNING"], [])
        rep = self.report_with(time.time(), lambda r: True, "a report after the malformed payloads")
        self.assertEqual([(i["name"], i["status"]) for i in rep["instances"]], [(self.instance, "RUNNING")])

    def test_03b_wrong_arch_is_refused(self):
        # A deploy whose placement asks for arm64 but whose code is the amd64 guest: FAILED naming
        # the mismatch, and nothing of it is left behind.
        name = "%s.instance.7" % JOB
        job = {"job_name": JOB, "microservice_name": "web", "microservice_namespace": "test", "app_name": APP,
               "app_ns": "test", "virtualization": "unikernel", "code": self.image_url + ",",
               "arch": ["arm64"], "memory": 128, "vcpus": 1, "emulation": "allow", "instance_number": 7,
               "placement": {"virtualization": "unikernel", "arch": "arm64", "code": self.image_url,
                             "code_sha256": self.image_sha}}
        t0 = time.time()
        self.assertEqual(self.watch.publish("control/deploy", json.dumps(job)), 0)
        failed = self.watch.wait(t0, "job", lambda m: m["status"] == "FAILED" and m["instance"] == 7, "FAILED")
        self.assertIn("arm64", failed["status_detail"])
        self.assertIn("built for amd64", failed["status_detail"])
        self.assertNotIn("restarting", failed["status_detail"])
        self.assertNotIn("again after", failed["status_detail"])  # no restart happened, none is claimed
        self.assertEqual(self.watch.publish("control/delete", json.dumps({"job_name": JOB, "instance_number": 7})), 0)
        self.watch.wait(t0, "job", lambda m: m["status"] == "UNDEPLOYED" and m["instance"] == 7, "UNDEPLOYED")
        wait_until("no trace of the refused instance", lambda: not os.path.exists("/run/netns/" + name) and
                   not os.path.exists(os.path.join(self.node_state, "jobs", name + ".json")), timeout=10)
        self.assertEqual(self.instance_state()["netns"], [self.instance])

    # ---- the multiboot test kernel (Unikraft's x86 QEMU format), deployed straight over MQTT ----
    def uk_job(self, number, args, version_image="0.16.3", **extra):
        image = GUESTS / ("ukguest-%s.tar.gz" % version_image)
        if not image.exists():
            self.skipTest("the multiboot test kernel was not built")
        url = "http://%s:%d/%s" % (TEST_IP, self.httpd.server_address[1], image.name)
        job = {"job_name": JOB, "microservice_name": "web", "microservice_namespace": "test", "app_name": APP,
               "app_ns": "test", "virtualization": "unikernel", "code": url, "arch": ["amd64"], "memory": 32,
               "vcpus": 1, "emulation": "allow", "cmd": args, "instance_number": number,
               "instance_ip": self.ip.rsplit(".", 1)[0] + ".%d" % (100 + number)}
        job.update(extra)
        return job

    def run_uk(self, job):
        n = job["instance_number"]
        t0 = time.time()
        self.assertEqual(self.watch.publish("control/deploy", json.dumps(job)), 0)
        return t0, n

    @contextlib.contextmanager
    def cluster_held(self):
        """Holds the cluster (SIGSTOP) while the test talks to the node straight over its broker: the
        cluster removes instances it did not place (docs/reconcile.md), which races with the test."""
        cluster = next(p for p in PROCS if p.args and CLUSTER_BIN in p.args)
        os.kill(cluster.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(cluster.pid, signal.SIGCONT)

    def remove_uk(self, t0, n):
        self.assertEqual(self.watch.publish("control/delete", json.dumps({"job_name": JOB, "instance_number": n})), 0)
        self.watch.wait(t0, "job", lambda m: m["status"] == "UNDEPLOYED" and m["instance"] == n, "UNDEPLOYED")
        name = "%s.instance.%d" % (JOB, n)
        wait_until("no trace of %s" % name, lambda: not os.path.exists("/run/netns/" + name) and not qemu_pids(name),
                   timeout=15)

    def assert_text(self, detail):
        for bad in ("\x1b", "\x00", "\r"):
            self.assertNotIn(bad, detail)

    def test_03g_stuck_fetch_cancelled_by_delete(self):
        """A download that stalls (one byte every 2 s) is cancelled by the delete: the instance is gone
        at once and no longer reported, instead of holding its place until the server gives up."""
        slow = socket.socket()
        slow.bind((TEST_IP, 0))
        slow.listen(4)
        stop_slow = threading.Event()

        def dribble():
            while not stop_slow.is_set():
                try:
                    slow.settimeout(0.5)
                    c, _ = slow.accept()
                except OSError:
                    continue
                with c:
                    c.recv(4096)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
                    while not stop_slow.wait(2):
                        try:
                            c.sendall(b"x")
                        except OSError:
                            break

        threading.Thread(target=dribble, daemon=True).start()
        try:
            with self.cluster_held():
                job = self.uk_job(21, [], code="http://%s:%d/slow.tar.gz" % (TEST_IP, slow.getsockname()[1]))
                t0, n = self.run_uk(job)
                self.watch.wait(t0, "job", lambda m: m["instance"] == n and m["status"] == "CREATING" and
                                "fetching image" in m["status_detail"], "fetching")
                time.sleep(1)
                t1 = time.time()
                self.assertEqual(self.watch.publish("control/delete", json.dumps({"job_name": JOB,
                                                                                    "instance_number": n})), 0)
                self.watch.wait(t1, "job", lambda m: m["status"] == "UNDEPLOYED" and m["instance"] == n, "UNDEPLOYED",
                                timeout=5)
                self.assertLess(time.time() - t1, 5)
                name = "%s.instance.%d" % (JOB, n)
                self.report_with(t1, lambda r: name not in [i["name"] for i in r["instances"]],
                                 "a report without the cancelled instance", timeout=5)
        finally:
            stop_slow.set()
            slow.close()

    def test_03h_file_images_only_from_allowed_dirs(self):
        """file:// images come only from --image-file-dirs, only as regular files: a FIFO there is
        refused at once instead of blocking the fetch, and a path outside is refused naming the option."""
        fifo = os.path.join(self.file_dir, "fifo.tar.gz")
        os.mkfifo(fifo)
        outside = os.path.join(self.tmp, "outside.tar.gz")
        shutil.copy(GUESTS / "ukguest-0.16.3.tar.gz", outside)
        with self.cluster_held():
            for number, url, want in ((22, "file://" + fifo, "file:// reads regular files only"),
                                      (23, "file://" + outside, "file_allowed_dirs")):
                job = self.uk_job(number, [], code=url)
                t0, n = self.run_uk(job)
                failed = self.watch.wait(t0, "job", lambda m: m["instance"] == n and m["status"] == "FAILED", "FAILED",
                                         timeout=10)
                self.assertIn(want, failed["status_detail"])
                self.assertNotIn("(backoff)", failed["status_detail"])  # a policy refusal is not retried
                self.assertLess(time.time() - t0, 10)
                self.remove_uk(t0, n)

    def test_03c_multiboot_kernel_completes(self):
        """A one-shot multiboot guest that powers off: ready once RUNNING (no port), then COMPLETED with
        "exited cleanly" and a clean console tail; its Unikraft version (0.16.3) picked netdev.ip=."""
        with self.cluster_held():
            job = self.uk_job(8, ["a", "b"], one_shot=True)
            t0, n = self.run_uk(job)
            # nothing to probe: ready as soon as RUNNING
            self.watch.wait(t0, "job", lambda m: m["status"] == "RUNNING" and m["instance"] == n and m["ready"] is True,
                            "RUNNING and ready", timeout=120)
            done = self.watch.wait(t0, "job", lambda m: m["status"] == "COMPLETED" and m["instance"] == n, "COMPLETED",
                                   timeout=120)
            d = done["status_detail"]
            self.assertIn("exited cleanly: the guest powered off", d)
            self.assertIn("en1: Set IPv4 address %s mask 255.255.255.0" % job["instance_ip"], d)
            self.assertIn('ukguest: argv: "a" "b"', d)
            self.assertIs(done["ready"], False)
            self.assert_text(d)
            self.assertNotIn("(backoff)", d)  # a clean end of a one-shot service is not restarted
            # the node's logs of it, as `oakuk logs` gets them: the whole console as clean text
            self.assertEqual(self.watch.publish("control/logs", json.dumps({
                "instance": "%s.instance.%d" % (JOB, n), "lines": 100, "request_id": "uk8"})), 0)
            logs = self.watch.wait(t0, "logs", lambda m: m.get("request_id") == "uk8", "logs reply")
            self.assertIn("                  Telesto 0.16.3~oakuktest", logs["lines"])
            self.assertIn("Hello from the oakuk test kernel", logs["lines"])
            for line in logs["lines"]:
                self.assert_text(line)
            self.remove_uk(t0, n)

    def test_03d_multiboot_crash(self):
        with self.cluster_held():
            job = self.uk_job(9, ["crash"], restart="never")
            t0, n = self.run_uk(job)
            dead = self.watch.wait(t0, "job", lambda m: m["status"] == "DEAD" and m["instance"] == n, "DEAD", timeout=120)
            d = dead["status_detail"]
            self.assertTrue(d.startswith("the guest panicked"), d)
            self.assertIn("CRIT: [libkvmplat]", d)
            self.assertNotIn("restart", d)  # restart: never, and no claim of one
            self.assert_text(d)
            self.remove_uk(t0, n)

    def test_03e_wrong_convention_named(self):
        """The descriptor says Unikraft 0.15.0 for a 0.16.3 kernel: the guest gets old-style parameters,
        never configures its address, never answers its port: RUNNING, not ready, and a detail why.
        Deployed through the root (the cluster removes instances it did not place)."""
        image = GUESTS / "ukguest-0.16.3.tar.gz"
        if not image.exists():
            self.skipTest("the multiboot test kernel was not built")
        app = APP + "u"
        sla = self.sla()
        sla["applications"][0]["application_name"] = app
        ms = sla["applications"][0]["microservices"][0]
        ms.update({"microservice_name": "ukw", "code": "http://%s:%d/%s" % (TEST_IP, self.httpd.server_address[1],
                                                                            image.name),
                   "code_sha256": hashlib.sha256(image.read_bytes()).hexdigest(), "cmd": ["stay"], "memory": 32,
                   "port": "18080:8080", "unikernel": {"version": "0.15.0"}})
        r = requests.post(self.root_url + "/api/application/", headers=self.h, timeout=10, json=sla)
        self.assertEqual(r.status_code, 200, r.text)
        sid = next(a for a in json.loads(r.json()) if a["application_name"] == app)["microservices"][0]
        t0 = time.time()
        r = requests.post(self.root_url + "/api/service/%s/instance" % sid, headers=self.h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        job = "%s.test.ukw.test" % app
        note = self.watch.wait(t0, "job", lambda m: m["job_name"] == job and m["status"] == "RUNNING" and
                               "did not configure" in m["status_detail"], "RUNNING with the address detail",
                               timeout=120)
        deploy = next(m for m in self.watch.since(t0, "control/deploy") if isinstance(m, dict) and m["job_name"] == job)
        self.assertEqual(note["status_detail"], "guest did not configure %s (wrong netdev parameters for "
                                                "Unikraft 0.15.0?)" % deploy["instance_ip"])
        self.assertIs(note["ready"], False)
        self.assertEqual([m for m in self.watch.since(t0, "job") if m.get("job_name") == job and m.get("ready")], [])
        r = requests.delete(self.root_url + "/api/service/%s" % sid, headers=self.h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        self.watch.wait(t0, "job", lambda m: m["job_name"] == job and m["status"] == "UNDEPLOYED", "UNDEPLOYED")
        name = job + ".instance.0"
        wait_until("no trace of %s" % name, lambda: not os.path.exists("/run/netns/" + name) and not qemu_pids(name),
                   timeout=15)

    def test_03f_generations(self):
        """docs/reconcile.md at the node: a deploy or delete of an older generation is ignored, the same
        generation re-publishes, a newer one of the same instance is adopted without a restart, a newer
        one of another variant replaces it; events and reports carry the generation. The cluster is
        held (SIGSTOP) meanwhile: the node alone is tested, over its broker."""
        image = GUESTS / "ukguest-0.16.3.tar.gz"
        if not image.exists():
            self.skipTest("the multiboot test kernel was not built")
        name = "%s.instance.11" % JOB
        with self.cluster_held():
            job = self.uk_job(11, ["stay"], generation=5)
            t0, n = self.run_uk(job)
            self.watch.wait(t0, "job", lambda m: m["instance"] == n and m["status"] == "RUNNING" and
                            m["generation"] == 5, "RUNNING, generation 5", timeout=120)
            pid = qemu_pids(name)
            self.assertEqual(len(pid), 1)
            rep = self.report_with(t0, lambda r: any(i["name"] == name for i in r["instances"]), "report")
            self.assertEqual(next(i for i in rep["instances"] if i["name"] == name)["generation"], 5)
            for gen, what in ((5, "the same generation"), (4, "an older generation")):
                t1 = time.time()
                self.assertEqual(self.watch.publish("control/deploy", json.dumps(dict(job, generation=gen))), 0)
                if gen == 5:
                    self.watch.wait(t1, "job", lambda m: m["instance"] == n and m["generation"] == 5, what)
                else:
                    wait_until("stale deploy logged", lambda: "stale deploy (older generation) ignored" in
                               self.node_log.text())
                self.assertEqual(qemu_pids(name), pid, what)
            t1 = time.time()
            self.assertEqual(self.watch.publish("control/deploy", json.dumps(dict(job, generation=6))), 0)
            self.watch.wait(t1, "job", lambda m: m["instance"] == n and m["status"] == "RUNNING" and
                            m["generation"] == 6, "adopted generation 6")
            self.assertEqual(qemu_pids(name), pid, "a newer generation of the same instance restarts nothing")
            other = dict(self.uk_job(11, ["stay"], version_image="0.15.0"), generation=7)
            t1 = time.time()
            self.assertEqual(self.watch.publish("control/deploy", json.dumps(other)), 0)
            self.watch.wait(t1, "job", lambda m: m["instance"] == n and m["status"] == "RUNNING" and
                            m["generation"] == 7, "the other variant RUNNING, generation 7", timeout=120)
            new = qemu_pids(name)
            self.assertEqual(len(new), 1)
            self.assertNotEqual(new, pid)
            t1 = time.time()
            self.assertEqual(self.watch.publish("control/delete", json.dumps(
                {"job_name": JOB, "instance_number": n, "generation": 6})), 0)
            wait_until("stale delete logged", lambda: "stale delete (older generation) ignored" in self.node_log.text())
            self.assertEqual(qemu_pids(name), new)
            self.assertEqual([m for m in self.watch.since(t1, "job") if m.get("instance") == n and
                              m["status"] == "UNDEPLOYED"], [])
            for bad in ({"job_name": JOB, "instance_number": n, "generation": -1},
                        {"job_name": JOB, "instance_number": n, "generation": "7"}):
                self.assertEqual(self.watch.publish("control/delete", json.dumps(bad)), 0)
            wait_until("bad generations rejected", lambda: self.node_log.text().count(
                "generation: not a non-negative integer") >= 2)
            self.assertEqual(qemu_pids(name), new)
            self.remove_uk(t1, n)

    def test_04_restart_readopts(self):
        self.assertIsNotNone(self.instance)
        before = self.instance_state()
        stop(self.node)
        self.assertEqual(self.node.returncode, 0)
        self.assertEqual(qemu_pids(self.instance), before["qemu"], "the instance kept running")
        t0 = time.time()
        self.start_node()
        wait_until("node reconnected", lambda: "re-adopted" in self.node_log.text().split("oakuk-node stopped")[-1])
        # new credentials after re-registration: reconnect the watcher
        self.watch.close()
        type(self).watch = Watcher(self.node_identity(), "node-t")
        t0 = time.time()
        self.report_with(t0, lambda r: [(i["name"], i["status"]) for i in r["instances"]] == [
            (self.instance, "RUNNING")], "report after restart", timeout=40)
        after = self.instance_state()
        self.assertEqual(after, before)
        self.assertIn("args: hello", self.guest_http(self.ip, timeout=30))

    def test_04b_dead_instance_restarted_here(self):
        # QEMU killed under the node: DEAD (saying when it restarts here: CrashLoopBackOff), then a
        # fresh RUNNING instance with the same IP.
        self.assertIsNotNone(self.instance)
        n = int(self.instance.rsplit(".", 1)[1])
        old = qemu_pids(self.instance)
        self.assertEqual(len(old), 1)
        t0 = time.time()
        os.kill(old[0], signal.SIGKILL)
        dead = self.watch.wait(t0, "job", lambda m: m["status"] == "DEAD" and m["instance"] == n, "DEAD")
        self.assertIn("restart 1 in 1 s (backoff)", dead["status_detail"])
        self.watch.wait(t0, "job", lambda m: m["status"] == "RUNNING" and m["instance"] == n, "RUNNING again",
                        timeout=60)
        new = qemu_pids(self.instance)
        self.assertEqual(len(new), 1)
        self.assertNotEqual(new, old)
        self.assertIn("args: hello", self.guest_http(self.ip, timeout=120))

    def test_05_delete_removes_everything(self):
        self.assertIsNotNone(self.instance)
        n = int(self.instance.rsplit(".", 1)[1])
        t0 = time.time()
        r = requests.delete(self.root_url + "/api/service/%s/instance/%d" % (self.sid, n), headers=self.h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        self.watch.wait(t0, "job", lambda m: m["status"] == "UNDEPLOYED" and m["instance"] == n, "UNDEPLOYED",
                        timeout=40)
        self.assertEqual(self.instance_state(), {"netns": [], "qemu": [], "dirs": [], "jobs": [], "links": []})
        self.assertFalse(os.path.exists("/run/netns/" + self.instance))
        self.report_with(time.time(), lambda r: r["instances"] == [], "report without instances")
        # deleting again (unknown instance) is idempotent
        t1 = time.time()
        self.assertEqual(self.watch.publish("control/delete", json.dumps({"job_name": JOB, "instance_number": n})), 0)
        self.watch.wait(t1, "job", lambda m: m["status"] == "UNDEPLOYED" and m["instance"] == n, "UNDEPLOYED again")

    def test_06_sigterm_exits_cleanly(self):
        stop(self.node)
        self.assertEqual(self.node.returncode, 0)
        self.assertIn("oakuk-node stopped", self.node_log.text())


if __name__ == "__main__":
    ROOT_BIN, CLUSTER_BIN, NODE_BIN = sys.argv[1:4]
    del sys.argv[1:4]
    unittest.main(verbosity=2)

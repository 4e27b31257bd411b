#!/usr/bin/python3
"""Integration test of oakuk-cluster with a real oakuk-root and the cluster's own mosquitto.
Fake nodes are played by mosquitto_pub/mosquitto_sub processes using the credentials the cluster
hands out at node registration.

Usage: test-cluster.py <oakuk-root> <oakuk-cluster>"""
import hashlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

import warnings

import edgelib  # noqa: E402
from edgelib import (MOSQUITTO, PROCS, Ca, Daemon, FakeNode, MqttConn, cert_info, mqtt_env,  # noqa: E402
                     new_node_join_token, ports, read_text, report, served_certificate, stop, wait_until, write_secret)

def get_unverified(url):
    """GET from a server whose certificate nothing trusts (the bootstrap one): the JSON answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return requests.get(url, timeout=5, verify=False).json()

ROOT_BIN = CLUSTER_BIN = None
FAKE_CA = Ca("fake root CA")  # the CA of every FakeRoot
FAKE_CA_FILE = None  # FAKE_CA's certificate, written by the first test class


SLA = {
    "sla_version": "v2.0", "customerID": "Admin",
    "applications": [{
        "applicationID": "", "application_name": "shop", "application_namespace": "test",
        "application_desc": "cluster test",
        "microservices": [{
            "microserviceID": "", "microservice_name": "web", "microservice_namespace": "test",
            "virtualization": "container", "cmd": [], "memory": 100, "vcpus": 1, "vgpus": 0, "vtpus": 0,
            "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0, "code": "docker.io/library/nginx:latest",
            "arch": ["amd64"], "state": "", "port": "80:80", "addresses": {"rr_ip": "10.30.1.1"},
            "added_files": [], "restart": "on-failure", "reschedule_after_s": 3}, {
            "microserviceID": "", "microservice_name": "once", "microservice_namespace": "test",
            "virtualization": "container", "cmd": [], "memory": 100, "vcpus": 1, "vgpus": 0, "vtpus": 0,
            "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0, "code": "docker.io/library/busybox:latest",
            "arch": ["amd64"], "state": "", "added_files": [], "restart": "never"}]}]}
JOB = "shop.test.web.test"
JOB_ONCE = "shop.test.once.test"


class ProcWatch:
    """Samples the command line of every process until stopped."""

    def __init__(self):
        self.seen, self.running = set(), True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open("/proc/%s/cmdline" % pid, "rb") as f:
                            self.seen.add(f.read())
                    except OSError:
                        pass
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.seen


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.watch = ProcWatch()  # every command line from now on (test_12)
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-cluster-test-")
        root_port, cls.cluster_port, cls.mqtt_port = ports(3)
        cls.root_url = "https://127.0.0.1:%d" % root_port
        cls.cluster_url = "https://127.0.0.1:%d" % cls.cluster_port
        root_state = os.path.join(cls.tmp, "root")
        cls.root = Daemon([ROOT_BIN, "--state-dir", root_state, "--listen", "127.0.0.1:%d" % root_port],
                          os.path.join(cls.tmp, "root.log"))
        cls.root.start()
        # The root's CA signs the cluster's certificate too: it verifies both.
        cls.ca_file = os.path.join(root_state, "pki", "ca.crt")
        wait_until("the root's CA", lambda: os.path.exists(cls.ca_file), timeout=10)
        os.environ["REQUESTS_CA_BUNDLE"] = cls.ca_file
        pw_file = os.path.join(root_state, "admin-password")
        cls.admin_password = wait_until("the admin password", lambda: read_text(pw_file), timeout=10)
        tok = wait_until("root login", lambda: requests.post(cls.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": cls.admin_password}).json()["token"])
        cls.h = {"Authorization": "Bearer " + tok}
        r = requests.post(cls.root_url + "/api/v1/clusters/tokens", headers=cls.h, timeout=5)
        cls.join = r.json()["token"]
        join_file = write_secret(os.path.join(cls.tmp, "cluster-join-token"), cls.join)
        # mosquitto through a wrapper that waits while the gate file exists: lets the test keep the
        # broker down for as long as it needs after killing it.
        cls.gate = os.path.join(cls.tmp, "broker-gate")
        cls.wrapper = os.path.join(cls.tmp, "mosquitto-wrapper")
        with open(cls.wrapper, "w") as f:
            f.write('#!/bin/sh\nwhile [ -e "%s" ]; do sleep 0.1; done\nexec %s "$@"\n' % (cls.gate, MOSQUITTO))
        os.chmod(cls.wrapper, 0o755)
        # A mosquitto_passwd first in the cluster's PATH that only records that it ran: the cluster
        # writes the password file itself, and no password is ever on a command line.
        bin_dir = os.path.join(cls.tmp, "bin")
        os.makedirs(bin_dir)
        cls.passwd_marker = os.path.join(cls.tmp, "mosquitto_passwd-ran")
        with open(os.path.join(bin_dir, "mosquitto_passwd"), "w") as f:
            f.write('#!/bin/sh\necho "$@" >>%s\nexit 1\n' % cls.passwd_marker)
        os.chmod(os.path.join(bin_dir, "mosquitto_passwd"), 0o755)
        cls.env = dict(os.environ, PATH=bin_dir + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
        cls.state = os.path.join(cls.tmp, "cluster")
        cls.cluster_args = [CLUSTER_BIN, "--state-dir", cls.state, "--listen",
                            "127.0.0.1:%d" % cls.cluster_port, "--root-url", cls.root_url, "--name", "edge1",
                            "--location", "lab", "--mqtt-port", str(cls.mqtt_port), "--mosquitto", cls.wrapper,
                            "--node-timeout", "3", "--aggregate-interval", "1", "--join-token", "@" + join_file]
        cls.cluster = Daemon(cls.cluster_args, os.path.join(cls.tmp, "cluster.log"), env=cls.env)
        cls.cluster.start()
        try:
            wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
                requests.get(cls.cluster_url + "/healthz", timeout=5).json()))
        except AssertionError as err:
            raise AssertionError("%s\n--- cluster log:\n%s" % (err, cls.cluster.text()[-3000:])) from None
        cls.node_join_token = new_node_join_token(CLUSTER_BIN, cls.state)
        cls.cid = requests.get(cls.root_url + "/api/v1/clusters", headers=cls.h, timeout=5).json()[0]["id"]
        cls.a = FakeNode(cls, "node-a", 4000)
        cls.b = FakeNode(cls, "node-b", 2000)
        cls.a.listen()
        cls.b.listen()
        r = requests.post(cls.root_url + "/api/application/", headers=cls.h, json=SLA, timeout=10)
        assert r.status_code == 200, r.text
        cls.sid, cls.sid_once = json.loads(r.json())[0]["microservices"]

    @classmethod
    def tearDownClass(cls):
        for n in (getattr(cls, "a", None), getattr(cls, "b", None)):
            if n:
                n.close()
        for p in reversed(PROCS):
            stop(p)
        if os.environ.get("KEEP_TMP") is None:
            subprocess.run(["rm", "-rf", cls.tmp])

    # ---- helpers ----
    def cluster_token(self):
        db = sqlite3.connect(os.path.join(self.tmp, "cluster", "cluster.db"))
        try:
            return db.execute("SELECT value FROM kv WHERE key = 'token'").fetchone()[0]
        finally:
            db.close()

    def root_instance(self, n, sid=None):
        doc = json.loads(requests.get(self.root_url + "/api/service/" + (sid or self.sid), headers=self.h,
                                      timeout=5).json())
        return next((i for i in doc["instance_list"] if i["instance_number"] == n), None)

    def native_instance(self, n, sid=None):
        """Instance n as the root's native API shows it (it keeps instances being removed)."""
        lst = requests.get(self.root_url + "/api/v1/services/%s/instances" % (sid or self.sid), headers=self.h,
                           timeout=5).json()
        return next((i for i in lst if i["instance_number"] == n), None)

    def cluster_instance(self, name):
        return next((i for i in self.cluster_instances() if i["name"] == name), None)

    def new_instance(self, sid=None):
        r = requests.post(self.root_url + "/api/service/%s/instance" % (sid or self.sid), headers=self.h, timeout=5)
        self.assertEqual(r.status_code, 200, r.text)
        return r.json()["instance_number"]

    def cluster_instances(self):
        return requests.get(self.cluster_url + "/api/v1/instances", timeout=5).json()

    def metric(self, name, labels=""):
        text = requests.get(self.cluster_url + "/metrics", timeout=5).text
        return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + labels + " ")))

    def wait_root_status(self, n, status, node=None, timeout=20, sid=None):
        return wait_until("root instance %d %s" % (n, status), lambda: (lambda i: i if i and i["status"] == status and (
            node is None or i["node_id"] == node) else None)(self.root_instance(n, sid)), timeout=timeout)

    def broker_pid(self):
        """The cluster's child process: its mosquitto."""
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.cluster.proc.pid:
                    return int(entry)
        raise AssertionError("the cluster runs no broker process")

    def wait_nodes_active(self):
        wait_until("both nodes active at the root", lambda: requests.get(
            self.root_url + "/api/v1/clusters/" + self.cid, headers=self.h, timeout=5).json()["active_nodes"] == 2)

    def stored_memory(self, node):
        """The memory of node's last report as the cluster's store holds it."""
        db = sqlite3.connect(os.path.join(self.tmp, "cluster", "cluster.db"))
        try:
            row = db.execute("SELECT report FROM nodes WHERE id = ?", (node,)).fetchone()
            return json.loads(row[0])["memory"] if row and row[0] else None
        finally:
            db.close()

    # ---- tests, in order ----
    def test_01_registration(self):
        clusters = requests.get(self.root_url + "/api/v1/clusters", headers=self.h, timeout=5).json()
        self.assertEqual([c["cluster_name"] for c in clusters], ["edge1"])
        subnet = clusters[0]["subnet"]
        self.assertTrue(subnet.startswith("10.18.") and subnet.endswith("/20"), subnet)
        self.assertEqual(self.a.creds["subnet"], "10.18.0.0/24")
        self.assertEqual(self.b.creds["subnet"], "10.18.1.0/24")
        self.assertEqual(self.a.creds["mqtt_port"], self.mqtt_port)
        with open(self.ca_file) as f:
            ca_pem = f.read()
        self.assertEqual((self.a.creds["mqtt_tls"], self.a.creds["ca"]), (True, ca_pem))
        # The certificate the root signed, on HTTPS and on the broker's TLS listener.
        for port in (self.cluster_port, self.mqtt_port):
            cn, names, left, _ = cert_info(served_certificate("127.0.0.1", port))
            self.assertEqual(cn, self.cid)
            self.assertLessEqual({"127.0.0.1", "localhost"}, set(names), names)
            self.assertGreater(left, 300 * 86400)
        # The node join token of the first start: in a 0600 file, naming the root's CA, for one node.
        path = os.path.join(self.state, "node-join-token")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            file_token = f.read().strip()
        fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca_pem)).hexdigest()
        self.assertRegex(file_token, r"^oakuk1\.%s\.[0-9a-f]{48}$" % fp)
        # node-a's name with a valid token and no (or a wrong) credential: 409, nothing changes and the
        # token is not used up
        for cred in (None, "not-its-password"):
            r = self.a.register(token=file_token, credential=cred)
            self.assertEqual((r.status_code, r.json()["error"]["code"], r.json()["error"]["path"]),
                             (409, "name_taken", "capabilities.id"), r.text)
        self.assertIn("event=node-register node=node-a", self.cluster.text())
        self.assertEqual(self.a.publish("information", report("node-a", 4000)), 0)
        r = self.a.register(token=file_token, node_id="node-c")
        self.assertEqual(r.status_code, 201, r.text)
        c_creds = r.json()
        r = self.a.register(token=file_token, node_id="node-d")
        self.assertEqual((r.status_code, r.json()["error"]["path"]), (401, "join_token"), r.text)
        # Registering again with the credential (a restarted node) keeps id, subnet and password; no
        # join token is needed for it.
        old = dict(self.a.creds)
        r = self.a.register(credential=old["mqtt_password"], token="spent")
        self.assertEqual(r.status_code, 201, r.text)
        self.assertEqual({k: r.json()[k] for k in ("id", "subnet", "mqtt_password", "mqtt_username")},
                         {"id": "node-a", "subnet": old["subnet"], "mqtt_password": old["mqtt_password"],
                          "mqtt_username": "node-a"})
        # A node the admin removed registers as new: its old credential no longer counts.
        auth = {"Authorization": "Bearer " + self.cluster_token()}
        r = requests.delete(self.cluster_url + "/api/v1/nodes/node-c", headers=auth, timeout=5)
        self.assertEqual(r.status_code, 200, r.text)
        r = self.a.register(credential=c_creds["mqtt_password"], token=file_token, node_id="node-c")
        self.assertEqual(r.status_code, 401, r.text)
        r = self.a.register(credential=c_creds["mqtt_password"], node_id="node-c")
        self.assertEqual(r.status_code, 201, r.text)
        self.assertNotEqual(r.json()["mqtt_password"], c_creds["mqtt_password"])
        self.assertEqual(requests.delete(self.cluster_url + "/api/v1/nodes/node-c", headers=auth,
                                         timeout=5).status_code, 200)
        self.assertEqual([n["id"] for n in requests.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()],
                         ["node-a", "node-b"])
        # node-a's own connection was never disturbed
        self.assertEqual(self.a.conn.connects, 1)
        self.assertEqual(self.a.publish("information", report("node-a", 4000)), 0)

    def test_02_aggregate_reaches_root(self):
        self.wait_nodes_active()
        c = requests.get(self.root_url + "/api/v1/clusters/" + self.cid, headers=self.h, timeout=5).json()
        self.assertEqual(c["number_of_nodes"], 2)
        self.assertEqual(c["cumulative_memory_in_mb"], 6000)
        self.assertEqual(c["cpu_cores"], 8)
        self.assertIn("container", c["virtualization"])
        nodes = requests.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()
        self.assertEqual([(n["id"], n["active"]) for n in nodes], [("node-a", True), ("node-b", True)])

    def test_03_anonymous_and_foreign_topics_refused(self):
        empty = tempfile.mkdtemp(dir=self.tmp)  # no option files: no login
        anon = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt_port), "--cafile", self.ca_file,
                               "-q", "1", "-t", "nodes/node-a/information", "-m", "{}"], capture_output=True,
                              timeout=10, env=dict(os.environ, XDG_CONFIG_HOME=empty))
        self.assertNotEqual(anon.returncode, 0, "anonymous publish was accepted")
        # A listens on B's topics, B on its own report and event topics; A publishes there: nothing
        # crosses, while B's own message reaches B.
        self.b.silence()  # B's own reports would show up in its listener
        self.a.conn.subscribe(["nodes/node-b/#"])
        self.b.conn.subscribe(["nodes/node-b/information", "nodes/node-b/job"])
        time.sleep(0.7)
        spoof = report("node-b", 99999)
        self.a.publish(None, spoof, topic="nodes/node-b/information")
        self.a.publish(None, {"job_name": JOB, "instance": 0, "status": "FAILED"}, topic="nodes/node-b/job")
        self.assertEqual(self.b.publish(None, {"x": 1}, topic="nodes/node-b/job"), 0)
        self.b.expect("job", lambda m: m == {"x": 1}, timeout=5)  # B's listener works
        time.sleep(1)
        self.assertEqual(self.b.got("information", lambda m: m.get("memory") == 99999), [],
                         "node A published on node B's topic")
        self.assertEqual(self.b.got("job", lambda m: m.get("status") == "FAILED"), [])
        self.a.got("information", lambda m: True)  # drains A's queue into A's seen list
        self.assertEqual([t for t, _ in self.a.seen if t.startswith("nodes/node-b/")], [], "node A read node B's topics")
        self.a.conn.unsubscribe(["nodes/node-b/#"])
        self.b.conn.unsubscribe(["nodes/node-b/information", "nodes/node-b/job"])
        self.b.resume()
        self.wait_nodes_active()
        c2 = requests.get(self.root_url + "/api/v1/clusters/" + self.cid, headers=self.h, timeout=5).json()
        self.assertEqual(c2["cumulative_memory_in_mb"], 6000)

    def test_04_deploy_running_undeploy(self):
        self.wait_nodes_active()
        n = self.new_instance()
        dep = self.a.expect("control/deploy", lambda m: m.get("instance_number") == n)
        self.assertEqual(dep["job_name"], JOB)
        self.assertTrue(dep["instance_ip"].startswith("10.18.0."), dep)
        self.assertEqual(dep["placement"]["virtualization"], "container")
        self.wait_root_status(n, "NODE_SCHEDULED", "node-a")
        self.a.instances.add("%s.instance.%d" % (JOB, n))
        self.a.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", "node-a")
        svc = self.a.expect("net/services", lambda m: any(s["rr_ip"] == "10.30.1.1" for s in m))
        self.assertEqual(svc[0]["instances"][0]["ip"], dep["instance_ip"])
        self.assertEqual(svc[0]["instances"][0]["node"], "node-a")
        peers = self.b.expect("net/peers", lambda m: len(m) == 2)
        self.assertEqual(sorted(p["subnet"] for p in peers), ["10.18.0.0/24", "10.18.1.0/24"])
        peer_tables = len(self.b.got("net/peers", lambda m: True))
        explain = requests.get(self.cluster_url + "/api/v1/services/%s/explain" % JOB, timeout=5).json()
        self.assertTrue(any("node-b" in l for l in explain["lines"]), explain)
        # idempotent: the same deploy again changes nothing and sends nothing
        before = self.cluster_instances()
        r = requests.post(self.cluster_url + "/api/service/%s/%d" % (self.sid, n), json={}, timeout=5,
                          headers={"Authorization": "Bearer " + self.cluster_token()})
        self.assertEqual((r.status_code, r.json()["status"]), (200, "RUNNING"), r.text)
        self.assertEqual(self.cluster_instances(), before)
        time.sleep(1)
        self.assertEqual(len(self.a.got("control/deploy", lambda m: m.get("instance_number") == n)), 1)
        r = requests.delete(self.root_url + "/api/service/%s/instance/%d" % (self.sid, n), headers=self.h, timeout=5)
        self.assertEqual(r.status_code, 200, r.text)
        rm = self.a.expect("control/delete", lambda m: m.get("instance_number") == n)
        self.assertEqual(rm["job_name"], JOB)
        self.a.instances.discard("%s.instance.%d" % (JOB, n))
        self.assertIsNone(self.root_instance(n), "the compatible API still lists the removed instance")
        # the native API drops it once the cluster confirmed the removal
        wait_until("instance gone at the root", lambda: self.native_instance(n) is None)
        self.assertEqual(len(before) - 1, len(self.cluster_instances()))
        # the services table went out again without the instance; the peer table, unchanged by any
        # of this, did not (a table goes out only when it changed: bench/scale, docs/cluster.md)
        self.a.expect("net/services", lambda m: not any(s["rr_ip"] == "10.30.1.1" and s["instances"] for s in m))
        time.sleep(0.6)
        self.assertEqual(len(self.b.got("net/peers", lambda m: True)), peer_tables)

    def test_04b_readiness_reported_and_forwarded(self):
        """The node's ready/ready_ms on nodes/<id>/job: stored per instance by the cluster, shown in
        its instance view, forwarded to the root; malformed ones refused; reset off RUNNING."""
        self.wait_nodes_active()
        n = self.new_instance()
        name = "%s.instance.%d" % (JOB, n)
        self.a.expect("control/deploy", lambda m: m.get("instance_number") == n)
        self.a.instances.add(name)
        # ready with a status other than RUNNING is not readiness
        self.a.status(JOB, n, "CREATING", "booting", ready=True, ready_ms=5)
        inst = wait_until("CREATING at the root", lambda: (lambda i: i if i and i["status"] == "CREATING" else None)(
            self.native_instance(n)))
        self.assertIs(inst["ready"], False, inst)
        here = self.cluster_instance(name)
        self.assertEqual((here["status"], here["ready"]), ("CREATING", False), here)
        self.assertNotIn("ready_ms", here)
        # RUNNING is not ready yet
        self.a.status(JOB, n, "RUNNING", ready=False)
        inst = wait_until("RUNNING at the root", lambda: (lambda i: i if i and i["status"] == "RUNNING" else None)(
            self.native_instance(n)))
        self.assertIs(inst["ready"], False, inst)
        self.assertNotIn("ready_ms", inst)
        here = self.cluster_instance(name)
        self.assertEqual((here["status"], here["ready"]), ("RUNNING", False), here)
        self.assertNotIn("ready_ms", here)
        # ready, with the node's measure
        self.a.status(JOB, n, "RUNNING", ready=True, ready_ms=850)
        inst = wait_until("ready at the root", lambda: (lambda i: i if i and i["ready"] is True else None)(
            self.native_instance(n)))
        self.assertEqual(inst["node_ready_ms"], 850, inst)
        self.assertIsInstance(inst["ready_ms"], int)  # the root's own measure from the request
        here = self.cluster_instance(name)
        self.assertEqual((here["status"], here["ready"], here["ready_ms"]), ("RUNNING", True, 850), here)
        self.assertEqual(self.metric("oakuk_cluster_instances_ready"), 1)
        # malformed readiness is refused, naming the field, and changes nothing
        rejected = self.metric("oakuk_cluster_mqtt_rejected_total")
        bad = [{"ready": "yes"}, {"ready": 1}, {"ready": True, "ready_ms": -1}, {"ready": True, "ready_ms": 2.5},
               {"ready": True, "ready_ms": "12"}, {"ready": False, "ready_ms": -3}]
        for extra in bad:
            event = dict({"job_name": JOB, "instance": n, "status": "FAILED", "status_detail": "must not apply"},
                         **extra)
            self.assertEqual(self.a.publish("job", event), 0)
        wait_until("rejections counted", lambda: self.metric("oakuk_cluster_mqtt_rejected_total") >=
                   rejected + len(bad))
        log = self.cluster.text()
        self.assertIn("ready: not a boolean", log)
        self.assertIn("ready_ms: not a non-negative integer", log)
        time.sleep(1)
        here = self.cluster_instance(name)
        self.assertEqual((here["status"], here["ready"], here["ready_ms"]), ("RUNNING", True, 850), here)
        usage = ("cpu", "memory", "cpu_percent", "memory_percent", "cpu_history", "memory_history")  # each report
        self.assertEqual({k: v for k, v in self.native_instance(n).items() if k not in usage},
                         {k: v for k, v in inst.items() if k not in usage})
        # leaving RUNNING resets readiness, here and at the root (DEAD: the cluster only reports it; a
        # FAILED would move the instance, docs/reconcile.md)
        self.a.status(JOB, n, "DEAD", "exit 1")
        gone = wait_until("DEAD at the root", lambda: (lambda i: i if i and i["status"] == "DEAD" else None)(
            self.native_instance(n)))
        self.assertIs(gone["ready"], False, gone)
        self.assertNotIn("ready_ms", gone)
        self.assertNotIn("node_ready_ms", gone)
        here = self.cluster_instance(name)
        self.assertEqual((here["status"], here["ready"]), ("DEAD", False), here)
        self.assertNotIn("ready_ms", here)
        self.assertEqual(self.metric("oakuk_cluster_instances_ready"), 0)
        r = requests.delete(self.root_url + "/api/service/%s/instance/%d" % (self.sid, n), headers=self.h, timeout=5)
        self.assertEqual(r.status_code, 200, r.text)
        self.a.expect("control/delete", lambda m: m.get("instance_number") == n)
        self.a.instances.discard(name)
        wait_until("instance gone at the root", lambda: self.native_instance(n) is None)

    def test_05_malformed_input_rejected(self):
        self.wait_nodes_active()
        n = self.new_instance()
        self.a.expect("control/deploy", lambda m: m.get("instance_number") == n)
        self.a.instances.add("%s.instance.%d" % (JOB, n))
        self.a.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING")
        state = self.cluster_instances()
        rejected = self.metric("oakuk_cluster_mqtt_rejected_total")
        bad = [("information", "{not json"), ("information", json.dumps({"id": "node-a"})),
               ("information", json.dumps(dict(report("node-a", 4000), id="node-b"))),
               ("job", "[1,2"), ("job", json.dumps({"job_name": JOB, "instance": n, "status": "EXPLODED"})),
               ("job", json.dumps({"job_name": JOB, "instance": "zero", "status": "FAILED"})),
               ("job", json.dumps(["FAILED"]))]
        for leaf, payload in bad:
            self.assertEqual(self.a.publish(leaf, payload), 0)
        wait_until("rejections counted", lambda: self.metric("oakuk_cluster_mqtt_rejected_total") >= rejected + len(bad))
        log = self.cluster.text()
        self.assertIn("event=mqtt-reject node=node-a topic=nodes/node-a/job", log)
        self.assertIn("status: not an instance status name", log)
        self.assertIn("id: report is for node 'node-b', not the topic's node", log)
        token = self.cluster_token()
        auth = {"Authorization": "Bearer " + token}
        url = self.cluster_url + "/api/service/%s/%d" % (self.sid, 99)
        cases = [
            (requests.post, url, {"data": b"{broken", "headers": auth}, 400),
            (requests.post, url, {"data": b"[]", "headers": auth}, 400),
            (requests.post, url, {"json": {"job_name": JOB, "virtualization": "vm"}, "headers": auth}, 400),
            (requests.post, url, {"json": {"instance_number": 98}, "headers": auth}, 400),
            (requests.post, url, {"json": {}}, 401),
            (requests.post, url, {"json": {}, "headers": {"Authorization": "Bearer nope"}}, 401),
            (requests.delete, url, {"headers": auth}, 404),
            (requests.post, self.cluster_url + "/api/node/register", {"data": b"{x"}, 400),
            (requests.post, self.cluster_url + "/api/node/register",
             {"json": {"join_token": "wrong", "capabilities": report("node-z", 1)}}, 401),
            (requests.post, self.cluster_url + "/api/node/register",
             {"json": {"join_token": self.node_join_token, "capabilities": dict(report("node-z", 1),
                                                                                architecture="vax")}}, 400),
            (requests.post, self.cluster_url + "/api/node/register",
             {"json": {"join_token": self.node_join_token, "capabilities": report("bad/id", 1)}}, 400),
        ]
        for fn, u, kw, code in cases:
            r = fn(u, timeout=5, **kw)
            self.assertEqual(r.status_code, code, (u, kw, r.text))
            if code >= 400:
                self.assertIn("message", r.json()["error"])
        err = requests.post(self.cluster_url + "/api/node/register", timeout=5, json={
            "join_token": self.node_join_token, "capabilities": dict(report("node-z", 1), architecture="vax")}).json()
        self.assertEqual(err["error"]["path"], "capabilities.architecture")
        time.sleep(1.5)
        self.assertEqual(self.cluster_instances(), state)
        self.assertEqual([x["id"] for x in requests.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()],
                         ["node-a", "node-b"])
        self.assertEqual(self.root_instance(n)["status"], "RUNNING")
        self.__class__.running = n

    def test_06_failed_moves_to_other_node(self):
        """FAILED from a node (a failure its restarts cannot mend, docs/reconcile.md): the instance
        moves to another node at once, and the node it failed on is told to drop its copy."""
        n = self.running
        name = "%s.instance.%d" % (JOB, n)
        before = self.cluster_instance(name)
        self.a.status(JOB, n, "FAILED", "image cannot be fetched")
        rm = self.a.expect("control/delete", lambda m: m.get("instance_number") == n)
        self.assertEqual(rm["generation"], before["node_generation"])
        self.a.instances.discard(name)
        dep = self.b.expect("control/deploy", lambda m: m.get("instance_number") == n)
        self.assertEqual(dep["generation"], before["node_generation"] + 1)
        self.wait_root_status(n, "NODE_SCHEDULED", "node-b")
        self.assertIn("FAILED on node node-a", self.root_instance(n)["status_detail"])
        self.assertIn("node-a", self.cluster_instance(name)["avoid"])
        self.b.instances.add(name)
        self.b.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", "node-b")

    def test_07_silent_node_rescheduled(self):
        self.wait_nodes_active()
        n = self.new_instance()
        self.a.expect("control/deploy", lambda m: m.get("instance_number") == n)
        self.a.instances.add("%s.instance.%d" % (JOB, n))
        self.a.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", "node-a")
        self.a.silence()
        # the service's reschedule_after_s (3 s, as node_timeout here): then a copy on B
        self.b.expect("control/deploy", lambda m: m.get("instance_number") == n, timeout=15)
        self.wait_root_status(n, "NODE_SCHEDULED", "node-b")
        self.b.instances.add("%s.instance.%d" % (JOB, n))
        self.b.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", "node-b")
        # A comes back still running it, and the moved copy RUNs: A is told to drop it.
        self.a.resume()
        self.a.expect("control/delete", lambda m: m.get("instance_number") == n)
        self.a.instances.discard("%s.instance.%d" % (JOB, n))
        # the old copy is forgotten once A no longer reports it
        wait_until("old copy gone", lambda: self.cluster_instance("%s.instance.%d" % (JOB, n))["old_copies"] == [])
        self.__class__.moved = n

    def test_08_cluster_restart_keeps_state(self):
        # The nodes' last reports are saved every 10 s, not at each report (one synced commit per
        # report was the cluster's main cost at scale), and at a stop: the restarted cluster starts
        # from them (docs/cluster.md).
        def memory_at_root():
            return requests.get(self.root_url + "/api/v1/clusters/" + self.cid, headers=self.h,
                                timeout=5).json()["cumulative_memory_in_mb"]
        self.b.memory = 2001
        wait_until("node-b's report saved on the cluster's timer", lambda: self.stored_memory("node-b") == 2001,
                   timeout=25)
        self.b.memory = 2002
        wait_until("node-b's new report at the cluster", lambda: memory_at_root() == 6002)
        before = self.cluster_instances()
        self.cluster.stop()
        self.assertEqual(self.stored_memory("node-b"), 2002, "the last report is saved at a stop")
        self.b.memory = 2000
        registered = self.cluster.text().count("registered again with the root (credential)")
        self.__class__.cluster = Daemon(self.cluster_args, self.cluster.log_path, env=self.env)
        self.cluster.start()
        wait_until("cluster back", lambda: requests.get(self.cluster_url + "/healthz", timeout=5).json()[
            "mqtt_connected"])
        # it registers again with its credential (its join token was for one use)
        wait_until("registered again", lambda: self.cluster.text().count(
            "registered again with the root (credential)") == registered + 1)
        self.assertEqual(self.cluster_instances(), before)
        self.wait_nodes_active()
        n = self.moved
        self.b.status(JOB, n, "DEAD", "after restart")  # DEAD: reported only (FAILED would move it)
        self.wait_root_status(n, "DEAD", "node-b")
        self.b.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", "node-b")

    def test_09_broker_killed_restarted_and_delivers(self):
        self.wait_nodes_active()
        pid = self.broker_pid()
        restarts = self.metric("oakuk_cluster_broker_restarts_total")
        open(self.gate, "w").close()
        os.kill(pid, signal.SIGKILL)
        wait_until("cluster sees the broker gone", lambda: self.metric("oakuk_cluster_mqtt_connected") == 0)
        n = self.new_instance()
        placed = wait_until("deploy accepted while the broker is down", lambda: next(
            (i for i in self.cluster_instances() if i["instance"] == n and i["status"] == "NODE_SCHEDULED"), None))
        # The scheduler picks the node (most free memory after reservations), not the test.
        node = {"node-a": self.a, "node-b": self.b}[placed["node"]]
        self.assertGreaterEqual(self.metric("oakuk_cluster_deliveries_pending"), 1)
        # Longer than node_timeout (3 s): no node can report through a broker that is down, and
        # that must not count as the nodes falling silent.
        time.sleep(5)
        running = self.cluster_instances()
        self.assertTrue(any(i["instance"] == self.moved and i["status"] == "RUNNING" for i in running), running)
        os.unlink(self.gate)
        wait_until("broker restarted", lambda: self.metric("oakuk_cluster_broker_restarts_total") == restarts + 1)
        wait_until("cluster reconnected", lambda: self.metric("oakuk_cluster_mqtt_connected") == 1)
        dep = node.expect("control/deploy", lambda m: m.get("instance_number") == n, timeout=30)
        self.assertEqual(dep["job_name"], JOB)
        node.instances.add("%s.instance.%d" % (JOB, n))
        node.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", placed["node"])
        self.assertEqual(self.metric("oakuk_cluster_deliveries_pending"), 0)
        # What ran before the outage still runs where it ran, and its node was told nothing.
        self.wait_root_status(self.moved, "RUNNING", "node-b")
        self.assertEqual(self.b.got("control/delete", lambda m: m.get("instance_number") == self.moved), [])

    def test_10_silent_node_restart_never(self):
        """restart: never: an instance whose node falls silent stays there (silence is not death, and
        a copy elsewhere would be a restart), says so, and is re-adopted when the node is back."""
        self.wait_nodes_active()
        n = self.new_instance(self.sid_once)
        placed = wait_until("once placed", lambda: next(
            (i for i in self.cluster_instances() if i["name"] == "%s.instance.%d" % (JOB_ONCE, n)
             and i["status"] == "NODE_SCHEDULED"), None))
        node, other = (self.a, self.b) if placed["node"] == "node-a" else (self.b, self.a)
        node.expect("control/deploy", lambda m: m.get("job_name") == JOB_ONCE and m.get("instance_number") == n)
        name = "%s.instance.%d" % (JOB_ONCE, n)
        node.instances.add(name)
        node.status(JOB_ONCE, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", placed["node"], sid=self.sid_once)
        node.silence()
        kept = wait_until("silence noted", lambda: (lambda i: i if "restart policy is never" in i.get(
            "status_detail", "") else None)(self.root_instance(n, self.sid_once)), timeout=15)
        self.assertEqual((kept["status"], kept["node_id"]), ("RUNNING", placed["node"]), kept)
        time.sleep(4)  # past node_timeout and the default reschedule_after_s would not matter: never moves
        self.assertEqual(self.root_instance(n, self.sid_once)["status"], "RUNNING")
        self.assertEqual(other.got("control/deploy", lambda m: m.get("job_name") == JOB_ONCE), [])
        # it comes back still running it: re-adopted, nothing is deleted or moved
        node.resume()
        back = wait_until("re-adopted", lambda: (lambda i: i if i["status_detail"] == "" else None)(
            self.root_instance(n, self.sid_once)))
        self.assertEqual((back["status"], back["node_id"]), ("RUNNING", placed["node"]), back)
        time.sleep(2)
        self.assertEqual(node.got("control/delete", lambda m: m.get("job_name") == JOB_ONCE), [])
        self.assertEqual(other.got("control/deploy", lambda m: m.get("job_name") == JOB_ONCE), [])

    def test_11_cluster_db_of_an_older_version(self):
        """A cluster.db made before readiness (no ready columns) is migrated on start, twice
        without harm, and its rows survive."""
        state = tempfile.mkdtemp(dir=self.tmp, prefix="old-state-")
        db = sqlite3.connect(os.path.join(state, "cluster.db"))
        db.executescript(OLD_TABLES)
        db.execute("INSERT INTO instances (name, job_id, job_name, instance, node, ip, status, job, restart)"
                   " VALUES ('old.a.b.c.instance.0', 'j1', 'old.a.b.c', 0, 'node-x', '10.18.0.2', 'RUNNING', '{}', 1)")
        db.execute("INSERT INTO status_outbox (job_id, instance, status, detail, node)"
                   " VALUES ('j1', 0, 'RUNNING', '', 'node-x')")
        db.commit()
        db.close()
        # a cluster that never registered has no CA to name in a node join token: refused, after the
        # migration (which needs nothing from the root)
        p = subprocess.run([CLUSTER_BIN, "--state-dir", state, "--new-join-token"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
        self.assertIn("has not registered with the root yet", p.stderr)
        # the four ready columns (version 1), then version 1 -> 2 (generations, docs/reconcile.md), 2 -> 3
        self.assertEqual(p.stderr.count("event=migrate"), 6, p.stderr)
        # the daemon itself on the migrated database (its second start: nothing to add)
        http_port, mqtt_port = ports(2)
        log = os.path.join(self.tmp, "old-cluster.log")
        d = Daemon([CLUSTER_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % http_port, "--root-url",
                    "https://127.0.0.1:1", "--name", "old", "--mqtt-port", str(mqtt_port), "--mosquitto", MOSQUITTO],
                   log)
        d.start()
        try:
            rows = wait_until("the old cluster's instances", lambda: get_unverified(
                "https://127.0.0.1:%d/api/v1/instances" % http_port))
        finally:
            d.stop()
        self.assertEqual([(i["name"], i["status"], i["ready"], i["generation"], i["node_generation"]) for i in rows],
                         [("old.a.b.c.instance.0", "RUNNING", False, 0, 0)])
        self.assertNotIn("ready_ms", rows[0])
        self.assertNotIn("event=migrate", d.text())
        db = sqlite3.connect(os.path.join(state, "cluster.db"))
        try:
            for table in ("instances", "status_outbox"):
                cols = {r[1] for r in db.execute("PRAGMA table_info(%s)" % table)}
                self.assertLessEqual({"ready", "ready_ms"}, cols, table)
            self.assertEqual(db.execute("SELECT job_id, status, ready, ready_ms FROM status_outbox").fetchall(),
                             [("j1", "RUNNING", 0, None)])
        finally:
            db.close()

    def test_12_no_secret_on_a_command_line_or_in_the_log(self):
        """Every process's command line was sampled since before the root started (registrations,
        re-registrations, removals and broker restarts happened meanwhile): no password or token
        was ever on one; the cluster never ran mosquitto_passwd; its log holds none of them."""
        seen = self.watch.stop()
        db = sqlite3.connect(os.path.join(self.state, "cluster.db"))
        try:
            kv = dict(db.execute("SELECT key, value FROM kv").fetchall())
        finally:
            db.close()
        with open(os.path.join(self.state, "node-join-token")) as f:
            file_token = f.read().strip()
        secrets_ = {"admin password": self.admin_password, "cluster join token": self.join,
                    "node join token": self.node_join_token, "first node join token": file_token,
                    "cluster credential": kv["token"], "broker password": kv["mqtt_password"],
                    "node-a password": self.a.creds["mqtt_password"], "node-b password": self.b.creds["mqtt_password"]}
        # the secret part of a token alone must not show either
        secrets_.update({what + " (secret)": value.rsplit(".", 1)[1] for what, value in list(secrets_.items())
                         if value.count(".") >= 2})
        self.assertTrue(any(b"mosquitto" in c and b"-c" in c for c in seen), "the sampler never saw the broker")
        for what, value in secrets_.items():
            self.assertGreaterEqual(len(value), 12, what)
            hits = [c.replace(b"\0", b" ").decode(errors="replace") for c in seen if value.encode() in c]
            self.assertEqual(hits, [], "%s on a command line" % what)
        self.assertFalse(os.path.exists(self.passwd_marker), "the cluster ran mosquitto_passwd")
        log = self.cluster.text()
        self.assertNotIn("node join token:", log)
        self.assertIn("node-join-token", log)  # the log says where the first one is
        for what, value in secrets_.items():
            self.assertNotIn(value, log, "%s in the cluster log" % what)
            self.assertNotIn(value, self.root.text(), "%s in the root log" % what)

    def test_13_state_is_private(self):
        modes = {"": 0o700, "pki": 0o700, "mosquitto": 0o700, "pki/cluster.key": 0o600, "pki/ca.crt": 0o600,
                 "pki/cluster.crt": 0o600, "mosquitto/passwd": 0o600, "node-join-token": 0o600, "cluster.db": 0o600}
        self.assertEqual({p: stat.S_IMODE(os.stat(os.path.join(self.state, p)).st_mode) for p in modes}, modes)
        # the password file is mosquitto's own format, one line per login
        with open(os.path.join(self.state, "mosquitto", "passwd")) as f:
            users = sorted(line.split(":", 1)[0] for line in f.read().splitlines())
        self.assertEqual(users, ["node-a", "node-b", "oakuk-cluster"])
        with open(os.path.join(self.state, "mosquitto", "mosquitto.conf")) as f:
            conf = f.read().splitlines()
        listener = conf.index(next(l for l in conf if l.startswith("listener ")))
        self.assertLess(listener, conf.index("use_username_as_clientid true"))
        self.assertIn("tls_version tlsv1.2", conf[listener:])
        self.assertIn("max_packet_size 1048576", conf)

    def test_14_metrics_in_prometheus_text(self):
        """/metrics parses as Prometheus text (HELP and TYPE before every family) with the build, the
        old names (oakuk_cluster_mqtt_rejected_total with and without its label) and request durations
        by method and route pattern: the root's deploys and the nodes' registrations."""
        version = requests.get(self.cluster_url + "/healthz", timeout=5).json()["version"]
        # counted since test_08's restart: requests of this test's own, and the root's deploys since
        self.assertEqual(requests.post(self.cluster_url + "/api/node/register", json={}, timeout=5).status_code, 401)
        self.assertEqual(requests.get(self.cluster_url + "/no/such/route", timeout=5).status_code, 404)
        text = requests.get(self.cluster_url + "/metrics", timeout=5).text
        m = edgelib.parse_metrics(text)
        for family, fam in m.items():
            self.assertTrue(fam["help"], family)
        self.assertEqual(edgelib.metric_value(m, "oakuk_build_info", daemon="oakuk-cluster", version=version), 1)
        edgelib.check_process_metrics(self, m, self.cluster.proc.pid)
        self.assertEqual(m["oakuk_cluster_mqtt_rejected_total"]["type"], "counter")
        # both series, the unlabelled one (malformed payloads) and reason="rate" (counted since test_08's restart)
        self.assertIsNotNone(edgelib.metric_value(m, "oakuk_cluster_mqtt_rejected_total"))
        self.assertIsNotNone(edgelib.metric_value(m, "oakuk_cluster_mqtt_rejected_total", reason="rate"))
        self.assertEqual(edgelib.metric_value(m, "oakuk_cluster_registered"), 1)
        hist = "oakuk_cluster_http_request_duration_seconds"
        self.assertEqual(m[hist]["type"], "histogram")
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="POST", route="/api/service/*/*"), 1)
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="POST",
                                                     route="/api/node/register"), 1)
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="", route="none"), 1)
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="GET", route="/healthz"), 1)
        self.assertNotIn(self.sid, text)
        # MQTT handling by topic (its last segment): the nodes' reports since test_08's restart
        mq = "oakuk_cluster_mqtt_message_duration_seconds"
        self.assertEqual(m[mq]["type"], "histogram")
        wait_until("a node report in the MQTT histogram", lambda: (edgelib.metric_value(edgelib.parse_metrics(
            requests.get(self.cluster_url + "/metrics", timeout=5).text), mq + "_count", topic="information")
            or 0) >= 1)

    def test_15_version_and_unknown_config_refused(self):
        """--version prints the name and version; a config file with a key or group the cluster does
        not know stops it at start (exit 1) naming the file, the group and the key."""
        p = subprocess.run([CLUSTER_BIN, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^oakuk-cluster \d+\.\d+\.\d+\n$")
        conf = os.path.join(self.tmp, "bad-cluster.conf")
        state = os.path.join(self.tmp, "refused-state")
        for text, want in [("[cluster]\nroot_url = %s\nlistn = 127.0.0.1:1\n" % self.root_url,
                            "config %s: [cluster] listn: unknown key (known keys: state_dir, listen, " % conf),
                           ("[cluster]\nroot_url = %s\n[node]\nlisten = 127.0.0.1:1\n" % self.root_url,
                            "config %s: unknown group [node] (the only group is [cluster])" % conf)]:
            with self.subTest(want=want):
                with open(conf, "w") as f:
                    f.write(text)
                p = subprocess.run([CLUSTER_BIN, "--config", conf, "--state-dir", state], capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(want, p.stderr)
                self.assertFalse(os.path.exists(state), "the cluster started before refusing its config")


class FakeRoot:
    """Plays oakuk-root for one cluster, over HTTPS with its own CA (FAKE_CA, which the join token
    names) unless insecure: registers it (signing its certificate request for cert_days[k] days at
    the k-th registration, the last entry for any later one), and keeps every registration, aggregate
    and status report it sends. Deploys and deletes are the test's own HTTP calls to the cluster (as
    the root makes them, docs/reconcile.md), so these tests do not depend on what the real root
    decides."""

    def __init__(self, tmp, insecure=False, cert_days=(365,), hold=False):
        self.port = ports(1)[0]
        self.insecure = insecure
        self.url = "%s://127.0.0.1:%d" % ("http" if insecure else "https", self.port)
        self.credential = "oakukc.c1." + secrets.token_hex(24)
        self.join_token = ("" if insecure else "oakuk1.%s." % FAKE_CA.fingerprint) + secrets.token_hex(24)
        self.cert_days = list(cert_days)
        self.held = threading.Event()
        if not hold:
            self.held.set()
        self.registrations = []  # {"bearer": "join token" | "credential" | other, "body", "code", "names"}
        self.statuses, self.aggregates = [], []
        root = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                code, reply = 200, {}
                bearer = self.headers.get("Authorization", "")[len("Bearer "):]
                if self.path == "/api/v1/clusters/register":
                    code, reply = root.register(bearer, body)
                elif bearer != root.credential:
                    code = 401
                elif self.path == "/api/information/c1":
                    root.aggregates.append(body)
                elif self.path == "/api/v1/clusters/c1/status":
                    root.statuses.extend(body)
                else:
                    code = 404
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if not insecure:
            cert, key = FAKE_CA.issue("fake root", ["127.0.0.1", "localhost"])
            d = tempfile.mkdtemp(dir=tmp, prefix="fake-root-")
            write_secret(os.path.join(d, "server.pem"), cert + FAKE_CA.pem)
            write_secret(os.path.join(d, "server.key"), key)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def register(self, bearer, body):
        entry = {"bearer": {self.join_token: "join token", self.credential: "credential"}.get(bearer, bearer),
                 "body": body}
        self.registrations.append(entry)
        registered = any(e["code"] == 201 for e in self.registrations[:-1])
        if not self.held.is_set():
            entry["code"] = 503
        elif entry["bearer"] == "credential" or (entry["bearer"] == "join token" and not registered):
            entry["code"] = 201
        else:
            entry["code"] = 409 if entry["bearer"] == "join token" else 401
        if entry["code"] != 201:
            return entry["code"], {"error": {"code": "refused", "message": "refused", "path": ""}}
        reply = {"id": "c1", "token": self.credential, "subnet": "10.18.0.0/20"}
        if not self.insecure:
            k = sum(1 for e in self.registrations if e["code"] == 201) - 1
            days = self.cert_days[min(k, len(self.cert_days) - 1)]
            reply["certificate"], entry["names"] = FAKE_CA.sign_csr(body["csr"], "c1", days)
            reply["ca"] = FAKE_CA.pem
        return 201, reply

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def job(name, memory=100, **extra):
    """A job as the root sends it to a cluster: the service document, every variant."""
    j = {"microserviceID": "", "microservice_name": name, "microservice_namespace": "test", "app_name": "rec",
         "app_ns": "test", "job_name": "rec.test.%s.test" % name, "virtualization": "container", "cmd": [],
         "memory": memory, "vcpus": 1, "code": "docker.io/library/nginx:latest", "arch": ["amd64"],
         "restart": "on-failure"}
    j.update(extra)
    return j


class Site:
    """One oakuk-cluster with its own mosquitto, registered with a FakeRoot; nodes are FakeNodes.
    root: FakeRoot keyword arguments; args: more arguments for the cluster."""

    def __init__(self, tmp, name, node_timeout=2, config=None, root=None, args=(), wait=True):
        self.tmp, self.name = tmp, name
        self.root = FakeRoot(tmp, **(root or {}))
        http_port, self.mqtt_port = ports(2)
        scheme = "http" if self.root.insecure else "https"
        self.cluster_url = "%s://127.0.0.1:%d" % (scheme, http_port)
        self.state = os.path.join(tmp, name)
        self.ca_file = FAKE_CA_FILE
        join_file = write_secret(os.path.join(tmp, name + "-join-token"), self.root.join_token)
        self.args = [CLUSTER_BIN, "--state-dir", self.state, "--listen", "127.0.0.1:%d" % http_port,
                     "--root-url", self.root.url, "--name", name, "--mqtt-port", str(self.mqtt_port),
                     "--mosquitto", MOSQUITTO, "--node-timeout", str(node_timeout), "--aggregate-interval", "1",
                     "--join-token", "@" + join_file] + list(args)
        if config is not None:
            path = os.path.join(tmp, name + ".conf")
            with open(path, "w") as f:
                f.write(config)
            self.args += ["--config", path]
        self.nodes = []
        self.cluster = Daemon(self.args, os.path.join(tmp, name + ".log"))
        self.cluster.start()
        self.auth = {"Authorization": "Bearer " + self.root.credential}
        if wait:
            self.wait_ready()

    def wait_ready(self):
        """Registered (so serving the certificate the root signed) and connected to its broker."""
        try:
            wait_until("cluster %s registered and connected" % self.name, lambda: (
                lambda j: j["registered"] and j["mqtt_connected"])(requests.get(self.cluster_url + "/healthz",
                                                                                 timeout=5).json()))
        except AssertionError as err:
            raise AssertionError("%s\n--- cluster log:\n%s" % (err, self.cluster.text()[-3000:])) from None
        self.node_join_token = new_node_join_token(CLUSTER_BIN, self.state,
                                                   extra=["--insecure"] if self.root.insecure else [])

    def restart(self):
        self.cluster.stop()
        self.cluster = Daemon(self.args, self.cluster.log_path)
        self.cluster.start()

    def node(self, node_id, memory, **kw):
        """A FakeNode, once the cluster has its first report (it can be placed on)."""
        n = FakeNode(self, node_id, memory, **kw)
        n.listen()
        self.nodes.append(n)
        wait_until("%s reported" % node_id, lambda: self.nodes_view()[node_id]["reachable"])
        return n

    def close(self):
        for n in self.nodes:
            n.close()
        self.cluster.stop()
        self.root.close()

    def metric(self, name, labels=""):
        text = requests.get(self.cluster_url + "/metrics", timeout=5).text
        return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + labels + " ")))

    def deploy(self, body, n, generation=None, job_id=None):
        body = dict(body, instance_number=n)
        if generation is not None:
            body["generation"] = generation
        job_id = job_id or "svc-" + body["microservice_name"]
        return requests.post(self.cluster_url + "/api/service/%s/%d" % (job_id, n),
                             json=body, headers=self.auth, timeout=10)

    def delete(self, job_id, n, generation=None):
        q = "" if generation is None else "?generation=%s" % generation
        return requests.delete(self.cluster_url + "/api/service/%s/%d%s" % (job_id, n, q), headers=self.auth,
                               timeout=10)

    def instance(self, name):
        return next((i for i in requests.get(self.cluster_url + "/api/v1/instances", timeout=5).json()
                     if i["name"] == name), None)

    def nodes_view(self):
        return {n["id"]: n for n in requests.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()}

    def statuses(self, job_id, n):
        return [e for e in list(self.root.statuses) if e["job_id"] == job_id and e["instance"] == n]

    def wait_status(self, job_id, n, status, node=None, generation=None, detail="", timeout=20):
        """The latest status report about job_id/n with status (or one of a tuple of them), and
        node, generation and a detail containing detail when given."""
        statuses = status if isinstance(status, tuple) else (status,)
        return wait_until("%s/%d %s at the root" % (job_id, n, status), lambda: next(
            (e for e in reversed(self.statuses(job_id, n)) if e["status"] in statuses and
             (node is None or e.get("node") == node) and (generation is None or e["generation"] == generation)
             and detail in e["status_detail"]), None), timeout=timeout)


def use_fake_ca(tmp):
    """Writes FAKE_CA's certificate and makes requests trust it (every site's certificate chains to it)."""
    global FAKE_CA_FILE
    FAKE_CA_FILE = FAKE_CA.write(os.path.join(tmp, "fake-ca.crt"))
    os.environ["REQUESTS_CA_BUNDLE"] = FAKE_CA_FILE


UNIKERNEL_CAPS = {"accel": "kvm", "qemu_version": "7.2.0", "emulated_archs": []}


class ReconcileTest(unittest.TestCase):
    """docs/reconcile.md at the cluster: generations, partitions that are not deaths, re-adoption,
    the variant chosen per node, FAILED and its expiring avoid entry, drain, removal; each test with
    its own cluster (and mosquitto) registered with a fake root."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-reconcile-test-")
        use_fake_ca(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("KEEP_TMP") is None:
            subprocess.run(["rm", "-rf", cls.tmp])

    def site(self, name, **kw):
        s = Site(self.tmp, name, **kw)
        self.addCleanup(s.close)
        return s

    def placed(self, site, node, n, name, generation=None):
        """node acknowledges the deploy of instance n: it holds it and reports it RUNNING."""
        dep = node.expect("control/deploy", lambda m: m.get("instance_number") == n and m.get("job_name") == name and
                          (generation is None or m.get("generation") == generation))
        inst = "%s.instance.%d" % (name, n)
        node.instances.add(inst)
        node.generations[inst] = dep["generation"]
        node.status(name, n, "RUNNING", generation=dep["generation"])
        return dep

    # ---- the tests ----
    def test_01_cluster_db_of_the_current_version(self):
        """A cluster.db of the schema before generations (version 1, with the ready columns) is
        upgraded on start to version 2 and keeps every row; a second start changes nothing."""
        state = os.path.join(self.tmp, "v1-state")
        os.makedirs(state)
        db = sqlite3.connect(os.path.join(state, "cluster.db"))
        db.executescript(CURRENT_TABLES)
        placement = {"virtualization": "container", "arch": "amd64", "code": "docker.io/library/nginx:latest"}
        stored = dict(job("web"), placement=placement, reschedule_after_s=7, instance_number=0)
        report_x = report("node-x", 1000, ["rec.test.web.test.instance.0"])
        db.executescript("""
            INSERT INTO kv VALUES ('cluster_id', 'c9'), ('token', 't9'), ('subnet', '10.18.0.0/20');
            INSERT INTO join_tokens VALUES ('abc', 1);
            INSERT INTO explanations VALUES ('svc-web', 'rec.test.web.test', 0, '["node node-x: chosen"]');
            INSERT INTO deliveries (node, instance, topic, payload) VALUES ('node-x', 'gone.a.b.c.instance.1',
              'nodes/node-x/control/delete', '{"job_name": "gone.a.b.c", "instance_number": 1}');""")
        db.execute("INSERT INTO nodes VALUES ('node-x', 'hash', 0, '10.18.0.0/24', '127.0.0.1', ?, 5)",
                   (json.dumps(report_x),))
        db.execute("INSERT INTO instances (name, job_id, job_name, instance, node, ip, status, detail, job, restart,"
                   " failures, avoid, ready, ready_ms) VALUES ('rec.test.web.test.instance.0', 'svc-web',"
                   " 'rec.test.web.test', 0, 'node-x', '10.18.0.2', 'RUNNING', '', ?, 1, 1, '[\"node-y\"]', 1, 420)",
                   (json.dumps(stored),))
        db.execute("INSERT INTO status_outbox (job_id, instance, status, detail, node, ready, ready_ms)"
                   " VALUES ('svc-web', 0, 'RUNNING', '', 'node-x', 1, 420)")
        db.commit()
        db.close()
        before_ms = time.time() * 1000
        # the root's CA, as a registration stores it: node join tokens name it
        os.makedirs(os.path.join(state, "pki"))
        FAKE_CA.write(os.path.join(state, "pki", "ca.crt"))
        p = subprocess.run([CLUSTER_BIN, "--state-dir", state, "--new-join-token"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.strip(), r"^oakuk1\.%s\.[0-9a-f]{48}$" % FAKE_CA.fingerprint)
        self.assertNotIn(p.stdout.strip(), p.stderr)
        self.assertEqual(p.stderr.count("event=migrate"), 2, p.stderr)
        self.assertIn("from=1 to=2", p.stderr)
        self.assertIn("from=2 to=3 join_tokens_dropped=1", p.stderr)
        db = sqlite3.connect(os.path.join(state, "cluster.db"))
        try:
            self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 3)
            cols = {r[1] for r in db.execute("PRAGMA table_info(instances)")}
            self.assertLessEqual({"generation", "node_generation", "placement", "reschedule_after_s", "ready",
                                  "ready_ms"}, cols)
            self.assertFalse({"avoid", "failures"} & cols, cols)
            row = db.execute("SELECT node, ip, status, generation, node_generation, placement, reschedule_after_s,"
                             " ready, ready_ms, job FROM instances").fetchall()
            self.assertEqual(len(row), 1)
            node, ip, status, gen, node_gen, pl, after, ready, ready_ms, job_text = row[0]
            self.assertEqual((node, ip, status, gen, node_gen, json.loads(pl), after, ready, ready_ms),
                             ("node-x", "10.18.0.2", "RUNNING", 0, 0, placement, 7, 1, 420))
            self.assertNotIn("placement", json.loads(job_text))
            self.assertEqual(json.loads(job_text)["code"], stored["code"])
            avoid = db.execute("SELECT name, node, until_ms FROM avoid").fetchall()
            self.assertEqual([(a[0], a[1]) for a in avoid], [("rec.test.web.test.instance.0", "node-y")])
            self.assertGreater(avoid[0][2], before_ms)  # entries without expiry now expire
            self.assertEqual(db.execute("SELECT job_id, status, ready, ready_ms, generation FROM status_outbox")
                             .fetchall(), [("svc-web", "RUNNING", 1, 420, 0)])
            self.assertEqual(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0], 1)
            self.assertEqual(db.execute("SELECT id, drained, subnet FROM nodes").fetchall(),
                             [("node-x", 0, "10.18.0.0/24")])
            # the token of before (it never expired) is gone; the new one has its expiry and uses
            tokens = db.execute("SELECT hash, expires_at, uses FROM join_tokens").fetchall()
            secret = p.stdout.strip().rsplit(".", 1)[1]
            self.assertEqual([(t[0], t[2]) for t in tokens], [(hashlib.sha256(secret.encode()).hexdigest(), 1)])
            self.assertAlmostEqual(tokens[0][1], before_ms / 1000 + 3600, delta=60)
            self.assertEqual(db.execute("SELECT value FROM kv WHERE key = 'token'").fetchone()[0], "t9")
            self.assertEqual(db.execute("SELECT COUNT(*) FROM old_copies").fetchone()[0], 0)
        finally:
            db.close()
        http_port, mqtt_port = ports(2)
        d = Daemon([CLUSTER_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % http_port, "--root-url",
                    "https://127.0.0.1:1", "--name", "v1", "--mqtt-port", str(mqtt_port), "--mosquitto", MOSQUITTO],
                   os.path.join(self.tmp, "v1-cluster.log"))
        d.start()
        try:
            # no certificate from the root yet: the bootstrap one, which nothing trusts
            url = "https://127.0.0.1:%d" % http_port
            rows = wait_until("the upgraded cluster's instances", lambda: get_unverified(url + "/api/v1/instances"))
            nodes = get_unverified(url + "/api/v1/nodes")
        finally:
            d.stop()
        i = rows[0]
        self.assertEqual((i["name"], i["node"], i["status"], i["ready"], i["ready_ms"], i["generation"],
                          i["node_generation"], i["placement"], i["avoid"]),
                         ("rec.test.web.test.instance.0", "node-x", "RUNNING", True, 420, 0, 0, placement, ["node-y"]))
        self.assertEqual([(n["id"], n["drained"]) for n in nodes], [("node-x", False)])
        self.assertNotIn("event=migrate", d.text())

    def test_02_generations(self):
        """The root's generation on deploy, status reports, aggregates and delete; the node generation
        on deploy and delete; a deploy of the same or an older generation changes nothing, a newer
        one of a running instance is adopted where it runs; a status of another generation and a
        delete of an older one are ignored."""
        site = self.site("gen")
        a = site.node("node-a", 4000)
        r = site.deploy(job("web"), 0, generation=5)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual((r.json()["status"], r.json()["node"], r.json()["generation"]),
                         ("NODE_SCHEDULED", "node-a", 5), r.text)
        dep = self.placed(site, a, 0, "rec.test.web.test")
        self.assertEqual(dep["generation"], 1)
        self.assertEqual(dep["placement"]["virtualization"], "container")
        self.assertEqual(dep["instance_name"], "rec.test.web.test.instance.0")
        self.assertEqual(site.wait_status("svc-web", 0, "NODE_SCHEDULED")["generation"], 5)
        self.assertEqual(site.wait_status("svc-web", 0, "RUNNING", "node-a")["generation"], 5)
        name = "rec.test.web.test.instance.0"
        # a status of a generation the cluster did not place there is ignored
        a.status("rec.test.web.test", 0, "FAILED", "from another generation", generation=7)
        wait_until("ignored", lambda: "status event of another generation" in site.cluster.text())
        self.assertEqual(site.instance(name)["status"], "RUNNING")
        # the same or an older generation: 200, nothing changes, nothing is sent
        for g in (5, 4):
            r = site.deploy(job("web"), 0, generation=g)
            self.assertEqual((r.status_code, r.json()["generation"], r.json()["status"]), (200, 5, "RUNNING"), r.text)
            self.assertEqual(r.json()["message"], "instance already deployed here")
        # a newer one of a running instance: adopted where it runs, reported with the new generation
        r = site.deploy(job("web"), 0, generation=6)
        self.assertEqual((r.status_code, r.json()["generation"], r.json()["node"]), (200, 6, "node-a"), r.text)
        site.wait_status("svc-web", 0, "RUNNING", "node-a", generation=6)
        time.sleep(1)
        self.assertEqual(len(a.got("control/deploy", lambda m: True)), 1)
        self.assertEqual((site.instance(name)["generation"], site.instance(name)["node_generation"]), (6, 1))
        # the aggregate lists every instance, with its generation
        entry = wait_until("instances in the aggregate, with their usage", lambda: next(
            (e for e in site.root.aggregates[-1].get("instances", []) if e["generation"] == 6 and "cpu" in e), None))
        # (with the CPU and memory its node last reported for it: edgelib.report's 1 % and 10 MB)
        self.assertEqual(entry, {"job_id": "svc-web", "instance": 0, "generation": 6, "status": "RUNNING",
                                 "status_detail": "", "node": "node-a", "ready": False, "cpu": 1.0, "memory": 10.0})
        # a delete of an older generation is stale
        r = site.delete("svc-web", 0, generation=5)
        self.assertEqual((r.status_code, r.json()["error"]["code"]), (409, "stale"), r.text)
        self.assertIsNotNone(site.instance(name))
        r = site.delete("svc-web", 0, generation=6)
        self.assertEqual(r.status_code, 200, r.text)
        rm = a.expect("control/delete", lambda m: m.get("instance_number") == 0)
        self.assertEqual((rm["job_name"], rm["generation"]), ("rec.test.web.test", 1))
        self.assertEqual(site.delete("svc-web", 0, generation=6).status_code, 404)
        a.instances.discard(name)
        wait_until("old copy forgotten", lambda: site.metric("oakuk_cluster_old_copies_pending") == 0)

    def test_03_single_node_outage_keeps_the_instance(self):
        """A single-node site whose node is silent for 3x node_timeout (and past the service's
        reschedule_after_s) keeps the instance there (no delete, no FAILED) and re-adopts it when
        the node reports again."""
        site = self.site("single", node_timeout=2)
        a = site.node("node-a", 4000)
        self.assertEqual(site.deploy(job("web", reschedule_after_s=1), 0, generation=1).status_code, 200)
        self.placed(site, a, 0, "rec.test.web.test")
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        name = "rec.test.web.test.instance.0"
        a.silence()
        time.sleep(6.5)
        here = site.instance(name)
        self.assertEqual((here["node"], here["status"]), ("node-a", "RUNNING"), here)
        self.assertIn("node node-a sent no report", here["status_detail"])
        self.assertIn("kept there, no other node can take it", here["status_detail"])
        self.assertEqual(a.got("control/delete", lambda m: True), [])
        self.assertEqual([e["status"] for e in site.statuses("svc-web", 0)
                          if e["status"] not in ("NODE_SCHEDULED", "RUNNING")], [])
        self.assertFalse(site.nodes_view()["node-a"]["active"])
        a.resume()
        back = wait_until("re-adopted", lambda: (lambda i: i if i["status_detail"] == "" else None)(
            site.instance(name)))
        self.assertEqual((back["node"], back["status"], back["node_generation"]), ("node-a", "RUNNING", 1))
        wait_until("the root told", lambda: site.statuses("svc-web", 0)[-1]["status_detail"] == "")
        time.sleep(1)
        self.assertEqual(a.got("control/delete", lambda m: True), [])
        self.assertEqual(len(a.got("control/deploy", lambda m: True)), 1)

    def moved_site(self, name):
        """Two nodes; instance 0 RUNNING on A (the most free), reschedule_after_s 8; A falls silent
        and, after reschedule_after_s, B gets a copy while A's copy waits for its delete."""
        site = self.site(name, node_timeout=3)
        a, b = site.node("node-a", 4000), site.node("node-b", 2000)
        self.assertEqual(site.deploy(job("web", reschedule_after_s=8), 0, generation=1).status_code, 200)
        first = self.placed(site, a, 0, "rec.test.web.test")
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        name = "rec.test.web.test.instance.0"
        t0 = time.time()
        a.silence()
        wait_until("silence noted", lambda: "sent no report" in site.instance(name)["status_detail"], timeout=10)
        self.assertEqual(b.got("control/deploy", lambda m: True), [], "moved before reschedule_after_s")
        dep = b.expect("control/deploy", lambda m: m.get("instance_number") == 0, timeout=20)
        self.assertGreater(time.time() - t0, 6.5, "moved before reschedule_after_s")
        self.assertEqual(dep["generation"], first["generation"] + 1)
        here = site.instance(name)
        self.assertEqual((here["node"], here["status"]), ("node-b", "NODE_SCHEDULED"), here)
        self.assertEqual(here["old_copies"], [{"node": "node-a", "generation": first["generation"],
                                               "reason": "moved", "delete": "pending"}])
        self.assertEqual(site.metric("oakuk_cluster_old_copies_pending"), 1)
        time.sleep(1)
        self.assertEqual(a.got("control/delete", lambda m: True), [], "a silent node's delete waits")
        return site, a, b, first, dep

    def test_04_moved_copy_running_old_one_deleted(self):
        """Rule 4 when the moved copy RUNs: the returning node is told to delete its old copy."""
        site, a, b, first, dep = self.moved_site("move-running")
        name = "rec.test.web.test.instance.0"
        b.instances.add(name)
        b.generations[name] = dep["generation"]
        b.status("rec.test.web.test", 0, "RUNNING", generation=dep["generation"])
        self.assertEqual(site.wait_status("svc-web", 0, "RUNNING", "node-b")["generation"], 1)
        a.resume()
        rm = a.expect("control/delete", lambda m: m.get("instance_number") == 0)
        self.assertEqual(rm["generation"], first["generation"])
        a.instances.discard(name)
        wait_until("old copy forgotten", lambda: site.instance(name)["old_copies"] == [])
        here = site.instance(name)
        self.assertEqual((here["node"], here["status"], here["node_generation"]),
                         ("node-b", "RUNNING", dep["generation"]))
        self.assertEqual(b.got("control/delete", lambda m: True), [])

    def test_05_moved_copy_not_running_old_one_readopted(self):
        """Rule 4 when the moved copy is not RUNNING yet: the returning node's copy is placed back
        (generation + 1, same variant and address: the node adopts it without a restart) and the
        moved copy is deleted."""
        site, a, b, first, dep = self.moved_site("move-back")
        name = "rec.test.web.test.instance.0"
        b.instances.add(name)
        b.generations[name] = dep["generation"]
        b.statuses[name] = "CREATING"
        a.resume()
        back = a.expect("control/deploy", lambda m: m.get("instance_number") == 0 and
                        m.get("generation") == dep["generation"] + 1)
        self.assertEqual((back["instance_ip"], back["placement"]), (first["instance_ip"], first["placement"]))
        rm = b.expect("control/delete", lambda m: m.get("instance_number") == 0)
        self.assertEqual(rm["generation"], dep["generation"])
        here = site.instance(name)
        self.assertEqual((here["node"], here["status"], here["node_generation"]),
                         ("node-a", "RUNNING", dep["generation"] + 1), here)
        self.assertIn("re-adopted on node node-a", here["status_detail"])
        self.assertEqual(site.wait_status("svc-web", 0, "RUNNING", "node-a")["generation"], 1)
        self.assertEqual(a.got("control/delete", lambda m: True), [])
        b.instances.discard(name)
        a.generations[name] = back["generation"]
        wait_until("moved copy forgotten", lambda: site.instance(name)["old_copies"] == [])

    def test_06_variant_chosen_per_node(self):
        """A job with virtualization ["unikernel", "container"]: a unikernel on the unikernel-capable
        node while it has room, a container on the container-only node once it is full."""
        site = self.site("variants")
        u = site.node("node-u", 1000, virtualization=("container", "unikernel"), unikernel=UNIKERNEL_CAPS)
        c = site.node("node-c", 3000)
        kernel = "http://127.0.0.1:1/kernel-amd64.tar.gz"
        image = "docker.io/library/nginx:latest"
        dual = job("dual", memory=200, virtualization=["unikernel", "container"],
                   code={"unikernel": kernel, "container": image})
        r = site.deploy(dual, 0, generation=1)
        self.assertEqual((r.status_code, r.json()["node"]), (200, "node-u"), r.text)
        dep = u.expect("control/deploy", lambda m: m.get("instance_number") == 0)
        self.assertEqual((dep["placement"]["virtualization"], dep["placement"]["code"], dep["placement"]["arch"]),
                         ("unikernel", kernel, "amd64"))
        self.assertEqual((dep["virtualization"], dep["code"]), ("unikernel", kernel))
        u.memory = 100  # full
        wait_until("node-u full", lambda: site.root.aggregates[-1]["cumulative_memory_in_mb"] == 3100)
        # a root's own choice of variant (roots before docs/reconcile.md sent one) does not bind
        r = site.deploy(dict(dual, placement={"virtualization": "unikernel", "arch": "amd64", "code": kernel}), 1,
                        generation=1)
        self.assertEqual((r.status_code, r.json()["node"]), (200, "node-c"), r.text)
        dep = c.expect("control/deploy", lambda m: m.get("instance_number") == 1)
        self.assertEqual((dep["placement"]["virtualization"], dep["placement"]["code"]), ("container", image))
        self.assertEqual((dep["virtualization"], dep["code"]), ("container", image))
        self.assertEqual(u.got("control/deploy", lambda m: m.get("instance_number") == 1), [])

    def test_06b_oci_reference_passed_through(self):
        """A unikernel whose code is an OCI reference the root pinned to a digest, with the arch[] it
        read from the index (docs/unikernels.md, "OCI images"): the node gets that reference exactly,
        for the architecture chosen here; a tag reference without arch[] runs on any unikernel arch."""
        site = self.site("oci")
        u = site.node("node-u", 1000, virtualization=("container", "unikernel"), unikernel=UNIKERNEL_CAPS)
        pinned = "registry.example:5000/uk/app@sha256:" + "ab" * 32
        r = site.deploy(job("ocipin", virtualization="unikernel", code=pinned, arch=["arm64", "amd64"]), 0,
                        generation=1)
        self.assertEqual((r.status_code, r.json()["node"]), (200, "node-u"), r.text)
        dep = u.expect("control/deploy", lambda m: m.get("instance_number") == 0 and m.get("job_name") ==
                       "rec.test.ocipin.test")
        self.assertEqual((dep["placement"]["code"], dep["placement"]["arch"], dep["code"]), (pinned, "amd64", pinned))
        tag = "registry.example:5000/uk/app:1"
        untyped = job("ocitag", virtualization="unikernel", code=tag)
        del untyped["arch"]
        r = site.deploy(untyped, 0, generation=1)
        self.assertEqual(r.status_code, 200, r.text)
        dep = u.expect("control/deploy", lambda m: m.get("job_name") == "rec.test.ocitag.test")
        self.assertEqual((dep["placement"]["code"], dep["placement"]["arch"]), (tag, "amd64"))

    def test_07_failed_moves_and_avoid_expires(self):
        """FAILED: the node is avoided for avoid_s and another one gets the instance; with none
        left the root hears FAILED; once the avoid entry expired the node is chosen again."""
        site = self.site("failed", config="[cluster]\navoid_s=8\n")
        a, b = site.node("node-a", 4000), site.node("node-b", 2000)
        name = "rec.test.web.test.instance.0"
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        first = self.placed(site, a, 0, "rec.test.web.test")
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        # a FAILED the node restarts itself (CrashLoopBackOff, "restarting": true) is only reported
        a.status("rec.test.web.test", 0, "FAILED", "exit 1; restart 1 in 1 s (backoff)", generation=first["generation"],
                 restarting=True)
        site.wait_status("svc-web", 0, "FAILED", "node-a")
        a.status("rec.test.web.test", 0, "RUNNING", generation=first["generation"])
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        self.assertEqual(b.got("control/deploy", lambda m: True), [])
        self.assertEqual(site.instance(name)["avoid"], [])
        a.status("rec.test.web.test", 0, "FAILED", "image of another architecture", generation=first["generation"])
        t_a = time.time()
        dep = b.expect("control/deploy", lambda m: m.get("instance_number") == 0)
        self.assertEqual(dep["generation"], first["generation"] + 1)
        rm = a.expect("control/delete", lambda m: m.get("instance_number") == 0)
        self.assertEqual(rm["generation"], first["generation"])
        self.assertEqual(site.instance(name)["avoid"], ["node-a"])
        # statuses of the old copy, or of an older generation, are ignored
        a.status("rec.test.web.test", 0, "RUNNING", generation=first["generation"])
        b.status("rec.test.web.test", 0, "CREATING", "stale", generation=first["generation"])
        wait_until("stale status ignored", lambda: "status event of another generation" in site.cluster.text())
        time.sleep(0.5)
        self.assertEqual(site.instance(name)["status"], "NODE_SCHEDULED")
        # B fails too while A is avoided: nowhere left, the root hears FAILED
        b.status("rec.test.web.test", 0, "FAILED", "network conflict", generation=dep["generation"])
        failed = site.wait_status("svc-web", 0, "FAILED", detail="network conflict")
        self.assertLess(time.time() - t_a, 8, "too slow to test the avoid entry of node-a")
        self.assertIn("no other node can take it", failed["status_detail"])
        self.assertIn("node node-a: avoided", failed["status_detail"])
        self.assertEqual(site.instance(name)["avoid"], ["node-a", "node-b"])
        # A's entry expires first: the root's next deploy (a newer generation) lands there
        wait_until("avoid entry of node-a expired", lambda: site.instance(name)["avoid"] == ["node-b"], timeout=15)
        r = site.deploy(job("web"), 0, generation=2)
        self.assertEqual((r.status_code, r.json()["node"], r.json()["status"]), (200, "node-a", "NODE_SCHEDULED"),
                         r.text)
        self.assertEqual(a.expect("control/deploy", lambda m: m.get("generation") == dep["generation"] + 1)
                         ["instance_number"], 0)
        self.assertEqual(b.expect("control/delete", lambda m: m.get("instance_number") == 0)["generation"],
                         dep["generation"])

    def test_08_drain(self):
        """A drained node's instances get a copy elsewhere first; its own copy is deleted once the new
        one RUNs; it takes nothing new; with nowhere to go the copy is deleted at once and the root
        hears why."""
        site = self.site("drain")
        a, b = site.node("node-a", 4000), site.node("node-b", 2000)
        name = "rec.test.web.test.instance.0"
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        first = self.placed(site, a, 0, "rec.test.web.test")
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        url = site.cluster_url + "/api/v1/nodes/%s/drain"
        self.assertEqual(requests.post(url % "node-a", timeout=5).status_code, 401)
        self.assertEqual(requests.post(url % "node-z", headers=site.auth, timeout=5).status_code, 404)
        r = requests.post(url % "node-a", headers=site.auth, timeout=5)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertTrue(site.nodes_view()["node-a"]["drained"])
        dep = b.expect("control/deploy", lambda m: m.get("instance_number") == 0)
        self.assertEqual(dep["generation"], first["generation"] + 1)
        self.assertEqual(site.instance(name)["old_copies"][0]["delete"], "when the instance runs elsewhere")
        # something new goes to B although A has more room
        r = site.deploy(job("web"), 1, generation=1)
        self.assertEqual(r.json()["node"], "node-b", r.text)
        time.sleep(1)
        self.assertEqual(a.got("control/delete", lambda m: True), [], "deleted before the new copy ran")
        b.instances.add(name)
        b.status("rec.test.web.test", 0, "RUNNING", generation=dep["generation"])
        rm = a.expect("control/delete", lambda m: m.get("instance_number") == 0)
        self.assertEqual(rm["generation"], first["generation"])
        a.instances.discard(name)
        # B drained too: nowhere to go, B's copies are deleted at once and the root told why
        self.assertEqual(requests.post(url % "node-b", headers=site.auth, timeout=5).status_code, 200)
        for n in (0, 1):
            b.expect("control/delete", lambda m, n=n: m.get("instance_number") == n)
            refused = site.wait_status("svc-web", n, ("NO_WORKER_CAPACITY", "NO_QUALIFIED_WORKER_FOUND"))
            self.assertIn("node node-b drained", refused["status_detail"])
        wait_until("nothing kept", lambda: requests.get(site.cluster_url + "/api/v1/instances", timeout=5).json() == [])
        r = requests.delete(url % "node-a", headers=site.auth, timeout=5)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertFalse(site.nodes_view()["node-a"]["drained"])
        self.assertTrue(site.nodes_view()["node-b"]["drained"])

    def test_09_remove_node(self):
        """A removed node's instances move, its login stops working and its subnet goes to the next
        node that registers."""
        site = self.site("remove")
        a, b = site.node("node-a", 4000), site.node("node-b", 2000)
        self.assertEqual(a.creds["subnet"], "10.18.0.0/24")
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        self.placed(site, a, 0, "rec.test.web.test")
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        url = site.cluster_url + "/api/v1/nodes/%s"
        self.assertEqual(requests.delete(url % "node-z", headers=site.auth, timeout=5).status_code, 404)
        self.assertEqual(requests.delete(url % "node-a", timeout=5).status_code, 401)
        r = requests.delete(url % "node-a", headers=site.auth, timeout=5)
        self.assertEqual(r.status_code, 200, r.text)
        a.alive = False
        b.expect("control/deploy", lambda m: m.get("instance_number") == 0)
        here = site.instance("rec.test.web.test.instance.0")
        self.assertEqual(here["node"], "node-b")
        self.assertIn("moved off node node-a (removed)", here["status_detail"])
        self.assertEqual(list(site.nodes_view()), ["node-b"])
        time.sleep(0.5)  # mosquitto rereads its password file on SIGHUP
        self.assertNotEqual(a.publish("information", report("node-a", 4000)), 0, "a removed node's login works")
        c = FakeNode(site, "node-c", 1000)
        self.assertEqual(c.creds["subnet"], "10.18.0.0/24")

    def test_10_new_fields_validated(self):
        """Every new input field is validated where it enters; a rejection names the field in the
        log and changes nothing."""
        site = self.site("validate")
        a = site.node("node-a", 4000)
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        dep = self.placed(site, a, 0, "rec.test.web.test")
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        state = requests.get(site.cluster_url + "/api/v1/instances", timeout=5).json()
        for bad in ("1", -1, 1.5, True):
            r = site.deploy(job("web"), 1, generation=bad)
            self.assertEqual((r.status_code, r.json()["error"]["path"]), (400, "generation"), (bad, r.text))
        for bad in ("x", "-1", "1.5"):
            r = site.delete("svc-web", 0, generation=bad)
            self.assertEqual((r.status_code, r.json()["error"]["path"]), (400, "generation"), (bad, r.text))
        self.assertIn("event=http-reject", site.cluster.text())
        self.assertIn("field=generation", site.cluster.text())
        rejected = site.metric("oakuk_cluster_mqtt_rejected_total")
        base = {"job_name": "rec.test.web.test", "instance": 0, "status": "FAILED", "status_detail": "must not apply"}
        for bad in ("1", -1, 2.5):
            self.assertEqual(a.publish("job", dict(base, generation=bad)), 0)
        rep = report("node-a", 4000, ["rec.test.web.test.instance.0"])
        rep["instances"][0]["generation"] = "x"
        self.assertEqual(a.publish("information", rep), 0)
        wait_until("rejections counted", lambda: site.metric("oakuk_cluster_mqtt_rejected_total") >= rejected + 4)
        log = site.cluster.text()
        self.assertEqual(log.count('topic=nodes/node-a/job msg="generation: not a non-negative integer"'), 3,
                         log[-3000:])
        self.assertIn("instances[0].generation", log)
        time.sleep(1)
        self.assertEqual(requests.get(site.cluster_url + "/api/v1/instances", timeout=5).json(), state)
        self.assertEqual(a.got("control/delete", lambda m: True), [])
        self.assertEqual(dep["generation"], 1)


class SecurityTest(unittest.TestCase):
    """docs/security.md at the cluster, each test with its own cluster (and mosquitto) registered
    with a fake root over HTTPS: the bootstrap certificate, the certificate from the root and its
    renewal, re-registration with the credential, node join tokens, names bound to credentials,
    mosquitto refusing plain clients, foreign CAs, oversize messages and client-id takeovers, the
    per-node rate limit, --insecure."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-cluster-security-")
        use_fake_ca(cls.tmp)
        cls.other_ca_file = Ca("someone else's CA").write(os.path.join(cls.tmp, "other-ca.crt"))

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("KEEP_TMP") is None:
            subprocess.run(["rm", "-rf", cls.tmp])

    def site(self, name, **kw):
        s = Site(self.tmp, name, **kw)
        self.addCleanup(s.close)
        return s

    def pub(self, site, node, cafile, payload="{}", port=None):
        """mosquitto_pub as node (its login from option files) trusting cafile (None: plain TCP)."""
        env = mqtt_env(tempfile.mkdtemp(dir=self.tmp), node.creds["mqtt_username"], node.creds["mqtt_password"],
                       cafile)
        return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port or site.mqtt_port), "-q", "1",
                               "-t", "nodes/%s/logs" % node.id, "-m", payload], capture_output=True, text=True,
                              timeout=20, env=env)

    def test_01_bootstrap_certificate_then_the_roots(self):
        """Before the root signs its certificate the cluster serves HTTPS with a throwaway one that
        nodes refuse, and runs no broker; then it serves the root's, with the names it asked for,
        on HTTPS and MQTT; after a restart it registers again with its credential."""
        site = self.site("boot", root={"hold": True}, wait=False, args=["--mqtt-host", "mqtt.edge.test"])
        port = int(site.cluster_url.rsplit(":", 1)[1])
        pem = wait_until("HTTPS served", lambda: served_certificate("127.0.0.1", port))
        self.assertEqual(cert_info(pem)[3], "oakuk-cluster bootstrap (trusted by nobody)")
        with self.assertRaises(requests.exceptions.SSLError):
            requests.get(site.cluster_url + "/healthz", timeout=5)
        health = get_unverified(site.cluster_url + "/healthz")
        self.assertEqual((health["registered"], health["mqtt_connected"], health["tls"]), (False, False, True))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", site.mqtt_port), timeout=2).close()
        wait_until("a registration tried", lambda: site.root.registrations)
        self.assertEqual(site.root.registrations[0]["bearer"], "join token")
        site.root.held.set()
        site.wait_ready()
        for p in (port, site.mqtt_port):
            cn, names, left, issuer = cert_info(served_certificate("127.0.0.1", p))
            self.assertEqual((cn, issuer), ("c1", "fake root CA"))
            self.assertEqual(sorted(names), sorted(["127.0.0.1", "localhost", "mqtt.edge.test"]))
            self.assertGreater(left, 300 * 86400)
        done = [e for e in site.root.registrations if e["code"] == 201]
        self.assertEqual([e["bearer"] for e in done], ["join token"])
        self.assertEqual(done[0]["body"]["url"], site.cluster_url)
        self.assertEqual(sorted(done[0]["names"]), sorted(["127.0.0.1", "localhost", "mqtt.edge.test"]))
        with open(os.path.join(site.state, "pki", "ca.crt")) as f:
            self.assertEqual(f.read(), FAKE_CA.pem)
        node = site.node("node-a", 1000)
        self.assertEqual((node.creds["mqtt_host"], node.creds["mqtt_tls"], node.creds["ca"]),
                         ("mqtt.edge.test", True, FAKE_CA.pem))
        # a restart: the credential, not the (used) join token; nodes come back
        site.restart()
        wait_until("registered again", lambda: len([e for e in site.root.registrations if e["code"] == 201]) == 2)
        self.assertEqual(site.root.registrations[-1]["bearer"], "credential")
        site.wait_ready()
        wait_until("node-a reachable again", lambda: site.nodes_view()["node-a"]["reachable"])

    def test_02_certificate_renewed(self):
        """A certificate with less than 30 days left is renewed by registering again with the
        credential; HTTPS and the broker serve the new one."""
        site = self.site("renew", root={"cert_days": (10, 365)}, config="[cluster]\nrenew_check_s=1\n")
        node = site.node("node-a", 1000)
        wait_until("renewed", lambda: len([e for e in site.root.registrations if e["code"] == 201]) == 2)
        self.assertEqual([e["bearer"] for e in site.root.registrations], ["join token", "credential"])
        port = int(site.cluster_url.rsplit(":", 1)[1])
        for p in (port, site.mqtt_port):
            wait_until("the renewed certificate on port %d" % p, lambda: cert_info(
                served_certificate("127.0.0.1", p))[2] > 300 * 86400)
        self.assertIn("renewing the certificate", site.cluster.text())
        time.sleep(3)  # renewed once: 365 days are enough
        self.assertEqual(len(site.root.registrations), 2)
        self.assertEqual(node.conn.connects, 1)  # the broker reloaded its certificate without dropping anyone
        self.assertEqual(self.pub(site, site.node("node-b", 1000), FAKE_CA_FILE).returncode, 0)

    def test_03_broker_refuses_plain_foreign_ca_and_oversize(self):
        site = self.site("refuse")
        a = site.node("node-a", 1000)
        spare = FakeNode(site, "node-spare", 1000)  # a login of its own, never connected otherwise
        self.assertEqual(self.pub(site, spare, FAKE_CA_FILE).returncode, 0)
        plain = self.pub(site, spare, None)
        self.assertNotEqual(plain.returncode, 0, "a plaintext client was served")
        foreign = self.pub(site, spare, self.other_ca_file)
        self.assertNotEqual(foreign.returncode, 0, "a client trusting another CA connected")
        self.assertIn("TLS", foreign.stderr + foreign.stdout)
        conn = MqttConn("127.0.0.1", site.mqtt_port, "node-spare", spare.creds["mqtt_password"], cafile=None)
        time.sleep(3)
        conn.close()
        self.assertEqual(conn.connects, 0, "a plaintext MQTT session was accepted")
        with self.assertRaises(requests.exceptions.ConnectionError):
            requests.get(site.cluster_url.replace("https:", "http:") + "/healthz", timeout=5)
        # more than max_packet_size (1 MiB): the broker drops the connection, nothing is delivered
        a.conn.subscribe(["nodes/node-a/logs"])
        time.sleep(0.5)
        self.assertFalse(a.conn.publish("nodes/node-a/logs", "x" * (1024 * 1024 + 100), timeout=5))
        wait_until("node-a back", lambda: a.conn.connected.is_set() and a.conn.connects == 2)
        self.assertEqual(a.publish(None, '{"small": 1}', topic="nodes/node-a/logs"), 0)
        a.expect("logs", lambda m: m == {"small": 1}, timeout=5)
        self.assertEqual(a.got("logs", lambda m: "small" not in m), [])
        with open(os.path.join(site.state, "mosquitto", "mosquitto.log")) as f:
            self.assertRegex(f.read(), r"node-a.*(packet|too large|exceed)")
        self.assertTrue(requests.get(site.cluster_url + "/healthz", timeout=5).json()["mqtt_connected"])

    def test_04_client_id_takeover_refused(self):
        """A node login connecting with the cluster's client id (or another node's) gets its own user
        name as client id: nobody is knocked off."""
        site = self.site("takeover")
        a = site.node("node-a", 1000)
        spare = FakeNode(site, "node-spare", 1000)
        lost = site.cluster.text().count("broker connection lost")
        conns = [MqttConn("127.0.0.1", site.mqtt_port, "node-spare", spare.creds["mqtt_password"], client_id=cid,
                          cafile=spare.cafile) for cid in ("oakuk-cluster-takeover", "oakuk-cluster", "node-a")]
        for conn in conns:
            wait_until("the attacker connected", lambda: conn.connects >= 1, timeout=10)
        deadline = time.time() + 3
        while time.time() < deadline:
            self.assertTrue(requests.get(site.cluster_url + "/healthz", timeout=5).json()["mqtt_connected"])
            time.sleep(0.2)
        for conn in conns:
            conn.close()
        self.assertEqual(site.cluster.text().count("broker connection lost"), lost, "the cluster was knocked off")
        self.assertEqual(a.conn.connects, 1, "node-a was knocked off")
        with open(os.path.join(site.state, "mosquitto", "mosquitto.log")) as f:
            log = f.read()
        self.assertIn("as node-spare", log)
        self.assertNotIn("as oakuk-cluster-takeover", log)
        # and the cluster still delivers
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        a.expect("control/deploy", lambda m: m.get("instance_number") == 0)

    def test_05_name_of_another_node_refused(self):
        """A node registering under another node's id without its credential: 409 name_taken, the
        token is not used up, and the real node keeps its login and its work."""
        site = self.site("names")
        a = site.node("node-a", 1000)
        r = requests.post(site.cluster_url + "/api/v1/tokens", headers=site.auth, json={"uses": 1}, timeout=5)
        self.assertEqual(r.status_code, 201, r.text)
        token = r.json()["token"]
        intruder = dict(report("node-a", 99999), ip="192.0.2.66")
        r = requests.post(site.cluster_url + "/api/node/register", timeout=5,
                          json={"join_token": token, "capabilities": intruder})
        self.assertEqual((r.status_code, r.json()["error"]["code"]), (409, "name_taken"), r.text)
        self.assertIn("node node-a is registered", r.json()["error"]["message"])
        r = requests.post(site.cluster_url + "/api/node/register", timeout=5,
                          json={"join_token": token, "capabilities": intruder, "credential": "guess"})
        self.assertEqual(r.status_code, 409, r.text)
        self.assertEqual(site.nodes_view()["node-a"]["ip"], "127.0.0.1")
        self.assertEqual(self.pub(site, a, FAKE_CA_FILE).returncode, 0)  # its password is unchanged
        wait_until("node-a back", lambda: a.conn.connected.is_set())
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        a.expect("control/deploy", lambda m: m.get("instance_number") == 0)
        # the token was not used up by the refusals
        r = requests.post(site.cluster_url + "/api/node/register", timeout=5,
                          json={"join_token": token, "capabilities": report("node-b", 1000)})
        self.assertEqual(r.status_code, 201, r.text)
        r = requests.post(site.cluster_url + "/api/node/register", timeout=5,
                          json={"join_token": token, "capabilities": report("node-c", 1000)})
        self.assertEqual(r.status_code, 401, r.text)

    def test_06_node_join_tokens(self):
        """POST /api/v1/tokens (the root's credential): tokens naming the root's CA, with their uses
        and expiry; --new-join-token writes one to stdout only."""
        site = self.site("tokens")
        url = site.cluster_url + "/api/v1/tokens"
        self.assertEqual(requests.post(url, json={}, timeout=5).status_code, 401)
        self.assertEqual(requests.post(url, json={}, headers={"Authorization": "Bearer " + site.root.join_token},
                                       timeout=5).status_code, 401)
        for body, field in (({"ttl_s": 59}, "ttl_s"), ({"ttl_s": "3600"}, "ttl_s"), ({"ttl_s": 31536001}, "ttl_s"),
                            ({"uses": 0}, "uses"), ({"uses": 1001}, "uses"), ({"uses": 1.5}, "uses")):
            r = requests.post(url, json=body, headers=site.auth, timeout=5)
            self.assertEqual((r.status_code, r.json()["error"]["path"]), (400, field), (body, r.text))
        r = requests.post(url, headers=site.auth, timeout=5)  # no body: the defaults
        self.assertEqual((r.status_code, r.json()["uses"]), (201, 1), r.text)
        self.assertAlmostEqual(r.json()["expires_at"] / 1000, time.time() + 3600, delta=30)
        r = requests.post(url, json={"ttl_s": 600, "uses": 2}, headers=site.auth, timeout=5)
        self.assertEqual(r.status_code, 201, r.text)
        token = r.json()["token"]
        self.assertRegex(token, r"^oakuk1\.%s\.[0-9a-f]{48}$" % FAKE_CA.fingerprint)
        self.assertAlmostEqual(r.json()["expires_at"] / 1000, time.time() + 600, delta=30)
        codes = [requests.post(site.cluster_url + "/api/node/register", timeout=5, json={
            "join_token": token, "capabilities": report("node-%d" % k, 1000)}).status_code for k in range(3)]
        self.assertEqual(codes, [201, 201, 401])
        # an expired one is refused
        r = requests.post(url, json={"uses": 5}, headers=site.auth, timeout=5)
        expired = r.json()["token"]
        db = sqlite3.connect(os.path.join(site.state, "cluster.db"))
        try:
            db.execute("UPDATE join_tokens SET expires_at = 1 WHERE hash = ?",
                       (hashlib.sha256(expired.rsplit(".", 1)[1].encode()).hexdigest(),))
            db.commit()
        finally:
            db.close()
        r = requests.post(site.cluster_url + "/api/node/register", timeout=5, json={
            "join_token": expired, "capabilities": report("node-x", 1000)})
        self.assertEqual((r.status_code, r.json()["error"]["path"]), (401, "join_token"), r.text)
        # the command line tool
        p = subprocess.run([CLUSTER_BIN, "--state-dir", site.state, "--new-join-token", "--ttl", "120", "--uses", "3"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^oakuk1\.%s\.[0-9a-f]{48}\n$" % FAKE_CA.fingerprint)
        self.assertNotIn(p.stdout.strip().rsplit(".", 1)[1], p.stderr)
        for bad in (["--ttl", "59"], ["--uses", "1001"]):
            p = subprocess.run([CLUSTER_BIN, "--state-dir", site.state, "--new-join-token"] + bad, capture_output=True,
                               text=True, timeout=30)
            self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
            self.assertIn(bad[0], p.stderr)
        for t in (token, expired):
            self.assertNotIn(t.rsplit(".", 1)[1], site.cluster.text())

    def test_07_rate_limit(self):
        """A node publishing faster than 20 messages/s beyond a burst of 100: the excess is dropped and
        counted, the log does not grow with the flood, and the node is served again afterwards."""
        site = self.site("rate")
        a = site.node("node-a", 1000)
        before = site.metric("oakuk_cluster_mqtt_rejected_total", '{reason="rate"}')
        self.assertEqual(before, 0)
        flood = json.dumps(report("node-a", 1000))
        t0 = time.time()
        for _ in range(400):
            self.assertTrue(a.conn.publish("nodes/node-a/information", flood, qos=0))
        self.assertTrue(a.conn.publish("nodes/node-a/information", flood, qos=1))  # all of it reached the broker
        elapsed = time.time() - t0
        allowed = 100 + 20 * (elapsed + 1)
        dropped = wait_until("drops counted", lambda: (lambda n: n if n >= 401 - allowed else None)(
            site.metric("oakuk_cluster_mqtt_rejected_total", '{reason="rate"}')), timeout=10)
        # the node's own reports (one a second, also during the flood) draw from the same bucket
        self.assertLessEqual(dropped, 401 - 100 + elapsed + 2)
        self.assertEqual(site.metric("oakuk_cluster_mqtt_rejected_total"), 0)  # none was malformed
        lines = site.cluster.text().count("reason=rate")
        # the count again after the lines: drops may have gone on after the wait (it failed in CI 16 > 15.4)
        dropped_by_now = site.metric("oakuk_cluster_mqtt_rejected_total", '{reason="rate"}')
        self.assertGreaterEqual(lines, 1)
        self.assertLessEqual(lines, dropped_by_now / 20 + 1)
        # after a pause its messages are taken again
        time.sleep(2)
        gone = site.metric("oakuk_cluster_mqtt_rejected_total", '{reason="rate"}')
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        site.root.statuses.clear()
        a.status("rec.test.web.test", 0, "RUNNING", generation=1)
        site.wait_status("svc-web", 0, "RUNNING", "node-a")
        self.assertEqual(site.metric("oakuk_cluster_mqtt_rejected_total", '{reason="rate"}'), gone)

    def test_08_insecure(self):
        """--insecure: plain HTTP and MQTT on purpose, a warning at every start, /healthz says so; a
        TLS cluster refuses an http root."""
        site = self.site("plain", root={"insecure": True}, args=["--insecure"])
        self.assertTrue(site.cluster_url.startswith("http://"))
        health = requests.get(site.cluster_url + "/healthz", timeout=5).json()
        self.assertEqual(health["tls"], False)
        a = site.node("node-a", 1000)
        self.assertEqual(a.creds["mqtt_tls"], False)
        self.assertNotIn("ca", a.creds)
        self.assertEqual(site.deploy(job("web"), 0, generation=1).status_code, 200)
        a.expect("control/deploy", lambda m: m.get("instance_number") == 0)
        site.restart()
        wait_until("two starts", lambda: site.cluster.text().count("event=insecure") == 2)
        self.assertIn("level=warning", next(l for l in site.cluster.text().splitlines() if "event=insecure" in l))
        self.assertFalse(os.path.exists(os.path.join(site.state, "pki", "cluster.crt")))
        http_port, mqtt_port = ports(2)
        p = subprocess.run([CLUSTER_BIN, "--state-dir", os.path.join(self.tmp, "refuses-http"), "--listen",
                            "127.0.0.1:%d" % http_port, "--root-url", site.root.url, "--mqtt-port", str(mqtt_port),
                            "--mosquitto", MOSQUITTO], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("--root-url '%s': not an https URL (plain HTTP needs --insecure)" % site.root.url, p.stderr)

    def test_09_state_is_private(self):
        site = self.site("private")
        site.node("node-a", 1000)
        modes = {"": 0o700, "pki": 0o700, "mosquitto": 0o700, "pki/cluster.key": 0o600, "pki/cluster.crt": 0o600,
                 "mosquitto/passwd": 0o600, "mosquitto/mosquitto.conf": 0o600, "node-join-token": 0o600}
        self.assertEqual({p: stat.S_IMODE(os.stat(os.path.join(site.state, p)).st_mode) for p in modes}, modes)
        # a state directory made wider by someone is made private again at the next start
        os.chmod(site.state, 0o755)
        site.restart()
        site.wait_ready()
        self.assertEqual(stat.S_IMODE(os.stat(site.state).st_mode), 0o700)

    def test_10_credential_of_an_older_cluster(self):
        """A node registered by a cluster from before TLS has a PBKDF2 hash of its password: its
        credential is still checked (off the main loop), and stored in the new form once it passed."""
        site = self.site("legacy")
        a = site.node("node-a", 1000)
        password = a.creds["mqtt_password"]
        salt = os.urandom(16)
        legacy = "pbkdf2-sha256$100000$%s$%s" % (salt.hex(), hashlib.pbkdf2_hmac("sha256", password.encode(), salt,
                                                                                   100000).hex())
        db = sqlite3.connect(os.path.join(site.state, "cluster.db"))
        try:
            db.execute("UPDATE nodes SET cred_hash = ? WHERE id = 'node-a'", (legacy,))
            db.commit()
            self.assertEqual(a.register(credential="wrong-password").status_code, 409)
            r = a.register(credential=password, token="none")
            self.assertEqual((r.status_code, r.json()["mqtt_password"]), (201, password), r.text)
            stored = db.execute("SELECT cred_hash FROM nodes WHERE id = 'node-a'").fetchone()[0]
        finally:
            db.close()
        self.assertEqual(stored, "sha256$" + hashlib.sha256(password.encode()).hexdigest())

    def test_11_lost_broker_reload(self):
        """A SIGHUP that reaches mosquitto while it is still reloading is taken as handled: the node
        whose password came with it stayed locked out until some later change (one or two of every ten
        nodes registering at once in bench/scale). Here a wrapper loses mosquitto's first SIGHUP for
        certain; the cluster's second one, a second after the last change, lets the node in."""
        wrapper = os.path.join(self.tmp, "mosquitto-loses-a-reload")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\n%s \"$@\" &\nchild=$!\nlost=0\n"
                    "trap 'if [ $lost = 0 ]; then lost=1; else kill -HUP $child; fi' HUP\n"
                    "trap 'kill -TERM $child; wait $child; exit 0' TERM INT\n"
                    "while kill -0 $child 2>/dev/null; do wait $child; done\n" % MOSQUITTO)
        os.chmod(wrapper, 0o755)
        site = self.site("lostreload", args=["--mosquitto", wrapper])
        t0 = time.monotonic()
        site.node("late", 1000)  # waits until the cluster has its report over MQTT
        self.assertLess(time.monotonic() - t0, 15)


# The tables of oakuk-cluster before generations (schema version 1, with the ready columns).
CURRENT_TABLES = """
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE join_tokens (hash TEXT PRIMARY KEY, created INTEGER NOT NULL);
CREATE TABLE nodes (id TEXT PRIMARY KEY, cred_hash TEXT NOT NULL, subnet_index INTEGER NOT NULL
  UNIQUE, subnet TEXT NOT NULL, ip TEXT NOT NULL DEFAULT '', report TEXT, registered_at INTEGER NOT NULL);
CREATE TABLE instances (name TEXT PRIMARY KEY, job_id TEXT NOT NULL, job_name TEXT NOT NULL,
  instance INTEGER NOT NULL, node TEXT NOT NULL DEFAULT '', ip TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', job TEXT NOT NULL, restart INTEGER NOT NULL,
  failures INTEGER NOT NULL DEFAULT 0, avoid TEXT NOT NULL DEFAULT '[]',
  ready INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER, UNIQUE (job_id, instance));
CREATE TABLE explanations (job_id TEXT PRIMARY KEY, job_name TEXT NOT NULL,
  instance INTEGER NOT NULL, lines TEXT NOT NULL);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL,
  instance TEXT NOT NULL, topic TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE status_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
  instance INTEGER NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, node TEXT NOT NULL,
  ready INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER);
"""


# The two tables as oakuk-cluster made them before instances had readiness.
OLD_TABLES = """
CREATE TABLE instances (name TEXT PRIMARY KEY, job_id TEXT NOT NULL, job_name TEXT NOT NULL,
  instance INTEGER NOT NULL, node TEXT NOT NULL DEFAULT '', ip TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', job TEXT NOT NULL, restart INTEGER NOT NULL,
  failures INTEGER NOT NULL DEFAULT 0, avoid TEXT NOT NULL DEFAULT '[]', UNIQUE (job_id, instance));
CREATE TABLE status_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
  instance INTEGER NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, node TEXT NOT NULL);
"""


if __name__ == "__main__":
    ROOT_BIN, CLUSTER_BIN = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    try:
        unittest.main(verbosity=2)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()

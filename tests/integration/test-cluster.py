#!/usr/bin/python3
"""Integration test of oakuk-cluster with a real oakuk-root and the cluster's own mosquitto.
Fake nodes are played by mosquitto_pub/mosquitto_sub processes using the credentials the cluster
hands out at node registration.

Usage: test-cluster.py <oakuk-root> <oakuk-cluster>"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from edgelib import MOSQUITTO, PROCS, Daemon, FakeNode, ports, report, spawn, stop, wait_until  # noqa: E402

ROOT_BIN = CLUSTER_BIN = None


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


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-cluster-test-")
        root_port, cls.cluster_port, cls.mqtt_port = ports(3)
        cls.root_url = "http://127.0.0.1:%d" % root_port
        cls.cluster_url = "http://127.0.0.1:%d" % cls.cluster_port
        cls.root = Daemon([ROOT_BIN, "--state-dir", os.path.join(cls.tmp, "root"), "--listen",
                           "127.0.0.1:%d" % root_port], os.path.join(cls.tmp, "root.log"))
        cls.root.start()
        password = cls.root.grep("admin password:")
        tok = wait_until("root login", lambda: requests.post(cls.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": password}).json()["token"])
        cls.h = {"Authorization": "Bearer " + tok}
        r = requests.post(cls.root_url + "/api/v1/clusters/tokens", headers=cls.h, timeout=5)
        join = r.json()["token"]
        # mosquitto through a wrapper that waits while the gate file exists: lets the test keep the
        # broker down for as long as it needs after killing it.
        cls.gate = os.path.join(cls.tmp, "broker-gate")
        cls.wrapper = os.path.join(cls.tmp, "mosquitto-wrapper")
        with open(cls.wrapper, "w") as f:
            f.write('#!/bin/sh\nwhile [ -e "%s" ]; do sleep 0.1; done\nexec %s "$@"\n' % (cls.gate, MOSQUITTO))
        os.chmod(cls.wrapper, 0o755)
        cls.cluster_args = [CLUSTER_BIN, "--state-dir", os.path.join(cls.tmp, "cluster"), "--listen",
                            "127.0.0.1:%d" % cls.cluster_port, "--root-url", cls.root_url, "--name", "edge1",
                            "--location", "lab", "--mqtt-port", str(cls.mqtt_port), "--mosquitto", cls.wrapper,
                            "--node-timeout", "3", "--aggregate-interval", "1"]
        cls.cluster = Daemon(cls.cluster_args + ["--join-token", join], os.path.join(cls.tmp, "cluster.log"))
        cls.cluster.start()
        cls.node_join_token = cls.cluster.grep("node join token:")
        try:
            wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
                requests.get(cls.cluster_url + "/healthz", timeout=5).json()))
        except AssertionError as err:
            raise AssertionError("%s\n--- cluster log:\n%s" % (err, cls.cluster.text()[-3000:])) from None
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
                n.alive = False
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

    def metric(self, name):
        text = requests.get(self.cluster_url + "/metrics", timeout=5).text
        return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")))

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

    # ---- tests, in order ----
    def test_01_registration(self):
        clusters = requests.get(self.root_url + "/api/v1/clusters", headers=self.h, timeout=5).json()
        self.assertEqual([c["cluster_name"] for c in clusters], ["edge1"])
        subnet = clusters[0]["subnet"]
        self.assertTrue(subnet.startswith("10.18.") and subnet.endswith("/20"), subnet)
        self.assertEqual(self.a.creds["subnet"], "10.18.0.0/24")
        self.assertEqual(self.b.creds["subnet"], "10.18.1.0/24")
        self.assertEqual(self.a.creds["mqtt_port"], self.mqtt_port)
        # Re-registering keeps id and subnet; the new password works, the old one no longer does.
        old = dict(self.a.creds)
        r = requests.post(self.cluster_url + "/api/node/register", timeout=10, json={
            "join_token": self.node_join_token, "capabilities": report("node-a", 4000)})
        self.assertEqual(r.status_code, 201, r.text)
        new = r.json()
        self.assertEqual((new["id"], new["subnet"]), ("node-a", old["subnet"]))
        self.assertNotEqual(new["mqtt_password"], old["mqtt_password"])
        self.a.creds = new
        time.sleep(0.5)  # mosquitto reloads its password file on SIGHUP
        self.assertEqual(self.a.publish("information", report("node-a", 4000), password=new["mqtt_password"]), 0)
        self.assertNotEqual(self.a.publish("information", report("node-a", 4000), password=old["mqtt_password"]), 0)
        # the fake node's listener keeps its session, reconnecting with the new password
        stop(self.a.sub)
        self.a.alive = False
        self.a.thread.join()
        self.a.listen()

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
        c = self.a.creds
        anon = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(c["mqtt_port"]), "-q", "1",
                               "-t", "nodes/node-a/information", "-m", "{}"], capture_output=True, timeout=10)
        self.assertNotEqual(anon.returncode, 0, "anonymous publish was accepted")
        # B listens on its own topics; A publishes there and subscribes there: nothing crosses.
        spy_b = spawn(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(c["mqtt_port"]), "-u", "node-b",
                       "-P", self.b.creds["mqtt_password"], "-q", "1", "-t", "nodes/node-b/information",
                       "-t", "nodes/node-b/job", "-W", "4", "-v"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                      text=True)
        spy_a = spawn(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(c["mqtt_port"]), "-u", "node-a",
                       "-P", c["mqtt_password"], "-q", "1", "-t", "nodes/node-b/#", "-W", "4", "-v"],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.7)
        self.b.silence()  # B's own reports would show up in its spy
        spoof = report("node-b", 99999)
        self.a.publish(None, spoof, topic="nodes/node-b/information")
        self.a.publish(None, {"job_name": JOB, "instance": 0, "status": "FAILED"}, topic="nodes/node-b/job")
        self.b.publish(None, {"x": 1}, topic="nodes/node-b/job")  # B's own message must reach A's spy if A could read
        out_b, _ = spy_b.communicate(timeout=10)
        out_a, _ = spy_a.communicate(timeout=10)
        self.assertNotIn("99999", out_b, "node A published on node B's topic")
        self.assertNotIn("FAILED", out_b)
        self.assertEqual(out_a.strip(), "", "node A read node B's topics")
        self.assertIn('{"x": 1}', out_b)  # B's spy worked
        self.b.thread = threading.Thread(target=self.b._report_loop, daemon=True)
        self.b.alive = True
        self.b.thread.start()
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
        self.assertEqual(self.native_instance(n), inst)
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
        before = self.cluster_instances()
        self.cluster.stop()
        self.__class__.cluster = Daemon(self.cluster_args, self.cluster.log_path)
        self.cluster.start()
        wait_until("cluster back", lambda: requests.get(self.cluster_url + "/healthz", timeout=5).json()[
            "mqtt_connected"])
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
        p = subprocess.run([CLUSTER_BIN, "--state-dir", state, "--new-join-token"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        # the four ready columns (version 1), then version 1 -> 2 (generations, docs/reconcile.md)
        self.assertEqual(p.stderr.count("event=migrate"), 5, p.stderr)
        # the daemon itself on the migrated database (its second start: nothing to add)
        http_port, mqtt_port = ports(2)
        log = os.path.join(self.tmp, "old-cluster.log")
        d = Daemon([CLUSTER_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % http_port, "--root-url",
                    "http://127.0.0.1:1", "--name", "old", "--mqtt-port", str(mqtt_port), "--mosquitto", MOSQUITTO],
                   log)
        d.start()
        try:
            rows = wait_until("the old cluster's instances", lambda: requests.get(
                "http://127.0.0.1:%d/api/v1/instances" % http_port, timeout=5).json())
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


class FakeRoot:
    """Plays oakuk-root for one cluster: registers it, and keeps every aggregate and status report
    it sends. Deploys and deletes are the test's own HTTP calls to the cluster (as the root makes
    them, docs/reconcile.md), so these tests do not depend on what the real root decides."""
    TOKEN = "root-issued-token"

    def __init__(self):
        self.port = ports(1)[0]
        self.url = "http://127.0.0.1:%d" % self.port
        self.statuses, self.aggregates = [], []
        root = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                code, reply = 200, {}
                if self.path == "/api/v1/clusters/register":
                    code, reply = 201, {"id": "c1", "token": FakeRoot.TOKEN, "subnet": "10.18.0.0/20"}
                elif self.headers.get("Authorization") != "Bearer " + FakeRoot.TOKEN:
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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
    """One oakuk-cluster with its own mosquitto, registered with a FakeRoot; nodes are FakeNodes."""

    def __init__(self, tmp, name, node_timeout=2, config=None):
        self.root = FakeRoot()
        http_port, self.mqtt_port = ports(2)
        self.cluster_url = "http://127.0.0.1:%d" % http_port
        args = [CLUSTER_BIN, "--state-dir", os.path.join(tmp, name), "--listen", "127.0.0.1:%d" % http_port,
                "--root-url", self.root.url, "--name", name, "--mqtt-port", str(self.mqtt_port),
                "--mosquitto", MOSQUITTO, "--node-timeout", str(node_timeout), "--aggregate-interval", "1",
                "--join-token", "unused"]
        if config is not None:
            path = os.path.join(tmp, name + ".conf")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        self.nodes = []
        self.cluster = Daemon(args, os.path.join(tmp, name + ".log"))
        self.cluster.start()
        self.node_join_token = self.cluster.grep("node join token:")
        wait_until("cluster %s registered and connected" % name, lambda: (
            lambda j: j["registered"] and j["mqtt_connected"])(requests.get(self.cluster_url + "/healthz",
                                                                             timeout=5).json()))
        self.auth = {"Authorization": "Bearer " + FakeRoot.TOKEN}

    def node(self, node_id, memory, **kw):
        """A FakeNode, once the cluster has its first report (it can be placed on)."""
        n = FakeNode(self, node_id, memory, **kw)
        n.listen()
        self.nodes.append(n)
        wait_until("%s reported" % node_id, lambda: self.nodes_view()[node_id]["reachable"])
        return n

    def close(self):
        for n in self.nodes:
            n.alive = False
            stop(n.sub)
        self.cluster.stop()
        self.root.close()

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

    def metric(self, name):
        text = requests.get(self.cluster_url + "/metrics", timeout=5).text
        return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")))


UNIKERNEL_CAPS = {"accel": "kvm", "qemu_version": "7.2.0", "emulated_archs": []}


class ReconcileTest(unittest.TestCase):
    """docs/reconcile.md at the cluster: generations, partitions that are not deaths, re-adoption,
    the variant chosen per node, FAILED and its expiring avoid entry, drain, removal; each test with
    its own cluster (and mosquitto) registered with a fake root."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-reconcile-test-")

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
        p = subprocess.run([CLUSTER_BIN, "--state-dir", state, "--new-join-token"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.count("event=migrate"), 1, p.stderr)
        self.assertIn("from=1 to=2", p.stderr)
        db = sqlite3.connect(os.path.join(state, "cluster.db"))
        try:
            self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 2)
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
            self.assertEqual(db.execute("SELECT COUNT(*) FROM join_tokens").fetchone()[0], 2)
            self.assertEqual(db.execute("SELECT value FROM kv WHERE key = 'token'").fetchone()[0], "t9")
            self.assertEqual(db.execute("SELECT COUNT(*) FROM old_copies").fetchone()[0], 0)
        finally:
            db.close()
        http_port, mqtt_port = ports(2)
        d = Daemon([CLUSTER_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % http_port, "--root-url",
                    "http://127.0.0.1:1", "--name", "v1", "--mqtt-port", str(mqtt_port), "--mosquitto", MOSQUITTO],
                   os.path.join(self.tmp, "v1-cluster.log"))
        d.start()
        try:
            url = "http://127.0.0.1:%d" % http_port
            rows = wait_until("the upgraded cluster's instances", lambda: requests.get(url + "/api/v1/instances",
                                                                                        timeout=5).json())
            nodes = requests.get(url + "/api/v1/nodes", timeout=5).json()
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
        entry = wait_until("instances in the aggregate", lambda: next(
            (e for e in site.root.aggregates[-1].get("instances", []) if e["generation"] == 6), None))
        self.assertEqual(entry, {"job_id": "svc-web", "instance": 0, "generation": 6, "status": "RUNNING",
                                 "status_detail": "", "node": "node-a", "ready": False})
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

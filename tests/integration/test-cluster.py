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
            "added_files": [], "restart": "on-failure"}, {
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
        # leaving RUNNING resets readiness, here and at the root
        self.a.status(JOB, n, "FAILED", "exit 1")
        gone = wait_until("FAILED at the root", lambda: (lambda i: i if i and i["status"] == "FAILED" else None)(
            self.native_instance(n)))
        self.assertIs(gone["ready"], False, gone)
        self.assertNotIn("ready_ms", gone)
        self.assertNotIn("node_ready_ms", gone)
        here = self.cluster_instance(name)
        self.assertEqual((here["status"], here["ready"]), ("FAILED", False), here)
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

    def test_06_failed_twice_moves_to_other_node(self):
        n = self.running
        self.a.status(JOB, n, "FAILED", "exit 1")
        self.wait_root_status(n, "FAILED", "node-a")
        self.a.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", "node-a")
        self.a.status(JOB, n, "FAILED", "exit 1 again")
        self.a.expect("control/delete", lambda m: m.get("instance_number") == n)
        self.a.instances.discard("%s.instance.%d" % (JOB, n))
        self.b.expect("control/deploy", lambda m: m.get("instance_number") == n)
        self.wait_root_status(n, "NODE_SCHEDULED", "node-b")
        self.b.instances.add("%s.instance.%d" % (JOB, n))
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
        self.b.expect("control/deploy", lambda m: m.get("instance_number") == n, timeout=15)
        self.wait_root_status(n, "NODE_SCHEDULED", "node-b")
        self.b.instances.add("%s.instance.%d" % (JOB, n))
        self.b.status(JOB, n, "RUNNING")
        self.wait_root_status(n, "RUNNING", "node-b")
        # A comes back still running it: it is told to drop it.
        self.a.alive = True
        self.a.thread = threading.Thread(target=self.a._report_loop, daemon=True)
        self.a.thread.start()
        self.a.expect("control/delete", lambda m: m.get("instance_number") == n)
        self.a.instances.discard("%s.instance.%d" % (JOB, n))
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
        self.b.status(JOB, n, "FAILED", "after restart")
        self.wait_root_status(n, "FAILED", "node-b")
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
        """restart: never: an instance whose node falls silent fails instead of moving, and the
        node that comes back with it is told to drop it."""
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
        failed = self.wait_root_status(n, "FAILED", timeout=15, sid=self.sid_once)
        self.assertIn("restart policy is never", failed.get("status_detail", ""), failed)
        self.assertEqual(other.got("control/deploy", lambda m: m.get("job_name") == JOB_ONCE), [])
        # it comes back still running it: it is told to drop it, and nothing moves
        node.alive = True
        node.thread = threading.Thread(target=node._report_loop, daemon=True)
        node.thread.start()
        node.expect("control/delete", lambda m: m.get("job_name") == JOB_ONCE and m.get("instance_number") == n)
        node.instances.discard(name)
        time.sleep(2)
        self.assertEqual(self.root_instance(n, self.sid_once)["status"], "FAILED")
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
        self.assertEqual(p.stderr.count("event=migrate"), 4, p.stderr)
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
        self.assertEqual([(i["name"], i["status"], i["ready"]) for i in rows],
                         [("old.a.b.c.instance.0", "RUNNING", False)])
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

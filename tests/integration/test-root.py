#!/usr/bin/python3
"""Integration test of oakuk-root: the thesis deployment flow over the Oakestra-compatible API,
a fake cluster (a local HTTP server) that registers, reports and receives forwarded deploys,
authentication, input validation and a restart that keeps everything acknowledged.

Usage: test-root.py <path to oakuk-root>   (fixtures from $OAKUK_FIXTURES)"""
import http.server
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgelib import ports  # noqa: E402

ROOT_BIN = None
FIXTURES = pathlib.Path(os.environ.get("OAKUK_FIXTURES", pathlib.Path(__file__).resolve().parents[1] / "fixtures"))
SLA = (FIXTURES / "thesis" / "nginx-unikernel.json").read_bytes()
AGGREGATE = (FIXTURES / "thesis" / "cluster-aggregate-listing-4.8.json").read_bytes()
MALFORMED = b'{"applications": [ {"broken'


class Response:
    def __init__(self, status, body, headers):
        self.status, self.body, self.headers = status, body, headers

    def json(self):
        return json.loads(self.body)


def request(base, method, path, body=None, token=None, raw=False):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return Response(r.status, r.read(), r.headers)
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), e.headers)


class FakeCluster:
    """Records every request the root forwards and answers 200 (DELETEs: delete_status)."""

    def __init__(self):
        self.requests = []
        self.delete_status = 200
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with outer.cond:
                    outer.requests.append((self.command, self.path, self.headers.get("Authorization"), body))
                    outer.cond.notify_all()
                self.send_response(outer.delete_status if self.command == "DELETE" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_DELETE = _record

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, method, path, timeout=10):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for r in self.requests:
                    if r[0] == method and r[1] == path:
                        return r
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("cluster never received %s %s; got %r" % (
                        method, path, [(r[0], r[1]) for r in self.requests]))
                self.cond.wait(left)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class RootDaemon:
    def __init__(self, state_dir, port):
        self.state_dir, self.port = state_dir, port
        self.base = "http://127.0.0.1:%d" % port
        self.proc = None
        self.stderr_path = None

    def start(self, extra=()):
        self.stderr_path = os.path.join(os.path.dirname(self.state_dir), "stderr-%d.log" % time.monotonic_ns())
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([ROOT_BIN, "--state-dir", self.state_dir, "--listen", "127.0.0.1:%d" % self.port,
                                      *extra],
                                     stderr=self.stderr, stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("oakuk-root exited: " + self.log())
            try:
                if request(self.base, "GET", "/healthz").status == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        raise AssertionError("oakuk-root did not answer /healthz: " + self.log())

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "killed"
        self.proc = None
        self.stderr.close()
        return rc


class RootTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-root-test-")
        cls.root = RootDaemon(os.path.join(cls.tmp, "state"), ports(1)[0])
        cls.root.start()
        lines = [l for l in cls.root.log().splitlines() if l.startswith("admin password: ")]
        assert len(lines) == 1, cls.root.log()
        cls.password = lines[0].split(": ", 1)[1].strip()
        cls.cluster = FakeCluster()

    @classmethod
    def tearDownClass(cls):
        cls.root.stop()
        cls.cluster.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers --
    def call(self, method, path, body=None, token=None):
        return request(self.root.base, method, path, body, token)

    def login(self):
        r = self.call("POST", "/api/auth/login", {"username": "Admin", "password": self.password})
        self.assertEqual(r.status, 200, r.body)
        self.assertIn("refresh_token", r.json())
        return r.json()["token"]

    def service(self, token, sid):
        r = self.call("GET", "/api/service/%s" % sid, token=token)
        self.assertEqual(r.status, 200, r.body)
        self.assertIsInstance(r.json(), str, "GET /api/service answers a JSON string (Oakestra)")
        return json.loads(r.json())

    def instance(self, svc, n):
        return next((i for i in svc["instance_list"] if i["instance_number"] == n), None)

    def native_instances(self, token, sid):
        r = self.call("GET", "/api/v1/services/%s/instances" % sid, token=token)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def native_instance(self, token, sid, n):
        return next((i for i in self.native_instances(token, sid) if i["instance_number"] == n), None)

    def wait_service(self, token, sid, pred, what, timeout=10):
        deadline = time.time() + timeout
        while True:
            svc = self.service(token, sid)
            if pred(svc):
                return svc
            if time.time() > deadline:
                self.fail("timed out waiting for %s: %s" % (what, json.dumps(svc["instance_list"])))
            time.sleep(0.1)

    def assert_error(self, r, status):
        self.assertEqual(r.status, status, r.body)
        err = r.json()["error"]
        self.assertEqual(set(err), {"code", "message", "path"}, err)
        self.assertTrue(err["message"])
        return err

    def snapshot(self, token):
        return (self.call("GET", "/api/applications", token=token).body,
                self.call("GET", "/api/v1/services", token=token).body,
                self.call("GET", "/api/clusters/", token=token).body)

    # -- tests (numbered: they share one daemon and build on each other) --
    def test_01_auth(self):
        self.assertEqual(self.call("GET", "/healthz").status, 200)
        self.assert_error(self.call("POST", "/api/auth/login", {"username": "Admin", "password": "wrong"}), 401)
        self.assert_error(self.call("POST", "/api/auth/login", {"username": "nobody", "password": "x"}), 401)
        err = self.assert_error(self.call("POST", "/api/auth/login", {"username": "Admin"}), 400)
        self.assertIn("password", err["message"])
        fake = "0123456789abcdef01234567"
        protected = [
            ("POST", "/api/application/", SLA), ("POST", "/api/application", SLA),
            ("GET", "/api/application/" + fake, None), ("PUT", "/api/application/" + fake, {}),
            ("DELETE", "/api/application/" + fake, None), ("GET", "/api/applications/", None),
            ("GET", "/api/applications", None), ("GET", "/api/service/" + fake, None),
            ("DELETE", "/api/service/" + fake, None), ("GET", "/api/services/" + fake, None),
            ("POST", "/api/service/%s/instance" % fake, None), ("DELETE", "/api/service/%s/instance/0" % fake, None),
            ("GET", "/api/clusters/", None), ("GET", "/api/clusters/active", None),
            ("POST", "/api/information/" + fake, AGGREGATE), ("GET", "/api/v1/applications", None),
            ("POST", "/api/v1/applications", SLA), ("GET", "/api/v1/services", None),
            ("GET", "/api/v1/services/%s/explain" % fake, None), ("POST", "/api/v1/services/%s/instances" % fake, None),
            ("GET", "/api/v1/clusters", None), ("POST", "/api/v1/clusters/tokens", None),
            ("POST", "/api/v1/clusters/register", {"name": "c", "location": "l", "url": "http://127.0.0.1:1"}),
            ("POST", "/api/v1/clusters/%s/status" % fake, []), ("POST", "/api/auth/refresh", None),
        ]
        for method, path, body in protected:
            with self.subTest(method=method, path=path):
                self.assert_error(self.call(method, path, body), 401)
                self.assert_error(self.call(method, path, body, token="not.a.jwt"), 401)
        # A tampered token (signature of another payload) is refused too.
        token = self.login()
        h, p, s = token.split(".")
        self.assert_error(self.call("GET", "/api/applications", token=h + "." + p[:-2] + "AA." + s), 401)
        # The refresh token is not an access token, but refreshes one.
        refresh = self.call("POST", "/api/auth/login", {"username": "Admin", "password": self.password}).json()["refresh_token"]
        self.assert_error(self.call("GET", "/api/applications", token=refresh), 401)
        r = self.call("POST", "/api/auth/refresh", token=refresh)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.call("GET", "/api/applications", token=r.json()["token"]).status, 200)

    def test_02_thesis_flow(self):
        token = self.login()
        r = self.call("POST", "/api/application/", SLA, token=token)
        self.assertEqual(r.status, 200, r.body)
        apps = json.loads(r.json())  # the thesis client: json.loads(r.json())
        self.assertEqual(len(apps), 1)
        self.assertEqual(apps[0]["application_name"], "testing")
        sid = apps[0]["microservices"][0]
        self.assertRegex(sid, r"^[0-9a-f]{24}$")
        type(self).sid = sid
        # The same application twice is a conflict, not a duplicate.
        self.assert_error(self.call("POST", "/api/application", SLA, token=token), 409)
        r = self.call("POST", "/api/service/%s/instance" % sid, token=token)
        self.assertEqual(r.status, 200, r.body)
        svc = self.service(token, sid)
        for key in ("microserviceID", "applicationID", "job_name", "app_name", "app_ns", "service_name",
                    "service_ns", "image", "next_instance_progressive_number", "status", "instance_list"):
            self.assertIn(key, svc)
        self.assertEqual(svc["_id"], {"$oid": sid})
        self.assertEqual(svc["job_name"], "testing.test.testaggr.test")
        self.assertEqual(svc["memory"], 1000)
        inst = svc["instance_list"][0]
        self.assertEqual(inst["instance_number"], 0)
        self.assertEqual(inst["status"], "NoActiveClusterWithCapacity")
        self.assertTrue(inst["status_detail"])
        for key in ("cluster_id", "cluster_location", "node_id", "publicip", "cpu", "memory", "status_detail"):
            self.assertIn(key, inst)

        # A cluster joins with a one-time join token.
        r = self.call("POST", "/api/v1/clusters/tokens", token=token)
        self.assertEqual(r.status, 201, r.body)
        join = r.json()["token"]
        reg = {"name": "cluster1", "location": "lab", "url": self.cluster.url}
        self.assert_error(self.call("POST", "/api/v1/clusters/register", reg, token="wrong-join-token"), 401)
        r = self.call("POST", "/api/v1/clusters/register", reg, token=join)
        self.assertEqual(r.status, 201, r.body)
        cl = r.json()
        self.assertRegex(cl["id"], r"^[0-9a-f]{24}$")
        self.assertEqual(cl["subnet"], "10.18.0.0/20")
        type(self).cluster_id, type(self).cluster_token = cl["id"], cl["token"]
        self.assert_error(self.call("POST", "/api/v1/clusters/register", reg, token=join), 401)  # one-time
        # Cluster endpoints take only this cluster's token.
        self.assert_error(self.call("POST", "/api/information/" + cl["id"], AGGREGATE, token=token), 401)
        r = self.call("POST", "/api/information/" + cl["id"], AGGREGATE, token=cl["token"])
        self.assertEqual(r.status, 200, r.body)
        active = self.call("GET", "/api/clusters/active", token=token).json()
        self.assertEqual([c["cluster_name"] for c in active], ["cluster1"])
        self.assertEqual(active[0]["cluster_location"], "lab")
        self.assertEqual(active[0]["cumulative_memory_in_mb"], 7627)
        self.assertNotIn("token", json.dumps(active))

        # Deploy: forwarded to the cluster with its token, as POST /api/service/<job_id>/<n>.
        r = self.call("POST", "/api/service/%s/instance" % sid, token=token)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["instance_number"], 1)
        svc = self.service(token, sid)
        self.assertEqual(self.instance(svc, 1)["status"], "CLUSTER_SCHEDULED")
        self.assertEqual(self.instance(svc, 1)["cluster_id"], cl["id"])
        try:
            method, path, auth, body = self.cluster.wait_for("POST", "/api/service/%s/1" % sid)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.root.log()))
        self.assertEqual(auth, "Bearer " + cl["token"])
        job = json.loads(body)
        self.assertEqual(job["job_name"], "testing.test.testaggr.test")
        self.assertEqual(job["instance_number"], 1)
        self.assertEqual(job["placement"]["virtualization"], "unikernel")
        self.assertEqual(job["placement"]["arch"], "amd64")
        self.assertEqual(job["placement"]["code"], "http://192.168.1.173:8001/nginxx86.tar.gz")
        lines = self.call("GET", "/api/v1/services/%s/explain" % sid, token=token).json()["lines"]
        self.assertTrue(any("cluster1" in l for l in lines), lines)

        # The cluster reports RUNNING.
        status = [{"job_id": sid, "instance": 1, "status": "RUNNING", "status_detail": "", "node": "node-a"}]
        self.assert_error(self.call("POST", "/api/v1/clusters/%s/status" % cl["id"], status, token=token), 401)
        self.assert_error(self.call("POST", "/api/v1/clusters/%s/status" % cl["id"],
                                    [{"job_id": sid, "instance": 1, "status": "SLEEPING"}], token=cl["token"]), 400)
        r = self.call("POST", "/api/v1/clusters/%s/status" % cl["id"], status, token=cl["token"])
        self.assertEqual(r.status, 200, r.body)
        inst = self.instance(self.service(token, sid), 1)
        self.assertEqual(inst["status"], "RUNNING")
        self.assertEqual(inst["node_id"], "node-a")

        # A cluster that cannot place an instance hands it back; with no other cluster the root says so.
        r = self.call("POST", "/api/service/%s/instance" % sid, token=token)
        self.cluster.wait_for("POST", "/api/service/%s/2" % sid)
        refusal = [{"job_id": sid, "instance": 2, "status": "NO_QUALIFIED_WORKER_FOUND", "status_detail": "no kvm"}]
        r = self.call("POST", "/api/v1/clusters/%s/status" % cl["id"], refusal, token=cl["token"])
        self.assertEqual(r.status, 200, r.body)
        inst = self.instance(self.service(token, sid), 2)
        self.assertEqual(inst["status"], "NoActiveClusterWithCapacity")
        self.assertIn("cluster1", inst["status_detail"])
        self.assertIn("NO_QUALIFIED_WORKER_FOUND", inst["status_detail"])

        # Undeploy: forwarded, and the instance disappears once the cluster confirmed (the native
        # API shows it until then; the compatible one drops it at once, see test_02a).
        r = self.call("DELETE", "/api/service/%s/instance/1" % sid, token=token)
        self.assertEqual(r.status, 200, r.body)
        self.cluster.wait_for("DELETE", "/api/service/%s/1" % sid)
        deadline = time.time() + 10
        while self.native_instance(token, sid, 1) is not None:
            self.assertLess(time.time(), deadline, "instance 1 was never removed")
            time.sleep(0.1)
        # Never-placed instances go at once.
        self.assertEqual(self.call("DELETE", "/api/service/%s/instance/2" % sid, token=token).status, 200)
        self.assertIsNone(self.instance(self.service(token, sid), 2))
        self.assert_error(self.call("DELETE", "/api/service/%s/instance/7" % sid, token=token), 404)
        # Instance 3 stays deployed across the restart below.
        self.call("POST", "/api/service/%s/instance" % sid, token=token)
        self.cluster.wait_for("POST", "/api/service/%s/3" % sid)
        r = self.call("POST", "/api/v1/clusters/%s/status/" % cl["id"],
                      [{"job_id": "testing.test.testaggr.test", "instance": 3, "status": "RUNNING", "node": "node-b"}],
                      token=cl["token"])
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.instance(self.service(token, sid), 3)["status"], "RUNNING")

    def test_02a_readiness_and_compat_delete(self):
        """ready/ready_ms from the cluster's status reports, the root's own ready_ms, and DELETE:
        gone at once from the compatible service document, terminating in the native API until the
        cluster confirms."""
        token = self.login()
        cid, ctok = self.cluster_id, self.cluster_token
        sla = json.loads(SLA)
        sla["applications"][0]["application_name"] = "ready"
        r = self.call("POST", "/api/v1/applications", sla, token=token)
        self.assertEqual(r.status, 201, r.body)
        app = r.json()["applications"][0]
        sid = app["microservices"][0]
        self.assertEqual(self.call("POST", "/api/information/" + cid, AGGREGATE, token=ctok).status, 200)
        t0 = int(time.time() * 1000)
        r = self.call("POST", "/api/v1/services/%s/instances" % sid, token=token)
        t1 = int(time.time() * 1000)
        self.assertEqual(r.status, 201, r.body)
        inst = r.json()
        n = inst["instance_number"]
        self.assertIs(inst["ready"], False)
        self.assertNotIn("ready_ms", inst)
        self.assertTrue(t0 <= inst["requested_at"] <= t1, (t0, inst["requested_at"], t1))
        self.cluster.wait_for("POST", "/api/service/%s/%d" % (sid, n))

        def report(**entry):
            return self.call("POST", "/api/v1/clusters/%s/status" % cid,
                             [dict({"job_id": sid, "instance": n, "node": "node-a"}, **entry)], token=ctok)

        def now():
            return self.native_instance(token, sid, n)

        # A cluster older than readiness sends no "ready": RUNNING, not ready.
        self.assertEqual(report(status="RUNNING").status, 200)
        self.assertEqual((now()["status"], now()["ready"]), ("RUNNING", False))
        # "ready" with another status is no readiness.
        self.assertEqual(report(status="CREATING", ready=True, ready_ms=7).status, 200)
        self.assertEqual((now()["status"], now()["ready"]), ("CREATING", False))
        self.assertNotIn("ready_ms", now())
        # Malformed readiness rejects the batch, naming the field; nothing changes.
        before = self.native_instances(token, sid)
        for bad, field in (({"ready": "yes"}, "ready"), ({"ready": 1}, "ready"),
                           ({"ready": True, "ready_ms": -1}, "ready_ms"), ({"ready": True, "ready_ms": 1.5}, "ready_ms"),
                           ({"ready": True, "ready_ms": "9"}, "ready_ms")):
            with self.subTest(bad=bad):
                err = self.assert_error(report(status="RUNNING", **bad), 400)
                self.assertEqual(err["path"], "[0]." + field)
        self.assertEqual(self.native_instances(token, sid), before)
        self.assertEqual(report(status="RUNNING", ready=False).status, 200)
        self.assertEqual((now()["status"], now()["ready"]), ("RUNNING", False))
        # Ready: the root measures ready_ms from the deploy request to this report itself and keeps
        # the node's figure as node_ready_ms.
        time.sleep(0.4)
        t2 = int(time.time() * 1000)
        self.assertEqual(report(status="RUNNING", ready=True, ready_ms=1234).status, 200)
        t3 = int(time.time() * 1000)
        inst = now()
        self.assertIs(inst["ready"], True)
        self.assertEqual(inst["node_ready_ms"], 1234)
        first = inst["ready_ms"]
        self.assertTrue(t2 - t1 <= first <= t3 - t0, (t2 - t1, first, t3 - t0))
        self.assertRegex(self.root.log(), r"event=status instance=ready\.test\.testaggr\.test\.instance\.%d .*"
                         r"status=RUNNING ready=true ready_ms=%d node_ready_ms=1234" % (n, first))
        doc = self.service(token, sid)
        self.assertEqual((self.instance(doc, n)["ready"], self.instance(doc, n)["ready_ms"]), (True, first))
        explained = self.call("GET", "/api/v1/services/%s/explain" % sid, token=token).json()["instances"]
        self.assertEqual([(i["ready"], i["ready_ms"]) for i in explained], [(True, first)])
        # A repeated ready keeps the first measure.
        time.sleep(0.05)
        self.assertEqual(report(status="RUNNING", ready=True, ready_ms=99).status, 200)
        self.assertEqual((now()["ready_ms"], now()["node_ready_ms"]), (first, 1234))
        # Leaving RUNNING drops readiness and both measures...
        self.assertEqual(report(status="FAILED", status_detail="probe failed").status, 200)
        inst = now()
        self.assertEqual((inst["status"], inst["ready"]), ("FAILED", False))
        self.assertNotIn("ready_ms", inst)
        self.assertNotIn("node_ready_ms", inst)
        # ...and the next readiness is measured afresh, still from the original request.
        time.sleep(0.05)
        self.assertEqual(report(status="RUNNING", ready=True, ready_ms=50).status, 200)
        inst = now()
        self.assertEqual((inst["ready"], inst["node_ready_ms"]), (True, 50))
        self.assertGreater(inst["ready_ms"], first)

        # DELETE while the cluster does not confirm (it answers 503: the root retries).
        self.cluster.delete_status = 503
        try:
            r = self.call("DELETE", "/api/service/%s/instance/%d" % (sid, n), token=token)
            self.assertEqual(r.status, 200, r.body)
            # The very next compatible GET no longer lists it (Oakestra, the thesis's Appendix A)...
            self.assertEqual(self.service(token, sid)["instance_list"], [])
            listed = self.call("GET", "/api/services/" + app["applicationID"], token=token).json()
            self.assertEqual([s["instance_list"] for s in listed], [[]])
            # ...while the native API shows it terminating.
            for entry in (now(), self.instance(self.call("GET", "/api/v1/services/" + sid, token=token).json(), n),
                          self.instance(self.call("GET", "/api/v1/applications/%s/services" % app["applicationID"],
                                                  token=token).json()[0], n)):
                self.assertIsNotNone(entry)
                self.assertEqual(entry["status"], "UNDEPLOYED")
                self.assertIn("waiting for cluster %s to confirm the removal" % cid, entry["status_detail"])
                self.assertIs(entry["ready"], False)
            self.cluster.wait_for("DELETE", "/api/service/%s/%d" % (sid, n))
            time.sleep(0.5)
            self.assertEqual(now()["status"], "UNDEPLOYED")  # a 503 is no confirmation
            # The cluster confirms with a status report: the native API drops it too.
            self.assertEqual(report(status="UNDEPLOYED").status, 200)
            self.assertIsNone(now())
            self.assertEqual(self.service(token, sid)["instance_list"], [])
        finally:
            self.cluster.delete_status = 200
        self.assertEqual(self.call("DELETE", "/api/application/" + app["applicationID"], token=token).status, 200)

    def test_03_validation(self):
        token = self.login()
        before = self.snapshot(token)
        sid, cid, ctok = self.sid, self.cluster_id, self.cluster_token
        join = self.call("POST", "/api/v1/clusters/tokens", token=token).json()["token"]
        posts = [
            ("POST", "/api/auth/login", None), ("POST", "/api/auth/refresh", None),
            ("POST", "/api/application/", token), ("POST", "/api/application", token),
            ("POST", "/api/v1/applications", token), ("POST", "/api/service/%s/instance" % sid, token),
            ("POST", "/api/v1/services/%s/instances" % sid, token), ("POST", "/api/v1/clusters/tokens", token),
            ("POST", "/api/v1/clusters/register", join), ("POST", "/api/information/" + cid, ctok),
            ("POST", "/api/v1/clusters/%s/information" % cid, ctok), ("POST", "/api/v1/clusters/%s/status" % cid, ctok),
            ("PUT", "/api/application/" + json.loads(before[0])[0]["applicationID"], token),
        ]
        for method, path, tok in posts:
            with self.subTest(path=path):
                err = self.assert_error(self.call(method, path, MALFORMED, token=tok), 400)
                self.assertIn("JSON", err["message"])
        self.assertEqual(self.snapshot(token), before)
        # A descriptor that fails validation names the field.
        bad = json.loads(SLA)
        bad["applications"][0]["microservices"][0]["arch"] = ["amd64", "arm64"]
        err = self.assert_error(self.call("POST", "/api/application", bad, token=token), 400)
        self.assertIn("arch", err["path"] + err["message"])
        bad_agg = json.loads(AGGREGATE)
        bad_agg["cpu_cores"] = "many"
        err = self.assert_error(self.call("POST", "/api/information/" + cid, bad_agg, token=ctok), 400)
        self.assertIn("cpu_cores", err["path"] + err["message"])
        err = self.assert_error(self.call("POST", "/api/v1/clusters/%s/status" % cid, [{"status": "RUNNING"}],
                                          token=ctok), 400)
        self.assertIn("job_id", err["message"])
        # Oversized bodies are refused before they are read.
        big = b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}'
        try:
            r = self.call("POST", "/api/application", big, token=token)
            self.assertEqual(r.status, 413, r.body)
        except (ConnectionError, urllib.error.URLError):
            pass  # the server may close the connection while the client still sends
        self.assertEqual(self.snapshot(token), before)
        # Unknown ids are 404 with the error object.
        fake = "0123456789abcdef01234567"
        for path in ("/api/service/" + fake, "/api/application/" + fake, "/api/services/" + fake,
                     "/api/v1/clusters/" + fake, "/api/v1/services/%s/explain" % fake):
            with self.subTest(path=path):
                self.assert_error(self.call("GET", path, token=token), 404)
        self.assert_error(self.call("POST", "/api/service/%s/instance" % fake, token=token), 404)

    def test_04_restart_keeps_state(self):
        token = self.login()
        before = self.snapshot(token)
        svc_before = self.service(token, self.sid)
        self.assertEqual(self.root.stop(), 0)
        self.root.start()
        self.assertNotIn("admin password", self.root.log())
        token = self.login()  # same password, same JWT secret
        self.assertEqual(self.snapshot(token)[:2], before[:2])
        svc = self.service(token, self.sid)
        self.assertEqual(svc["instance_list"], svc_before["instance_list"])
        self.assertEqual(svc["next_instance_progressive_number"], 4)
        # The cluster's token survives too.
        r = self.call("POST", "/api/information/" + self.cluster_id, AGGREGATE, token=self.cluster_token)
        self.assertEqual(r.status, 200, r.body)
        r = self.call("GET", "/metrics")
        self.assertEqual(r.status, 200)
        text = r.body.decode()
        self.assertIn("oakuk_root_applications 1", text)
        self.assertIn('oakuk_root_instances{status="RUNNING"} 1', text)
        self.assertIn("oakuk_root_clusters_active 1", text)
        self.assertNotIn(self.cluster_token, text)
        self.assertNotIn(self.password, text)
        # Deleting the application undeploys its instance on the cluster.
        app_id = svc["applicationID"]
        self.assertEqual(self.call("DELETE", "/api/application/" + app_id, token=token).status, 200)
        self.cluster.wait_for("DELETE", "/api/service/%s/3" % self.sid)
        self.assert_error(self.call("GET", "/api/service/" + self.sid, token=token), 404)
        self.assertEqual(self.call("GET", "/api/applications", token=token).json(), [])

    def test_05_connections_are_not_leaked(self):
        """Connections that clients close, idle after a kept-alive response or at once, are freed:
        libsoup 3.2's own listener lost 0.3-1.9 kB of each (daemons/common/http.c)."""
        def rss_kb():
            with open("/proc/%d/status" % self.root.proc.pid) as f:
                return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])

        def one(close):
            with socket.create_connection(("127.0.0.1", self.root.port), timeout=10) as c:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n" % (b"Connection: close\r\n" if close else b""))
                data = b""
                while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)

        for k in range(300):  # warm-up: allocator, caches
            one(k % 2 == 0)
        before = rss_kb()
        for k in range(3000):
            one(k % 2 == 0)
        time.sleep(0.5)
        grown = rss_kb() - before
        # 1500 idle-closed and 1500 closed connections leaked some 3.3 MB before; now nothing.
        self.assertLess(grown, 512, "oakuk-root grew by %d kB over 3000 connections" % grown)


class RescheduleTest(unittest.TestCase):
    """A cluster that stops sending aggregates loses its instances to another cluster."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oakuk-root-resched-")
        conf = os.path.join(self.tmp, "root.conf")
        with open(conf, "w") as f:
            f.write("[root]\ncluster_timeout_s=2\n")
        self.root = RootDaemon(os.path.join(self.tmp, "state"), ports(1)[0])
        self.root.start(["--config", conf])
        self.password = [l for l in self.root.log().splitlines() if l.startswith("admin password: ")][0].split(": ")[1]
        self.clusters = [FakeCluster(), FakeCluster()]

    def tearDown(self):
        self.root.stop()
        for c in self.clusters:
            c.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_cluster_timeout_moves_instance(self):
        base = self.root.base
        token = request(base, "POST", "/api/auth/login", {"username": "Admin", "password": self.password}).json()["token"]
        regs = []
        for i, c in enumerate(self.clusters):
            join = request(base, "POST", "/api/v1/clusters/tokens", token=token).json()["token"]
            r = request(base, "POST", "/api/v1/clusters/register",
                        {"name": "c%d" % i, "location": "lab", "url": c.url}, token=join)
            self.assertEqual(r.status, 201, r.body)
            regs.append(r.json())
            self.assertEqual(request(base, "POST", "/api/information/" + r.json()["id"], AGGREGATE,
                                     token=r.json()["token"]).status, 200)
        self.assertEqual([r["subnet"] for r in regs], ["10.18.0.0/20", "10.18.16.0/20"])
        apps = json.loads(request(base, "POST", "/api/application", SLA, token=token).json())
        sid = apps[0]["microservices"][0]
        self.assertEqual(request(base, "POST", "/api/service/%s/instance" % sid, token=token).status, 200)
        svc = json.loads(request(base, "GET", "/api/service/" + sid, token=token).json())
        first = svc["instance_list"][0]["cluster_id"]
        idx = [r["id"] for r in regs].index(first)
        other = regs[1 - idx]
        self.clusters[idx].wait_for("POST", "/api/service/%s/0" % sid)
        # Only the other cluster keeps reporting; the first one goes silent.
        deadline = time.time() + 15
        while time.time() < deadline:
            request(base, "POST", "/api/information/" + other["id"], AGGREGATE, token=other["token"])
            svc = json.loads(request(base, "GET", "/api/service/" + sid, token=token).json())
            if svc["instance_list"][0]["cluster_id"] == other["id"]:
                break
            time.sleep(0.3)
        inst = svc["instance_list"][0]
        self.assertEqual(inst["cluster_id"], other["id"], self.root.log())
        self.assertEqual(inst["status"], "CLUSTER_SCHEDULED")
        self.assertIn(first, inst["cluster_refusals"])
        self.clusters[1 - idx].wait_for("POST", "/api/service/%s/0" % sid)
        # The silent cluster is told to drop its copy (best effort) should it come back.
        self.clusters[idx].wait_for("DELETE", "/api/service/%s/0" % sid)


if __name__ == "__main__":
    ROOT_BIN = sys.argv[1]
    unittest.main(argv=[sys.argv[0], "-v"])

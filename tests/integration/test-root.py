#!/usr/bin/python3
"""Integration test of oakuk-root: the thesis deployment flow over the Oakestra-compatible API,
a fake cluster (a local HTTP server) that registers, reports and receives forwarded deploys,
authentication, input validation and a restart that keeps everything acknowledged; and the root's
side of docs/reconcile.md with fake clusters: silent clusters keeping and then moving instances, a
cluster coming back, refusals that expire, placement when capacity appears, generations, deletes of
unwanted copies, a restart in the middle of a deploy, drains and cluster removal, and the upgrade of
a root.db of the schema before versions. The root serves HTTPS (its own CA, trusted here) and the
fake clusters serve HTTPS with the certificate the root signs from their registration's request.

Usage: test-root.py <path to oakuk-root>   (fixtures from $OAKUK_FIXTURES)"""
import base64
import hashlib
import hmac
import http.server
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edgelib  # noqa: E402
from edgelib import ports  # noqa: E402

ROOT_BIN = OAKUK = None
GUESTS = pathlib.Path(os.environ.get("OAKUK_GUESTS_DIR", "/nonexistent"))
REGISTRY_BIN = "/usr/bin/docker-registry"
FIXTURES = pathlib.Path(os.environ.get("OAKUK_FIXTURES", pathlib.Path(__file__).resolve().parents[1] / "fixtures"))
SLA = (FIXTURES / "thesis" / "nginx-unikernel.json").read_bytes()
AGGREGATE = (FIXTURES / "thesis" / "cluster-aggregate-listing-4.8.json").read_bytes()
MALFORMED = b'{"applications": [ {"broken'


TRUST = {}  # base URL -> ssl.SSLContext trusting that root's CA only


def trust(base, ca_path):
    TRUST[base] = ssl.create_default_context(cafile=ca_path)


def make_csr(tmp, name, sans=("127.0.0.1", "localhost")):
    """A key (its path) and a certificate request (PEM) made by openssl, as a cluster makes them."""
    key = os.path.join(tmp, "%s-%d.key" % (name, time.monotonic_ns()))
    alt = ",".join(("IP:" if re.fullmatch(r"[0-9.]+", n) else "DNS:") + n for n in sans)
    csr = subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-nodes", "-keyout", key, "-subj", "/CN=" + name, "-addext", "subjectAltName=" + alt],
                         capture_output=True, check=True, text=True).stdout
    return key, csr


class Response:
    def __init__(self, status, body, headers):
        self.status, self.body, self.headers = status, body, headers

    def json(self):
        return json.loads(self.body)


def request(base, method, path, body=None, token=None, raw=False, headers=None):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=15, context=TRUST.get(base)) as r:
            return Response(r.status, r.read(), r.headers)
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), e.headers)


class EventStream:
    """GET /api/v1/events read as it comes: next_event() is the next (name, data) of the stream
    (comments are counted in keepalives), or None at its end."""

    def __init__(self, base, token, timeout=10):
        u = urllib.parse.urlsplit(base)
        ctx = TRUST.get(base)
        self.conn = (http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=timeout) if ctx else
                     http.client.HTTPConnection(u.hostname, u.port, timeout=timeout))
        self.conn.request("GET", "/api/v1/events", headers={"Authorization": "Bearer " + token} if token else {})
        self.resp = self.conn.getresponse()
        self.status, self.headers = self.resp.status, self.resp.headers
        self.keepalives = 0

    def next_event(self):
        name, data = "message", []
        while True:
            line = self.resp.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line == "":
                if data:
                    return name, "\n".join(data)
                name = "message"
                continue
            if line.startswith(":"):
                self.keepalives += 1
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))

    def wait_keepalives(self, n):
        """Reads until n keep-alive comments were seen (events are skipped)."""
        while self.keepalives < n:
            line = self.resp.readline()
            if not line:
                raise AssertionError("the stream ended after %d keep-alives" % self.keepalives)
            if line.startswith(b":"):
                self.keepalives += 1

    def until(self, name, pred=lambda data: True):
        """The data of the first event called name whose JSON satisfies pred."""
        while True:
            ev = self.next_event()
            if ev is None:
                raise AssertionError("the stream ended before a %s event" % name)
            if ev[0] == name and pred(json.loads(ev[1])):
                return json.loads(ev[1])

    def close(self):
        self.resp.close()  # the socket stays open while the response holds it
        self.conn.close()


class FakeCluster:
    """Records every request the root forwards and answers 200 {} (DELETEs: delete_status, deploys:
    deploy_status and deploy_body; answers[(method, path)] = (status, body) for other paths). With
    tls, its URL is https and it serves once serve_tls() got the certificate of its registration."""

    def __init__(self, tls=False):
        self.requests = []
        self.delete_status = 200
        self.deploy_status, self.deploy_body = 200, {}
        self.answers = {}
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
                path = self.path.split("?")[0]
                if (self.command, path) in outer.answers:
                    status, answer = outer.answers[(self.command, path)]
                elif self.command == "DELETE" and path.startswith("/api/service/"):
                    status, answer = outer.delete_status, {}
                elif self.command == "POST" and path.startswith("/api/service/"):
                    status, answer = outer.deploy_status, outer.deploy_body
                else:
                    status, answer = 200, {}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_DELETE = _record

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.server.server_address[1])
        self.thread = None
        if not tls:
            self._serve()

    def _serve(self):
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve_tls(self, chain_pem, key_path):
        """Serves HTTPS with chain_pem (the certificate the root signed, then its CA) and the key."""
        chain = key_path + ".chain.pem"
        with open(chain, "w") as f:
            f.write(chain_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key_path)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self._serve()

    def got(self, method, path, pred=lambda r: True):
        """The requests of method on path (with or without its query) that pred accepts."""
        with self.cond:
            return [r for r in self.requests if r[0] == method and path in (r[1], r[1].split("?")[0]) and pred(r)]

    def wait_for(self, method, path, timeout=10, pred=lambda r: True):
        """The first request of method on path (with or without its query) that pred accepts."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for r in self.requests:
                    if r[0] == method and path in (r[1], r[1].split("?")[0]) and pred(r):
                        return r
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("cluster never received %s %s; got %r" % (
                        method, path, [(r[0], r[1]) for r in self.requests]))
                self.cond.wait(left)

    def close(self):
        if self.thread is not None:
            self.server.shutdown()
        self.server.server_close()


class RootDaemon:
    def __init__(self, state_dir, port, insecure=False, ca=None):
        self.state_dir, self.port = state_dir, port
        self.base = "%s://127.0.0.1:%d" % ("http" if insecure else "https", port)
        self.ca = ca or os.path.join(state_dir, "pki", "ca.crt")
        self.insecure = insecure
        self.proc = None
        self.stderr_path = None

    def admin_password(self):
        """Written by the root at its first start (and by --reset-admin), never logged."""
        with open(os.path.join(self.state_dir, "admin-password")) as f:
            return f.read().strip()

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
                if not self.insecure:
                    trust(self.base, self.ca)
                if request(self.base, "GET", "/healthz").status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, FileNotFoundError, ssl.SSLError):
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
        cls.password = cls.root.admin_password()
        assert cls.password not in cls.root.log(), "the admin password was logged"
        cls.cluster = FakeCluster(tls=True)

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
        if err["code"] == "invalid_descriptor":  # every problem, the first of them named as path
            self.assertEqual((err["problems"][0]["path"], len(err["message"]) > 0), (err["path"], True), err)
            self.assertTrue(all(p["message"] and isinstance(p["path"], str) for p in err["problems"]), err)
            err = {k: v for k, v in err.items() if k != "problems"}
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

        # A cluster joins with a one-time join token carrying the CA's fingerprint, and gets its
        # certificate request signed: it serves HTTPS with that certificate from then on.
        r = self.call("POST", "/api/v1/clusters/tokens", token=token)
        self.assertEqual(r.status, 201, r.body)
        join = r.json()["token"]
        with open(self.root.ca) as f:
            ca_pem = f.read()
        fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca_pem)).hexdigest()
        self.assertRegex(join, r"^oakuk1\.%s\.[0-9a-f]{48}$" % fp)
        key, csr = make_csr(self.tmp, "cluster1")
        reg = {"name": "cluster1", "location": "lab", "url": self.cluster.url, "csr": csr}
        self.assert_error(self.call("POST", "/api/v1/clusters/register", reg, token="wrong-join-token"), 401)
        r = self.call("POST", "/api/v1/clusters/register", reg, token=join)
        self.assertEqual(r.status, 201, r.body)
        cl = r.json()
        self.assertRegex(cl["id"], r"^[0-9a-f]{24}$")
        self.assertEqual(cl["subnet"], "10.18.0.0/20")
        self.assertRegex(cl["token"], r"^oakukc\.%s\.[0-9a-f]{48}$" % cl["id"])
        self.assertEqual(cl["ca"], ca_pem)
        self.cluster.serve_tls(cl["certificate"] + cl["ca"], key)
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
        # docs/reconcile.md: the job carries its generation, and no chosen variant (the cluster picks
        # one per node among every variant of the job)
        self.assertEqual(job["generation"], 1)
        self.assertNotIn("placement", job)
        self.assertEqual(job["code"], "http://192.168.1.173:8001/nginxx86.tar.gz")
        self.assertEqual(self.instance(svc, 1)["generation"], 1)
        self.assertEqual(self.instance(svc, 1)["placement"], {"virtualization": "unikernel", "arch": "amd64"})
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
        self.cluster.wait_for("DELETE", "/api/service/%s/1?generation=1" % sid)
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
            listed = json.loads(self.call("GET", "/api/services/" + app["applicationID"], token=token).json())
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
            ("PUT", "/api/application/" + json.loads(json.loads(before[0]))[0]["applicationID"], token),
        ]
        for method, path, tok in posts:
            with self.subTest(path=path):
                err = self.assert_error(self.call(method, path, MALFORMED, token=tok), 400)
                self.assertIn("JSON", err["message"])
        self.assertEqual(self.snapshot(token), before)
        # A descriptor that fails validation names the field.
        bad = json.loads(SLA)
        bad["applications"][0]["microservices"][0]["arch"] = ["amd64", "arm64"]
        err = self.assert_error(self.call("POST", "/api/application", bad, token=token), 422)  # Oakestra's code
        self.assertIn("arch", err["path"] + err["message"])
        err = self.assert_error(self.call("POST", "/api/v1/applications", bad, token=token), 400)
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
        except (ConnectionError, urllib.error.URLError, ssl.SSLError):
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
        self.assertNotIn("event=admin-password", self.root.log())  # no new password
        self.assertEqual(self.root.admin_password(), self.password)
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
        self.assertEqual(json.loads(self.call("GET", "/api/applications", token=token).json()), [])

    def test_04b_metrics_in_prometheus_text(self):
        """/metrics parses as Prometheus text (HELP and TYPE before every family), names the build,
        and times requests by method and route pattern: ids in paths never become label values."""
        token = self.login()
        self.assertEqual(self.call("GET", "/api/v1/services/0123456789abcdef01234567", token=token).status, 404)
        self.assertEqual(self.call("GET", "/no/such/route").status, 404)
        version = self.call("GET", "/healthz").json()["version"]
        r = self.call("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers)
        m = edgelib.parse_metrics(r.body.decode())
        for family, fam in m.items():
            self.assertTrue(fam["help"], family)
        self.assertEqual(edgelib.metric_value(m, "oakuk_build_info", daemon="oakuk-root", version=version), 1)
        edgelib.check_process_metrics(self, m, self.root.proc.pid)
        self.assertEqual(m["oakuk_root_applications"]["type"], "gauge")
        self.assertEqual(m["oakuk_root_http_requests_total"]["type"], "counter")
        hist = "oakuk_root_http_request_duration_seconds"
        self.assertEqual(m[hist]["type"], "histogram")
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="GET", route="/healthz"), 1)
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="GET",
                                                     route="/api/v1/services/*"), 1)
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="POST", route="/api/auth/login"), 1)
        self.assertGreaterEqual(edgelib.metric_value(m, hist + "_count", method="", route="none"), 1)
        routes = {labels["route"] for name, labels, _ in m[hist]["samples"]}
        self.assertFalse([x for x in routes if re.search(r"[0-9a-f]{24}|/no/such", x)], routes)

    def test_04c_version_and_unknown_config_refused(self):
        """--version prints the name and version; a config file with a key or group the root does not
        know stops it at start (exit 1) naming the file, the group and the key."""
        p = subprocess.run([ROOT_BIN, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^oakuk-root \d+\.\d+\.\d+\n$")
        conf = os.path.join(self.tmp, "bad-root.conf")
        state = os.path.join(self.tmp, "refused-state")
        for text, want in [("[root]\nlistn = 127.0.0.1:1\n", "config %s: [root] listn: unknown key (known keys: "
                            "state_dir, listen, " % conf),
                           ("[root]\nlisten = 127.0.0.1:1\n[oakuk]\npolicy = best-fit\n",
                            "config %s: unknown group [oakuk] (the only group is [root])" % conf),
                           # a share of the node pool: prefix 8..30, never larger than the pool
                           ("[root]\ncluster_prefix = 7\n", "cluster_prefix"),
                           ("[root]\nnode_pool = 10.18.0.0/15\ncluster_prefix = 14\n",
                            "node_pool '10.18.0.0/15' / cluster_prefix 14: need an IPv4 CIDR whose prefix is at most "
                            "the cluster prefix")]:
            with self.subTest(want=want):
                pathlib.Path(conf).write_text(text)
                p = subprocess.run([ROOT_BIN, "--config", conf, "--state-dir", state], capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(want, p.stderr)
                self.assertFalse(os.path.exists(state), "the root started before refusing its config")

    def test_05_connections_are_not_leaked(self):
        """Connections that clients close, idle after a kept-alive response or at once, are freed:
        libsoup 3.2's own listener lost 0.3-1.9 kB of each (daemons/common/http.c)."""
        def rss_kb():
            with open("/proc/%d/status" % self.root.proc.pid) as f:
                return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])

        ctx = TRUST[self.root.base]

        def one(close):
            raw = socket.create_connection(("127.0.0.1", self.root.port), timeout=10)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as HTTP clients do
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c:
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


def aggregate(memory=7627, cores=12, nodes=None, instances=None):
    """The thesis's aggregate with memory MB and cores free (also for amd64 unikernels), and the
    node list and instances list oakuk-cluster adds when given."""
    a = json.loads(AGGREGATE)
    a["cumulative_memory_in_mb"] = a["aggregation_per_architecture"]["amd64"]["memory_in_mb"] = memory
    a["cpu_cores"] = a["aggregation_per_architecture"]["amd64"]["cpu_cores"] = cores
    if nodes is not None:
        a["nodes"] = nodes
    if instances is not None:
        a["instances"] = instances
    return a


def node(node_id, memory=4000, vcpus=4, active=True):
    """An entry of an aggregate's node list: an amd64 node with KVM for unikernels."""
    return {"id": node_id, "host": node_id, "ip": "10.0.0.1", "architecture": "amd64", "cpu_percent": 1.0,
            "vcpus": vcpus, "memory": memory, "memory_total": 8192, "memory_percent": 10.0,
            "virtualization": ["unikernel"], "unikernel": {"accel": "kvm", "qemu_version": "7.2.0"},
            "active": active, "last_seen_ms": int(time.time() * 1000)}


def sla(name="testing", **extra):
    doc = json.loads(SLA)
    doc["applications"][0]["application_name"] = name
    doc["applications"][0]["microservices"][0].update(extra)
    return doc


class Edge:
    """One oakuk-root (config lines in [root]) and fake clusters registered with it."""

    def __init__(self, test, conf="", state=None):
        self.tmp = tempfile.mkdtemp(prefix="oakuk-root-edge-")
        test.addCleanup(shutil.rmtree, self.tmp, True)
        path = os.path.join(self.tmp, "root.conf")
        with open(path, "w") as f:
            f.write("[root]\n" + conf)
        self.conf = path
        self.root = RootDaemon(state or os.path.join(self.tmp, "state"), ports(1)[0])
        self.root.start(["--config", path])
        test.addCleanup(self.root.stop)
        self.test = test
        self.password = None
        if os.path.exists(os.path.join(self.root.state_dir, "admin-password")):
            self.password = self.root.admin_password()
            self.login()

    def login(self, password=None):
        self.password = password or self.password
        r = request(self.root.base, "POST", "/api/auth/login", {"username": "Admin", "password": self.password})
        self.test.assertEqual(r.status, 200, r.body)
        self.token = r.json()["token"]

    def call(self, method, path, body=None, token=None):
        return request(self.root.base, method, path, body, token or self.token)

    def register(self, name, url=None):
        """A fake cluster serving HTTPS with the certificate of its registration (or url, unserved)."""
        fake = None
        if url is None:
            fake = FakeCluster(tls=True)
            self.test.addCleanup(fake.close)
            url = fake.url
        key, csr = make_csr(self.tmp, name)
        join = self.call("POST", "/api/v1/tokens", {"kind": "cluster"}).json()["token"]
        r = self.call("POST", "/api/v1/clusters/register", {"name": name, "location": "lab", "url": url, "csr": csr},
                      token=join)
        self.test.assertEqual(r.status, 201, r.body)
        if fake is not None:
            fake.serve_tls(r.json()["certificate"] + r.json()["ca"], key)
        c = dict(r.json(), fake=fake)
        return c

    def aggregate(self, c, **kw):
        r = self.call("POST", "/api/information/" + c["id"], aggregate(**kw), token=c["token"])
        self.test.assertEqual(r.status, 200, r.body)

    def status(self, c, sid, n, status, generation=None, **extra):
        entry = dict({"job_id": sid, "instance": n, "status": status}, **extra)
        if generation is not None:
            entry["generation"] = generation
        r = self.call("POST", "/api/v1/clusters/%s/status" % c["id"], [entry], token=c["token"])
        self.test.assertEqual(r.status, 200, r.body)

    def apply(self, doc):
        r = self.call("POST", "/api/v1/applications", doc)
        self.test.assertEqual(r.status, 201, r.body)
        return r.json()["applications"][0]["microservices"][0]

    def deploy(self, sid):
        r = self.call("POST", "/api/v1/services/%s/instances" % sid)
        self.test.assertEqual(r.status, 201, r.body)
        return r.json()

    def instance(self, sid, n):
        r = self.call("GET", "/api/v1/services/%s/instances" % sid)
        self.test.assertEqual(r.status, 200, r.body)
        return next((i for i in r.json() if i["instance_number"] == n), None)

    def wait(self, what, pred, timeout=10, interval=0.1):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        self.test.fail("timed out after %s s waiting for %s (last: %r)\n%s" % (timeout, what, last, self.root.log()))


def job_of(req):
    return json.loads(req[3])


class PartitionTest(unittest.TestCase):
    """docs/reconcile.md rules 3 and 4: a silent cluster keeps its instance for reschedule_after_s,
    then a copy starts elsewhere with generation + 1; when the cluster is back its aggregate's
    instances decide which copy stays."""

    RESCHEDULE_S = 4

    def setUp(self):
        self.e = Edge(self, "cluster_timeout_s=2\n")
        self.a, self.b = self.e.register("c0"), self.e.register("c1")
        for c in (self.a, self.b):
            self.e.aggregate(c)
        self.sid = self.e.apply(sla(reschedule_after_s=self.RESCHEDULE_S))
        inst = self.e.deploy(self.sid)
        self.assertEqual(inst["generation"], 1)
        # x: the cluster that goes silent, y: the one that stays
        self.x, self.y = (self.a, self.b) if inst["cluster_id"] == self.a["id"] else (self.b, self.a)
        self.assertEqual(job_of(self.x["fake"].wait_for("POST", "/api/service/%s/0" % self.sid))["generation"], 1)
        self.e.status(self.x, self.sid, 0, "RUNNING", generation=1, node="n1", ready=True, ready_ms=10)
        self.x_last = time.time()

    def move(self):
        """x goes silent while y keeps reporting: the instance stays on x with its status for
        reschedule_after_s, then moves to y with generation 2."""
        e, sid, x, y = self.e, self.sid, self.x, self.y
        checked = False
        while True:
            e.aggregate(y)
            inst = e.instance(sid, 0)
            silent = time.time() - self.x_last
            if inst["cluster_id"] == y["id"]:
                break
            self.assertLess(silent, self.RESCHEDULE_S + 6, "never moved: %s\n%s" % (inst, e.root.log()))
            if 2.8 < silent < self.RESCHEDULE_S - 0.5 and not checked:
                self.assertEqual((inst["cluster_id"], inst["status"], inst["generation"], inst["ready"]),
                                 (x["id"], "RUNNING", 1, True), inst)
                self.assertRegex(inst["status_detail"], r"cluster c\d silent for \d+ s")
                self.assertIn("cluster %s silent for" % ("c0" if x is self.a else "c1"), inst["status_detail"])
                checked = True
            time.sleep(0.3)
        self.assertTrue(checked, "never saw the instance kept on the silent cluster")
        self.assertGreaterEqual(silent, self.RESCHEDULE_S - 0.2, "moved before reschedule_after_s: %s" % inst)
        self.assertEqual(inst["generation"], 2, inst)
        self.assertIn("moved from cluster", inst["status_detail"])
        job = job_of(y["fake"].wait_for("POST", "/api/service/%s/0" % sid))
        self.assertEqual((job["instance_number"], job["generation"]), (0, 2))
        time.sleep(1)
        self.assertEqual(x["fake"].got("DELETE", "/api/service/%s/0" % sid), [], "a DELETE reached the silent cluster")
        return inst

    def test_silent_cluster_moves_after_reschedule_after_s(self):
        e, sid, x, y = self.e, self.sid, self.x, self.y
        self.move()
        # the moved copy runs; then x is back and lists its old copy: that one goes
        e.status(y, sid, 0, "RUNNING", generation=2, node="m1", ready=True)
        e.aggregate(x, instances=[{"job_id": sid, "instance": 0, "generation": 1, "status": "RUNNING",
                                   "status_detail": "", "node": "n1", "ready": True}])
        x["fake"].wait_for("DELETE", "/api/service/%s/0?generation=1" % sid, timeout=5)
        inst = e.instance(sid, 0)
        self.assertEqual((inst["cluster_id"], inst["generation"], inst["status"], inst["node_id"]),
                         (y["id"], 2, "RUNNING", "m1"), inst)
        self.assertEqual(y["fake"].got("DELETE", "/api/service/%s/0" % sid), [])
        # x confirmed: it lists nothing any more, and nothing more is sent
        e.aggregate(x, instances=[])
        time.sleep(1.5)
        self.assertEqual(len(x["fake"].got("DELETE", "/api/service/%s/0" % sid)), 1)
        self.assertEqual(len(x["fake"].got("POST", "/api/service/%s/0" % sid)), 1)

    def test_moved_instance_keeps_its_revision(self):
        """A service changed by PUT /api/v1/applications: its running instance keeps the spec it was
        created with, also when it moves to another cluster; new instances get the new one."""
        e, sid = self.e, self.sid
        r = e.call("PUT", "/api/v1/applications", sla(reschedule_after_s=self.RESCHEDULE_S, memory=500))
        self.assertEqual(r.status, 200, r.body)
        change = r.json()["applications"][0]["services"][0]
        self.assertEqual((change["id"], change["change"], change["revision"], change["previous_revision"]),
                         (sid, "updated", 2, 1))
        self.assertEqual(e.instance(sid, 0)["revision"], 1)
        self.move()
        job = job_of(self.y["fake"].wait_for("POST", "/api/service/%s/0" % sid))
        self.assertEqual((job["generation"], job["memory"]), (2, 1000))
        self.assertNotIn("revision", job)
        new = e.deploy(sid)
        self.assertEqual(new["revision"], 2)
        c = self.x if new["cluster_id"] == self.x["id"] else self.y
        job = job_of(c["fake"].wait_for("POST", "/api/service/%s/%d" % (sid, new["instance_number"])))
        self.assertEqual(job["memory"], 500)
        self.assertEqual(e.call("GET", "/api/v1/services/" + sid).json()["memory"], 500)

    def test_back_before_the_moved_copy_runs(self):
        e, sid, x, y = self.e, self.sid, self.x, self.y
        self.move()
        e.status(y, sid, 0, "NODE_SCHEDULED", generation=2, node="m1")
        # x is back with its copy still running: the instance goes back to it (generation 3, adopted
        # there without a restart) and the moved copy, not running yet, is deleted
        e.aggregate(x, instances=[{"job_id": sid, "instance": 0, "generation": 1, "status": "RUNNING",
                                   "status_detail": "", "node": "n1", "ready": True}])
        back = x["fake"].wait_for("POST", "/api/service/%s/0" % sid, timeout=5,
                                  pred=lambda r: job_of(r)["generation"] == 3)
        self.assertEqual(job_of(back)["instance_number"], 0)
        y["fake"].wait_for("DELETE", "/api/service/%s/0?generation=2" % sid, timeout=5)
        inst = e.instance(sid, 0)
        self.assertEqual((inst["cluster_id"], inst["generation"], inst["status"], inst["node_id"]),
                         (x["id"], 3, "RUNNING", "n1"), inst)
        self.assertIn("kept on cluster", inst["status_detail"])
        e.aggregate(x, instances=[{"job_id": sid, "instance": 0, "generation": 3, "status": "RUNNING",
                                   "node": "n1", "ready": True}])
        time.sleep(1)
        self.assertEqual(x["fake"].got("DELETE", "/api/service/%s/0" % sid), [], "the kept copy was deleted")
        # y's late report about the deleted copy changes nothing
        e.status(y, sid, 0, "RUNNING", generation=2, node="m1")
        inst = e.instance(sid, 0)
        self.assertEqual((inst["cluster_id"], inst["generation"], inst["node_id"]), (x["id"], 3, "n1"), inst)


    def test_restart_never_is_not_moved(self):
        """restart: never: neither a silent cluster nor a FAILED starts the instance again elsewhere."""
        e = self.e
        sid = e.apply(sla("once", reschedule_after_s=0, restart="never"))
        inst = e.deploy(sid)
        x, y = (self.a, self.b) if inst["cluster_id"] == self.a["id"] else (self.b, self.a)
        e.status(x, sid, 0, "RUNNING", generation=1, node="n1")
        t0 = time.time()
        while time.time() - t0 < 4.5:
            e.aggregate(y)
            time.sleep(0.3)
        inst = e.instance(sid, 0)
        self.assertEqual((inst["cluster_id"], inst["generation"], inst["status"]), (x["id"], 1, "RUNNING"), inst)
        self.assertIn("silent for", inst["status_detail"])
        self.assertIn("not moved: restart policy is never", inst["status_detail"])
        self.assertEqual(y["fake"].got("POST", "/api/service/%s/0" % sid), [])
        e.aggregate(x)
        e.status(x, sid, 0, "FAILED", generation=1, status_detail="exit 1")
        inst = e.instance(sid, 0)
        self.assertEqual((inst["cluster_id"], inst["status"], inst["status_detail"]), (x["id"], "FAILED", "exit 1"))
        self.assertNotIn("cluster_refusals", inst)


class ReconcileTest(unittest.TestCase):
    """Placement retried when capacity appears, refusals that expire, generations on status reports,
    deletes for unwanted copies, a restart in the middle of a deploy, validation of the new fields,
    drains and cluster removal."""

    def test_unplaceable_placed_when_capacity_arrives(self):
        e = Edge(self, "cluster_timeout_s=60\n")
        c = e.register("c0")
        e.aggregate(c, memory=500)
        sid = e.apply(sla())
        inst = e.deploy(sid)
        self.assertEqual(inst["status"], "NoActiveClusterWithCapacity", inst)
        self.assertIn("cluster c0: insufficient", inst["status_detail"])
        # retries after 1, 2, 4, 8 s (on the 1 s timer): from 10 s on the next one is due at 15 s at
        # the earliest, so only "at once when an aggregate arrives" places it within the bound
        time.sleep(10.5)
        inst = e.instance(sid, 0)
        self.assertEqual((inst["status"], inst["cluster_id"], inst["generation"]),
                         ("NoActiveClusterWithCapacity", "", 0))
        self.assertEqual(c["fake"].got("POST", "/api/service/%s/0" % sid), [])
        t0 = time.time()
        e.aggregate(c, memory=4000)
        req = c["fake"].wait_for("POST", "/api/service/%s/0" % sid, timeout=3)
        self.assertLess(time.time() - t0, 3)
        self.assertEqual(job_of(req)["generation"], 1)
        inst = e.instance(sid, 0)
        self.assertEqual((inst["status"], inst["cluster_id"]), ("CLUSTER_SCHEDULED", c["id"]), inst)

    def test_refusals_expire(self):
        e = Edge(self, "cluster_timeout_s=60\n")
        c = e.register("c0")
        e.aggregate(c, nodes=[node("n1")])
        # a: pinned to a node the cluster does not have (the root cannot know: it sends it), refused
        # as not qualified in the deploy's answer: retried after 30 s, not before
        a = e.apply(sla("refa", constraints=[{"type": "direct", "node": "nz"}]))
        c["fake"].deploy_body = {"status": "NO_QUALIFIED_WORKER_FOUND", "status_detail": "node n1: excluded"}
        e.deploy(a)
        c["fake"].wait_for("POST", "/api/service/%s/0" % a)
        inst = e.wait("a refused",
                      lambda: (lambda i: i if i["status"] != "CLUSTER_SCHEDULED" else None)(e.instance(a, 0)))
        t_refused = time.time()
        # every reason: the refusal, and the node-level one from the cluster's node list
        self.assertEqual(inst["status"], "NO_QUALIFIED_WORKER_FOUND", inst)
        self.assertIn("NO_QUALIFIED_WORKER_FOUND: node n1: excluded", inst["cluster_refusals"][c["id"]])
        self.assertIn("cluster c0: refused it, not retried for", inst["status_detail"])
        self.assertIn("cluster c0: node n1: excluded by direct constraint", inst["status_detail"])
        c["fake"].deploy_body = {}
        # b: refused for capacity in a status report; the next aggregate shows a node with room
        b = e.apply(sla("refb"))
        e.deploy(b)
        c["fake"].wait_for("POST", "/api/service/%s/0" % b)
        e.status(c, b, 0, "NO_WORKER_CAPACITY", generation=1, status_detail="node n1: 500 MB free")
        inst = e.instance(b, 0)
        self.assertEqual(inst["status"], "NoActiveClusterWithCapacity", inst)
        self.assertIn(c["id"], inst["cluster_refusals"])
        e.aggregate(c, nodes=[node("n1", memory=300)])  # still no room: the refusal stays
        time.sleep(1.5)
        self.assertEqual(len(c["fake"].got("POST", "/api/service/%s/0" % b)), 1)
        e.aggregate(c, nodes=[node("n1", memory=4000)])
        req = c["fake"].wait_for("POST", "/api/service/%s/0" % b, timeout=3,
                                 pred=lambda r: job_of(r)["generation"] == 2)
        self.assertEqual(job_of(req)["instance_number"], 0)
        self.assertNotIn("cluster_refusals", e.instance(b, 0))
        # a's refusal outlives aggregates with room (its node is not qualified), until its 30 s end
        while time.time() - t_refused < 25:
            e.aggregate(c, nodes=[node("n1")])
            self.assertEqual(len(c["fake"].got("POST", "/api/service/%s/0" % a)), 1, "retried within 30 s")
            time.sleep(1)
        deadline = t_refused + 40
        while not c["fake"].got("POST", "/api/service/%s/0" % a, lambda r: job_of(r)["generation"] == 2):
            self.assertLess(time.time(), deadline, "a was never retried:\n" + e.root.log())
            e.aggregate(c, nodes=[node("n1")])
            time.sleep(0.5)
        self.assertGreaterEqual(time.time() - t_refused, 29)
        self.assertEqual(e.instance(a, 0)["status"], "CLUSTER_SCHEDULED")

    def test_generations_on_status_reports(self):
        e = Edge(self, "cluster_timeout_s=60\n")
        c = e.register("c0")
        e.aggregate(c)
        sid = e.apply(sla())
        e.deploy(sid)
        c["fake"].wait_for("POST", "/api/service/%s/0" % sid)
        # refused for capacity, then placed again on the same cluster by its next aggregate: generation 2
        e.status(c, sid, 0, "NO_WORKER_CAPACITY", generation=1)
        e.aggregate(c)
        c["fake"].wait_for("POST", "/api/service/%s/0" % sid, timeout=5, pred=lambda r: job_of(r)["generation"] == 2)
        inst = e.instance(sid, 0)
        self.assertEqual((inst["generation"], inst["status"]), (2, "CLUSTER_SCHEDULED"), inst)
        # a report about generation 1 (from before) is ignored, and is no reason to delete
        e.status(c, sid, 0, "RUNNING", generation=1, node="old")
        inst = e.instance(sid, 0)
        self.assertEqual((inst["status"], inst["node_id"]), ("CLUSTER_SCHEDULED", ""), inst)
        e.status(c, sid, 0, "RUNNING", generation=2, node="n1")
        inst = e.instance(sid, 0)
        self.assertEqual((inst["status"], inst["node_id"]), ("RUNNING", "n1"), inst)
        # copies the root does not want there get a DELETE with the reported generation
        e.status(c, sid, 7, "RUNNING", generation=3)
        e.status(c, "0123456789abcdef01234567", 2, "CREATING", generation=5)
        c["fake"].wait_for("DELETE", "/api/service/%s/7?generation=3" % sid, timeout=5)
        c["fake"].wait_for("DELETE", "/api/service/0123456789abcdef01234567/2?generation=5", timeout=5)
        time.sleep(1)
        self.assertEqual(c["fake"].got("DELETE", "/api/service/%s/0" % sid), [])
        # a full-state aggregate that lacks the wanted copy gets its deploy sent again (same generation)
        e.aggregate(c, instances=[{"job_id": sid, "instance": 0, "generation": 2, "status": "RUNNING"}])
        time.sleep(5.5)  # the deploy's answer is older than the aggregate grace now
        before = len(c["fake"].got("POST", "/api/service/%s/0" % sid))
        e.aggregate(c, instances=[])
        req = c["fake"].wait_for("POST", "/api/service/%s/0" % sid, timeout=5,
                                 pred=lambda r: len(c["fake"].got("POST", "/api/service/%s/0" % sid)) > before)
        self.assertEqual(job_of(c["fake"].got("POST", "/api/service/%s/0" % sid)[-1])["generation"], 2)
        self.assertTrue(req)
        # FAILED with a generation (the cluster gave up on every node): a refusal of 30 s, a DELETE
        # of that copy, and a placement elsewhere (here: nowhere else)
        e.status(c, sid, 0, "FAILED", generation=2, status_detail="image: 404")
        inst = e.instance(sid, 0)
        self.assertEqual((inst["status"], inst["cluster_id"]), ("NoActiveClusterWithCapacity", ""), inst)
        self.assertEqual(inst["cluster_refusals"], {c["id"]: "FAILED: image: 404"})
        self.assertIn("not retried for", inst["status_detail"])
        c["fake"].wait_for("DELETE", "/api/service/%s/0?generation=2" % sid, timeout=5)
        # an aggregate with room does not end a refusal after FAILED
        e.aggregate(c)
        time.sleep(1)
        self.assertEqual(e.instance(sid, 0)["cluster_id"], "")

    def test_restart_in_the_middle_of_a_deploy(self):
        e = Edge(self, "cluster_timeout_s=60\n")
        c = e.register("c0")
        e.aggregate(c)
        sid = e.apply(sla())
        c["fake"].deploy_status = 503
        e.deploy(sid)
        # the first attempt failed and a retry is under way (backoff 1 s): the root stops
        c["fake"].wait_for("POST", "/api/service/%s/0" % sid, timeout=10,
                           pred=lambda r: len(c["fake"].got("POST", "/api/service/%s/0" % sid)) >= 2)
        self.assertEqual(e.root.stop(), 0)
        c["fake"].deploy_status = 200
        failed = len(c["fake"].got("POST", "/api/service/%s/0" % sid))
        e.root.start(["--config", e.conf])
        e.login()
        c["fake"].wait_for("POST", "/api/service/%s/0" % sid, timeout=10,
                           pred=lambda r: len(c["fake"].got("POST", "/api/service/%s/0" % sid)) > failed)
        time.sleep(3)
        posts = c["fake"].got("POST", "/api/service/%s/0" % sid)
        self.assertEqual(len(posts), failed + 1, "the deploy was sent again after it was accepted")
        self.assertEqual({job_of(r)["generation"] for r in posts}, {1})
        self.assertEqual(c["fake"].got("POST", "/api/service/%s/1" % sid), [])
        insts = e.call("GET", "/api/v1/services/%s/instances" % sid).json()
        self.assertEqual([(i["instance_number"], i["generation"], i["status"]) for i in insts],
                         [(0, 1, "CLUSTER_SCHEDULED")])
        svc = json.loads(e.call("GET", "/api/service/" + sid).json())
        self.assertEqual(svc["next_instance_progressive_number"], 1)

    def test_new_fields_validated(self):
        e = Edge(self, "cluster_timeout_s=60\n")
        c = e.register("c0")
        e.aggregate(c, nodes=[node("n1")])
        sid = e.apply(sla())
        e.deploy(sid)
        c["fake"].wait_for("POST", "/api/service/%s/0" % sid)
        before = (e.call("GET", "/api/v1/services/%s/instances" % sid).body, e.call("GET", "/api/v1/clusters").body)
        good = {"job_id": sid, "instance": 0, "generation": 1, "status": "RUNNING"}
        bad_status = [("generation", "1"), ("generation", 0), ("generation", -1), ("generation", 1.5),
                      ("generation", True)]
        for field, value in bad_status:
            with self.subTest(status=field, value=value):
                r = e.call("POST", "/api/v1/clusters/%s/status" % c["id"], [good, dict(good, **{field: value})],
                           token=c["token"])
                err = r.json()["error"]
                self.assertEqual((r.status, err["path"]), (400, "[1]." + field), r.body)
                self.assertIn("generation", err["message"])
        bad_instances = [(None, "x", "instances"), ("generation", None, "instances[0].generation"),
                         ("generation", 0, "instances[0].generation"), ("status", "SLEEPING", "instances[0].status"),
                         ("instance", -1, "instances[0].instance"), ("job_id", 5, "instances[0].job_id"),
                         ("ready", "yes", "instances[0].ready"), ("node", 5, "instances[0].node"),
                         ("status_detail", [], "instances[0].status_detail"), ("ready_ms", -2, "instances[0].ready_ms")]
        for field, value, path in bad_instances:
            with self.subTest(aggregate=path, value=value):
                if field is None:
                    agg = aggregate(instances=value)
                else:
                    entry = dict(good)
                    if value is None:
                        del entry[field]
                    else:
                        entry[field] = value
                    agg = aggregate(instances=[entry])
                r = e.call("POST", "/api/information/" + c["id"], agg, token=c["token"])
                err = r.json()["error"]
                self.assertEqual((r.status, err["path"]), (400, path), r.body)
        after = (e.call("GET", "/api/v1/services/%s/instances" % sid).body, e.call("GET", "/api/v1/clusters").body)
        self.assertEqual(json.loads(after[0]), json.loads(before[0]))
        self.assertEqual([x["aggregate_received_at_ms"] for x in json.loads(after[1])],
                         [x["aggregate_received_at_ms"] for x in json.loads(before[1])])

    def test_drain_and_removal(self):
        e = Edge(self, "cluster_timeout_s=2\n")
        a, b = e.register("c0"), e.register("c1")
        dead = e.register("c2", url="http://127.0.0.1:%d" % ports(1)[0])
        e.aggregate(a, nodes=[node("n1"), node("n2", active=False)])
        e.aggregate(b, nodes=[node("m1")])
        e.aggregate(dead, memory=100, nodes=[node("d1")])  # never a candidate: it cannot be reached
        a["fake"].answers[("POST", "/api/v1/nodes/n1/drain")] = (200, {"message": "node n1 drained", "node": "n1"})
        a["fake"].answers[("DELETE", "/api/v1/nodes/n2")] = (409, {"error": {"code": "conflict", "message": "busy",
                                                                             "path": ""}})
        r = e.call("POST", "/api/v1/nodes/n1/drain")
        self.assertEqual((r.status, r.json()), (200, {"message": "node n1 drained", "node": "n1"}))
        a["fake"].wait_for("POST", "/api/v1/nodes/n1/drain")
        self.assertEqual(e.call("DELETE", "/api/v1/nodes/n1/drain").status, 200)
        a["fake"].wait_for("DELETE", "/api/v1/nodes/n1/drain")
        r = e.call("DELETE", "/api/v1/nodes/n2")
        self.assertEqual((r.status, r.json()["error"]["code"]), (409, "conflict"), r.body)
        self.assertEqual(b["fake"].got("POST", "/api/v1/nodes/n1/drain"), [])
        for method, path in (("POST", "/api/v1/nodes/nosuch/drain"), ("DELETE", "/api/v1/nodes/nosuch")):
            r = e.call(method, path)
            self.assertEqual((r.status, r.json()["error"]["code"]), (404, "not_found"), r.body)
        r = e.call("POST", "/api/v1/nodes/d1/drain")
        self.assertEqual((r.status, r.json()["error"]["code"]), (502, "cluster_unreachable"), r.body)
        self.assertEqual(request(e.root.base, "POST", "/api/v1/nodes/n1/drain").status, 401)
        # removing a cluster moves its instances (generation + 1) and frees its subnet share
        sid = e.apply(sla())
        e.aggregate(a, memory=7627, nodes=[node("n1")])
        e.aggregate(b, memory=100, nodes=[node("m1", memory=100)])
        inst = e.deploy(sid)
        self.assertEqual(inst["cluster_id"], a["id"], inst)
        e.aggregate(b, memory=7627, nodes=[node("m1")])
        r = e.call("DELETE", "/api/v1/clusters/" + a["id"])
        self.assertEqual(r.status, 200, r.body)
        inst = e.instance(sid, 0)
        self.assertEqual((inst["cluster_id"], inst["generation"]), (b["id"], 2), inst)
        b["fake"].wait_for("POST", "/api/service/%s/0" % sid, timeout=5)
        again = e.register("c3")
        self.assertEqual(again["subnet"], a["subnet"])
        # a node of a silent cluster: 503
        time.sleep(2.5)
        e.aggregate(again, nodes=[node("z1")])
        r = e.call("POST", "/api/v1/nodes/m1/drain")
        self.assertEqual((r.status, r.json()["error"]["code"]), (503, "cluster_unavailable"), r.body)


V1_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS applications (id TEXT PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL,"
    "  namespace TEXT NOT NULL, doc TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS services (id TEXT PRIMARY KEY, app_id TEXT NOT NULL REFERENCES "
    "applications(id)"
    "  ON DELETE CASCADE, user TEXT NOT NULL, doc TEXT NOT NULL, ms TEXT NOT NULL, explain TEXT NOT NULL "
    "DEFAULT '',"
    "  seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS clusters (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, location TEXT NOT "
    "NULL,"
    "  url TEXT NOT NULL, token TEXT NOT NULL, subnet_index INTEGER NOT NULL UNIQUE, subnet TEXT NOT NULL,"
    "  aggregate TEXT, received_at INTEGER NOT NULL DEFAULT 0, registered_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS join_tokens (hash TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS forwards (id INTEGER PRIMARY KEY AUTOINCREMENT, cluster_id TEXT NOT NULL,"
    "  method TEXT NOT NULL, path TEXT NOT NULL, body TEXT, service_id TEXT, instance INTEGER NOT NULL "
    "DEFAULT -1,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0, last_error TEXT);")


class WarningsTest(unittest.TestCase):
    """Keys accepted but not acted on are warnings of the registration, with their JSON path
    (docs/api.md "Warnings"), in both answers' shapes; a GPU request is refused, never placed."""

    def test_registration_warnings_and_gpu_refusal(self):
        e = Edge(self, "cluster_timeout_s=60\n")
        c = e.register("c0")
        e.aggregate(c, nodes=[node("n1")])  # a node of before the accelerator keys: no GPUs
        ms = "applications[0].microservices[0]"
        doc = sla("gpu", vgpus=1, privileged=True, bandwidth_in=0, storage=0, port="80:80;9443:443",
                  addresses={"rr_ip": "10.30.30.31", "closest_ip": "10.30.30.32"},
                  constraints=[{"type": "geo", "location": "48.1,11.6"}])
        r = e.call("POST", "/api/v1/applications", doc)
        self.assertEqual(r.status, 201, r.body)
        answer = r.json()
        self.assertEqual(len(answer["applications"]), 1)
        warnings = answer["warnings"]
        self.assertEqual([w["path"] for w in warnings],
                         [ms + ".constraints[0]", ms + ".vgpus", ms + ".privileged", ms + ".addresses.closest_ip",
                          ms + ".port"], warnings)
        for w in warnings:
            self.assertEqual(set(w), {"path", "message"}, w)
            self.assertTrue(w["message"].startswith("accepted but not acted on: "), w)
        self.assertIn("no node reports GPUs", warnings[1]["message"])
        self.assertIn("9443:443/tcp", warnings[4]["message"])
        self.assertIn("warnings", set(answer))
        # defaults (vgpus: 0, ...) say nothing; the answer still has the key
        r = e.call("POST", "/api/v1/applications", sla("plain"))
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.json()["warnings"], [])

        # Oakestra's endpoint: still a JSON string of the user's applications; the one created now
        # carries its warnings, the others do not
        r = e.call("POST", "/api/application/", sla("compat", storage=10))
        self.assertEqual(r.status, 200, r.body)
        apps = json.loads(r.json())
        self.assertIsInstance(apps, list)
        by_name = {a["application_name"]: a for a in apps}
        self.assertEqual(set(by_name), {"gpu", "plain", "compat"})
        self.assertEqual(by_name["compat"]["warnings"],
                         [{"path": ms + ".storage",
                           "message": "accepted but not acted on: no storage is reserved or limited"}])
        self.assertNotIn("warnings", by_name["gpu"])
        self.assertNotIn("warnings", by_name["plain"])
        # nothing stored: the documents read back have no warnings
        r = e.call("GET", "/api/application/" + by_name["compat"]["applicationID"])
        self.assertNotIn("warnings", r.json())

        # the GPU service never lands on the GPU-less node: refused, with the reason
        sid = answer["applications"][0]["microservices"][0]
        inst = e.deploy(sid)
        self.assertEqual(inst["status"], "NO_QUALIFIED_WORKER_FOUND", inst)
        self.assertIn("cluster c0: its active nodes report 0 GPUs, the service asks for 1 (vgpus)",
                      inst["status_detail"])
        self.assertIn("cluster c0: node n1: reports 0 GPUs, the service asks for 1 (vgpus)", inst["status_detail"])
        lines = e.call("GET", "/api/v1/services/%s/explain" % sid).json()["lines"]
        self.assertIn("cluster c0: its active nodes report 0 GPUs, the service asks for 1 (vgpus)", lines)
        time.sleep(1)
        self.assertEqual(c["fake"].got("POST", "/api/service/%s/0" % sid), [], "a GPU service was sent on")
        # the same service without GPUs is placed there
        plain = e.call("GET", "/api/v1/applications/%s/services" % by_name["plain"]["applicationID"]).json()
        inst = e.deploy(plain[0]["microserviceID"])
        self.assertEqual((inst["status"], inst["cluster_id"]), ("CLUSTER_SCHEDULED", c["id"]), inst)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(secret, claims):
    signing = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing + "." + b64url(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


V3_SCHEMA = (  # root.db of schema version 3 (before service revisions), as that version created it
    "CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT NOT NULL);"
    "CREATE TABLE applications (id TEXT PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL,  namespace "
    "TEXT NOT NULL, doc TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE services (id TEXT PRIMARY KEY,  app_id TEXT NOT NULL REFERENCES applications(id) ON "
    "DELETE CASCADE, user TEXT NOT NULL,  doc TEXT NOT NULL, ms TEXT NOT NULL, explain TEXT NOT NULL "
    "DEFAULT '', seq INTEGER NOT NULL DEFAULT 0,  next_instance INTEGER NOT NULL DEFAULT 0, status TEXT "
    "NOT NULL DEFAULT 'REQUESTED');"
    "CREATE TABLE clusters (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, location TEXT NOT NULL,  url "
    "TEXT NOT NULL, token TEXT NOT NULL, subnet_index INTEGER NOT NULL UNIQUE, subnet TEXT NOT NULL,  "
    "aggregate TEXT, received_at INTEGER NOT NULL DEFAULT 0, registered_at INTEGER NOT NULL);"
    "CREATE TABLE join_tokens (hash TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);"
    "CREATE TABLE instances (service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,  number "
    "INTEGER NOT NULL, desired TEXT NOT NULL DEFAULT 'run' CHECK (desired IN ('run', 'delete')),  "
    "generation INTEGER NOT NULL DEFAULT 0, cluster_id TEXT NOT NULL DEFAULT '',  assigned_at INTEGER NOT"
    " NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'REQUESTED',  status_detail TEXT NOT NULL DEFAULT '', "
    "note TEXT NOT NULL DEFAULT '', node TEXT NOT NULL DEFAULT '',  publicip TEXT NOT NULL DEFAULT '', "
    "cpu REAL NOT NULL DEFAULT 0, memory REAL NOT NULL DEFAULT 0,  ready INTEGER NOT NULL DEFAULT 0, "
    "ready_ms INTEGER, node_ready_ms INTEGER, requested_at INTEGER,  placement TEXT, next_try_at INTEGER "
    "NOT NULL DEFAULT 0, backoff_ms INTEGER NOT NULL DEFAULT 0,  moved_from TEXT NOT NULL DEFAULT '', "
    "moved_generation INTEGER NOT NULL DEFAULT 0,  moved_at INTEGER NOT NULL DEFAULT 0, deploy_pending "
    "INTEGER NOT NULL DEFAULT 0,  deploy_attempts INTEGER NOT NULL DEFAULT 0, deploy_next_at INTEGER NOT "
    "NULL DEFAULT 0,  deploy_done_at INTEGER NOT NULL DEFAULT 0, deploy_error TEXT NOT NULL DEFAULT '', "
    "extra TEXT,  PRIMARY KEY (service_id, number));"
    "CREATE INDEX instances_cluster ON instances(cluster_id);"
    "CREATE TABLE refusals (service_id TEXT NOT NULL, number INTEGER NOT NULL, cluster_id TEXT NOT NULL,"
    "  kind INTEGER NOT NULL, reason TEXT NOT NULL, since INTEGER NOT NULL, until INTEGER NOT NULL,  "
    "PRIMARY KEY (service_id, number, cluster_id),  FOREIGN KEY (service_id, number) REFERENCES "
    "instances(service_id, number) ON DELETE CASCADE);"
    "CREATE TABLE deletes (id INTEGER PRIMARY KEY AUTOINCREMENT, cluster_id TEXT NOT NULL,  service_id "
    "TEXT NOT NULL, number INTEGER NOT NULL, generation INTEGER NOT NULL,  attempts INTEGER NOT NULL "
    "DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,  last_error TEXT NOT NULL DEFAULT '', created_at "
    "INTEGER NOT NULL,  last_deploy_at INTEGER NOT NULL DEFAULT 0, UNIQUE (cluster_id, service_id, "
    "number, generation));"
    "ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'Admin';"
    "ALTER TABLE join_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE clusters ADD COLUMN cred_salt TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE clusters ADD COLUMN cred_hash TEXT NOT NULL DEFAULT '';"
)


class RevisionTest(unittest.TestCase):
    """PUT /api/v1/applications applies a descriptor (docs/api.md "Applying a descriptor"): new
    applications and services are created, a changed service gets its next revision, an unchanged
    one stays, one missing from the file is kept; POST .../rollback makes a kept revision current."""

    def test_apply_and_rollback(self):
        e = Edge(self, "")
        c = e.register("c0")
        e.aggregate(c)
        r = e.call("PUT", "/api/v1/applications", sla())
        self.assertEqual(r.status, 200, r.body)
        app = r.json()["applications"][0]
        self.assertEqual(app["change"], "created")
        [svc] = app["services"]
        sid = svc["id"]
        self.assertEqual((svc["change"], svc["revision"], svc["job_name"], svc["microservice_name"]),
                         ("created", 1, "testing.test.testaggr.test", "testaggr"))
        self.assertEqual(app["microservices"], [sid])
        e.deploy(sid)
        c["fake"].wait_for("POST", "/api/service/%s/0" % sid)
        # the same file again: nothing changes
        r = e.call("PUT", "/api/v1/applications", sla())
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([(s["id"], s["change"], s["revision"]) for s in r.json()["applications"][0]["services"]],
                         [(sid, "unchanged", 1)])
        # a changed image: revision 2, the instance keeps 1
        r = e.call("PUT", "/api/v1/applications", sla(code="http://files.invalid/v2.tar.gz"))
        self.assertEqual(r.json()["applications"][0]["services"][0]["change"], "updated")
        doc = e.call("GET", "/api/v1/services/" + sid).json()
        self.assertEqual((doc["revision"], doc["code"], doc["instance_list"][0]["revision"]),
                         (2, "http://files.invalid/v2.tar.gz", 1))
        # invalid documents change nothing and name the field
        bad = sla(code="http://files.invalid/v3.tar.gz", memory=-1)
        r = e.call("PUT", "/api/v1/applications", bad)
        self.assertEqual(r.status, 400, r.body)
        self.assertIn("applications[0].microservices[0].memory", r.body.decode())
        self.assertEqual(e.call("GET", "/api/v1/services/" + sid).json()["revision"], 2)
        # a service added, the old one left out of the file: kept and reported, not deleted
        other = sla()
        other["applications"][0]["microservices"][0].update(microservice_name="extra")
        r = e.call("PUT", "/api/v1/applications", other)
        self.assertEqual(r.status, 200, r.body)
        changes = {s["microservice_name"]: s for s in r.json()["applications"][0]["services"]}
        self.assertEqual((changes["extra"]["change"], changes["testaggr"]["change"], changes["testaggr"]["id"]),
                         ("created", "kept", sid))
        self.assertEqual(len(e.call("GET", "/api/v1/applications/%s/services" % app["applicationID"]).json()), 2)
        # rollback: to the kept revision 1; bad requests name the field or the revisions there are
        path = "/api/v1/services/%s/rollback" % sid
        for body, status, text in (({}, 400, "revision"), ({"revision": "1"}, 400, "revision"),
                                   ({"revision": 0}, 400, "revision"),
                                   ({"revision": 7}, 409, "revision 7 of service %s is not kept (current 2; kept: 1)" % sid)):
            r = e.call("POST", path, body)
            self.assertEqual(r.status, status, r.body)
            self.assertIn(text, r.body.decode())
        self.assertEqual(e.call("POST", "/api/v1/services/%s/rollback" % ("0" * 24), {"revision": 1}).status, 404)
        r = e.call("POST", path, {"revision": 1})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual((r.json()["revision"], r.json()["code"]), (1, sla()["applications"][0]["microservices"][0]["code"]))
        # revision 2 ran on no instance: it is not kept; the next change is revision 3
        self.assertEqual(e.call("POST", path, {"revision": 2}).status, 409)
        r = e.call("PUT", "/api/v1/applications", sla(memory=300))
        self.assertEqual([(s["change"], s["revision"]) for s in r.json()["applications"][0]["services"]
                          if s["id"] == sid], [("updated", 3)])
        # the compatible API is untouched: a second POST of the same application is still a conflict
        self.assertEqual(e.call("POST", "/api/v1/applications", sla()).status, 409)


class ApiDescriptionTest(unittest.TestCase):
    """GET /api/openapi.json (docs/api.md "API description") is kept true: every route the root
    registers is documented and every documented operation is one of its routes (it answers with
    something other than "no endpoint" or 405), every operation that needs a token answers 401
    without one, and every schema it refers to exists. /api/docs renders it with the root's own
    script and style only, under a CSP that forbids inline script and other origins."""

    def test_document_matches_the_routes(self):
        e = Edge(self, "")
        base = e.root.base
        r = request(base, "GET", "/api/openapi.json")  # no token needed
        self.assertEqual(r.status, 200, r.body)
        doc = r.json()
        self.assertEqual(doc["openapi"], "3.0.3")
        self.assertEqual(doc["info"]["version"], request(base, "GET", "/healthz").json()["version"])
        documented = {}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                documented["%s %s" % (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))] = op
        routes = set(doc["x-oakuk-routes"])
        self.assertEqual(len(routes), len(doc["x-oakuk-routes"]), "a route registered twice")
        self.assertEqual(set(documented) - routes, set(), "documented but not routes of the root")
        self.assertEqual(routes - set(documented), set(), "routes of the root that are not documented")
        text = json.dumps(doc)
        for name in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
            self.assertIn(name, doc["components"]["schemas"], name)
        for entry, op in sorted(documented.items()):
            method, path = entry.split(" ", 1)
            concrete = path.replace("{}", "6a00000000000000000000ff")
            if concrete.endswith("/instances/6a00000000000000000000ff") or "/instances/6a" in concrete:
                concrete = concrete.replace("/instances/6a00000000000000000000ff", "/instances/7")
            if concrete.startswith("/api/docs/"):
                concrete = "/api/docs/docs.css"
            if entry == "GET /api/v1/events":  # a stream: its status and first event
                ev = EventStream(base, e.token)
                self.assertEqual((ev.status, ev.next_event()[0]), (200, "applications"))
                ev.close()
                self.assertEqual(EventStream(base, None).status, 401)
                continue
            r = request(base, method, concrete, token=e.token)
            self.assertNotEqual(r.status, 405, (entry, r.body))
            self.assertFalse(r.status == 404 and b"no endpoint" in r.body, (entry, r.body))
            if op["security"]:
                r = request(base, method, concrete)
                self.assertEqual(r.status, 401, (entry, r.body))
            else:
                self.assertNotEqual(r.status, 401, (entry, r.body))
        # the page: its own script and style, no inline script, nothing from elsewhere
        r = request(base, "GET", "/api/docs")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/html"), r.headers["Content-Type"])
        csp = r.headers["Content-Security-Policy"]
        self.assertIn("default-src 'none'", csp)
        self.assertIn("script-src 'self'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
        html = r.body.decode()
        self.assertIn('<script src="/api/docs/docs.js" defer></script>', html)
        self.assertEqual(re.findall(r"<script>|<script [^>]*>[^<]+</script>|\son[a-z]+=", html), [])
        for name, kind in (("docs.js", "text/javascript"), ("docs.css", "text/css")):
            r = request(base, "GET", "/api/docs/" + name)
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["Content-Type"].startswith(kind), r.headers["Content-Type"])
            html += r.body.decode()
        self.assertEqual(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), [])
        self.assertEqual(request(base, "GET", "/api/docs/openapi.json").status, 404)
        self.assertEqual(request(base, "GET", "/api/docs/../../etc/passwd").status, 404)


def cors_request(base, method, path, origin, headers=None, token=None):
    """request() with an Origin header (and others): what a browser sends from a page of origin."""
    return request(base, method, path, token=token, headers=dict(headers or {}, **({"Origin": origin} if origin else {})))


class CorsTest(unittest.TestCase):
    """[root] cors_origins (docs/api.md "CORS"): pages of the listed origins may call the API
    (preflights answered with the route's methods, answers carrying Access-Control-Allow-Origin),
    any other origin is refused at the preflight and gets no CORS header; `*` only when configured;
    a value that is not an origin stops the root at start."""

    def test_listed_origins(self):
        e = Edge(self, "cors_origins = http://dash.test:3000, https://ops.test\n")
        base, dash = e.root.base, "http://dash.test:3000"
        pre = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization, content-type"}
        r = cors_request(base, "OPTIONS", "/api/v1/applications", dash, pre)
        self.assertEqual(r.status, 204, r.body)
        self.assertEqual(r.headers["Access-Control-Allow-Origin"], dash)
        self.assertEqual(r.headers["Access-Control-Allow-Methods"], "GET, POST, PUT")
        self.assertEqual(r.headers["Access-Control-Allow-Headers"], "Authorization, Content-Type")
        self.assertEqual(r.headers["Vary"], "Origin")
        r = cors_request(base, "OPTIONS", "/api/application/", "https://ops.test", pre)  # Oakestra's path
        self.assertEqual((r.status, r.headers["Access-Control-Allow-Methods"]), (204, "POST"))
        r = cors_request(base, "GET", "/api/v1/applications", dash, token=e.token)
        self.assertEqual((r.status, r.headers["Access-Control-Allow-Origin"]), (200, dash))
        r = cors_request(base, "GET", "/api/v1/applications", dash)  # the page may read the 401
        self.assertEqual((r.status, r.headers["Access-Control-Allow-Origin"]), (401, dash))
        # another origin: refused at the preflight, no CORS header on answers
        r = cors_request(base, "OPTIONS", "/api/v1/applications", "http://evil.test", pre)
        self.assertEqual(r.status, 403)
        self.assertIn("origin http://evil.test may not call this API from a page (it is not in [root] cors_origins)",
                      r.json()["error"]["message"])
        self.assertIsNone(r.headers["Access-Control-Allow-Origin"])
        r = cors_request(base, "GET", "/api/v1/applications", "http://dash.test:3001", token=e.token)
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.headers["Access-Control-Allow-Origin"])
        self.assertEqual(cors_request(base, "OPTIONS", "/api/v1/nothing", dash, pre).status, 404)
        # OPTIONS without an Origin is no preflight: as any other method the route does not have
        r = cors_request(base, "OPTIONS", "/api/v1/applications", None)
        self.assertEqual((r.status, r.headers["Allow"]), (405, "GET, POST, PUT"))

    def test_any_none_and_bad_values(self):
        e = Edge(self, "cors_origins = *\n")
        r = cors_request(e.root.base, "GET", "/healthz", "http://anything.test")
        self.assertEqual(r.headers["Access-Control-Allow-Origin"], "*")
        e.root.stop()
        e = Edge(self, "")  # the default: no origin at all
        r = cors_request(e.root.base, "OPTIONS", "/api/v1/applications", "http://dash.test:3000",
                         {"Access-Control-Request-Method": "GET"})
        self.assertEqual(r.status, 403)
        self.assertIsNone(cors_request(e.root.base, "GET", "/healthz", "http://dash.test:3000").headers[
            "Access-Control-Allow-Origin"])
        tmp = tempfile.mkdtemp(prefix="oakuk-root-cors-")
        self.addCleanup(shutil.rmtree, tmp, True)
        conf = os.path.join(tmp, "root.conf")
        for value, want in (("ftp://x.test", "'ftp://x.test' is not an origin"),
                            ("http://x.test/app", "'http://x.test/app' is not an origin"),
                            ("http://user@x.test", "'http://user@x.test' is not an origin"),
                            ("*, http://x.test", "* stands alone")):
            with self.subTest(value=value):
                pathlib.Path(conf).write_text("[root]\ncors_origins = %s\n" % value)
                p = subprocess.run([ROOT_BIN, "--config", conf, "--state-dir", os.path.join(tmp, "state")],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("config [root] cors_origins: " + want, p.stderr)


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class OakestraCompatTest(unittest.TestCase):
    """What Oakestra's dashboard and `oak` CLIs read (docs/api.md "Oakestra-compatible endpoints"):
    token claims, the cluster keys `oak clusters info` indexes, instances' reporting keys,
    POST /api/service/ adding services to an application, GET /api/services/, 422 for an SLA the
    schema refuses, /docs/openapi.json."""

    def test_claims_clusters_services_and_instances(self):
        e = Edge(self, "")
        r = request(e.root.base, "POST", "/api/auth/login", {"username": "Admin", "password": e.password})
        access, refresh = jwt_claims(r.json()["token"]), jwt_claims(r.json()["refresh_token"])
        for claims, kind in ((access, "access"), (refresh, "refresh")):
            self.assertEqual((claims["sub"], claims["user"], claims["roles"], claims["organization"], claims["type"]),
                             ("Admin", "Admin", ["Admin"], "root", kind))
            self.assertGreater(claims["exp"], time.time())
        self.assertEqual(request(e.root.base, "GET", "/docs/openapi.json").json()["paths"].keys(),
                         request(e.root.base, "GET", "/api/openapi.json").json()["paths"].keys())
        # the cluster document: every key `oak clusters info` indexes, with the Go CLI's types
        c = e.register("c0")
        e.aggregate(c, memory=5000, cores=6)
        [doc] = e.call("GET", "/api/clusters").json()
        self.assertEqual((doc["_id"], doc["cluster_name"], doc["cluster_location"], doc["active"]),
                         (c["id"], "c0", "lab", True))
        for key, kind in (("active_nodes", int), ("aggregated_cpu_percent", float), ("memory_in_mb", int),
                          ("total_cpu_cores", int), ("total_gpu_cores", int), ("vcpus", int), ("vgpus", int),
                          ("memory", int), ("cpu_percent", float), ("memory_percent", float),
                          ("last_modified_timestamp", float), ("ip", str), ("port", str),
                          ("virtualization", list), ("supported_addons", list)):
            self.assertIsInstance(doc[key], kind, key)
        self.assertEqual((doc["memory_in_mb"], doc["total_cpu_cores"], doc["ip"]), (5000, 6, "127.0.0.1"))
        self.assertEqual(doc["port"], c["fake"].url.rsplit(":", 1)[1])
        self.assertLess(abs(doc["last_modified_timestamp"] - time.time()), 10)
        # an SLA the schema refuses: 422 on Oakestra's path, 400 on ours
        bad = sla("badone", memory=-1)
        self.assertEqual(e.call("POST", "/api/application/", bad).status, 422)
        self.assertEqual(e.call("POST", "/api/v1/applications", bad).status, 400)
        # POST /api/service/: services added to an existing application
        r = e.call("POST", "/api/application/", sla("shop"))
        self.assertEqual(r.status, 200, r.body)
        app = next(a for a in json.loads(r.json()) if a["application_name"] == "shop")
        extra = sla("ignored", microservice_name="extra")
        extra["applications"][0]["applicationID"] = app["applicationID"]
        r = e.call("POST", "/api/service/", extra)
        self.assertEqual(r.status, 200, r.body)
        out = r.json()
        self.assertEqual((out["deployed_services"], out["failed_services"]),
                         ([{"service_name": "extra", "status": 200}], []))
        added = json.loads(e.call("GET", "/api/service/" + out["job_id"]).json())
        self.assertEqual((added["job_name"], added["applicationID"]), ("shop.test.extra.test", app["applicationID"]))
        self.assertIn(out["job_id"], e.call("GET", "/api/application/" + app["applicationID"]).json()["microservices"])
        r = e.call("POST", "/api/service/", extra)  # again: that service exists
        self.assertEqual((r.status, r.json()["deployed_services"], r.json()["failed_services"][0]["status"]),
                         (200, [], 409))
        for body, field in ((dict(extra, applications=[dict(extra["applications"][0], applicationID="6a" + "0" * 22)]),
                             "no application 6a"),
                            (dict(extra, applications=[]), "exactly one application")):
            r = e.call("POST", "/api/service/", body)
            self.assertEqual(r.status, 400, r.body)
            self.assertIn(field, r.json()["error"]["message"])
        self.assertEqual(sorted(s["job_name"] for s in json.loads(e.call("GET", "/api/services/").json())),
                         ["shop.test.extra.test", "shop.test.testaggr.test"])
        # an instance's reporting keys, from what its cluster reported
        sid = out["job_id"]
        n = e.deploy(sid)["instance_number"]
        c["fake"].wait_for("POST", "/api/service/%s/%d" % (sid, n))
        for cpu, mem in ((12.5, 40), (20.0, 42)):
            e.aggregate(c, instances=[{"job_id": sid, "instance": n, "generation": 1, "status": "RUNNING",
                                       "status_detail": "", "node": "n1", "ready": True, "cpu": cpu, "memory": mem}])
        inst = json.loads(e.call("GET", "/api/service/" + sid).json())["instance_list"][0]
        self.assertEqual((inst["cpu"], inst["memory"], inst["cpu_percent"], inst["memory_percent"], inst["worker_id"]),
                         (20.0, 42.0, "20.000000", str(42 * 1024 * 1024), "n1"))
        self.assertEqual([h["value"] for h in inst["cpu_history"]], ["12.500000", "20.000000"])
        self.assertEqual([h["value"] for h in inst["memory_history"]], [str(40 * 1024 * 1024), str(42 * 1024 * 1024)])
        for h in inst["cpu_history"]:
            self.assertRegex(h["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$")
        # an Oakestra-format cluster names the job by its job_name: the same instance
        e.aggregate(c, instances=[{"job_id": "shop.test.extra.test", "instance": n, "generation": 1,
                                   "status": "RUNNING", "status_detail": "", "node": "n1", "ready": True,
                                   "cpu": 30.0, "memory": 44}])
        inst = e.instance(sid, n)
        self.assertEqual((inst["cpu"], len(inst["cpu_history"])), (30.0, 3))
        # the cluster no longer lists it: no usage any more
        e.aggregate(c, instances=[])
        inst = e.instance(sid, n)
        self.assertEqual((inst["cpu_history"], inst["cpu"]), ([], 0.0))


class EventsTest(unittest.TestCase):
    """GET /api/v1/events (docs/api.md "Events"): the three topics first, then each as it changes
    (a registration, an instance, an aggregate), only what the user may see, keep-alives past the
    response deadline, the end when the user is removed, 503 past 32 streams."""

    def test_stream(self):
        # a root where nothing changes: its stream only says it is alive, every 15 s
        quiet = Edge(self, "")
        calm = EventStream(quiet.root.base, quiet.token, timeout=60)
        self.addCleanup(calm.close)
        self.assertEqual([calm.next_event()[0] for _ in range(3)], ["applications", "services", "clusters"])
        e = Edge(self, "token_ttl_s = 60\n")
        c = e.register("c1")
        e.aggregate(c, memory=4000)
        ttl = EventStream(e.root.base, e.token, timeout=90)  # kept open until its token's time is over
        self.addCleanup(ttl.close)
        ev = EventStream(e.root.base, e.token, timeout=30)
        self.addCleanup(ev.close)
        self.assertEqual(ev.status, 200)
        self.assertTrue(ev.headers["Content-Type"].startswith("text/event-stream"))
        self.assertEqual(ev.headers["Cache-Control"], "no-store")
        first = [ev.next_event() for _ in range(3)]
        self.assertEqual([n for n, _ in first], ["applications", "services", "clusters"])
        self.assertEqual((json.loads(first[0][1]), json.loads(first[1][1])), ([], []))
        self.assertEqual([x["cluster_name"] for x in json.loads(first[2][1])], ["c1"])
        # a registration: applications and services, within the tick
        started = time.monotonic()
        r = e.call("POST", "/api/v1/applications", json.loads(SLA))
        self.assertEqual(r.status, 201, r.body)
        sid = r.json()["applications"][0]["microservices"][0]
        apps = ev.until("applications", lambda d: len(d) == 1)
        self.assertEqual(apps[0]["application_name"], "testing")
        svcs = ev.until("services", lambda d: len(d) == 1)
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual(svcs[0]["microserviceID"], sid)
        # an instance placed on the cluster: its status as the cluster reports it
        n = e.call("POST", "/api/v1/services/%s/instances" % sid).json()["instance_number"]
        inst = ev.until("services", lambda d: d[0]["instance_list"] and
                        d[0]["instance_list"][0]["status"] == "CLUSTER_SCHEDULED")[0]["instance_list"][0]
        self.assertEqual(inst["instance_number"], n)
        self.assertNotIn("cpu_history", inst)  # the histories stay out of the stream
        # Alice sees her own applications only; nobody's else
        pw = "correct horse battery staple"
        self.assertEqual(e.call("POST", "/api/v1/users", {"username": "alice", "password": pw,
                                                          "role": "Application_Provider"}).status, 201)
        e.wait("alice can log in", lambda: request(e.root.base, "POST", "/api/auth/login",
                                                     {"username": "alice", "password": pw}).status == 200)
        alice = request(e.root.base, "POST", "/api/auth/login", {"username": "alice", "password": pw}).json()["token"]
        mine = EventStream(e.root.base, alice)
        self.addCleanup(mine.close)
        self.assertEqual([mine.next_event() for _ in range(2)], [("applications", "[]"), ("services", "[]")])
        # past the 30 s response deadline the streams stay
        time.sleep(32)
        e.call("DELETE", "/api/v1/services/%s/instances/%d" % (sid, n))
        ev.until("services", lambda d: d[0]["instance_list"] == [] or d[0]["instance_list"][0]["status"] != "CLUSTER_SCHEDULED")
        calm.wait_keepalives(2)  # past 30 s without an event: alive, never cut by the response deadline
        # alice removed: her stream ends at once, saying why
        self.assertEqual(e.call("DELETE", "/api/v1/users/alice").status, 200)
        self.assertEqual(mine.until("end"), {"reason": "the user no longer exists"})
        self.assertIsNone(mine.next_event())
        # the first stream ends with its token (60 s after the login)
        end = ttl.until("end")
        self.assertIn("time is over", end["reason"])
        self.assertIsNone(ttl.next_event())
        self.assertIsNone(ev.until("end") and ev.next_event())  # the same token's
        # at most 32 streams at once
        e.login()
        many = [EventStream(e.root.base, e.token) for _ in range(32)]
        for m in many:
            self.addCleanup(m.close)
        self.assertEqual([m.status for m in many], [200] * 32)
        extra = EventStream(e.root.base, e.token)
        self.assertEqual(extra.status, 503)
        self.assertEqual(json.loads(extra.resp.read())["error"]["code"], "busy")
        self.assertEqual(extra.headers["Retry-After"], "5")
        # a stream its client closed is let go at its next write (a keep-alive within 15 s): then a
        # new one opens
        many[0].close()
        e.wait("a stream slot free again", lambda: EventStream(e.root.base, e.token).status == 200, timeout=20,
               interval=1)


class OakestraUsersTest(unittest.TestCase):
    """The reads of Oakestra's dashboard login and navbar: GET /api/user/<name> (its own), the
    user's id that GET /api/applications/<userId> takes, /api/permission/<name>, /api/users/ and
    /api/organization/ (Admin; one organization, root)."""

    def test_reads(self):
        e = Edge(self, "")
        pw = "correct horse battery staple"
        r = e.call("POST", "/api/v1/users", {"username": "alice", "password": pw, "role": "Application_Provider"})
        self.assertEqual(r.status, 201, r.body)
        e.wait("alice can log in", lambda: request(e.root.base, "POST", "/api/auth/login",
                                                     {"username": "alice", "password": pw}).status == 200)
        alice = request(e.root.base, "POST", "/api/auth/login", {"username": "alice", "password": pw}).json()["token"]
        me = e.call("GET", "/api/user/Admin").json()
        self.assertRegex(me["_id"]["$oid"], r"^[0-9a-f]{24}$")
        self.assertEqual((me["name"], me["roles"]), ("Admin", ["Admin"]))
        self.assertNotIn("password", me)
        self.assertEqual(e.call("GET", "/api/user/alice").status, 403)  # only one's own
        her = e.call("GET", "/api/user/alice", token=alice).json()
        self.assertEqual((her["roles"], her["_id"] != me["_id"]), (["Application_Provider"], True))
        self.assertEqual(e.call("GET", "/api/permission/alice", token=alice).json(), {"roles": ["Application_Provider"]})
        self.assertEqual(e.call("GET", "/api/permission/Admin", token=alice).status, 403)
        # Admins list users and the organization
        self.assertEqual(e.call("GET", "/api/users/", token=alice).status, 403)
        users = {u["name"]: u for u in e.call("GET", "/api/users/").json()}
        self.assertEqual((users["alice"]["roles"], users["Admin"]["_id"]), (["Application_Provider"], me["_id"]))
        self.assertEqual(len(e.call("GET", "/api/users/root").json()), 2)
        self.assertEqual(e.call("GET", "/api/users/6a0000000000000000000001").json(), [])
        [org] = json.loads(e.call("GET", "/api/organization/").json())  # a JSON string, as Oakestra
        self.assertEqual((org["_id"], org["name"]), ({"$oid": "root"}, "root"))
        self.assertEqual(sorted(m["user_id"] for m in org["member"]), sorted([me["_id"]["$oid"], her["_id"]["$oid"]]))
        # the applications of a user, by its id: its own only
        self.assertEqual(e.call("POST", "/api/application/", sla("hers"), token=alice).status, 200)
        apps = json.loads(e.call("GET", "/api/applications/" + her["_id"]["$oid"], token=alice).json())
        self.assertEqual([a["application_name"] for a in apps], ["hers"])
        self.assertEqual(e.call("GET", "/api/applications/" + her["_id"]["$oid"]).status, 401)
        self.assertEqual(json.loads(e.call("GET", "/api/applications/" + me["_id"]["$oid"]).json()), [])


    def test_writes_and_error_shape(self):
        """POST /api/auth/register, PUT, DELETE and POST (password change) /api/user/<name>, and
        Oakestra's error keys {code, status, message} beside ours on its paths."""
        e = Edge(self, "")
        base = e.root.base
        pw, pw2, pw3 = "first password here", "second password here", "third password here"
        bob = {"name": "bob", "password": pw, "email": "bob@example.test", "created_at": "05/12/2026 10:00",
               "roles": ["Infrastructure_Provider"], "_id": ""}
        r = e.call("POST", "/api/auth/register", bob)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual((r.json()["name"], r.json()["roles"], r.json()["email"]), ("bob", ["Infrastructure_Provider"], ""))
        r = e.call("POST", "/api/auth/register", bob)
        self.assertEqual(r.status, 409)
        self.assertEqual((r.json()["code"], r.json()["status"]), (409, "Conflict"))
        self.assertIn("user bob exists", r.json()["message"])
        self.assertEqual(r.json()["error"]["code"], "conflict")  # ours stays
        r = e.call("POST", "/api/auth/register", dict(bob, name="carl", roles=["Admin", "Application_Provider"]))
        self.assertEqual(r.status, 400)
        self.assertIn("roles: a list of exactly one role", r.json()["message"])

        def login(password):
            return request(base, "POST", "/api/auth/login", {"username": "bob", "password": password})
        token = login(pw).json()["token"]
        for body, want in (({"oldPassword": "wrong password!!", "newPassword": pw2}, "Old password is not valid!"),
                           ({"oldPassword": pw, "newPassword": pw}, "Old password can't be the new password!"),
                           ({"oldPassword": pw, "newPassword": "short"}, "newPassword: 12 to 1024 characters")):
            r = e.call("POST", "/api/user/bob", body, token=token)
            self.assertEqual(r.status, 400, r.body)
            self.assertIn(want, r.json()["message"])
        self.assertEqual(e.call("POST", "/api/user/bob", {"oldPassword": pw, "newPassword": pw2}).status, 403)
        r = e.call("POST", "/api/user/bob", {"oldPassword": pw, "newPassword": pw2}, token=token)
        self.assertEqual((r.status, r.json()), (200, {}))
        self.assertEqual((login(pw).status, login(pw2).status), (401, 200))
        # an Admin changes its role and password; renaming and taking the last Admin's role are refused
        r = e.call("PUT", "/api/user/bob", {"name": "bob", "email": "x", "roles": ["Application_Provider"]})
        self.assertEqual((r.status, r.json()), (200, "ok"))
        self.assertEqual(e.call("PUT", "/api/user/bob", {"password": pw3}).json(), {})
        self.assertEqual(login(pw3).status, 200)
        users = {u["name"]: u["roles"] for u in e.call("GET", "/api/users/").json()}
        self.assertEqual(users["bob"], ["Application_Provider"])
        self.assertEqual(e.call("PUT", "/api/user/bob", {"name": "robert"}).status, 400)
        self.assertEqual(e.call("PUT", "/api/user/Admin", {"roles": ["Application_Provider"]}).status, 409)
        self.assertEqual(e.call("PUT", "/api/user/bob", {"roles": ["Admin"]}, token=login(pw3).json()["token"]).status,
                         403)
        r = e.call("DELETE", "/api/user/bob")
        self.assertEqual([u["name"] for u in r.json()], ["Admin"])
        r = e.call("DELETE", "/api/user/bob")
        self.assertEqual((r.status, r.json()["code"], r.json()["status"]), (404, 404, "Not Found"))
        self.assertEqual(login(pw3).status, 401)
        r = request(base, "GET", "/api/applications/")  # no token, on Oakestra's path
        self.assertEqual((r.status, r.json()["code"], r.json()["status"]), (401, 401, "Unauthorized"))
        self.assertNotIn("status", request(base, "GET", "/api/v1/applications").json())  # ours: only "error"


class MigrationTest(unittest.TestCase):
    """A root.db of the schema before versions (instances inside the service documents, a forwards
    table) is upgraded on start: applications, services, instances, refusals, clusters and their
    tokens kept; the pending forwards resumed as a deploy and a delete with generation 1."""

    def test_v1_database_upgraded(self):
        tmp = tempfile.mkdtemp(prefix="oakuk-root-migrate-")
        self.addCleanup(shutil.rmtree, tmp, True)
        state = os.path.join(tmp, "state")
        os.makedirs(state, mode=0o700)
        secret = os.urandom(32)
        with open(os.path.join(state, "jwt-secret"), "wb") as f:
            f.write(secret)
        os.chmod(os.path.join(state, "jwt-secret"), 0o600)
        fake = FakeCluster()
        self.addCleanup(fake.close)
        cid, other, app_id, sid = "6a0000000000000000000001", "6a0000000000000000000009", "6a00000000000000000000a1", \
            "6a00000000000000000000b1"
        ctoken = jwt(secret, {"sub": cid, "typ": "cluster", "iat": int(time.time()), "jti": "0123456789abcdef"})
        now = int(time.time() * 1000)
        ms = json.loads(SLA)["applications"][0]["microservices"][0]
        ms.update(microserviceID=sid, app_name="testing", app_ns="test", job_name="testing.test.testaggr.test")
        base = {"instance_number": 0, "cluster_id": cid, "cluster_location": "lab", "cluster_name": "old",
                "node_id": "n1", "publicip": "", "cpu": 0.5, "memory": 12.0, "status": "RUNNING", "status_detail": "",
                "requested_at": now - 9000, "ready": True, "ready_ms": 4200, "node_ready_ms": 1100,
                "placement": {"virtualization": "unikernel", "arch": "amd64"}, "custom_key": "kept"}
        entries = [base,
                   {"instance_number": 1, "cluster_id": "", "cluster_location": "", "node_id": "", "publicip": "",
                    "cpu": 0, "memory": 0, "status": "NoActiveClusterWithCapacity", "status_detail": "no room",
                    "cluster_refusals": {cid: "NO_WORKER_CAPACITY: full", other: "gone"}, "requested_at": now,
                    "ready": False},
                   dict(base, instance_number=2, status="UNDEPLOYED", ready=False,
                        status_detail="waiting for cluster %s to confirm the removal" % cid),
                   dict(base, instance_number=3, status="CLUSTER_SCHEDULED", ready=False, node_id="")]
        for k in ("ready_ms", "node_ready_ms", "custom_key"):
            for entry in entries[2:]:
                entry.pop(k, None)
        doc = dict(ms, _id={"$oid": sid}, applicationID=app_id, service_name="testaggr", service_ns="test",
                   image=ms["code"], next_instance_progressive_number=5, status="RUNNING", instance_list=entries)
        app = {"_id": {"$oid": app_id}, "applicationID": app_id, "application_name": "testing",
               "application_namespace": "test", "application_desc": "Testing", "userId": "Admin",
               "microservices": [sid]}
        db = sqlite3.connect(os.path.join(state, "root.db"))
        db.executescript(V1_SCHEMA)
        db.execute("INSERT INTO users VALUES ('Admin', 'pbkdf2-sha256$1$00$00')")
        db.execute("INSERT INTO applications VALUES (?, 'Admin', 'testing', 'test', ?, ?)",
                   (app_id, json.dumps(app), now))
        db.execute("INSERT INTO services (id, app_id, user, doc, ms, explain)"
                   " VALUES (?, ?, 'Admin', ?, ?, 'cluster old: chosen')",
                   (sid, app_id, json.dumps(doc), json.dumps(ms)))
        db.execute("INSERT INTO clusters VALUES (?, 'old', 'lab', ?, ?, 0, '10.18.0.0/20', ?, ?, ?)",
                   (cid, fake.url, ctoken, json.dumps(aggregate(memory=7627)), now - 1000, now - 100000))
        db.execute("INSERT INTO forwards (cluster_id, method, path, body, service_id, instance, attempts)"
                   " VALUES (?, 'DELETE', ?, NULL, ?, 2, 3)", (cid, "/api/service/%s/2" % sid, sid))
        db.execute("INSERT INTO forwards (cluster_id, method, path, body, service_id, instance)"
                   " VALUES (?, 'POST', ?, '{}', ?, 3)", (cid, "/api/service/%s/3" % sid, sid))
        db.commit()
        db.close()
        # --reset-admin upgrades the database too, and writes a password to log in with to a file
        p = subprocess.run([ROOT_BIN, "--state-dir", state, "--reset-admin"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        pw_file = os.path.join(state, "admin-password")
        self.assertEqual(os.stat(pw_file).st_mode & 0o777, 0o600)
        with open(pw_file) as f:
            password = f.read().strip()
        self.assertNotIn(password, p.stdout + p.stderr)
        self.assertIn(pw_file, p.stderr)  # the log says where it is
        db = sqlite3.connect(os.path.join(state, "root.db"))
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 4)
        self.assertEqual(db.execute("SELECT role FROM users WHERE name = 'Admin'").fetchone()[0], "Admin")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertTrue({"instances", "refusals", "deletes"} <= tables, tables)
        self.assertNotIn("forwards", tables)
        stored = json.loads(db.execute("SELECT doc FROM services").fetchone()[0])
        self.assertNotIn("instance_list", stored)
        db.close()
        e = Edge(self, "cluster_timeout_s=60\n", state=state)
        e.login(password)
        # the cluster's token still works
        e.aggregate({"id": cid, "token": ctoken}, memory=100)
        svc = json.loads(e.call("GET", "/api/service/" + sid).json())
        self.assertEqual((svc["next_instance_progressive_number"], svc["job_name"], svc["memory"]),
                         (5, "testing.test.testaggr.test", 1000))
        listed = {i["instance_number"]: i for i in svc["instance_list"]}
        self.assertEqual(sorted(listed), [0, 1, 3])  # 2 is being removed: not in Oakestra's view
        i0 = listed[0]
        self.assertEqual((i0["status"], i0["cluster_id"], i0["cluster_name"], i0["node_id"], i0["generation"],
                          i0["ready"], i0["ready_ms"], i0["node_ready_ms"], i0["requested_at"], i0["placement"],
                          i0["custom_key"], i0["memory"]),
                         ("RUNNING", cid, "old", "n1", 1, True, 4200, 1100, now - 9000,
                          {"virtualization": "unikernel", "arch": "amd64"}, "kept", 12.0))
        i1 = listed[1]
        self.assertEqual((i1["cluster_id"], i1["generation"]), ("", 0))
        self.assertEqual(set(i1["cluster_refusals"]), {cid, other})  # they expire 30 s after the upgrade
        # the pending forwards: a deploy of generation 1 and a delete of generation 1, sent with the
        # cluster's token of before credentials
        req = fake.wait_for("POST", "/api/service/%s/3" % sid)
        job = job_of(req)
        self.assertEqual((job["instance_number"], job["generation"]), (3, 1))
        self.assertEqual(req[2], "Bearer " + ctoken)
        fake.wait_for("DELETE", "/api/service/%s/2?generation=1" % sid)
        e.wait("instance 2 removed once confirmed", lambda: e.instance(sid, 2) is None)
        self.assertEqual(e.instance(sid, 0)["status"], "RUNNING")
        # instance 1 was tried again at once (its refusals expire): the explanation is fresh
        self.assertIn("cluster old: ", " ".join(e.call("GET", "/api/v1/services/%s/explain" % sid).json()["lines"]))
        # The cluster registers again with that token (no join token) and gets a credential: same id
        # and subnet, a certificate; the old token no longer works, the root sends the credential.
        key, csr = make_csr(tmp, "old")
        reg = {"name": "old", "location": "lab", "url": fake.url, "csr": csr}
        r = e.call("POST", "/api/v1/clusters/register", dict(reg, name="other-name"), token=ctoken)
        self.assertEqual(r.status, 403, r.body)
        r = e.call("POST", "/api/v1/clusters/register", reg, token=ctoken)
        self.assertEqual(r.status, 201, r.body)
        cred = r.json()["token"]
        self.assertEqual((r.json()["id"], r.json()["subnet"]), (cid, "10.18.0.0/20"))
        self.assertRegex(cred, r"^oakukc\.%s\.[0-9a-f]{48}$" % cid)
        self.assertIn("BEGIN CERTIFICATE", r.json()["certificate"])
        self.assertEqual(e.call("POST", "/api/information/" + cid, aggregate(memory=7627), token=ctoken).status, 401)
        e.aggregate({"id": cid, "token": cred}, memory=7627)
        n = e.deploy(sid)["instance_number"]
        fake.wait_for("POST", "/api/service/%s/%d" % (sid, n), pred=lambda q: q[2] == "Bearer " + cred)
        db = sqlite3.connect(os.path.join(state, "root.db"))
        self.assertEqual(db.execute("SELECT token FROM clusters").fetchone()[0], "")
        self.assertNotIn(cred.split(".")[2], json.dumps(db.execute("SELECT * FROM clusters").fetchall()))
        db.close()
        # every instance runs revision 1 of its service
        self.assertEqual({i["revision"] for i in listed.values()} | {svc["revision"]}, {1})
        # a second start finds version 4 and changes nothing
        e.root.stop()
        e.root.start(["--config", e.conf])
        self.assertNotIn("event=migrate", e.root.log())
        e.login(password)
        self.assertEqual(e.instance(sid, 0)["generation"], 1)
        e.aggregate({"id": cid, "token": cred}, memory=7627)  # the credential survives the restart

    def test_v3_database_upgraded(self):
        """Version 3 (before revisions): services and instances get revision 1, and the instance's
        deploy carries that spec after the service changed."""
        tmp = tempfile.mkdtemp(prefix="oakuk-root-migrate3-")
        self.addCleanup(shutil.rmtree, tmp, True)
        state = os.path.join(tmp, "state")
        os.makedirs(state, mode=0o700)
        app_id, sid = "6a00000000000000000000a3", "6a00000000000000000000b3"
        ms = json.loads(SLA)["applications"][0]["microservices"][0]
        ms.update(microserviceID=sid, app_name="testing", app_ns="test", job_name="testing.test.testaggr.test")
        doc = dict(ms, _id={"$oid": sid}, applicationID=app_id, service_name="testaggr", service_ns="test",
                   image=ms["code"])
        app = {"_id": {"$oid": app_id}, "applicationID": app_id, "application_name": "testing",
               "application_namespace": "test", "application_desc": "Testing", "userId": "Admin",
               "microservices": [sid]}
        now = int(time.time() * 1000)
        db = sqlite3.connect(os.path.join(state, "root.db"))
        db.executescript(V3_SCHEMA)
        db.execute("PRAGMA user_version = 3")
        db.execute("INSERT INTO users VALUES ('Admin', 'pbkdf2-sha256$1$00$00', 'Admin')")
        db.execute("INSERT INTO applications VALUES (?, 'Admin', 'testing', 'test', ?, ?)",
                   (app_id, json.dumps(app), now))
        db.execute("INSERT INTO services (id, app_id, user, doc, ms, next_instance) VALUES (?, ?, 'Admin', ?, ?, 1)",
                   (sid, app_id, json.dumps(doc), json.dumps(ms)))
        db.execute("INSERT INTO instances (service_id, number, requested_at) VALUES (?, 0, ?)", (sid, now))
        db.commit()
        db.close()
        p = subprocess.run([ROOT_BIN, "--state-dir", state, "--reset-admin"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("event=migrate from=3 to=4", p.stderr)
        with open(os.path.join(state, "admin-password")) as f:
            password = f.read().strip()
        db = sqlite3.connect(os.path.join(state, "root.db"))
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 4)
        self.assertEqual(db.execute("SELECT revision FROM services").fetchall(), [(1,)])
        self.assertEqual(db.execute("SELECT revision FROM instances").fetchall(), [(1,)])
        db.close()
        e = Edge(self, "", state=state)
        e.login(password)
        r = e.call("PUT", "/api/v1/applications", sla(memory=700))
        self.assertEqual([(s["id"], s["change"], s["revision"]) for s in r.json()["applications"][0]["services"]],
                         [(sid, "updated", 2)])
        c = e.register("c0")
        e.aggregate(c)
        job = job_of(c["fake"].wait_for("POST", "/api/service/%s/0" % sid))
        self.assertEqual((job["memory"], e.instance(sid, 0)["revision"]), (1000, 1))


class OciResolveTest(unittest.TestCase):
    """A unikernel whose code is an OCI reference (docs/unikernels.md, "OCI images"): the root resolves
    it once at registration, off its main loop, stores it pinned to the index's digest with the
    index's architectures as arch when arch is absent, and forwards the pinned reference, so moving
    the tag changes nothing for the service; an unreachable registry without arch is a 400 saying
    arch is required; an arch the image lacks is a 400 naming it."""

    @classmethod
    def setUpClass(cls):
        cls.reg = None
        if not os.access(REGISTRY_BIN, os.X_OK) or not OAKUK or not (GUESTS / "arm64-kernel").exists() \
                or not (GUESTS / "ukguest-0.16.3.kernel").exists():
            return
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-root-oci-")
        cls.addr = "127.0.0.1:%d" % ports(1)[0]
        cfg = os.path.join(cls.tmp, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n"
                    "http:\n  addr: %s\n" % (cls.tmp, cls.addr))
        cls.reg = subprocess.Popen([REGISTRY_BIN, "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", int(cls.addr.split(":")[1])), 1).close()
                break
            except OSError:
                time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        if cls.reg:
            cls.reg.terminate()
            cls.reg.wait(10)
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        if not self.reg:
            self.skipTest("needs %s, the oakuk CLI and the test guests" % REGISTRY_BIN)

    def push(self, ref, *kernels):
        p = subprocess.run([OAKUK, "pkg", *sum((["--kernel", k] for k in kernels), []), "--push", ref],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return dict(line.split(" ", 1) for line in p.stdout.splitlines())

    def uk_sla(self, name, code, arch=None):
        doc = sla(name, code=code)
        ms = doc["applications"][0]["microservices"][0]
        del ms["arch"]
        if arch is not None:
            ms["arch"] = arch
        return doc

    def service(self, e, sid):
        r = e.call("GET", "/api/v1/services/" + sid)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def test_pinned_at_registration_tag_move_changes_nothing(self):
        ref = "%s/uk/app:1" % self.addr
        first = self.push(ref, "amd64=%s" % (GUESTS / "ukguest-0.16.3.kernel"), "arm64=%s" % (GUESTS / "arm64-kernel"))
        pinned = "%s/uk/app@%s" % (self.addr, first["index"])
        e = Edge(self, "cluster_timeout_s=60\n")
        c = e.register("c0")
        e.aggregate(c)
        sid = e.apply(self.uk_sla("ocinoarch", ref))
        svc = self.service(e, sid)
        self.assertEqual(svc["code"], pinned)
        self.assertEqual(svc["arch"], ["amd64", "arm64"])
        self.assertIn("event=resolve", e.root.log())
        # with arch given, the reference is pinned and arch kept
        sid2 = e.apply(self.uk_sla("ociarch", ref, ["amd64"]))
        self.assertEqual((self.service(e, sid2)["code"], self.service(e, sid2)["arch"]), (pinned, ["amd64"]))
        # the tag moves: new instances of the registered service still get the first image
        moved = self.push(ref, str(GUESTS / "ukguest-0.16.3.kernel"))
        self.assertNotEqual(moved["index"], first["index"])
        e.deploy(sid)
        job = job_of(c["fake"].wait_for("POST", "/api/service/%s/0" % sid))
        self.assertEqual(job["code"], pinned)
        self.assertEqual(job["arch"], ["amd64", "arm64"])
        # and a service registered now gets the new one
        sid3 = e.apply(self.uk_sla("ocimoved", ref))
        svc = self.service(e, sid3)
        self.assertEqual((svc["code"], svc["arch"]), ("%s/uk/app@%s" % (self.addr, moved["index"]), ["amd64"]))

    def test_refusals_name_arch(self):
        ref = "%s/uk/one:1" % self.addr
        self.push(ref, str(GUESTS / "ukguest-0.16.3.kernel"))
        e = Edge(self, "cluster_timeout_s=60\n")
        r = e.call("POST", "/api/v1/applications", self.uk_sla("ocirv", ref, ["riscv64"]))
        self.assertEqual(r.status, 400, r.body)
        msg = r.json()["error"]["message"]
        self.assertIn("applications[0].microservices[0].arch: the image %s has no platform for riscv64" % ref, msg)
        self.assertIn("qemu/x86_64", msg)
        gone = "127.0.0.1:%d/uk/app:1" % ports(1)[0]
        r = e.call("POST", "/api/v1/applications", self.uk_sla("ocigone", gone))
        self.assertEqual(r.status, 400, r.body)
        msg = r.json()["error"]["message"]
        self.assertIn("applications[0].microservices[0].arch: required", msg)
        self.assertIn("cannot resolve code %s" % gone, msg)
        # a tag the registry does not have: refused with or without arch, naming code
        missing = "%s/uk/none:1" % self.addr
        for arch in (None, ["amd64"]):
            r = e.call("POST", "/api/v1/applications", self.uk_sla("ocinone", missing, arch))
            self.assertEqual(r.status, 400, r.body)
            self.assertIn("applications[0].microservices[0].code: %s: " % missing, r.json()["error"]["message"])
        # nothing was registered by the refusals
        self.assertEqual(e.call("GET", "/api/v1/services").json(), [])
        # with arch, an unreachable registry leaves the reference to the nodes
        sid = e.apply(self.uk_sla("ocigonearch", gone, ["amd64"]))
        self.assertEqual(self.service(e, sid)["code"], gone)

    def test_slow_registry_does_not_block_the_loop(self):
        """A registry that accepts connections and never answers holds the request that asked, not
        the root: /healthz answers meanwhile, and the registration ends with the 400 after the
        resolution's timeout."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        self.addCleanup(silent.close)
        ref = "127.0.0.1:%d/uk/app:1" % silent.getsockname()[1]
        e = Edge(self, "cluster_timeout_s=60\n")
        result = {}

        def register():
            t = time.time()
            result["r"] = request(e.root.base, "POST", "/api/v1/applications", self.uk_sla("ocislow", ref), e.token)
            result["s"] = time.time() - t
        th = threading.Thread(target=register)
        th.start()
        time.sleep(1)
        for _ in range(5):
            t = time.time()
            self.assertEqual(e.call("GET", "/healthz").status, 200)
            self.assertLess(time.time() - t, 1.0)
            self.assertTrue(th.is_alive(), "the registration did not wait for the registry")
            time.sleep(0.3)
        th.join(30)
        self.assertEqual(result["r"].status, 400, result["r"].body)
        self.assertIn("arch: required", result["r"].json()["error"]["message"])


if __name__ == "__main__":
    ROOT_BIN = sys.argv[1]
    if len(sys.argv) > 2:
        OAKUK = sys.argv[2]
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])

#!/usr/bin/python3
"""The root's side of docs/security.md "TLS and identities: the contract", against the real
oakuk-root: HTTPS with its own CA (and the operator's), the server certificate's names and renewal,
--insecure; plain clients and clients of another CA refused; the admin password in a 0600 file and
no secret in the log; JWTs without exp refused; per-source login limits (429, Retry-After, doubling,
reset by a success); a login flood from many addresses that leaves /healthz, aggregates and status
reports answered and the instances untouched, and 503 beyond the hashing queue; join tokens with
the CA's fingerprint, uses and expiry; node tokens made by the cluster; cluster credentials and
name_taken; roles and users; every bad input named by its field.

Usage: test-root-security.py <path to oakuk-root>   (fixtures from $OAKUK_FIXTURES)"""
import base64
import hashlib
import http.client
import importlib.util
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("test_root", os.path.join(HERE, "test-root.py"))
tr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tr)

ROOT_BIN = None
TIMEOUT_S = 3  # cluster_timeout_s of the shared root
TOKEN_TTL_S = 60  # the shortest join token: checked after it expired
SECRETS = []  # every token, credential and password handed out: none may reach the log

FLOOD = r"""
import http.client, json, os, ssl, sys, time
host, port, ca, index, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
os.nice(10)  # the clients should not starve the process that measures the root
ctx = ssl.create_default_context(cafile=ca)
body = json.dumps({"username": "Admin", "password": "wrong-password-%d" % index})
counts, k, end = {}, 0, time.time() + seconds
while time.time() < end:
    k += 1
    src = "127.%d.%d.%d" % (100 + index, (k // 250) % 250, k % 250 + 1)  # a new source address each time
    try:
        c = http.client.HTTPSConnection(host, port, context=ctx, source_address=(src, 0), timeout=30)
        c.request("POST", "/api/auth/login", body, {"Content-Type": "application/json"})
        st = str(c.getresponse().status)
        c.close()
    except Exception as e:
        st = type(e).__name__
    counts[st] = counts.get(st, 0) + 1
print(json.dumps(counts))
"""


def openssl(*args, **kw):
    return subprocess.run(["openssl", *args], capture_output=True, check=True, text=True, **kw).stdout


def make_ca(tmp, name):
    """A CA made by openssl: (certificate path, key path)."""
    crt, key = os.path.join(tmp, name + ".crt"), os.path.join(tmp, name + ".key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-out", crt, "-days", "30", "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def fingerprint(pem):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def cert_names(path):
    text = openssl("x509", "-in", path, "-noout", "-ext", "subjectAltName")
    names = set()
    for part in text.split("\n", 1)[1].split(","):
        kind, _, value = part.strip().partition(":")
        names.add(str(ipaddress.ip_address(value)) if kind == "IP Address" else value)
    return names


def claims(jwt):
    p = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Root:
    """A root of this test: its daemon, state and the calls made to it."""

    def __init__(self, test, conf="", extra=(), ca=None, insecure=False):
        self.tmp = tempfile.mkdtemp(prefix="oakuk-root-sec-")
        test.addCleanup(shutil.rmtree, self.tmp, True)
        self.conf = os.path.join(self.tmp, "root.conf")
        with open(self.conf, "w") as f:
            f.write("[root]\n" + conf)
        self.d = tr.RootDaemon(os.path.join(self.tmp, "state"), tr.ports(1)[0], insecure=insecure, ca=ca)
        self.extra = ["--config", self.conf, *extra]
        self.d.start(self.extra)
        test.addCleanup(self.d.stop)

    def restart(self, extra=None):
        self.d.stop()
        if extra is not None:
            self.extra = ["--config", self.conf, *extra]
        self.d.start(self.extra)


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-root-security-")
        cls.conf = os.path.join(cls.tmp, "root.conf")
        with open(cls.conf, "w") as f:
            f.write("[root]\ncluster_timeout_s=%d\ntls_san = root.example, 10.9.8.7\n" % TIMEOUT_S)
        cls.root = tr.RootDaemon(os.path.join(cls.tmp, "state"), tr.ports(1)[0])
        cls.root.start(["--config", cls.conf])
        cls.base, cls.port = cls.root.base, cls.root.port
        cls.ctx = tr.TRUST[cls.base]
        cls.password = cls.root.admin_password()
        SECRETS.append(cls.password)
        cls.token = cls.login_as("Admin", cls.password)
        # A join token that expires while the tests run (test_13).
        r = cls.call("POST", "/api/v1/tokens", {"kind": "cluster", "ttl_s": TOKEN_TTL_S})
        assert r.status == 201, r.body
        cls.expiring, cls.expiring_made = r.json()["token"], time.time()
        cls.expiring_answer = r.json()
        SECRETS.append(cls.expiring)
        # One cluster, kept active by a thread, with one instance RUNNING on it.
        cls.fakes = []
        cls.c0 = cls.register("c0")
        cls.reports = []  # (time, aggregate status, status report status, seconds for both)
        cls.stop_reports = threading.Event()
        cls.sid = None
        cls.reporter = threading.Thread(target=cls.report_loop, daemon=True)
        tr.request(cls.base, "POST", "/api/information/" + cls.c0["id"], tr.aggregate(), cls.c0["token"])
        app = cls.call("POST", "/api/v1/applications", tr.sla("flooded"))
        assert app.status == 201, app.body
        cls.sid = app.json()["applications"][0]["microservices"][0]
        assert cls.call("POST", "/api/v1/services/%s/instances" % cls.sid).status == 201
        cls.c0["fake"].wait_for("POST", "/api/service/%s/0" % cls.sid)
        cls.reporter.start()

    @classmethod
    def tearDownClass(cls):
        cls.stop_reports.set()
        cls.reporter.join(10)
        cls.root.stop()
        for f in cls.fakes:
            f.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def report_loop(cls):
        """The cluster's aggregate and a RUNNING status report, every second."""
        cid, ctok = cls.c0["id"], cls.c0["token"]
        entry = [{"job_id": cls.sid, "instance": 0, "generation": 1, "status": "RUNNING", "node": "n1",
                  "ready": True, "ready_ms": 5}]
        while not cls.stop_reports.wait(1.0):
            t0 = time.time()
            try:
                a = tr.request(cls.base, "POST", "/api/information/" + cid, tr.aggregate(), ctok).status
                s = tr.request(cls.base, "POST", "/api/v1/clusters/%s/status" % cid, entry, ctok).status
            except Exception as e:  # noqa: BLE001 -- recorded, asserted by the flood test
                a = s = repr(e)
            cls.reports.append((t0, a, s, time.time() - t0))

    # -- helpers --
    @classmethod
    def call(cls, method, path, body=None, token=None):
        return tr.request(cls.base, method, path, body, token or cls.token)

    @classmethod
    def login_as(cls, user, password):
        r = tr.request(cls.base, "POST", "/api/auth/login", {"username": user, "password": password})
        assert r.status == 200, r.body
        SECRETS.extend([r.json()["token"], r.json()["refresh_token"]])
        return r.json()["token"]

    @classmethod
    def register(cls, name, join=None, token=None):
        """A fake cluster (HTTPS with the certificate of its registration) registered with a new join
        token, or with token as bearer."""
        fake = tr.FakeCluster(tls=True)
        cls.fakes.append(fake)
        if join is None and token is None:
            join = cls.call("POST", "/api/v1/tokens", {"kind": "cluster"}).json()["token"]
        key, csr = tr.make_csr(cls.tmp, name)
        r = tr.request(cls.base, "POST", "/api/v1/clusters/register",
                       {"name": name, "location": "lab", "url": fake.url, "csr": csr}, token or join)
        assert r.status == 201, r.body
        fake.serve_tls(r.json()["certificate"] + r.json()["ca"], key)
        SECRETS.extend([join or token, r.json()["token"]])
        return dict(r.json(), fake=fake)

    def from_source(self, src, method, path, body=None, timeout=30):
        """A request on a new connection from source address src: (status, Retry-After, body)."""
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, source_address=(src, 0),
                                        timeout=timeout)
        try:
            c.request(method, path, json.dumps(body) if body is not None else None,
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.getheader("Retry-After"), r.read()
        finally:
            c.close()

    def assert_error(self, r, status, path=None, words=()):
        self.assertEqual(r.status, status, r.body)
        err = r.json()["error"]
        if path is not None:
            self.assertEqual(err["path"], path, err)
        for w in words:
            self.assertIn(w, err["message"])
        return err

    def healthz_ms(self):
        t0 = time.perf_counter()
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        try:
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        finally:
            c.close()
        return (time.perf_counter() - t0) * 1000

    # -- tests (numbered: they share one root) --
    def test_01_tls(self):
        r = self.call("GET", "/healthz")
        self.assertIs(r.json()["tls"], True)
        ca_pem = open(self.root.ca).read()
        r = self.call("GET", "/api/v1/pki/ca", token="")
        self.assertEqual((r.status, r.body.decode(), r.headers["Content-Type"]),
                         (200, ca_pem, "application/x-pem-file"))
        # The server certificate names --tls-san (config), localhost and 127.0.0.1, and is served
        # with the CA after it.
        names = cert_names(os.path.join(self.root.state_dir, "pki", "server.crt"))
        self.assertEqual(names, {"root.example", "10.9.8.7", "localhost", "127.0.0.1"})
        shown = openssl("s_client", "-connect", "127.0.0.1:%d" % self.port, "-showcerts", input="")
        chain = ["-----BEGIN CERTIFICATE-----" + c.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
                 for c in shown.split("-----BEGIN CERTIFICATE-----")[1:]]
        self.assertEqual(len(chain), 2, shown)
        self.assertEqual(fingerprint(chain[1]), fingerprint(ca_pem))
        # A plaintext client gets no HTTP answer.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                got = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                got = b""
        self.assertFalse(got.startswith(b"HTTP/"), got)
        # A client that trusts another CA, or only the system's, refuses the root.
        other, _ = make_ca(self.tmp, "other-ca")
        for ctx in (ssl.create_default_context(cafile=other), ssl.create_default_context()):
            c = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=10)
            with self.assertRaises(ssl.SSLCertVerificationError):
                c.request("GET", "/healthz")
            c.close()
        # A client dialling a name the certificate does not carry refuses it too.
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port)),
                                 server_hostname="elsewhere.example")

    def test_02_certificates_and_insecure(self):
        """The server certificate is kept while it lasts and names what is asked, issued again when
        its names change or fewer than 30 days are left; the operator's CA; --insecure."""
        r = Root(self, extra=["--tls-san", "a.example"])
        crt = os.path.join(r.d.state_dir, "pki", "server.crt")
        self.assertIn("a.example", cert_names(crt))
        first = open(crt).read()
        r.restart()
        self.assertEqual(open(crt).read(), first, "re-issued although nothing changed")
        r.restart(["--tls-san", "b.example", "--tls-san", "fd00::7"])
        self.assertEqual(cert_names(crt), {"b.example", "fd00::7", "localhost", "127.0.0.1"})
        self.assertIn("server certificate issued", r.d.log())
        # A certificate of the CA with 10 days left is replaced at the next start.
        pki = os.path.join(r.d.state_dir, "pki")
        r.d.stop()
        csr = openssl("req", "-new", "-key", os.path.join(pki, "server.key"), "-subj", "/CN=short")
        ext = os.path.join(r.tmp, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:b.example,IP:fd00::7,DNS:localhost,IP:127.0.0.1\n")
        openssl("x509", "-req", "-CA", os.path.join(pki, "ca.crt"), "-CAkey", os.path.join(pki, "ca.key"),
                "-days", "10", "-out", crt, "-extfile", ext, input=csr)
        short = open(crt).read()
        r.d.start(r.extra)
        self.assertNotEqual(open(crt).read(), short)
        end = openssl("x509", "-in", crt, "-noout", "-enddate").strip().split("=", 1)[1]
        left = time.mktime(time.strptime(end, "%b %d %H:%M:%S %Y %Z")) - time.time()
        self.assertGreater(left, 300 * 86400)
        # Bad names and half a CA are refused at start, naming the option.
        refused = ((["--tls-san", "not a name"], "--tls-san"), (["--ca-cert", crt], "--ca-key"))
        for k, (extra, words) in enumerate(refused):
            p = subprocess.run([ROOT_BIN, "--state-dir", os.path.join(r.tmp, "bad%d" % k), "--listen",
                                "127.0.0.1:%d" % tr.ports(1)[0], *extra], capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(words, p.stderr)
        # The operator's CA: served, signs the server certificate, its fingerprint in join tokens.
        ca_crt, ca_key = make_ca(r.tmp, "operator-ca")
        op = Root(self, extra=["--ca-cert", ca_crt, "--ca-key", ca_key], ca=ca_crt)
        self.assertEqual(tr.request(op.d.base, "GET", "/api/v1/pki/ca").body.decode(), open(ca_crt).read())
        tok = tr.request(op.d.base, "POST", "/api/auth/login", {"username": "Admin", "password": op.d.admin_password()})
        join = tr.request(op.d.base, "POST", "/api/v1/tokens", {"kind": "cluster"}, tok.json()["token"]).json()["token"]
        self.assertEqual(join.split(".")[1], fingerprint(open(ca_crt).read()))
        # A mismatched key is refused.
        _, other_key = make_ca(r.tmp, "unrelated")
        p = subprocess.run([ROOT_BIN, "--state-dir", os.path.join(r.tmp, "x"), "--listen", "127.0.0.1:1",
                            "--ca-cert", ca_crt, "--ca-key", other_key], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("is not the key of --ca-cert", p.stderr)
        # --insecure (config insecure = true): plain HTTP, "tls": false, a warning at every start.
        ins = Root(self, conf="insecure = true\n", insecure=True)
        self.assertIs(tr.request(ins.d.base, "GET", "/healthz").json()["tls"], False)
        ins.restart()
        self.assertEqual(ins.d.log().count("level=warning"), 1, ins.d.log())
        self.assertIn("event=insecure", ins.d.log())

    def test_03_secrets_at_rest(self):
        state = self.root.state_dir
        self.assertEqual(os.stat(state).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(state, "admin-password")).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.join(state, "pki", "ca.key")).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.join(state, "pki", "server.key")).st_mode & 0o777, 0o600)
        log = self.root.log()
        self.assertIn(os.path.join(state, "admin-password"), log)
        self.assertNotIn(self.password, log)
        # Join tokens and credentials are stored as hashes only.
        db = b"".join(open(os.path.join(state, f), "rb").read() for f in ("root.db", "root.db-wal")
                      if os.path.exists(os.path.join(state, f)))
        for secret in (self.expiring.split(".")[2], self.c0["token"].split(".")[2]):
            self.assertNotIn(secret.encode(), db)

    def test_04_jwt_needs_exp(self):
        with open(os.path.join(self.root.state_dir, "jwt-secret"), "rb") as f:
            key = f.read()
        now = int(time.time())
        base = {"sub": "Admin", "typ": "access", "iat": now, "jti": "00"}
        ok = tr.jwt(key, dict(base, exp=now + 60))
        self.assertEqual(self.call("GET", "/api/v1/applications", token=ok).status, 200)  # the key is right
        for bad, words in ((base, "no expiry"), (dict(base, exp=str(now + 60)), "no expiry"),
                           (dict(base, exp=now + 60.5), "no expiry"), (dict(base, exp=now - 5), "expired")):
            with self.subTest(claims=bad):
                self.assert_error(self.call("GET", "/api/v1/applications", token=tr.jwt(key, bad)), 401,
                                  words=[words])
        refresh = tr.jwt(key, dict(base, typ="refresh"))
        self.assert_error(self.call("POST", "/api/auth/refresh", token=refresh), 401, words=["no expiry"])
        # The root's own tokens: access tokens live 15 minutes and carry the role.
        c = claims(self.token)
        self.assertEqual((c["exp"] - c["iat"], c["role"]), (900, "Admin"))

    def test_05_login_limit(self):
        type(self).blocked_at = time.time()
        src = "127.0.0.77"
        for k in range(5):
            st, _, body = self.from_source(src, "POST", "/api/auth/login", {"username": "Admin", "password": "no"})
            self.assertEqual(st, 401, body)
        st, after, body = self.from_source(src, "POST", "/api/auth/login", {"username": "Admin", "password": "no"})
        self.assertEqual((st, json.loads(body)["error"]["code"]), (429, "too_many_requests"), body)
        self.assertIn(int(after), (29, 30))
        # Even the right password is refused while the address is blocked; other addresses log in.
        right = {"username": "Admin", "password": self.password}
        self.assertEqual(self.from_source(src, "POST", "/api/auth/login", right)[0], 429)
        self.assertEqual(self.from_source("127.0.0.78", "POST", "/api/auth/login", right)[0], 200)
        # A success starts an address afresh: 4 failures, a success, 4 failures are no block...
        src = "127.0.0.79"
        for expect in [401] * 4 + [200] + [401] * 5:
            body = right if expect == 200 else {"username": "nobody", "password": "no"}
            self.assertEqual(self.from_source(src, "POST", "/api/auth/login", body)[0], expect)
        # ...the fifth failure after it is.
        self.assertEqual(self.from_source(src, "POST", "/api/auth/login", right)[0], 429)

    def test_06_login_flood(self):
        """20 clients send wrong passwords for 20 s, each attempt from a new address (no limit
        applies: every one is hashed). /healthz stays under 100 ms at the 99th percentile, the
        cluster's aggregates and status reports are answered, and its instance is not touched."""
        fake = self.c0["fake"]
        path = "/api/service/%s/0" % self.sid
        before = (len(fake.got("POST", path)), len(fake.got("DELETE", path)))
        seconds = 20
        start = time.time()
        clients = [subprocess.Popen([sys.executable, "-c", FLOOD, "127.0.0.1", str(self.port), self.root.ca, str(i),
                                     str(seconds)], stdout=subprocess.PIPE, text=True) for i in range(20)]
        try:
            time.sleep(1)  # the flood under way
            latencies = []
            while time.time() < start + seconds - 0.5:
                latencies.append(self.healthz_ms())
                time.sleep(0.05)
        finally:
            outputs = [c.communicate(timeout=120)[0] for c in clients]
        counts = {}
        for out in outputs:
            for k, v in json.loads(out).items():
                counts[k] = counts.get(k, 0) + v
        flood_end = time.time()
        p99 = percentile(latencies, 0.99)
        print("flood: %s; /healthz p50 %.1f ms p99 %.1f ms max %.1f ms over %d probes" % (
            counts, percentile(latencies, 0.5), p99, max(latencies), len(latencies)), file=sys.stderr)
        self.assertGreater(counts.get("401", 0), 50, counts)  # the passwords were really checked
        self.assertEqual(set(counts) - {"401", "503"}, set(), counts)
        self.assertLess(p99, 100, "/healthz p99 %.1f ms during the login flood" % p99)
        during = [r for r in self.reports if start + 1 <= r[0] <= flood_end - 1]
        self.assertGreaterEqual(len(during), 10, self.reports)
        for t, a, s, took in during:
            self.assertEqual((a, s), (200, 200), during)
            self.assertLess(took, 1.0, during)
        inst = tr.request(self.base, "GET", "/api/v1/services/%s/instances" % self.sid, token=self.token).json()
        self.assertEqual([(i["cluster_id"], i["generation"], i["status"], i["ready"]) for i in inst],
                         [(self.c0["id"], 1, "RUNNING", True)])
        after = (len(fake.got("POST", path)), len(fake.got("DELETE", path)))
        self.assertEqual(after, before, "the flood made the root deploy or delete the instance")
        self.assertIs(self.call("GET", "/api/v1/clusters/" + self.c0["id"]).json()["active"], True)

    def test_07_hash_queue_full(self):
        """Beyond 4 hashes under way and 64 waiting, a login is answered 503 with Retry-After: 1."""
        n = 110
        conns = []
        for i in range(n):
            src = "127.0.%d.%d" % (50 + i // 200, i % 200 + 1)
            c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, source_address=(src, 0),
                                            timeout=60)
            c.connect()
            conns.append(c)
        go = threading.Barrier(n)
        results = [None] * n

        def one(i):
            go.wait()
            conns[i].request("POST", "/api/auth/login", json.dumps({"username": "Admin", "password": "x" * 12}),
                             {"Content-Type": "application/json"})
            r = conns[i].getresponse()
            results[i] = (r.status, r.getheader("Retry-After"))
            r.read()
            conns[i].close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        statuses = [r[0] for r in results]
        self.assertIn(503, statuses, statuses)
        self.assertGreaterEqual(statuses.count(401), 68, statuses)
        self.assertEqual(set(statuses), {401, 503}, statuses)
        self.assertEqual({r[1] for r in results if r[0] == 503}, {"1"})
        self.assertLess(self.healthz_ms(), 1000)

    def test_08_registration(self):
        join = self.call("POST", "/api/v1/tokens", {"kind": "cluster"}).json()["token"]
        SECRETS.append(join)
        key, csr = tr.make_csr(self.tmp, "c0")
        reg = {"name": "c0", "location": "lab", "url": self.c0["fake"].url, "csr": csr}
        before = self.call("GET", "/api/v1/clusters/" + self.c0["id"]).json()
        # A join token cannot take a registered name: 409, nothing changes, the token is not used up.
        err = self.assert_error(tr.request(self.base, "POST", "/api/v1/clusters/register", dict(reg, location="x"),
                                           join), 409, "name", ["c0 is registered", "credential"])
        self.assertEqual(err["code"], "name_taken")
        self.assertEqual(self.call("GET", "/api/v1/clusters/" + self.c0["id"]).json()["cluster_location"],
                         before["cluster_location"])
        self.register("c9", join=join)
        # Its credential re-registers it: same id, subnet and credential, a new certificate.
        r = tr.request(self.base, "POST", "/api/v1/clusters/register", dict(reg, location="moved"), self.c0["token"])
        self.assertEqual(r.status, 201, r.body)
        again = r.json()
        self.assertEqual((again["id"], again["subnet"], again["token"]),
                         (self.c0["id"], self.c0["subnet"], self.c0["token"]))
        self.assertNotEqual(again["certificate"], self.c0["certificate"])
        self.assertEqual(self.call("GET", "/api/v1/clusters/" + self.c0["id"]).json()["cluster_location"], "moved")
        # ...but no other name; an unknown credential, a token of another CA are refused.
        self.assert_error(tr.request(self.base, "POST", "/api/v1/clusters/register", dict(reg, name="c10"),
                                     self.c0["token"]), 403, "name", ["c0"])
        forged = "oakukc.%s.%s" % (self.c0["id"], "0" * 48)
        self.assert_error(tr.request(self.base, "POST", "/api/v1/clusters/register", reg, forged), 401)
        self.assert_error(tr.request(self.base, "POST", "/api/information/" + self.c0["id"], tr.aggregate(), forged),
                          401)
        other = "oakuk1.%s.%s" % ("0" * 64, join.split(".")[2])
        self.assert_error(tr.request(self.base, "POST", "/api/v1/clusters/register", dict(reg, name="c11"), other), 401,
                          words=["fingerprint"])
        # A cluster's credential is not another cluster's.
        c9 = self.call("GET", "/api/v1/clusters").json()
        c9_id = next(c["id"] for c in c9 if c["cluster_name"] == "c9")
        self.assert_error(tr.request(self.base, "POST", "/api/information/" + c9_id, tr.aggregate(), self.c0["token"]),
                          403)
        # The root reaches a cluster only through a certificate its CA signed for the host dialled:
        # a fake cluster that serves a certificate of another CA gets no deploy.
        bogus = tr.FakeCluster(tls=True)
        self.fakes.append(bogus)
        ca, cakey = make_ca(self.tmp, "bogus-ca")
        bkey, bcsr = tr.make_csr(self.tmp, "bogus")
        bcrt = os.path.join(self.tmp, "bogus.crt")
        ext = os.path.join(self.tmp, "bogus.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-CA", ca, "-CAkey", cakey, "-days", "5", "-out", bcrt, "-extfile", ext, input=bcsr)
        join = self.call("POST", "/api/v1/tokens", {"kind": "cluster"}).json()["token"]
        r = tr.request(self.base, "POST", "/api/v1/clusters/register",
                       {"name": "bogus", "location": "lab", "url": bogus.url, "csr": bcsr}, join)
        self.assertEqual(r.status, 201, r.body)
        bogus.serve_tls(open(bcrt).read() + open(ca).read(), bkey)
        bid, btok = r.json()["id"], r.json()["token"]
        SECRETS.extend([join, btok])
        bogus.answers[("POST", "/api/v1/tokens")] = (201, {"token": "never", "expires_at": 1, "uses": 1})
        tr.request(self.base, "POST", "/api/information/" + bid, tr.aggregate(), btok)
        r = self.call("POST", "/api/v1/tokens", {"kind": "node", "cluster": "bogus"})
        self.assertEqual(r.status, 502, r.body)
        self.assertEqual(bogus.requests, [])

    def test_09_tokens(self):
        r = self.call("POST", "/api/v1/tokens", {"kind": "cluster", "ttl_s": 600, "uses": 2})
        self.assertEqual(r.status, 201, r.body)
        t = r.json()
        self.assertEqual((t["kind"], t["uses"]), ("cluster", 2))
        self.assertAlmostEqual(t["expires_at"] / 1000, time.time() + 600, delta=5)
        self.register("u1", join=t["token"])
        self.register("u2", join=t["token"])
        key, csr = tr.make_csr(self.tmp, "u3")
        self.assert_error(tr.request(self.base, "POST", "/api/v1/clusters/register",
                                     {"name": "u3", "location": "lab", "url": "https://127.0.0.1:1", "csr": csr},
                                     t["token"]), 401, words=["used up"])
        # The old path makes cluster tokens only.
        r = self.call("POST", "/api/v1/clusters/tokens")
        self.assertEqual((r.status, r.json()["kind"], r.json()["uses"]), (201, "cluster", 1))
        SECRETS.extend([t["token"], r.json()["token"]])
        self.assert_error(self.call("POST", "/api/v1/clusters/tokens", {"kind": "node"}), 400, "kind")
        # Node tokens are made by the cluster with the root's credential for it, and passed through.
        fake = self.c0["fake"]
        fake.answers[("POST", "/api/v1/tokens")] = (201, {"token": "oakuk1.%s.%s" % ("a" * 64, "b" * 48),
                                                          "expires_at": 123000, "uses": 3})
        r = self.call("POST", "/api/v1/tokens", {"kind": "node", "cluster": "c0", "ttl_s": 120, "uses": 3})
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.json(), {"token": "oakuk1.%s.%s" % ("a" * 64, "b" * 48), "expires_at": 123000, "uses": 3,
                                    "kind": "node"})
        method, path, auth, body = fake.wait_for("POST", "/api/v1/tokens")
        self.assertEqual((auth, json.loads(body)), ("Bearer " + self.c0["token"], {"ttl_s": 120, "uses": 3}))
        fake.answers[("POST", "/api/v1/tokens")] = (400, {"error": {"code": "invalid_field", "message": "uses: no",
                                                                    "path": "uses"}})
        err = self.assert_error(self.call("POST", "/api/v1/tokens", {"kind": "node", "cluster": "c0"}), 400)
        self.assertIn("uses: no", err["message"])
        self.assert_error(self.call("POST", "/api/v1/tokens", {"kind": "node", "cluster": "nope"}), 404, "cluster")
        # u1 has sent no aggregate for longer than cluster_timeout_s: silent.
        time.sleep(TIMEOUT_S + 0.5)
        err = self.assert_error(self.call("POST", "/api/v1/tokens", {"kind": "node", "cluster": "u1"}), 503, "cluster")
        self.assertEqual(err["code"], "cluster_unavailable")
        # Every bad field is named.
        bad = [({}, "kind"), ({"kind": "pod"}, "kind"), ({"kind": 1}, "kind"),
               ({"kind": "cluster", "ttl_s": 59}, "ttl_s"), ({"kind": "cluster", "ttl_s": "60"}, "ttl_s"),
               ({"kind": "cluster", "ttl_s": 31536001}, "ttl_s"), ({"kind": "cluster", "uses": 0}, "uses"),
               ({"kind": "cluster", "uses": 1001}, "uses"), ({"kind": "cluster", "uses": 1.5}, "uses"),
               ({"kind": "cluster", "cluster": "c0"}, "cluster"), ({"kind": "node"}, "cluster"),
               ({"kind": "node", "cluster": 5}, "cluster")]
        for b, field in bad:
            with self.subTest(body=b):
                err = self.assert_error(self.call("POST", "/api/v1/tokens", b), 400, field)
                self.assertTrue(err["message"].startswith(field + ":"), err)

    def test_10_roles_and_users(self):
        users = {"app": "Application_Provider", "infra": "Infrastructure_Provider", "admin2": "Admin"}
        for name, role in users.items():
            r = self.call("POST", "/api/v1/users", {"username": name, "password": "pw-of-%s-long" % name, "role": role})
            self.assertEqual((r.status, r.json()), (201, {"username": name, "role": role}), r.body)
            SECRETS.append("pw-of-%s-long" % name)
        listed = self.call("GET", "/api/v1/users").json()
        self.assertEqual(listed, [{"username": "Admin", "role": "Admin"}] +
                         [{"username": n, "role": r} for n, r in users.items()])
        self.assert_error(self.call("POST", "/api/v1/users", {"username": "app", "password": "x" * 12,
                                                               "role": "Admin"}), 409, "username")
        app = self.login_as("app", "pw-of-app-long")
        infra = self.login_as("infra", "pw-of-infra-long")
        self.assertEqual(claims(app)["role"], "Application_Provider")
        # An Application_Provider deploys but makes no tokens or users and sees its own applications.
        err = self.assert_error(self.call("POST", "/api/v1/tokens", {"kind": "cluster"}, token=app), 403)
        self.assertEqual(err["code"], "forbidden")
        self.assertIn("Admin or Infrastructure_Provider", err["message"])
        err = self.assert_error(self.call("POST", "/api/v1/users", {"username": "x", "password": "x" * 12,
                                                                     "role": "Admin"}, token=app), 403)
        self.assertIn("needs the role Admin;", err["message"])
        self.assert_error(self.call("GET", "/api/v1/users", token=app), 403)
        self.assert_error(self.call("DELETE", "/api/v1/clusters/" + self.c0["id"], token=app), 403)
        self.assert_error(self.call("POST", "/api/v1/nodes/n1/drain", token=app), 403)
        r = self.call("POST", "/api/v1/applications", tr.sla("appsown"), token=app)
        self.assertEqual(r.status, 201, r.body)
        app_id = r.json()["applications"][0]["applicationID"]
        app_sid = r.json()["applications"][0]["microservices"][0]
        self.assertEqual([a["application_name"] for a in self.call("GET", "/api/v1/applications", token=app).json()],
                         ["appsown"])
        self.assert_error(self.call("GET", "/api/v1/services/" + self.sid, token=app), 404)
        self.assertEqual(self.call("GET", "/api/v1/clusters", token=app).status, 200)
        # An Infrastructure_Provider makes tokens, reads every application, deploys nothing.
        self.assertEqual(self.call("POST", "/api/v1/tokens", {"kind": "cluster"}, token=infra).status, 201)
        names = {a["application_name"] for a in self.call("GET", "/api/v1/applications", token=infra).json()}
        self.assertEqual(names, {"flooded", "appsown"})
        for method, path, body in (("POST", "/api/v1/applications", tr.sla("no")),
                                   ("POST", "/api/v1/services/%s/instances" % app_sid, None),
                                   ("POST", "/api/service/%s/instance" % app_sid, None),
                                   ("DELETE", "/api/v1/applications/" + app_id, None),
                                   ("GET", "/api/v1/services/%s/instances/0/logs" % app_sid, None)):
            with self.subTest(path=path):
                err = self.assert_error(self.call(method, path, body, token=infra), 403)
                self.assertIn("needs the role Admin or Application_Provider; user infra is Infrastructure_Provider",
                              err["message"])
        self.assertEqual(self.call("GET", "/api/v1/services/%s/instances" % app_sid, token=infra).status, 200)
        self.assertEqual(self.call("POST", "/api/v1/users", {}, token=infra).status, 403)
        # Users are removed (their tokens stop working); the last Admin stays.
        self.assertEqual(self.call("DELETE", "/api/v1/users/app").status, 200)
        self.assert_error(self.call("GET", "/api/v1/applications", token=app), 401, words=["no longer exists"])
        self.assert_error(self.call("DELETE", "/api/v1/users/app"), 404)
        self.assertEqual(self.call("DELETE", "/api/v1/users/admin2").status, 200)
        err = self.assert_error(self.call("DELETE", "/api/v1/users/Admin"), 409)
        self.assertIn("last Admin", err["message"])
        # Bad users are named by their field.
        bad = [({"password": "x" * 12, "role": "Admin"}, "username"),
               ({"username": "a b", "password": "x" * 12, "role": "Admin"}, "username"),
               ({"username": "x" * 65, "password": "x" * 12, "role": "Admin"}, "username"),
               ({"username": "ok", "role": "Admin"}, "password"),
               ({"username": "ok", "password": "x" * 11, "role": "Admin"}, "password"),
               ({"username": "ok", "password": "x" * 12}, "role"),
               ({"username": "ok", "password": "x" * 12, "role": "root"}, "role")]
        for b, field in bad:
            with self.subTest(body=b):
                self.assert_error(self.call("POST", "/api/v1/users", b), 400, field)

    def test_11_registration_inputs(self):
        join = self.call("POST", "/api/v1/tokens", {"kind": "cluster"}).json()["token"]
        SECRETS.append(join)
        key, csr = tr.make_csr(self.tmp, "in")
        good = {"name": "in", "location": "lab", "url": "https://127.0.0.1:1", "csr": csr}
        tampered = csr.replace(csr.splitlines()[3], csr.splitlines()[3][::-1])
        bad = [(dict(good, name=None), "name"), (dict(good, name="a/b"), "name"),
               (dict(good, location=None), "location"), (dict(good, url="ftp://x"), "url"),
               (dict(good, url=None), "url"), (dict(good, csr=None), "csr"),
               (dict(good, csr=5), "csr"), (dict(good, csr="not a request"), "csr"), (dict(good, csr=tampered), "csr")]
        for b, field in bad:
            with self.subTest(field=field, body=b):
                b = {k: v for k, v in b.items() if v is not None}
                err = self.assert_error(tr.request(self.base, "POST", "/api/v1/clusters/register", b, join), 400, field)
                self.assertTrue(err["message"].startswith(field + ":"), err)
        # None of them used the token up.
        self.assertEqual(tr.request(self.base, "POST", "/api/v1/clusters/register", good, join).status, 201)
        self.assert_error(self.call("POST", "/api/auth/login", {"password": "x"}), 400, "username")
        self.assert_error(self.call("POST", "/api/auth/login", {"username": "x", "password": 5}), 400, "password")

    def test_12_login_block_doubles(self):
        """After its 30 s block, a failure from the same address blocks it again for 60 s."""
        wait = self.blocked_at + 32 - time.time()
        if wait > 0:
            time.sleep(wait)
        src = "127.0.0.77"
        st, _, body = self.from_source(src, "POST", "/api/auth/login", {"username": "Admin", "password": "no"})
        self.assertEqual(st, 401, body)
        st, after, _ = self.from_source(src, "POST", "/api/auth/login", {"username": "Admin", "password": "no"})
        self.assertEqual(st, 429)
        self.assertIn(int(after), (59, 60))

    def test_13_join_token_expires(self):
        wait = self.expiring_made + TOKEN_TTL_S + 2 - time.time()
        self.assertAlmostEqual(self.expiring_answer["expires_at"] / 1000, self.expiring_made + TOKEN_TTL_S, delta=3)
        if wait > 0:
            time.sleep(wait)
        key, csr = tr.make_csr(self.tmp, "late")
        self.assert_error(tr.request(self.base, "POST", "/api/v1/clusters/register",
                                     {"name": "late", "location": "lab", "url": "https://127.0.0.1:1", "csr": csr},
                                     self.expiring), 401, words=["expired"])

    def test_14_sources_on_a_dual_stack_listener(self):
        """On [::] an IPv4 client is counted by its IPv4 address (not as ::ffff:a.b.c.d), an IPv6
        one by its /64."""
        tmp = tempfile.mkdtemp(prefix="oakuk-root-sec-")
        self.addCleanup(shutil.rmtree, tmp, True)
        d = tr.RootDaemon(os.path.join(tmp, "state"), tr.ports(1)[0])
        port = d.port
        d.start(["--listen", "[::]:%d" % port, "--tls-san", "::1"])  # the last --listen counts
        self.addCleanup(d.stop)
        self.assertIn("event=start listen=[::]:%d" % port, d.log())
        ctx = tr.TRUST[d.base]
        wrong = json.dumps({"username": "Admin", "password": "no"})

        def login(host, src):
            c = http.client.HTTPSConnection(host, port, context=ctx, source_address=(src, 0), timeout=30)
            try:
                c.request("POST", "/api/auth/login", wrong, {"Content-Type": "application/json"})
                return c.getresponse().status
            finally:
                c.close()

        self.assertEqual([login("::1", "::1") for _ in range(6)], [401] * 5 + [429])
        self.assertEqual([login("127.0.0.1", "127.0.0.5") for _ in range(6)], [401] * 5 + [429])
        self.assertEqual(login("127.0.0.1", "127.0.0.6"), 401)

    def test_15_no_secret_in_the_log(self):
        log = self.root.log()
        self.assertGreater(len(SECRETS), 10)
        for secret in SECRETS:
            self.assertNotIn(secret, log)
            if secret.startswith(("oakuk1.", "oakukc.")):
                self.assertNotIn(secret.split(".")[2], log)


if __name__ == "__main__":
    ROOT_BIN = tr.ROOT_BIN = sys.argv[1]
    unittest.main(argv=[sys.argv[0], "-v"])

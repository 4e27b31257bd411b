#!/usr/bin/python3
"""Integration test of oakuk-node with a real oakuk-root and oakuk-cluster (and the cluster's own
mosquitto), every hop over TLS under the root's CA (docs/security.md). The node runs in its own
network namespace ("host"), joined to the test's namespace by a veth on a private 172.31.<r>.0/24;
it deploys the amd64 test guest under TCG, fetched over HTTP from this test. Events and reports are
watched with mosquitto_sub over TLS as an observer the test adds to the broker (the broker binds
client ids to user names: a second login as the node would take its place). Nodes that must not get in
(another CA, another node's name) run in a second namespace, 172.30.<r>.0/30.

Usage: test-node.py <oakuk-root> <oakuk-cluster> <oakuk-node>  (as root)"""
import base64
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
import re
import shutil
import signal
import socket
import ssl
import stat
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

ROOT_BIN = CLUSTER_BIN = NODE_BIN = OAKUK = None
REGISTRY_BIN = "/usr/bin/docker-registry"
REG_USER, REG_PASS = "nodetest", "registry secret 42"
HTTP = requests.Session()  # verify= the root's CA once it exists (setUpClass)
HTTP.trust_env = False  # neither $REQUESTS_CA_BUNDLE (it would replace .verify) nor proxies
CA = None  # the root's CA certificate (<root state>/pki/ca.crt)
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
NS2 = NS + "-x"  # where nodes that must be refused run
VETH2_T, VETH2_N = "otx%da" % R, "otx%db" % R
TEST2_IP, NODE2_IP = "172.30.%d.1" % R, "172.30.%d.2" % R
APP = "nt%04x" % random.randrange(0x10000)
QEMU_USER = "oakuk-tq%04x" % random.randrange(0x10000)  # the node creates it; the test removes it
JOB = "%s.test.web.test" % APP


def sh(*argv, check=True):
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("%s failed: %s" % (" ".join(argv), p.stderr))
    return p


def qemu_pids(instance, prefix=False):
    """QEMUs named instance (or, with prefix, any name starting with it)."""
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                argv = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-name" in argv and any(a == instance.encode() or (prefix and a.startswith(instance.encode()))
                                        for a in argv):
                out.append(int(p.name))
    return out


def in_node_ns(*argv, timeout=15):
    return subprocess.run(["nsenter", "--net=/run/netns/" + NS, "--", *argv], capture_output=True, text=True,
                          timeout=timeout)


def fingerprint(pem_path):
    with open(pem_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def secret_file(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


class ForeignTlsServer:
    """An HTTPS server on TEST_IP with a certificate of another CA, naming TEST_IP: it counts handshakes
    and would answer a registration as a cluster does, if anyone got that far."""

    def __init__(self, tmp):
        other = edgelib.Ca("someone else's CA")
        self.ca = other.write(os.path.join(tmp, "foreign-ca.crt"))
        cert, key_pem = other.issue("not-a-cluster", [TEST_IP])
        self.cert, key = os.path.join(tmp, "foreign.crt"), os.path.join(tmp, "foreign.key")
        with open(self.cert, "w") as f:
            f.write(cert + other.pem)  # the chain, as the daemons serve it
        secret_file(key, key_pem)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(self.cert, key)
        self.sock = socket.socket()
        self.sock.bind((TEST_IP, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handshakes = self.requests = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.3)
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.handshakes += 1
            try:
                c.settimeout(5)
                with self.ctx.wrap_socket(c, server_side=True) as t:
                    if t.recv(65536):
                        self.requests += 1
                        body = json.dumps({"id": "x", "mqtt_host": TEST_IP, "mqtt_port": 1883, "mqtt_username": "x",
                                           "mqtt_password": "x", "subnet": "10.18.99.0/24", "mqtt_tls": True})
                        t.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                  b"\r\n%s" % (len(body), body.encode()))
            except (OSError, ssl.SSLError):
                pass

    def close(self):
        self.stopped.set()
        self.sock.close()


class Log:
    def __init__(self, path):
        self.path = path

    def text(self):
        with open(self.path, errors="replace") as f:
            return f.read()

    def grep(self, prefix, timeout=15):
        return wait_until(prefix, lambda: next((l.split(prefix, 1)[1].strip() for l in self.text().splitlines()
                                                if l.startswith(prefix)), None), timeout=timeout)


def add_observers(cluster_state, users):
    """Adds broker users (name -> password) that may read and write every node's topics, as the
    cluster's own user may: lines in the password file (mosquitto's $7$ format, as
    od_mosquitto_password_line writes them; the cluster keeps lines it did not write) and in the ACL,
    then SIGHUP to mosquitto, which reloads both. The cluster rewrites the ACL only when it restarts
    mosquitto, which this test does not make it do."""
    d = os.path.join(cluster_state, "mosquitto")
    for user, password in users.items():
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
        with open(os.path.join(d, "passwd"), "a") as f:
            f.write("%s:$7$101$%s$%s\n" % (user, base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))
        with open(os.path.join(d, "acl"), "a") as f:
            f.write("\nuser %s\ntopic readwrite nodes/#\n" % user)
    conf = os.path.join(d, "mosquitto.conf").encode()
    pids = []
    for p in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if p.name.isdigit() and conf in (p / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(p.name))
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGHUP)


class Watcher:
    """mosquitto_sub on nodes/<id>/# as one observer, mosquitto_pub as another (a client id is its
    user name: one login per user at a time), over TLS trusting the root's CA (the logins and the CA
    in the clients' option files, not on a command line); keeps every message."""

    def __init__(self, creds, node_id, tmp, observers):
        self.msgs = []
        self.lock = threading.Lock()
        self.q = queue.Queue()
        self.id = node_id
        self.creds = creds
        (sub_user, sub_pw), (pub_user, pub_pw) = sorted(observers.items())
        sub_env = edgelib.mqtt_env(os.path.join(tmp, "mqtt-sub"), sub_user, sub_pw, CA)
        self.env = edgelib.mqtt_env(os.path.join(tmp, "mqtt-pub"), pub_user, pub_pw, CA)
        self.plain_env = edgelib.mqtt_env(os.path.join(tmp, "mqtt-plain"), pub_user, pub_pw)
        self.sub = spawn(["mosquitto_sub", "-h", TEST_IP, "-p", str(creds["mqtt_port"]), "-q", "1",
                          "-v", "-t", "nodes/%s/#" % node_id],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=sub_env)
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

    def publish(self, leaf, data, tls=True):
        return subprocess.run(["mosquitto_pub", "-h", TEST_IP, "-p", str(self.creds["mqtt_port"]), "-q", "1",
                               "-t", "nodes/%s/%s" % (self.id, leaf), "-m", data], capture_output=True, timeout=10,
                              env=self.env if tls else self.plain_env).returncode

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
        # Everything made is removed when the setup fails, and when a runner's timeout ends the test
        # with SIGTERM: namespaces, links, users and daemons must not outlive it.
        signal.signal(signal.SIGTERM, lambda *_: (cls.tearDownClass(), os._exit(1)))
        try:
            cls.set_up()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def set_up(cls):
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
        # the second namespace, for nodes that must be refused: 172.30.<r>.0/30, its default route to us
        sh("ip", "netns", "add", NS2)
        sh("ip", "link", "add", VETH2_T, "type", "veth", "peer", "name", VETH2_N)
        sh("ip", "link", "set", VETH2_N, "netns", NS2)
        sh("ip", "addr", "add", TEST2_IP + "/30", "dev", VETH2_T)
        sh("ip", "link", "set", VETH2_T, "up")
        sh("ip", "-n", NS2, "addr", "add", NODE2_IP + "/30", "dev", VETH2_N)
        sh("ip", "-n", NS2, "link", "set", VETH2_N, "up")
        sh("ip", "-n", NS2, "link", "set", "lo", "up")
        sh("ip", "-n", NS2, "route", "add", "default", "via", TEST2_IP)
        global CA
        root_port, cls.cluster_port, cls.mqtt_port = ports(3)
        cls.root_url = "https://127.0.0.1:%d" % root_port
        cls.cluster_url = "https://%s:%d" % (TEST_IP, cls.cluster_port)
        cls.root_log = Log(os.path.join(cls.tmp, "root.log"))
        root_state = os.path.join(cls.tmp, "root")
        spawn([ROOT_BIN, "--state-dir", root_state, "--listen", "127.0.0.1:%d" % root_port],
              stdout=subprocess.DEVNULL, stderr=log_file(cls.root_log.path))
        CA = os.path.join(root_state, "pki", "ca.crt")
        password = wait_until("the root's admin password",
                              lambda: pathlib.Path(root_state, "admin-password").read_text().strip())
        HTTP.verify = CA
        tok = wait_until("root login", lambda: HTTP.post(cls.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": password}).json()["token"])
        cls.h = {"Authorization": "Bearer " + tok}
        r = HTTP.post(cls.root_url + "/api/v1/tokens", headers=cls.h, timeout=5, json={"kind": "cluster"})
        assert r.status_code == 201, r.text
        join = secret_file(os.path.join(cls.tmp, "cluster-join-token"), r.json()["token"])
        cls.cluster_log = Log(os.path.join(cls.tmp, "cluster.log"))
        spawn([CLUSTER_BIN, "--state-dir", os.path.join(cls.tmp, "cluster"), "--listen",
               "%s:%d" % (TEST_IP, cls.cluster_port), "--root-url", cls.root_url, "--name", "edge-n",
               "--mqtt-port", str(cls.mqtt_port), "--mosquitto", MOSQUITTO, "--node-timeout", "30",
               "--aggregate-interval", "1", "--join-token", "@" + join],
              stdout=subprocess.DEVNULL, stderr=log_file(cls.cluster_log.path))
        wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
            HTTP.get(cls.cluster_url + "/healthz", timeout=5).json()))
        cls.observers = {u: base64.b32encode(os.urandom(15)).decode() for u in ("test-pub", "test-sub")}
        add_observers(os.path.join(cls.tmp, "cluster"), cls.observers)
        # one use: the restarts later register with the node's credential, not with it
        cls.node_join = secret_file(os.path.join(cls.tmp, "node-join-token"), cls.node_token())
        cls.start_registry()
        cls.node_log = Log(os.path.join(cls.tmp, "node.log"))
        cls.node = None
        cls.start_node()
        creds = wait_until("node registered", cls.node_identity)
        cls.first_identity = creds
        cls.watch = Watcher(creds, "node-t", cls.tmp, cls.observers)
        r = HTTP.post(cls.root_url + "/api/application/", headers=cls.h, timeout=10, json=cls.sla())
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
    def node_token(cls, uses=1):
        """A node join token for our cluster, made by it when the root asks (oakuk token create node)."""
        r = wait_until("a node join token", lambda: (lambda r: r if r.status_code == 201 else None)(HTTP.post(
            cls.root_url + "/api/v1/tokens", headers=cls.h, timeout=10,
            json={"kind": "node", "cluster": "edge-n", "uses": uses})))
        tok = r.json()["token"]
        assert tok.startswith("oakuk1.%s." % fingerprint(CA)), tok
        return tok

    @classmethod
    def start_registry(cls):
        """docker-registry with htpasswd on the test side of the veth (not loopback for the node: it
        needs --insecure-registries) and the node's configuration holding its credentials."""
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        cls.registry = None
        cls.node_config = os.path.join(cls.tmp, "node.conf")
        with open(cls.node_config, "w") as f:
            f.write("[node]\n")
        if not os.access(REGISTRY_BIN, os.X_OK):
            return
        d = os.path.join(cls.tmp, "registry")
        os.mkdir(d)
        cls.registry = "%s:%d" % (TEST_IP, ports(1)[0])
        with open(os.path.join(d, "htpasswd"), "w") as f:
            f.write("%s:%s\n" % (REG_USER, crypt.crypt(REG_PASS, crypt.mksalt(crypt.METHOD_BLOWFISH))))
        with open(os.path.join(d, "config.yml"), "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n"
                    "http:\n  addr: %s\nauth:\n  htpasswd:\n    realm: oakuk-test\n    path: %s/htpasswd\n"
                    % (d, cls.registry, d))
        spawn([REGISTRY_BIN, "serve", os.path.join(d, "config.yml")], stdout=subprocess.DEVNULL,
              stderr=log_file(os.path.join(d, "registry.log")))
        wait_until("registry", lambda: HTTP.get("http://%s/v2/" % cls.registry, timeout=2).status_code == 401)
        cls.registry_pw = secret_file(os.path.join(cls.tmp, "registry-password"), REG_PASS)
        with open(cls.node_config, "a") as f:
            f.write("insecure_registries = %s\n\n[registry %s]\nusername = %s\npassword_file = %s\n"
                    % (cls.registry, cls.registry, REG_USER, cls.registry_pw))

    @classmethod
    def start_node(cls, *extra):
        cls.node = spawn(["nsenter", "--net=/run/netns/" + NS, "--", NODE_BIN, "--state-dir", cls.node_state,
                          "--cluster-url", cls.cluster_url, "--join-token", "@" + cls.node_join, "--name", "node-t",
                          "--allow-emulation", "--report-interval", "1", "--verbose", "--qemu-user", QEMU_USER,
                          "--image-file-dirs", cls.file_dir, "--config", cls.node_config, *extra],
                         stdout=subprocess.DEVNULL, stderr=log_file(cls.node_log.path))

    @classmethod
    def node_identity(cls):
        with open(os.path.join(cls.node_state, "node.json")) as f:
            return json.load(f)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "torn_down", False):
            return
        cls.torn_down = True
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
        for pid in qemu_pids(name, prefix=True):
            os.kill(pid, signal.SIGKILL)
        sh("ip", "link", "del", VETH_T, check=False)
        sh("ip", "netns", "del", NS, check=False)
        sh("ip", "link", "del", VETH2_T, check=False)
        sh("ip", "netns", "del", NS2, check=False)
        sh("userdel", QEMU_USER, check=False)
        sh("groupdel", QEMU_USER, check=False)
        for cg in pathlib.Path("/sys/fs/cgroup").glob("**/oakuk/%s*" % JOB):
            try:
                cg.rmdir()
            except OSError:
                pass
        if os.environ.get("KEEP_TMP") is None and getattr(cls, "tmp", None):
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

    def other_node(self, name, state, *args, ns=NS2):
        """Starts another oakuk-node in NS2 (it must not get in); returns (process, its Log)."""
        log = Log(os.path.join(self.tmp, name + ".log"))
        p = spawn(["nsenter", "--net=/run/netns/" + ns, "--", NODE_BIN, "--state-dir", os.path.join(self.tmp, state),
                   "--name", name, "--allow-emulation", "--qemu-user", QEMU_USER, "--verbose", *args],
                  stdout=subprocess.DEVNULL, stderr=log_file(log.path))
        return p, log

    # ---- tests, in order ----
    def test_00_plain_only_on_purpose(self):
        """Without --insecure: an http:// cluster URL and a join token without the CA's fingerprint are
        refused at start; a token naming another CA than the one stored is refused naming both."""
        cases = [(["--cluster-url", "http://%s:%d" % (TEST_IP, self.cluster_port), "--join-token", "@" + self.node_join],
                  "plain HTTP needs --insecure"),
                 (["--cluster-url", self.cluster_url, "--join-token", "0123456789abcdef"],
                  "a plain secret is accepted only with --insecure")]
        # a state that trusts another CA than the token names
        other = os.path.join(self.tmp, "other-ca-state")
        os.makedirs(os.path.join(other, "pki"))
        fake_fp = "ab" * 32
        shutil.copy(CA, os.path.join(other, "pki", "ca.crt"))
        cases.append((["--state-dir", other, "--cluster-url", self.cluster_url, "--join-token",
                       "oakuk1.%s.%s" % (fake_fp, "00" * 24)], "the join token names the CA %s, but this node "
                      "trusts the CA %s" % (fake_fp, fingerprint(CA))))
        for args, want in cases:
            p = subprocess.run([NODE_BIN, "--state-dir", os.path.join(self.tmp, "refused-state"), *args],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(want, p.stderr)
            self.assertNotIn("0123456789abcdef", p.stderr)  # a token is never logged
        # --insecure is said at every start
        p, log = self.other_node("node-plain", "plain-state", "--insecure", "--cluster-url",
                                 "http://%s:%d" % (TEST_IP, self.cluster_port), "--join-token", "@" + self.node_join)
        try:
            wait_until("the --insecure warning", lambda: "event=insecure" in log.text() and
                       "plain HTTP to the cluster and plain MQTT are allowed" in log.text())
            # the cluster speaks TLS only: a plain registration never gets through
            wait_until("a failed plain registration", lambda: "event=register" in log.text())
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "plain-state", "node.json")))
        finally:
            stop(p)

    def test_00b_bad_configuration_refused(self):
        """Unknown keys and groups in the config file and a listen address that is not loopback (the
        endpoint is plain HTTP without authentication) stop the node at start (exit 1), naming the file,
        group and key or the address; --version answers without reading anything."""
        p = subprocess.run([NODE_BIN, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^oakuk-node \d+\.\d+\.\d+\n$")
        conf = os.path.join(self.tmp, "bad-node.conf")
        common = ["--state-dir", os.path.join(self.tmp, "refused-state"), "--cluster-url", self.cluster_url,
                  "--join-token", "@" + self.node_join]
        cases = [("[node]\nlistn = 127.0.0.1:10200\n", [],
                  "config %s: [node] listn: unknown key (known keys: state_dir, " % conf),
                 ("[nod]\nlisten = 127.0.0.1:10200\n", [], "config %s: unknown group [nod]" % conf),
                 ("[node]\nlisten = 0.0.0.0:10200\n", [], "--listen 0.0.0.0:10200: not a loopback address"),
                 (None, ["--listen", "[::]:10200"], "--listen [::]:10200: not a loopback address"),
                 (None, ["--listen", NODE_IP + ":10200"], "--listen %s:10200: not a loopback address" % NODE_IP),
                 (None, ["--listen", "localhost:10200"], "'localhost' is not an IP address"),
                 (None, ["--listen", "127.0.0.1"], "'127.0.0.1' is not ADDR:PORT")]
        for text, args, want in cases:
            with self.subTest(want=want):
                extra = []
                if text is not None:
                    pathlib.Path(conf).write_text(text)
                    extra = ["--config", conf]
                p = subprocess.run([NODE_BIN, *common, *extra, *args], capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(want, p.stderr)
                self.assertIn("event=fatal", p.stderr)
                self.assertNotIn(pathlib.Path(self.node_join).read_text().strip(), p.stderr)

    def test_01_register_and_report(self):
        ident = self.node_identity()
        self.assertEqual(ident["id"], "node-t")
        self.assertTrue(ident["subnet"].startswith("10.18.") and ident["subnet"].endswith("/24"), ident)
        self.assertEqual(os.stat(os.path.join(self.node_state, "node.json")).st_mode & 0o077, 0)
        # the CA found at the first contact (by the token's fingerprint) is the root's, kept private
        pki = os.path.join(self.node_state, "pki")
        self.assertEqual(fingerprint(os.path.join(pki, "ca.crt")), fingerprint(CA))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(pki, "ca.crt")).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(pki).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(self.node_state).st_mode), 0o700)
        self.assertIs(ident["mqtt_tls"], True)
        self.assertNotIn(pathlib.Path(self.node_join).read_text().strip(), self.node_log.text())
        rep = self.report_with(0, lambda r: True, "a node report")
        self.assertEqual(rep["id"], "node-t")
        self.assertEqual(rep["ip"], NODE_IP)  # default underlay: source of the route to the cluster
        self.assertEqual(rep["architecture"], "amd64")
        self.assertIn("unikernel", rep["virtualization"])
        self.assertEqual(rep["unikernel"]["accel"], "tcg")
        self.assertLessEqual(rep["vcpus"], os.cpu_count())
        self.assertLessEqual(rep["memory"], rep["memory_total"])
        # the cluster accepted it (it validates reports with liboakuk)
        nodes = HTTP.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()
        self.assertIn("node-t", [n["id"] for n in nodes])
        # the node built its bridge with the first address of its subnet, in its own namespace only
        bridge_ip = ident["subnet"].rsplit(".", 1)[0] + ".1/24"
        self.assertIn(bridge_ip, in_node_ns("ip", "-o", "addr", "show", "oakuk0").stdout)
        self.assertNotIn("oakuk0", os.listdir("/sys/class/net"))

    def test_01a_mqtt_over_tls(self):
        """The node's one MQTT connection goes to the broker's port, where only TLS is spoken: a plain
        client with the node's own credentials is refused there, the same client over TLS gets in."""
        ident = self.node_identity()
        self.assertEqual(ident["mqtt_port"], self.mqtt_port)
        peer = "%s:%d" % (TEST_IP, self.mqtt_port)
        conns = wait_until("the node's MQTT connection", lambda: [l for l in in_node_ns(
            "ss", "-tnpH", "state", "established").stdout.splitlines() if peer in l and "oakuk-node" in l])
        self.assertEqual(len(conns), 1, conns)
        self.assertIn("broker=ssl://%s:%d" % (TEST_IP, self.mqtt_port), self.node_log.text())
        self.assertNotEqual(self.watch.publish("information", "{}", tls=False), 0)
        self.assertEqual(self.watch.publish("tls-probe", "{}"), 0)

    def test_01b_foreign_ca_refused(self):
        """A server whose chain does not hold the token's CA (another CA, naming the right address) is
        refused at the handshake: nothing is sent, nothing stored, and the node keeps retrying."""
        srv = ForeignTlsServer(self.tmp)
        p, log = self.other_node("node-evil", "evil-state", "--cluster-url", "https://%s:%d" % (TEST_IP, srv.port),
                                 "--join-token", "@" + self.node_join)
        try:
            wait_until("three refused handshakes", lambda: srv.handshakes >= 3, timeout=30)
            self.assertIsNone(p.poll(), "the node gave up instead of retrying")
            self.assertEqual(srv.requests, 0)
            text = log.text()
            self.assertIn("not from the CA %s (the join token's)" % fingerprint(CA), text)
            self.assertIn("chain ends at %s" % fingerprint(srv.ca), text)
            self.assertIn("retry_s=", text)
            state = os.path.join(self.tmp, "evil-state")
            self.assertFalse(os.path.exists(os.path.join(state, "node.json")))
            self.assertFalse(os.path.exists(os.path.join(state, "pki", "ca.crt")))
        finally:
            stop(p)
            srv.close()

    def test_01c_name_taken(self):
        """A second node under the registered node's name, with a valid token but without its
        credential, is refused 409 and stops, naming the name; the registered node keeps working."""
        before = self.node_identity()
        tok = secret_file(os.path.join(self.tmp, "impostor-token"), self.node_token())
        p, log = self.other_node("node-t", "impostor-state", "--cluster-url", self.cluster_url,
                                 "--join-token", "@" + tok)
        p.wait(60)
        self.assertEqual(p.returncode, 1, log.text()[-2000:])
        text = log.text()
        self.assertIn("has another node registered as node-t", text)
        self.assertIn("409 name_taken", text)
        self.assertIn("oakuk node remove node-t", text)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "impostor-state", "node.json")))
        self.assertEqual(self.node_identity(), before)
        self.assertIsNone(self.node.poll())
        self.report_with(time.time(), lambda r: r["id"] == "node-t", "a report of the registered node")
        nodes = HTTP.get(self.cluster_url + "/api/v1/nodes", timeout=5).json()
        self.assertEqual(next(n for n in nodes if n["id"] == "node-t")["ip"], NODE_IP)

    def node_endpoint(self, path, method="GET", addr="127.0.0.1"):
        """(curl's exit code, HTTP status, body) of a request to the node's endpoint, from its host."""
        p = in_node_ns("curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}",
                       "http://%s:10200%s" % (addr, path))
        body, _, code = p.stdout.rpartition("\n")
        return p.returncode, int(code or 0), body

    def node_metrics(self):
        rc, code, body = self.node_endpoint("/metrics")
        self.assertEqual((rc, code), (0, 200), body)
        return edgelib.parse_metrics(body)

    def test_01d_local_endpoint(self):
        """The node serves /healthz and /metrics on 127.0.0.1:10200 of its host (by default), and on
        no other address; the metrics parse as Prometheus text with HELP and TYPE lines."""
        rc, code, body = self.node_endpoint("/healthz")
        self.assertEqual((rc, code), (0, 200), body)
        health = json.loads(body)
        self.assertIs(health["registered"], True)
        self.assertIs(health["mqtt_connected"], True)
        self.assertIsInstance(health["instances"], int)
        self.assertEqual(health["node"], "node-t")
        self.assertEqual(self.node_endpoint("/healthz", method="POST")[1], 405)
        self.assertEqual(self.node_endpoint("/api/v1/nodes")[1], 404)
        # loopback only: the underlay address refuses the connection
        rc, code, _ = self.node_endpoint("/healthz", addr=NODE_IP)
        self.assertEqual((rc, code), (7, 0))
        m = self.node_metrics()
        for family, fam in m.items():
            self.assertTrue(fam["help"], family)
        self.assertEqual(edgelib.metric_value(m, "oakuk_build_info", daemon="oakuk-node",
                                              version=health["version"]), 1)
        self.assertEqual(edgelib.metric_value(m, "oakuk_node_registered"), 1)
        edgelib.check_process_metrics(self, m, self.node.pid)
        self.assertEqual(edgelib.metric_value(m, "oakuk_node_mqtt_connected"), 1)
        self.assertEqual(m["oakuk_node_deploy_to_running_seconds"]["type"], "histogram")
        self.assertGreaterEqual(edgelib.metric_value(m, "oakuk_node_http_request_duration_seconds_count",
                                                     method="GET", route="/healthz"), 1)
        self.assertGreaterEqual(edgelib.metric_value(m, "oakuk_node_http_requests_total", code="405"), 1)
        # the node's MQTT password and its join token are in no line it logged (--verbose)
        log = self.node_log.text()
        self.assertNotIn(self.node_identity()["mqtt_password"], log)
        self.assertNotIn(pathlib.Path(self.node_join).read_text().strip().rsplit(".", 1)[1], log)
        self.assertIn("event=listen listen=127.0.0.1:10200", log)

    def test_02_deploy_runs_guest(self):
        # the root places on clusters by their aggregates: wait until ours counts the node
        cid = HTTP.get(self.root_url + "/api/v1/clusters", headers=self.h, timeout=5).json()[0]["id"]
        wait_until("node active at the root", lambda: HTTP.get(
            self.root_url + "/api/v1/clusters/" + cid, headers=self.h, timeout=5).json()["active_nodes"] == 1)
        t0 = time.time()
        r = HTTP.post(self.root_url + "/api/service/%s/instance" % self.sid, headers=self.h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        n = r.json()["instance_number"]
        type(self).instance = "%s.instance.%d" % (JOB, n)
        deploy = self.watch.wait(t0, "control/deploy", lambda m: m.get("instance_number") == n, "deploy message")
        type(self).deploy_msg = deploy
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
        # the deploy's time to RUNNING, observed once (not again for the idempotent repeat)
        m = self.node_metrics()
        self.assertEqual(edgelib.metric_value(m, "oakuk_node_deploy_to_running_seconds_count",
                                              virtualization="unikernel"), 1)
        took = edgelib.metric_value(m, "oakuk_node_deploy_to_running_seconds_sum", virtualization="unikernel")
        self.assertTrue(0 < took < time.time() - t0, took)
        # ... and split into its phases, each observed once, which add up to it
        phases = {}
        for phase in ("fetch", "unpack", "network", "boot"):
            self.assertEqual(edgelib.metric_value(m, "oakuk_node_deploy_phase_seconds_count", phase=phase,
                                                  virtualization="unikernel"), 1, phase)
            phases[phase] = edgelib.metric_value(m, "oakuk_node_deploy_phase_seconds_sum", phase=phase,
                                                 virtualization="unikernel")
            self.assertGreater(phases[phase], 0, phase)
        self.assertLessEqual(sum(phases.values()), took)
        self.assertGreater(sum(phases.values()), took * 0.9, (phases, took))
        self.assertEqual(edgelib.metric_value(m, "oakuk_node_instances", status="RUNNING"), 1)
        # MQTT handling by topic: the deploy and its repeat
        self.assertEqual(m["oakuk_node_mqtt_message_duration_seconds"]["type"], "histogram")
        self.assertGreaterEqual(edgelib.metric_value(m, "oakuk_node_mqtt_message_duration_seconds_count",
                                                     topic="deploy"), 2)
        rc, code, body = self.node_endpoint("/healthz")
        self.assertEqual(json.loads(body)["instances"], 1)

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

    def push_uk(self, repo_tag, *args):
        """oakuk pkg --push of the multiboot test kernel (amd64) to the test registry; its digests."""
        if not self.registry or not OAKUK:
            self.skipTest("needs %s and the oakuk CLI" % REGISTRY_BIN)
        p = subprocess.run([OAKUK, "pkg", "--kernel", str(GUESTS / "ukguest-0.16.3.kernel"), *args, "--push",
                            "%s/%s" % (self.registry, repo_tag), "--insecure-registry", self.registry,
                            "--username", REG_USER, "--password-file", self.registry_pw],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return dict(line.split(" ", 1) for line in p.stdout.splitlines())

    def test_03i_oci_image_from_registry(self):
        """A unikernel whose code is an OCI reference, without arch: pulled with the credentials of the
        node's configuration over http (insecure_registries), the host's platform, the image's Cmd as
        the arguments; by tag and pinned to the index's digest."""
        d = self.push_uk("uk/hello:1", "--cmd", "from", "--cmd", "image")
        refs = ["%s/uk/hello:1" % self.registry, "%s/uk/hello@%s" % (self.registry, d["index"])]
        with self.cluster_held():
            for k, ref in enumerate(refs):
                job = self.uk_job(20 + k, [], one_shot=True, code=ref)
                del job["arch"]
                t0, n = self.run_uk(job)
                done = self.watch.wait(t0, "job", lambda m: m["status"] in ("COMPLETED", "FAILED", "DEAD")
                                       and m["instance"] == n, "COMPLETED", timeout=120)
                self.assertEqual(done["status"], "COMPLETED", done["status_detail"])
                self.assertIn('ukguest: argv: "from" "image"', done["status_detail"])
                details = [m["status_detail"] for m in self.watch.since(t0, "job") if m["status"] == "CREATING"]
                self.assertIn("fetching image " + ref, details)
                self.remove_uk(t0, n)

    def test_03j_oci_image_errors_name_the_reference(self):
        """A tag the registry lacks, a platform the image lacks: FAILED, the detail naming the
        reference and the reason; a registry the node has no credentials for is refused by it."""
        self.push_uk("uk/amd64only:1")
        cases = [("%s/uk/missing:1" % self.registry, "amd64", "not found"),
                 ("%s/uk/amd64only:1" % self.registry, "arm64", "no kernel for arm64")]
        with self.cluster_held():
            for k, (ref, arch, why) in enumerate(cases):
                job = self.uk_job(30 + k, [], code=ref, restart="never", arch=[arch])
                t0, n = self.run_uk(job)
                failed = self.watch.wait(t0, "job", lambda m: m["status"] == "FAILED" and m["instance"] == n,
                                         "FAILED", timeout=60)
                self.assertIn("image %s: " % ref, failed["status_detail"])
                self.assertIn(why, failed["status_detail"].lower() if why == "not found" else failed["status_detail"])
                self.remove_uk(t0, n)
        # A [registry] group the node cannot use stops it at start, naming the group and the problem.
        for body, want in (("username = x\n", "needs username and password_file"),
                           ("username = x\npassword_file = /nonexistent/pw\n", "password_file")):
            bad = os.path.join(self.tmp, "bad-node.conf")
            with open(bad, "w") as f:
                f.write("[registry %s]\n%s" % (self.registry, body))
            p = subprocess.run([NODE_BIN, "--config", bad, "--state-dir", os.path.join(self.tmp, "bad-node"),
                                "--cluster-url", self.cluster_url, "--name", "bad"], capture_output=True, text=True,
                               timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("config [registry %s]" % self.registry, p.stderr)
            self.assertIn(want, p.stderr)

    def test_03l_container_code_sha256_enforced(self):
        """A container's code_sha256 is pulled by: a registry image under its tag but another digest
        fails naming that digest; code naming another digest, or an oci-archive:, is refused before
        anything is fetched."""
        if not shutil.which("runc"):
            self.skipTest("needs runc")
        d = self.push_uk("uk/ctr:1")
        wrong = "cc" * 32
        cases = [("%s/uk/ctr:1" % self.registry, wrong, "sha256:" + wrong),
                 ("%s/uk/ctr@%s" % (self.registry, d["index"]), wrong, "names another digest"),
                 ("oci-archive:http://%s:1/x.tar" % TEST_IP, wrong, "cannot be checked")]
        with self.cluster_held():
            for k, (code, sha, why) in enumerate(cases):
                job = self.uk_job(50 + k, [], code=code, code_sha256=sha, virtualization="container",
                                  restart="never")
                del job["emulation"]
                t0, n = self.run_uk(job)
                failed = self.watch.wait(t0, "job", lambda m: m["status"] in ("FAILED", "DEAD")
                                         and m["instance"] == n, "FAILED", timeout=60)
                self.assertIn(why, failed["status_detail"])
                self.remove_uk(t0, n)

    def test_03k_oci_two_arch_index(self):
        """One two-architecture index (the Linux test guests packed by oakuk pkg --from-tar), deployed
        without arch for amd64 and for arm64 (emulated): each instance runs its own platform's
        manifest (qemu-system-x86_64 / qemu-system-aarch64) and answers over HTTP with the image's Cmd."""
        if not (GUESTS / "guest-arm64-nofiles.tar.gz").exists():
            self.skipTest("the arm64 test guest was not built")
        if not self.registry or not OAKUK:
            self.skipTest("needs %s and the oakuk CLI" % REGISTRY_BIN)
        ref = "%s/uk/guests:1" % self.registry
        p = subprocess.run([OAKUK, "pkg", "--from-tar", "amd64=%s" % (GUESTS / "guest-amd64-nofiles.tar.gz"),
                            "--from-tar", "arm64=%s" % (GUESTS / "guest-arm64-nofiles.tar.gz"), "--cmd", "oci-two",
                            "--push", ref, "--insecure-registry", self.registry, "--username", REG_USER,
                            "--password-file", self.registry_pw], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        with self.cluster_held():
            started = []
            for k, (arch, qemu, memory) in enumerate((("amd64", b"qemu-system-x86_64", 128),
                                                       ("arm64", b"qemu-system-aarch64", 256))):
                job = self.uk_job(40 + k, [], code=ref, memory=memory,
                                  placement={"virtualization": "unikernel", "arch": arch, "code": ref})
                del job["arch"]
                started.append((self.run_uk(job), job, qemu))
            for (t0, n), job, qemu in started:
                self.watch.wait(t0, "job", lambda m: m["status"] == "RUNNING" and m["instance"] == n, "RUNNING",
                                timeout=180)
                body = self.guest_http(job["instance_ip"], timeout=240)
                self.assertIn("args: oci-two", body)
                pids = qemu_pids("%s.instance.%d" % (JOB, n))
                self.assertEqual(len(pids), 1)
                argv0 = pathlib.Path("/proc/%d/cmdline" % pids[0]).read_bytes().split(b"\0")[0]
                self.assertTrue(argv0.endswith(qemu), argv0)
            for (t0, n), _, _ in started:
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
        r = HTTP.post(self.root_url + "/api/application/", headers=self.h, timeout=10, json=sla)
        self.assertEqual(r.status_code, 200, r.text)
        sid = next(a for a in json.loads(r.json()) if a["application_name"] == app)["microservices"][0]
        t0 = time.time()
        r = HTTP.post(self.root_url + "/api/service/%s/instance" % sid, headers=self.h, timeout=10)
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
        r = HTTP.delete(self.root_url + "/api/service/%s" % sid, headers=self.h, timeout=10)
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
        # registered again with its credential (the one-use token is used up): the password is kept
        since = self.node_log.text().split("oakuk-node stopped")[-1]
        self.assertIn("msg=registered", since)
        self.assertNotIn("continuing with the credentials", since)
        self.assertEqual(self.node_identity()["mqtt_password"], self.first_identity["mqtt_password"])
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
        r = HTTP.delete(self.root_url + "/api/service/%s/instance/%d" % (self.sid, n), headers=self.h, timeout=10)
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

    def test_05b_host_port_waits_for_the_instance_being_removed(self):
        """The cluster confirms a delete as it sends it, so the next instance of a service with a
        host port can arrive while the old one is still stopping: it waits for the port (up to 60 s)
        instead of failing with "already mapped" (docs/node.md, Deploy step 3). Before, the next
        instance FAILED whenever it came within the old QEMU's stop."""
        sla = self.sla()
        ms = sla["applications"][0]["microservices"][0]
        sla["applications"][0]["application_name"] = "porty"
        ms["port"] = "18090:8080"
        r = HTTP.post(self.root_url + "/api/v1/applications", headers=self.h, timeout=10, json=sla)
        self.assertEqual(r.status_code, 201, r.text)
        app = r.json()["applications"][0]
        sid = app["microservices"][0]
        job = "porty.test.web.test"

        def deploy():
            r = HTTP.post(self.root_url + "/api/v1/services/%s/instances" % sid, headers=self.h, timeout=10)
            self.assertEqual(r.status_code, 201, r.text)
            return r.json()["instance_number"]

        def end_of(t, n):
            return self.watch.wait(t, "job", lambda m: m["job_name"] == job and m["instance"] == n and m["status"] in (
                "RUNNING", "FAILED"), "instance %d RUNNING" % n, timeout=120)
        try:
            t0 = time.time()
            first = deploy()
            self.assertEqual(end_of(t0, first)["status"], "RUNNING")
            # undeploy and deploy again at once: the new one lands here while the old QEMU stops
            t1 = time.time()
            r = HTTP.delete(self.root_url + "/api/v1/services/%s/instances/%d" % (sid, first), headers=self.h,
                            timeout=10)
            self.assertEqual(r.status_code, 200, r.text)
            second = deploy()
            end = end_of(t1, second)
            self.assertEqual(end["status"], "RUNNING", end)
            waits = [m["status_detail"] for m in self.watch.since(t1, "job") if m["job_name"] == job and
                     m["instance"] == second and "being removed" in m["status_detail"]]
            for d in waits:
                self.assertEqual(d, "waiting for instance %s.instance.%d, being removed, to release host port 18090" % (
                    job, first))
        finally:
            HTTP.delete(self.root_url + "/api/v1/applications/" + app["applicationID"], headers=self.h, timeout=10)
        wait_until("the application's instances gone", lambda: not [d for d in os.listdir("/run/netns")
                                                                      if d.startswith(job)], timeout=60)

    def test_05c_no_network(self):
        """network: "none" (docs/unikernels.md): the guest boots without a NIC and without a
        namespace of its own, and is ready by its console line."""
        sla = self.sla()
        ms = sla["applications"][0]["microservices"][0]
        sla["applications"][0]["application_name"] = "nonet"
        ms.update(network="none", readiness={"serial": "oakuk-guest: ready"})
        del ms["port"]
        r = HTTP.post(self.root_url + "/api/v1/applications", headers=self.h, timeout=10, json=sla)
        self.assertEqual(r.status_code, 201, r.text)
        app = r.json()["applications"][0]
        sid = app["microservices"][0]
        job = "nonet.test.web.test"
        try:
            r = HTTP.post(self.root_url + "/api/v1/services/%s/instances" % sid, headers=self.h, timeout=10)
            self.assertEqual(r.status_code, 201, r.text)
            n = r.json()["instance_number"]
            name = "%s.instance.%d" % (job, n)

            def ready():
                lst = HTTP.get(self.root_url + "/api/v1/services/%s/instances" % sid, headers=self.h, timeout=5).json()
                i = lst[0] if lst else None
                if i and i["status"] in ("FAILED", "DEAD"):
                    raise AssertionError(i)
                return i if i and i["status"] == "RUNNING" and i["ready"] else None
            wait_until("the instance without a network RUNNING and ready", ready, timeout=120)
            self.assertNotIn(name, os.listdir("/run/netns"))
            [pid] = qemu_pids(name)
            argv = pathlib.Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
            self.assertNotIn(b"-netdev", argv)
            self.assertFalse(any(a.startswith(b"virtio-net") for a in argv), argv)
            serial = pathlib.Path(self.node_state, "instances", name, "serial.log")
            self.assertIn("oakuk-guest: ready ip=none", serial.read_text(errors="replace"))
        finally:
            HTTP.delete(self.root_url + "/api/v1/applications/" + app["applicationID"], headers=self.h, timeout=10)
        wait_until("its QEMU gone", lambda: not qemu_pids(name), timeout=60)

    def test_05d_snapshot_start(self):
        """unikernel.start "snapshot" (docs/unikernels.md "Snapshot start"): the service's first
        instance boots and is saved when ready; the next ones are restored from it, each in its own
        NAT namespace, and answer as the booted one does: the same responses, an outward TCP
        connection, the RTC's time; the snapshot is the service's, 0600, kept with the image."""
        nofiles = GUESTS / "guest-amd64-nofiles.tar.gz"
        sla = self.sla()
        ms = sla["applications"][0]["microservices"][0]
        sla["applications"][0]["application_name"] = "snap"
        ms.update(code="http://%s:%d/%s" % (TEST_IP, self.httpd.server_address[1], nofiles.name),
                  code_sha256=hashlib.sha256(nofiles.read_bytes()).hexdigest(),
                  unikernel={"start": "snapshot"}, readiness={"tcp": 8080})
        # the same with a pool of one QEMU started ahead (unikernel.warm_pool)
        sla["applications"][0]["microservices"].append(dict(ms, microservice_name="webp", unikernel={
            "start": "snapshot", "warm_pool": 1}))
        r = HTTP.post(self.root_url + "/api/v1/applications", headers=self.h, timeout=10, json=sla)
        self.assertEqual(r.status_code, 201, r.text)
        app = r.json()["applications"][0]
        sid, sidp = app["microservices"]
        job, jobp = "snap.test.web.test", "snap.test.webp.test"
        pid = 0
        try:
            def deploy_ready(t0, sid=sid, job=job):
                r = HTTP.post(self.root_url + "/api/v1/services/%s/instances" % sid, headers=self.h, timeout=10)
                self.assertEqual(r.status_code, 201, r.text)
                n = r.json()["instance_number"]
                dep = self.watch.wait(t0, "control/deploy", lambda m: m.get("job_name") == job and
                                      m.get("instance_number") == n, "deploy message")

                seen = []

                def ready():
                    lst = HTTP.get(self.root_url + "/api/v1/services/%s/instances" % sid, headers=self.h,
                                   timeout=5).json()
                    i = next((i for i in lst if i["instance_number"] == n), None)
                    seen[:] = [i]
                    if i and i["status"] in ("FAILED", "DEAD"):
                        raise AssertionError(i)
                    return i if i and i["status"] == "RUNNING" and i["ready"] else None
                try:
                    wait_until("instance %d RUNNING and ready" % n, ready, timeout=120)
                except AssertionError:
                    log = [l for l in self.node_log.text().splitlines() if "%s.instance.%d" % (job, n) in l]
                    raise AssertionError("%s instance %d: %r; node log: %s" % (job, n, seen, "\n".join(log[-15:])))
                return "%s.instance.%d" % (job, n), dep["instance_ip"]

            first, ip1 = deploy_ready(time.time())
            self.assertRegex(self.node_log.text(), r'"?ready"?.*%s.*start[=:" ]+"?booted, saved' % re.escape(first))
            snaps = list(pathlib.Path(self.node_state, "images").glob("*/snapshots/*"))
            self.assertEqual(len(snaps), 1, snaps)
            self.assertTrue(snaps[0].name.endswith(".snap"), snaps)
            st = snaps[0].stat()
            self.assertEqual((st.st_mode & 0o777, st.st_uid), (0o600, 0))
            body1 = self.guest_http(ip1)
            second, ip2 = deploy_ready(time.time())
            self.assertRegex(self.node_log.text(), r'"?ready"?.*%s.*start[=:" ]+"?restored' % re.escape(second))
            # the same answer (the guest's address is the NAT layout's, the same in both)
            body2 = self.guest_http(ip2, timeout=10)
            self.assertEqual(body1, body2)
            self.assertIn("ip: 192.168.1.2", body2)
            self.assertIn("args: hello", body2)
            # each in its own namespace, with the same guest MAC and gateway MAC
            for name in (first, second):
                argv = pathlib.Path("/proc/%d/cmdline" % qemu_pids(name)[0]).read_bytes().split(b"\0")
                self.assertTrue(any(b"mac=52:54:00:c0:a8:02" in a for a in argv), argv)
                link = subprocess.run(["ip", "-n", name, "-o", "link", "show", "virbr0"], capture_output=True,
                                      text=True).stdout
                self.assertIn("0e:6e:c0:a8:01:01", link)
            # an outward connection from the restored guest (SNAT to its instance IP, then the node's
            # masquerade) to the test's HTTP server, outside the node
            kernel = GUESTS / "ukguest-0.16.3.kernel"
            url = "http://%s:8080/cgi-bin/fetch.cgi?%s:%d/%s" % (ip2, TEST_IP, self.httpd.server_address[1],
                                                                 kernel.name)
            code = ("import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(%r, timeout=10)"
                    ".read().decode())" % url)
            out = wait_until("the restored guest's outward GET", lambda: (lambda p: p.stdout if "status: HTTP/1.0 200"
                             in p.stdout else None)(in_node_ns(sys.executable, "-c", code)), timeout=30, interval=1)
            self.assertGreater(int(re.search(r"fetched (\d+) bytes", out).group(1)), kernel.stat().st_size, out)
            # the RTC follows the host's clock (the system clock carries on from the save: docs)
            code = ("import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(%r, timeout=10)"
                    ".read().decode())" % ("http://%s:8080/cgi-bin/time.cgi" % ip2))
            times = dict(l.split(": ", 1) for l in in_node_ns(sys.executable, "-c", code).stdout.splitlines() if ": " in l)
            self.assertLess(abs(int(times["rtc"]) - time.time()), 5, times)
            m = self.node_metrics()
            self.assertEqual(edgelib.metric_value(m, "oakuk_node_unikernel_starts_total", start="boot_saved"), 1)
            self.assertEqual(edgelib.metric_value(m, "oakuk_node_unikernel_starts_total", start="restored"), 1)
            self.assertEqual(edgelib.metric_value(m, "oakuk_node_unikernel_pooled"), 0)

            # warm_pool: once the first instance saved the snapshot, a QEMU waits for the next one
            # (web's two instances go first: this node has two cores)
            for name in (first, second):
                n = int(name.rsplit(".", 1)[1])
                r = HTTP.delete(self.root_url + "/api/v1/services/%s/instances/%d" % (sid, n), headers=self.h,
                                timeout=10)
                self.assertIn(r.status_code, (200, 202, 204), r.text)
            wait_until("web's instances gone", lambda: not qemu_pids(job, prefix=True), timeout=60)
            firstp, ip3 = deploy_ready(time.time(), sidp, jobp)

            def one_pooled():
                """The node's metrics once they count one pooled QEMU."""
                m = self.node_metrics()
                return m if edgelib.metric_value(m, "oakuk_node_unikernel_pooled") == 1 else None
            m = wait_until("a pooled QEMU", one_pooled, timeout=30)
            self.assertEqual(edgelib.metric_value(m, "oakuk_node_unikernel_pooled_memory_mb"), 128)
            # ... counted as used in the node's report: the instance and the pooled QEMU, 128 MB each
            rep = self.report_with(time.time(), lambda r: True, "a report")
            avail = int(re.search(r"MemAvailable:\s+(\d+)", pathlib.Path("/proc/meminfo").read_text()).group(1)) // 1024
            self.assertLessEqual(rep["memory"], avail - 2 * 128 + 64, (rep["memory"], avail))
            secondp, ip4 = deploy_ready(time.time(), sidp, jobp)
            self.assertRegex(self.node_log.text(),
                             r'"?ready"?.*%s.*start[=:" ]+"?restored by a pooled QEMU' % re.escape(secondp))
            self.assertEqual(self.guest_http(ip4, timeout=10), body1)
            # its QEMU (started as "pool-N") is the instance's, its tap the instance's tap0 on virbr0
            pid = json.loads(pathlib.Path(self.node_state, "instances", secondp, "instance.json").read_text())["pid"]
            argv = pathlib.Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
            self.assertTrue(argv[argv.index(b"-name") + 1].startswith(b"pool-"), argv)
            link = subprocess.run(["ip", "-n", secondp, "-o", "link", "show", "tap0"], capture_output=True,
                                  text=True).stdout
            self.assertIn("master virbr0", link)
            self.assertFalse([l for l in in_node_ns("ip", "-o", "link").stdout.splitlines() if "ukp" in l and
                              "tap0" in l])
            m = wait_until("the pool refilled", one_pooled, timeout=30)
            self.assertEqual(edgelib.metric_value(m, "oakuk_node_unikernel_starts_total", start="pooled"), 1)
        finally:
            HTTP.delete(self.root_url + "/api/v1/applications/" + app["applicationID"], headers=self.h, timeout=10)
        wait_until("their QEMUs gone", lambda: not qemu_pids(job, prefix=True) and not qemu_pids(jobp, prefix=True)
                   and not os.path.exists("/proc/%d" % pid), timeout=60)
        wait_until("their namespaces gone", lambda: not [e for e in os.listdir("/run/netns")
                                                         if e.startswith(job) or e.startswith(jobp)], timeout=30)
        # nothing of a save is left beside the snapshots (one per service)
        self.assertEqual(len(list(pathlib.Path(self.node_state, "images").glob("*/snapshots/*.snap"))), 2)
        self.assertEqual([p.name for p in pathlib.Path(self.node_state, "images").glob("*/snapshots/*")
                          if not p.name.endswith(".snap")], [])

    def test_06_sigterm_exits_cleanly(self):
        stop(self.node)
        self.assertEqual(self.node.returncode, 0)
        self.assertIn("oakuk-node stopped", self.node_log.text())

    def test_07_prune_images_when_stopped(self):
        """oakuk-node --prune-images empties the image cache the run filled (tarballs and OCI blobs) and
        exits; a bad --image-cache-max stops the node at start naming the option."""
        images = pathlib.Path(self.node_state, "images")
        self.assertTrue(any(p.name != ".oci" for p in images.iterdir()), "the run cached no image")
        p = subprocess.run([NODE_BIN, "--state-dir", self.node_state, "--prune-images"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.match(r"pruned (\d+) bytes; the image cache holds (\d+) bytes", p.stdout)
        self.assertIsNotNone(m, p.stdout)
        self.assertGreater(int(m.group(1)), 0)
        self.assertEqual(int(m.group(2)), 0)
        for bad in ("12X", "0%", "101%"):
            p = subprocess.run([NODE_BIN, "--state-dir", self.node_state, "--prune-images", "--image-cache-max", bad],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("--image-cache-max '%s'" % bad, p.stderr)


if __name__ == "__main__":
    ROOT_BIN, CLUSTER_BIN, NODE_BIN = sys.argv[1:4]
    del sys.argv[1:4]
    if len(sys.argv) > 1 and sys.argv[1].endswith("/oakuk"):
        OAKUK = sys.argv.pop(1)
    unittest.main(verbosity=2)

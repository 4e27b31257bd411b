"""Shared helpers of the control-plane integration tests: start oakuk-root and oakuk-cluster as
real processes with TLS (docs/security.md), play nodes with mosquitto_pub/mosquitto_sub over TLS
(the credentials and the CA come from the cluster's node registration; passwords go to the clients
through their option files, never on a command line), a small PKI for fake roots, and the process
and port helpers of the other integration tests."""
import datetime
import hashlib
import ipaddress
import json
import os
import queue
import random
import re
import select
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import requests
from cryptography import x509
try:
    from prometheus_client import parser as prometheus_parser
except ImportError:  # a Python of its own (pyenv) beside Debian's python3-prometheus-client
    import sys
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client import parser as prometheus_parser
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


# ---- a small PKI (for fake roots and foreign CAs), as oakuk-root's: ECDSA P-256, SHA-256 ----

def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(names):
    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


class Ca:
    """A CA that signs server certificates and certificate requests; fingerprint as in join tokens."""

    def __init__(self, cn="test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.pem = _pem(self.cert)
        self.fingerprint = hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def _leaf(self, public_key, cn, names, days):
        now = datetime.datetime.now(datetime.timezone.utc)
        return _pem(x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
                    .public_key(public_key).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(hours=1))
                    .not_valid_after(now + datetime.timedelta(days=days))
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .add_extension(_san(names), critical=False)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                          ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                   critical=False)
                    .sign(self.key, hashes.SHA256()))

    def issue(self, cn, names, days=30):
        """(certificate PEM, key PEM) for a server named names."""
        key = ec.generate_private_key(ec.SECP256R1())
        return self._leaf(key.public_key(), cn, names, days), _key_pem(key)

    def sign_csr(self, csr_pem, cn, days=365):
        """Signs a request as oakuk-root does: its key and alternative names, our name; also returns
        the names it asked for."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in sans.get_values_for_type(x509.IPAddress)] + sans.get_values_for_type(x509.DNSName)
        return self._leaf(csr.public_key(), cn, names, days), names

    def write(self, path):
        with open(path, "w") as f:
            f.write(self.pem)
        return path


def served_certificate(host, port):
    """The certificate a TLS server presents (PEM), whoever signed it."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as sock, ctx.wrap_socket(sock) as tls:
        return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))


def cert_info(pem):
    """(common name, alternative names, seconds left, issuer CN) of a PEM certificate."""
    c = x509.load_pem_x509_certificate(pem.encode())
    try:
        sans = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in sans.get_values_for_type(x509.IPAddress)] + sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    after = getattr(c, "not_valid_after_utc", None) or c.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    left = (after - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return (c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, names, left,
            c.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def mqtt_env(directory, username, password, cafile=None):
    """An environment whose mosquitto_sub/mosquitto_pub read the login (and the CA) from their
    option files ($XDG_CONFIG_HOME/mosquitto_sub, .../mosquitto_pub): the password never shows
    on a command line."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lines = "-u %s\n-P %s\n" % (username, password) + ("--cafile %s\n" % cafile if cafile else "")
    for tool in ("mosquitto_sub", "mosquitto_pub"):
        path = os.path.join(directory, tool)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(lines)
    return dict(os.environ, XDG_CONFIG_HOME=directory)


def read_text(path):
    """The file's text without the final newline; None while it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def write_secret(path, text):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text + "\n")
    return path


_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(r'^(%s)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$' % _METRIC_NAME)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_metrics(text):
    """Parses Prometheus text format 0.0.4 strictly, as a scraper would, and returns {family: {"type",
    "help", "samples": [(name, {label: value}, float)]}}. Raises AssertionError naming the line for: a
    sample before its family's HELP and TYPE, a family declared twice or split, a malformed line or
    value, a histogram whose buckets are not cumulative or whose le="+Inf" bucket is not its _count."""
    families, order = {}, []
    for no, line in enumerate(text.splitlines(), 1):
        where = "line %d %r" % (no, line)
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.*)$" % _METRIC_NAME, line)
            if not m:
                raise AssertionError("malformed comment at " + where)
            kind, name, rest = m.groups()
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if fam[kind.lower()] is not None or fam["samples"]:
                raise AssertionError("%s of %s declared again or after its samples at %s" % (kind, name, where))
            if kind == "TYPE" and rest not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise AssertionError("unknown type at " + where)
            fam[kind.lower()] = rest
            if not order or order[-1] != name:
                order.append(name)
            continue
        if not line.strip():
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("malformed sample at " + where)
        name, labels, value = m.groups()
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)] if name.endswith(suffix) else None
            if base and families.get(base, {}).get("type") == "histogram":
                family = base
        fam = families.get(family)
        if fam is None or fam["type"] is None or fam["help"] is None:
            raise AssertionError("sample without HELP and TYPE of %s before it at %s" % (family, where))
        if order[-1] != family:
            raise AssertionError("samples of %s are not together at %s" % (family, where))
        try:
            number = float(value)
        except ValueError:
            raise AssertionError("bad value at " + where) from None
        fam["samples"].append((name, dict(_LABEL.findall(labels or "")), number))
    # ... and as Prometheus' own Python client reads it: the same families, the same samples.
    theirs = {f.name: f for f in prometheus_parser.text_string_to_metric_families(text)}
    for family, fam in families.items():
        name = family[:-len("_total")] if fam["type"] == "counter" and family.endswith("_total") else family
        if name not in theirs or theirs[name].type != fam["type"] or \
                len(theirs[name].samples) != len(fam["samples"]):
            raise AssertionError("prometheus_client reads %s otherwise: %r" % (family, theirs.get(name)))
    for family, fam in families.items():
        if fam["type"] != "histogram":
            continue
        series = {}
        for name, labels, value in fam["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if name == family + "_bucket":
                series[key]["buckets"].append((labels["le"], value))
            elif name == family + "_count":
                series[key]["count"] = value
        for key, s in series.items():
            values = [v for _, v in s["buckets"]]
            if not s["buckets"] or s["buckets"][-1][0] != "+Inf" or values != sorted(values) or \
                    values[-1] != s["count"]:
                raise AssertionError("histogram %s%r: buckets %r, count %r" % (family, key, s["buckets"], s["count"]))
    return families


def check_process_metrics(test, families, pid):
    """The process_* metrics describe the process pid: its resident memory (within 20%), open
    descriptors and start time."""
    with open("/proc/%d/statm" % pid) as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    test.assertAlmostEqual(metric_value(families, "process_resident_memory_bytes"), rss, delta=rss * 0.2)
    test.assertGreaterEqual(metric_value(families, "process_open_fds"), 3)
    test.assertEqual(families["process_cpu_seconds_total"]["type"], "counter")
    with open("/proc/stat") as f:
        btime = int(next(l for l in f if l.startswith("btime ")).split()[1])
    with open("/proc/%d/stat" % pid) as f:
        started = btime + int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    test.assertAlmostEqual(metric_value(families, "process_start_time_seconds"), started, delta=1)
    test.assertLess(time.time() - started, 3600)


def metric_value(families, name, **labels):
    """The value of the sample name with exactly these labels (None when there is none)."""
    family = families.get(name) or next((f for n, f in families.items() if name.startswith(n + "_")), None)
    for sample, ls, value in (family or {"samples": []})["samples"]:
        if sample == name and ls == labels:
            return value
    return None


def new_node_join_token(cluster_bin, state_dir, uses=1000, ttl=3600, extra=()):
    """A node join token from the cluster's own command (--new-join-token), as scripts make them."""
    p = subprocess.run([cluster_bin, "--state-dir", state_dir, "--new-join-token", "--uses", str(uses),
                        "--ttl", str(ttl)] + list(extra), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


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
    def __init__(self, argv, log_path, env=None):
        self.argv, self.log_path, self.env = argv, log_path, env
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = spawn(self.argv, stdout=subprocess.DEVNULL, stderr=self.log, env=self.env)

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
    """A root and one cluster (with its own mosquitto) in tmp, both with TLS: admin token in
    .headers, the root's CA in .ca_file (it signs the cluster's certificate too, so it verifies
    both). REQUESTS_CA_BUNDLE is set to it, so that plain requests calls of the tests trust it."""

    def __init__(self, tmp, root_bin, cluster_bin, cluster_name="edge1", node_timeout=5):
        self.tmp = tmp
        root_port, self.cluster_port, self.mqtt_port = ports(3)
        self.root_url = "https://127.0.0.1:%d" % root_port
        self.cluster_url = "https://127.0.0.1:%d" % self.cluster_port
        root_state, self.cluster_state = os.path.join(tmp, "root"), os.path.join(tmp, "cluster")
        self.root = Daemon([root_bin, "--state-dir", root_state, "--listen",
                            "127.0.0.1:%d" % root_port], os.path.join(tmp, "root.log"))
        self.root.start()
        self.ca_file = os.path.join(root_state, "pki", "ca.crt")
        wait_until("the root's CA", lambda: os.path.exists(self.ca_file), timeout=10)
        os.environ["REQUESTS_CA_BUNDLE"] = self.ca_file
        pw_file = os.path.join(root_state, "admin-password")
        self.admin_password = wait_until("the root's admin password", lambda: read_text(pw_file), timeout=10)
        tok = wait_until("root login", lambda: requests.post(self.root_url + "/api/auth/login", timeout=5, json={
            "username": "Admin", "password": self.admin_password}, verify=self.ca_file).json()["token"])
        self.headers = {"Authorization": "Bearer " + tok}
        join = requests.post(self.root_url + "/api/v1/clusters/tokens", headers=self.headers, timeout=5,
                             verify=self.ca_file).json()["token"]
        join_file = write_secret(os.path.join(tmp, "cluster-join-token"), join)
        self.cluster = Daemon([cluster_bin, "--state-dir", self.cluster_state, "--listen",
                               "127.0.0.1:%d" % self.cluster_port, "--root-url", self.root_url, "--name", cluster_name,
                               "--location", "lab", "--mqtt-port", str(self.mqtt_port), "--mosquitto", MOSQUITTO,
                               "--node-timeout", str(node_timeout), "--aggregate-interval", "1",
                               "--join-token", "@" + join_file], os.path.join(tmp, "cluster.log"))
        self.cluster.start()
        wait_until("cluster registered and connected", lambda: (lambda j: j["registered"] and j["mqtt_connected"])(
            requests.get(self.cluster_url + "/healthz", timeout=5, verify=self.ca_file).json()))
        self.node_join_token_file = os.path.join(self.cluster_state, "node-join-token")
        self.node_join_token = new_node_join_token(cluster_bin, self.cluster_state)


class MqttConn:
    """One MQTT 3.1.1 connection, as a node keeps one (the broker binds client ids to user names, so
    a second connection of the same login would take this one over): TLS against cafile (host name
    checked) or plain TCP; subscribes to topics on every (re)connection; publishes with QoS 1 and
    waits for the PUBACK (or QoS 0); acknowledges what it gets; keeps alive; reconnects 0.5 s after
    the connection drops. on_message(topic, payload bytes) runs on a thread of its own."""

    def __init__(self, host, port, username, password, client_id=None, cafile=None, topics=(), clean=False,
                 on_message=None, keepalive=20):
        self.host, self.port, self.username, self.password = host, port, username, password
        self.client_id = client_id or username
        self.cafile, self.topics, self.clean, self.keepalive = cafile, list(topics), clean, keepalive
        self.on_message = on_message
        self.connected, self.subscribed = threading.Event(), threading.Event()
        self.connects = 0  # successful connections so far
        self.refusals = []  # CONNACK return codes and connection errors, in order
        # One thread at a time uses the SSL connection (OpenSSL's rule): _io guards every read and
        # write; only the reader thread closes its socket (a socket closed under a blocked read
        # frees its descriptor for someone else's connection).
        self._sock, self._lock, self._io, self._closed = None, threading.Lock(), threading.Lock(), False
        self._acks, self._next_id = {}, 1
        self._inbox = queue.Queue()
        threading.Thread(target=self._dispatch, daemon=True).start()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def _length(n):
        out = bytearray()
        while True:
            b, n = n % 128, n // 128
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    @staticmethod
    def _str(s):
        b = s.encode() if isinstance(s, str) else s
        return len(b).to_bytes(2, "big") + b

    def _send(self, first, body):
        sock = self._sock
        if sock is None:
            raise OSError("not connected")
        with self._io:
            sock.sendall(bytes([first]) + self._length(len(body)) + body)

    def _recv_exact(self, sock, n):
        data = b""
        while len(data) < n:
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                readable, _, _ = select.select([sock], [], [], 0.2)
                if self._closed:
                    raise OSError("closed")
                if not readable:
                    continue
            with self._io:
                chunk = sock.recv(n - len(data))
            if not chunk:
                raise OSError("connection closed")
            data += chunk
        return data

    def _recv(self, sock):
        first = self._recv_exact(sock, 1)[0]
        n, mult = 0, 1
        while True:
            b = self._recv_exact(sock, 1)[0]
            n += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first, self._recv_exact(sock, n) if n else b""

    def _packet_id(self):
        with self._lock:
            pid = self._next_id
            self._next_id = pid % 65535 + 1
            return pid

    def _connect(self):
        sock = socket.create_connection((self.host, self.port), timeout=10)
        try:
            if self.cafile:
                ctx = ssl.create_default_context(cafile=self.cafile)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            flags = 0xC0 | (0x02 if self.clean else 0)
            body = (self._str("MQTT") + bytes([4, flags]) + self.keepalive.to_bytes(2, "big")
                    + self._str(self.client_id) + self._str(self.username) + self._str(self.password))
            sock.sendall(bytes([0x10]) + self._length(len(body)) + body)
            sock.settimeout(None)
            first, rest = self._recv(sock)
            if first >> 4 != 2 or len(rest) != 2 or rest[1] != 0:
                raise ConnectionRefusedError("CONNACK %s" % (rest[1] if len(rest) == 2 else "?"))
        except BaseException:
            sock.close()
            raise
        return sock

    def _run(self):
        while not self._closed:
            try:
                sock = self._connect()
            except (OSError, ssl.SSLError) as e:
                self.refusals.append(str(e))
                time.sleep(0.5)
                continue
            with self._lock:
                self._sock = sock
            self.connects += 1
            self.connected.set()
            pinger = threading.Thread(target=self._ping, args=(sock,), daemon=True)
            pinger.start()
            try:
                if self.topics:
                    pid = self._packet_id()
                    self._send(0x82, pid.to_bytes(2, "big") + b"".join(self._str(t) + b"\x01" for t in self.topics))
                else:
                    self.subscribed.set()
                while True:
                    first, body = self._recv(sock)
                    kind = first >> 4
                    if kind == 3:  # PUBLISH
                        qos = (first >> 1) & 3
                        tlen = int.from_bytes(body[:2], "big")
                        topic, at = body[2:2 + tlen].decode(), 2 + tlen
                        if qos:
                            self._send(0x40, body[at:at + 2])
                            at += 2
                        self._inbox.put((topic, body[at:]))
                    elif kind == 4:  # PUBACK
                        ev = self._acks.pop(int.from_bytes(body[:2], "big"), None)
                        if ev:
                            ev.set()
                    elif kind == 9:  # SUBACK
                        self.subscribed.set()
            except (OSError, ssl.SSLError):
                pass
            with self._lock:
                self._sock = None
            self.connected.clear()
            self.subscribed.clear()
            with self._io:
                try:
                    sock.close()
                except OSError:
                    pass
            if not self._closed:
                time.sleep(0.5)

    def _ping(self, sock):
        while self._sock is sock and not self._closed:
            time.sleep(self.keepalive / 2)
            try:
                if self._sock is sock:
                    self._send(0xC0, b"")
            except OSError:
                return

    def _dispatch(self):
        while True:
            topic, payload = self._inbox.get()
            if self.on_message:
                self.on_message(topic, payload)

    def publish(self, topic, payload, qos=1, retain=False, timeout=10):
        """True once the broker acknowledged it (QoS 1), or once sent (QoS 0)."""
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            if qos == 0:
                self._send(0x30 | (1 if retain else 0), self._str(topic) + data)
                return True
            pid = self._packet_id()
            ev = self._acks[pid] = threading.Event()
            self._send(0x32 | (1 if retain else 0), self._str(topic) + pid.to_bytes(2, "big") + data)
        except OSError:
            return False
        return ev.wait(timeout)

    def subscribe(self, topics):
        """Also listens to topics, now and on every reconnection."""
        self.topics += [t for t in topics if t not in self.topics]
        try:
            self._send(0x82, self._packet_id().to_bytes(2, "big") + b"".join(self._str(t) + b"\x01" for t in topics))
        except OSError:
            pass  # subscribed on the next connection

    def unsubscribe(self, topics):
        self.topics = [t for t in self.topics if t not in topics]
        try:
            self._send(0xA2, self._packet_id().to_bytes(2, "big") + b"".join(self._str(t) for t in topics))
        except OSError:
            pass

    def close(self):
        """Disconnects; the reader thread closes the socket within 0.2 s."""
        try:
            self._send(0xE0, b"")
        except OSError:
            pass
        self._closed = True


class FakeNode:
    """Registers over HTTPS, listens on its control/net topics over MQTT with TLS (trusting the CA
    the registration answered), publishes a report every second while alive and subscribed,
    and status events on demand. Answers control/logs requests from .logs (instance name -> list of
    lines) unless .answer_logs is False. cp: a ControlPlane or anything with cluster_url, ca_file,
    node_join_token and tmp.

    Like oakuk-node it keeps one MQTT connection (MqttConn), subscribes before it reports on each
    connection, and reports only while subscribed: the cluster sends a node its deliveries once the
    node reported on the cluster's current connection."""

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
        self.dir = tempfile.mkdtemp(prefix="node-%s-" % node_id, dir=getattr(cp, "tmp", None))
        r = self.register()
        assert r.status_code == 201, r.text
        self.use(r.json())
        self.conn = None
        self.extra_topics = []  # more topic filters to listen to (tests of the ACL)
        self.thread = None
        self.subscribed = threading.Event()

    def register(self, credential=None, token=None, node_id=None):
        """POST /api/node/register as this node (or as node_id): the response."""
        body = {"join_token": token or self.cp.node_join_token,
                "capabilities": report(node_id or self.id, self.memory, virtualization=self.virtualization,
                                       unikernel=self.unikernel)}
        if credential is not None:
            body["credential"] = credential
        return requests.post(self.cp.cluster_url + "/api/node/register", json=body, timeout=10,
                             verify=getattr(self.cp, "ca_file", True))

    def use(self, creds):
        """Takes the credentials of a registration: the MQTT login and the CA to trust."""
        self.creds = creds
        self.cafile = None
        if creds.get("mqtt_tls"):
            self.cafile = os.path.join(self.dir, "ca.crt")
            with open(self.cafile, "w") as f:
                f.write(creds["ca"])
        self.env = self.login_env(creds["mqtt_username"], creds["mqtt_password"])

    def login_env(self, user, password):
        """The environment of mosquitto_sub/pub logging in as user with password (option files)."""
        return mqtt_env(os.path.join(self.dir, "login-%s-%s" % (user, hashlib.sha256(password.encode()).hexdigest()[:8])),
                        user, password, self.cafile)

    def mqtt_argv(self, tool):
        return [tool, "-h", "127.0.0.1", "-p", str(self.creds["mqtt_port"])]

    def listen(self):
        """Connects (one persistent session, like oakuk-node) and reports every second."""
        c = self.creds
        self.conn = MqttConn("127.0.0.1", c["mqtt_port"], c["mqtt_username"], c["mqtt_password"],
                             cafile=self.cafile, on_message=self._on_message,
                             topics=["nodes/%s/control/#" % self.id, "nodes/%s/net/#" % self.id] + self.extra_topics)
        self.subscribed = self.conn.subscribed
        self.alive = True
        self.thread = threading.Thread(target=self._report_loop, daemon=True)
        self.thread.start()

    def close(self):
        """Stops reporting and disconnects."""
        self.silence()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def reconnect(self):
        """A new connection with the current credentials (the session is kept)."""
        self.close()
        self.listen()

    def _on_message(self, topic, payload):
        payload = payload.decode(errors="replace")
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

    def publish(self, leaf, payload, user=None, password=None, topic=None, qos=1):
        """Publishes on nodes/<id>/<leaf>, or on topic: over the node's connection while it listens,
        else (or as user/password) with mosquitto_pub; 0 once the broker acknowledged it."""
        data = payload if isinstance(payload, str) else json.dumps(payload)
        topic = topic or "nodes/%s/%s" % (self.id, leaf)
        if user is None and password is None and self.conn is not None:
            self.conn.subscribed.wait(10)  # after a broker restart: once back, as oakuk-node's queue does
            return 0 if self.conn.publish(topic, data, qos) else 1
        env = self.login_env(user or self.creds["mqtt_username"], password or self.creds["mqtt_password"])
        return subprocess.run(self.mqtt_argv("mosquitto_pub") + ["-q", str(qos), "-t", topic, "-m", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10, env=env).returncode

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

#!/usr/bin/python3
"""Simulated clusters for bench/scale.py: many fake oakuk-clusters in one process, each one as the
root sees a cluster (docs/api.md "Root <-> cluster", docs/cluster.md "Cluster -> root"; the fake
cluster of tests/integration/test-root.py, FakeCluster and Edge.register/aggregate, made many).

Each cluster
  - makes a key and a certificate request (ECDSA P-256, names 127.0.0.1 and localhost), registers
    with the root (POST /api/v1/clusters/register, bearer: a cluster join token with several uses)
    and serves HTTPS on its own port of 127.0.0.1 with the certificate the root signed;
  - posts its aggregate (POST /api/information/<id>) every --aggregate-interval (5 s, the cluster's
    default), each cluster at its own phase: NODES nodes of plenty of room, and its full state
    (instances[]) as oakuk-cluster sends it;
  - answers the root's deploys (POST /api/service/<job_id>/<n>) 200 NODE_SCHEDULED and reports
    NODE_SCHEDULED, then RUNNING (ready), through POST /api/v1/clusters/<id>/status at once (what
    piled up while the previous report was in flight goes in one batch); deletes are answered 200
    and the instance leaves the next aggregate.

Driven on stdin like simnodes.py:
  add COUNT TOKEN   register COUNT more clusters with TOKEN; "added TOTAL SECONDS" once each of
                    them serves and had its first aggregate accepted, or "error MESSAGE"
  stats             "stats key=value ..."
  quit

Usage: simclusters.py --root-url URL --ca CA_FILE [--aggregate-interval S] [--nodes N]"""
import argparse
import collections
import http.client
import http.server
import json
import os
import random
import resource
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress

OUT = threading.Lock()


def say(line):
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def csr_and_key(name):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                       x509.DNSName("localhost")]), critical=False)
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem


class Conn:
    """A keep-alive HTTPS connection to the root (one per cluster and per sending thread, as the
    cluster's libsoup session keeps its own)."""

    def __init__(self, sim):
        self.sim = sim
        self.c = None

    def call(self, method, path, body, token):
        data = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPSConnection(self.sim.host, self.sim.port, context=self.sim.tls, timeout=30)
            try:
                self.c.request(method, path, body=data, headers={
                    "Authorization": "Bearer " + token, "Content-Type": "application/json"})
                r = self.c.getresponse()
                text = r.read()
                return r.status, text
            except (OSError, http.client.HTTPException):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        return 0, b""


class Cluster:
    def __init__(self, sim, k):
        self.sim, self.k = sim, k
        self.name = "simc-%03d" % k
        self.id = self.token = None
        self.insts = {}   # (job_id, n) -> generation
        self.lock = threading.Lock()
        self.agg_conn = Conn(sim)
        self.status_conn = Conn(sim)
        self.pending = []   # status entries not yet sent
        self.sending = False
        self.server = None
        self.accepted_first = False

    def node_names(self):
        return ["%s-n%02d" % (self.name, j) for j in range(self.sim.args.nodes)]

    def aggregate(self):
        nodes = self.sim.args.nodes
        now_ms = int(time.time() * 1000)
        with self.lock:
            insts = [{"job_id": j, "instance": n, "generation": g, "status": "RUNNING", "status_detail": "",
                      "node": self.node_names()[n % nodes], "ready": True} for (j, n), g in sorted(self.insts.items())]
        cores, mem = 256 * nodes, 262144 * nodes
        cpu = round(random.uniform(1.0, 30.0), 1)   # moves between two aggregates, as a real cluster's
        return {"cpu_percent": cpu, "memory_percent": 5.0, "cpu_cores": cores, "cumulative_memory_in_mb": mem,
                "gpu_cores": 0, "gpu_percent": 0, "number_of_nodes": nodes, "active_nodes": nodes,
                "jobs": [], "virtualization": ["container"], "arch": ["amd64"],
                "aggregation_per_architecture": {"amd64": {"cpu_percent": 3.0, "cpu_cores": cores, "memory": 5.0,
                                                           "memory_in_mb": mem}},
                "nodes": [{"id": nn, "host": nn, "ip": "127.0.0.1", "architecture": "amd64", "cpu_percent": 3.0,
                           "vcpus": 256, "memory": 262144, "memory_total": 262144, "memory_percent": 5.0,
                           "gpus": 0, "tpus": 0, "virtualization": ["container"], "active": True,
                           "drained": False, "last_seen_ms": now_ms} for nn in self.node_names()],
                "instances": insts}

    def post_aggregate(self):
        st, text = self.agg_conn.call("POST", "/api/information/" + self.id, self.aggregate(), self.token)
        self.sim.count["aggregates"] += 1
        if st != 200:
            self.sim.count["aggregate_errors"] += 1
            self.sim.note("%s: aggregate: HTTP %d %s" % (self.name, st, text[:200]))
        elif not self.accepted_first:
            self.accepted_first = True
            self.sim.on_first_aggregate(self)

    # ---- statuses: at once, batched while one is in flight ----
    def queue_status(self, entries):
        with self.lock:
            self.pending.extend(entries)
            if self.sending:
                return
            self.sending = True
        threading.Thread(target=self.send_statuses, daemon=True).start()

    def send_statuses(self):
        while True:
            with self.lock:
                batch, self.pending = self.pending[:200], self.pending[200:]
                if not batch:
                    self.sending = False
                    return
            then = [e.pop("_then") for e in batch if "_then" in e]
            try:
                st, text = self.status_conn.call("POST", "/api/v1/clusters/%s/status" % self.id, batch, self.token)
            except (OSError, http.client.HTTPException) as e:
                st, text = 0, str(e).encode()
            with self.lock:
                self.pending.extend(then)
            self.sim.count["status_posts"] += 1
            if st != 200:
                self.sim.count["status_errors"] += 1
                self.sim.note("%s: status: HTTP %d %s" % (self.name, st, text[:200]))

    # ---- what the root sends ----
    def serve(self, listener, chain_pem, key_pem):
        d = tempfile.mkdtemp(prefix="simc-")
        cert, key = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
        with open(cert, "w") as f:
            f.write(chain_pem)
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        os.unlink(cert)
        os.unlink(key)
        os.rmdir(d)
        cluster = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"   # keep-alive, as the real cluster's server
            # the headers and the body leave in two writes: without TCP_NODELAY the body would wait
            # for the root's delayed ACK (40 ms per answer), which the real cluster does not make it do
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def reply(self, status, doc):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_POST(self):
                raw = self.body()
                parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["api", "service"]:
                    job_id, n = parts[2], int(parts[3])
                    gen = json.loads(raw).get("generation", 0)
                    node = cluster.node_names()[n % cluster.sim.args.nodes]
                    with cluster.lock:
                        cluster.insts[(job_id, n)] = gen
                    cluster.sim.count["deploys"] += 1
                    self.reply(200, {"instance": n, "status": "NODE_SCHEDULED", "node": node, "generation": gen})
                    base = {"job_id": job_id, "instance": n, "generation": gen, "status_detail": "", "node": node}
                    # NODE_SCHEDULED at once; RUNNING (ready) once the root has it, as a node's start
                    # comes after the cluster's report of its placement
                    cluster.queue_status([dict(base, status="NODE_SCHEDULED", ready=False,
                                               _then=dict(base, status="RUNNING", ready=True, ready_ms=1))])
                    return
                self.reply(404, {"error": {"code": "not_found", "message": "not here", "path": ""}})

            def do_DELETE(self):
                self.body()
                u = urllib.parse.urlsplit(self.path)
                parts = u.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["api", "service"]:
                    job_id, n = parts[2], int(parts[3])
                    g = urllib.parse.parse_qs(u.query).get("generation", ["0"])[0]
                    with cluster.lock:
                        had = cluster.insts.pop((job_id, n), None)
                    cluster.sim.count["deletes"] += 1
                    if had is None:
                        self.reply(404, {"error": {"code": "not_found", "message": "no such instance", "path": ""}})
                    else:
                        self.reply(200, {"message": "deleted", "generation": int(g)})
                    return
                self.reply(404, {"error": {"code": "not_found", "message": "not here", "path": ""}})

            def do_GET(self):
                self.reply(404, {"error": {"code": "not_found", "message": "not here", "path": ""}})

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self):
                pass   # the listener is bound already (its port is in the registered URL)

        address = listener.getsockname()
        srv = Server(address, Handler, bind_and_activate=False)
        srv.socket.close()
        srv.socket = ctx.wrap_socket(listener, server_side=True)   # takes listener's descriptor
        srv.server_address = address
        self.server = srv
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 3600}, daemon=True).start()


class Sim:
    def __init__(self, args):
        self.args = args
        u = urllib.parse.urlsplit(args.root_url)
        self.host, self.port = u.hostname, u.port
        self.tls = ssl.create_default_context(cafile=args.ca)
        self.clusters = []
        self.count = collections.Counter()
        self.lock = threading.Lock()
        self.batch = None
        self.first = 0
        self.notes = 0
        self.stop = threading.Event()
        threading.Thread(target=self.aggregates, daemon=True).start()

    def note(self, text):
        self.notes += 1
        if self.notes <= 20:
            sys.stderr.write("simclusters: %s\n" % text)

    def on_first_aggregate(self, c):
        with self.lock:
            self.first += 1
            if self.batch is not None and self.first >= self.batch["want"]:
                say("added %d %.2f" % (self.first, time.monotonic() - self.batch["t0"]))
                self.batch = None

    def register(self, c, token):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = "https://127.0.0.1:%d" % listener.getsockname()[1]
        csr, key_pem = csr_and_key(c.name)
        conn = Conn(self)
        st, text = conn.call("POST", "/api/v1/clusters/register",
                             {"name": c.name, "location": "bench", "url": url, "csr": csr}, token)
        conn.c and conn.c.close()
        if st != 201:
            raise RuntimeError("register %s: HTTP %d %s" % (c.name, st, text[:300]))
        r = json.loads(text)
        c.id, c.token = r["id"], r["token"]
        c.serve(listener, r["certificate"] + r["ca"], key_pem)
        c.next_at = time.monotonic()   # first aggregate at once; then at its own phase
        c.phase = random.random() * self.args.aggregate_interval

    def add(self, count, token):
        if self.batch is not None:
            say("error an add is in progress")
            return
        base = len(self.clusters)
        self.batch = {"want": base + count, "t0": time.monotonic()}
        try:
            for k in range(base, base + count):
                c = Cluster(self, k)
                self.register(c, token)
                with self.lock:
                    self.clusters.append(c)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            self.batch = None
            say("error %s" % e)

    def aggregates(self):
        """Every cluster's aggregate every interval, at its own phase (one thread: at most a few dozen
        a second even for 100 clusters)."""
        while not self.stop.is_set():
            now = time.monotonic()
            with self.lock:
                due = [c for c in self.clusters if c.next_at <= now]
                nxt = min([c.next_at for c in self.clusters], default=now + 0.2)
            for c in due:
                first = not c.accepted_first
                c.next_at = (now + c.phase) if first else c.next_at + self.args.aggregate_interval
                if c.next_at <= now:
                    c.next_at = now + self.args.aggregate_interval
                try:
                    c.post_aggregate()
                except (OSError, http.client.HTTPException) as e:
                    self.count["aggregate_errors"] += 1
                    self.note("%s: aggregate: %s" % (c.name, e))
            time.sleep(max(0.005, min(0.2, nxt - time.monotonic())))

    def run(self):
        buf = b""
        while True:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == "add" and len(words) == 3:
                    self.add(int(words[1]), words[2])
                elif words[0] == "stats":
                    c = dict(self.count)
                    c["clusters"] = len(self.clusters)
                    c["instances"] = sum(len(x.insts) for x in self.clusters)
                    say("stats " + " ".join("%s=%d" % kv for kv in sorted(c.items())))
                elif words[0] == "quit":
                    return
                else:
                    say("error unknown command: " + line.decode().strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root-url", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--aggregate-interval", type=float, default=5.0)
    ap.add_argument("--nodes", type=int, default=10, help="nodes in each simulated cluster's aggregate")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sim = Sim(args)
    say("ready")
    try:
        sim.run()
    finally:
        sim.stop.set()


if __name__ == "__main__":
    main()

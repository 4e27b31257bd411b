#!/usr/bin/python3
"""Simulated nodes for bench/scale.py: many MQTT clients in one process, each a node as oakuk-node
is one on the wire (daemons/node/main.c, instances.c, report.c; docs/cluster.md "From nodes" and
"MQTT topics"), with nothing running behind it.

Each node
  - registers like the real node: POST <cluster>/api/node/register {join_token, capabilities: <its
    report>} (a join token with several uses serves many nodes) and gets its own MQTT user name
    (its id) and password;
  - connects to the cluster's broker over TLS (trusting the CA the registration answered), with a
    persistent session (clean session off) and its last will on nodes/<id>/lwt;
  - subscribes to control/deploy, control/delete, control/logs, net/services and net/peers before
    its first report, then publishes nodes/<id>/information every --report-interval (2 s, the
    node's default), each node at its own phase;
  - acknowledges every control/deploy as the real node reports a container it starts: CREATING, then
    RUNNING with ready: true, and lists the instance (with its generation) in its next reports; a
    control/delete drops it and answers UNDEPLOYED. The net tables are received and dropped.

All clients share one epoll loop (paho-mqtt's loop_read/loop_write/loop_misc: no thread per client,
so that 1,000 nodes cost the machine as little as possible); registrations run on a few worker
threads, so that the nodes already connected keep reporting meanwhile.

Driven on stdin, one command a line; answers on stdout:
  add COUNT TOKEN   register and connect COUNT more nodes with TOKEN (a node join token);
                    answers "added TOTAL SECONDS" once every new node has published its first
                    report, or "error MESSAGE"
  stats             answers "stats key=value ..." (counters since the start)
  quit              disconnects everything and exits
The token travels on stdin, never on a command line.

Usage: simnodes.py --cluster-url URL --ca CA_FILE [--report-interval S] [--prefix sim]"""
import argparse
import collections
import heapq
import json
import os
import queue
import random
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

try:
    import paho.mqtt.client as mqtt
except ImportError:
    sys.stdout.write("error python3-paho-mqtt is missing (apt-get install python3-paho-mqtt)\n")
    sys.stdout.flush()
    sys.exit(2)

VCPUS = 256          # what a simulated node offers: room for every deploy of a burst
MEMORY_MB = 262144
REGISTER_WORKERS = 4
MISC_EVERY_S = 5.0   # loop_misc (keepalive pings) per client
CONNECT_PER_TURN = 16


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Node:
    def __init__(self, sim, node_id):
        self.sim, self.id = sim, node_id
        self.client = None
        self.creds = None
        self.insts = {}       # instance name -> {job_name, number, generation, status, vcpus, memory}
        self.connected = False
        self.reported = False  # first report published on the current connection
        self.retry_at = None
        self.registered_at = None
        self.renewing = False

    # ---- documents ----
    def report(self):
        used_cpu = used_mb = 0
        insts = []
        for name in sorted(self.insts):
            i = self.insts[name]
            if i["status"] in ("CREATING", "RUNNING"):
                used_cpu += max(i["vcpus"], 1)
                used_mb += max(i["memory"], 0)
            insts.append({"name": name, "status": i["status"], "generation": i["generation"],
                          "restarting": False, "cpu_percent": 0.0, "memory_mb": 0})
        # a host's load and free memory move between two reports, as the real node measures them; a
        # report equal to the last one would cost the cluster less than a real one (SQLite skips
        # writing a row that did not change)
        busy_mb = random.randint(2048, 4096)
        return {"id": self.id, "host": self.id, "ip": "127.0.0.1", "architecture": "amd64",
                "cpu_percent": round(random.uniform(1.0, 30.0), 1), "vcpus": max(VCPUS - used_cpu, 0),
                "memory": max(MEMORY_MB - busy_mb - used_mb, 0), "memory_total": MEMORY_MB,
                "memory_percent": round(100.0 * busy_mb / MEMORY_MB, 2), "gpus": 0, "tpus": 0,
                "virtualization": ["container"], "instances": insts}

    def publish(self, leaf, doc):
        self.client.publish("nodes/%s/%s" % (self.id, leaf), json.dumps(doc, separators=(",", ":")), qos=1)
        self.sim.count[leaf] += 1

    def status(self, i, status, ready=False, ready_ms=None):
        ev = {"job_name": i["job_name"], "instance": i["number"], "generation": i["generation"],
              "status": status, "status_detail": "", "ready": ready, "restarting": False}
        if ready and ready_ms is not None:
            ev["ready_ms"] = ready_ms
        self.publish("job", ev)

    # ---- MQTT ----
    def start(self):
        c = mqtt.Client(client_id="oakuk-node-" + self.id, clean_session=False, userdata=self,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(self.creds["mqtt_username"], self.creds["mqtt_password"])
        if self.creds.get("mqtt_tls", True):
            c.tls_set_context(self.sim.tls_context)
        c.will_set("nodes/%s/lwt" % self.id, json.dumps({"id": self.id}), qos=1)
        c.on_connect = Node.on_connect
        c.on_subscribe = Node.on_subscribe
        c.on_message = Node.on_message
        c.on_disconnect = Node.on_disconnect
        sel = self.sim.sel
        c.on_socket_open = lambda cl, n, sock: n.opened(sock)
        c.on_socket_close = lambda cl, n, sock: sel.unregister(sock)
        c.on_socket_register_write = lambda cl, n, sock: sel.modify(
            sock, selectors.EVENT_READ | selectors.EVENT_WRITE, n)
        c.on_socket_unregister_write = lambda cl, n, sock: sel.modify(sock, selectors.EVENT_READ, n)
        self.client = c
        self.connect()

    def opened(self, sock):
        # a status event often follows another at once (CREATING, RUNNING): no Nagle wait between them
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sim.sel.register(sock, selectors.EVENT_READ, self)

    def connect(self):
        self.retry_at = None
        self.client.username_pw_set(self.creds["mqtt_username"], self.creds["mqtt_password"])
        try:
            self.client.connect(self.creds["mqtt_host"], int(self.creds["mqtt_port"]), keepalive=60)
        except (OSError, ssl.SSLError) as e:
            self.sim.count["connect_errors"] += 1
            self.retry_at = time.monotonic() + 1.0
            self.sim.retry.add(self)
            self.sim.note("node %s: connect: %s" % (self.id, e))

    @staticmethod
    def on_connect(client, n, flags, rc):
        if rc != 0:
            n.sim.count["refused"] += 1
            n.sim.note("node %s: broker refused the connection (rc %d)" % (n.id, rc))
            # Not authorised well after the cluster accepted the registration: the broker never
            # reread its password file (a SIGHUP lost while it was reloading). The real node would
            # retry until some other registration makes the broker reload; this one registers again
            # with its credential, which rewrites its line and sends the broker another SIGHUP.
            if rc == 5 and not n.renewing and time.monotonic() - n.registered_at > n.sim.args.renew_after:
                n.renewing = True
                n.sim.count["renewed_after_refusal"] += 1
                n.sim.pool.submit(n.sim.register, n, None)
            return
        n.connected = True
        p = "nodes/%s/" % n.id
        client.subscribe([(p + t, 1) for t in ("control/deploy", "control/delete", "net/services", "net/peers",
                                                "control/logs")])

    @staticmethod
    def on_subscribe(client, n, mid, granted):
        # subscribed before the first report (docs/cluster.md "MQTT topics"), then one every interval
        n.publish("information", n.report())
        # and the status of every instance, as the node re-publishes them on each (re)connection
        for i in n.insts.values():
            n.status(i, i["status"], ready=i["status"] == "RUNNING", ready_ms=1)
        if not n.reported:
            n.reported = True
            n.sim.on_first_report(n)

    @staticmethod
    def on_disconnect(client, n, rc):
        n.connected = False
        if n.sim.stopping:
            return
        n.sim.count["disconnects"] += 1
        n.sim.note("node %s: disconnected (rc %d); reconnecting" % (n.id, rc))
        if not n.renewing:
            n.retry_at = time.monotonic() + 1.0
            n.sim.retry.add(n)

    @staticmethod
    def on_message(client, n, msg):
        leaf = msg.topic[len("nodes/%s/" % n.id):]
        if leaf.startswith("net/"):
            n.sim.count["net_msgs"] += 1
            n.sim.count["net_bytes"] += len(msg.payload)
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            n.sim.count["bad_payloads"] += 1
            return
        if leaf == "control/deploy":
            n.sim.count["deploys"] += 1
            name = doc.get("instance_name") or "%s.instance.%d" % (doc["job_name"], doc["instance_number"])
            old = n.insts.get(name)
            gen = int(doc.get("generation") or 0)
            if old is not None and old["generation"] >= gen:
                n.status(old, old["status"], ready=old["status"] == "RUNNING", ready_ms=1)  # re-published
                return
            i = {"job_name": doc["job_name"], "number": int(doc["instance_number"]), "generation": gen,
                 "status": "CREATING", "vcpus": int(doc.get("vcpus") or 1), "memory": int(doc.get("memory") or 0)}
            n.insts[name] = i
            n.status(i, "CREATING")
            i["status"] = "RUNNING"
            n.status(i, "RUNNING", ready=True, ready_ms=1)
        elif leaf == "control/delete":
            n.sim.count["deletes"] += 1
            name = "%s.instance.%d" % (doc["job_name"], doc["instance_number"])
            gen = doc.get("generation")
            i = n.insts.get(name)
            if i is not None and gen is not None and i["generation"] > gen:
                n.status(i, i["status"], ready=i["status"] == "RUNNING", ready_ms=1)  # stale delete
                return
            n.insts.pop(name, None)
            n.publish("job", {"job_name": doc["job_name"], "instance": doc["instance_number"],
                              "generation": i["generation"] if i else (gen or 0), "status": "UNDEPLOYED",
                              "status_detail": "", "ready": False, "restarting": False})
        elif leaf == "control/logs":
            n.publish("logs", {"request_id": doc.get("request_id"), "instance": doc.get("instance"),
                               "lines": ["(simulated node: no console)"]})


class Sim:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.tls_context = ssl.create_default_context(cafile=args.ca)
        self.nodes = []
        self.timers = []   # (due, seq, node): next report
        self.seq = 0
        self.count = collections.Counter()
        self.stopping = False
        self.registered = queue.Queue()
        self.pending_connect = collections.deque()
        self.retry = set()   # nodes to connect again at their retry_at
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
        self.pool = ThreadPoolExecutor(REGISTER_WORKERS)
        self.local = threading.local()
        self.batch = None   # {"want": total, "t0": monotonic} while an add is in progress
        self.first_reports = 0
        self.notes = 0
        self.inbuf = b""

    def note(self, text):
        # a few lines of trouble are useful; a flood of them is not
        self.notes += 1
        if self.notes <= 20:
            sys.stderr.write("simnodes: %s\n" % text)

    # ---- registration (worker threads) ----
    def session(self):
        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = requests.Session()
            s.trust_env = False   # REQUESTS_CA_BUNDLE would replace verify: trust the root's CA only
            s.verify = self.args.ca
        return s

    def register(self, node, token):
        """A new node with token; token None: the node registers again with its credential."""
        body = {"capabilities": node.report()}
        if token is None:
            body["credential"] = node.creds["mqtt_password"]
        else:
            body["join_token"] = token
        delay = 0.5
        for _ in range(12):
            try:
                r = self.session().post(self.args.cluster_url + "/api/node/register", json=body, timeout=60)
            except requests.RequestException as e:
                err = str(e)
            else:
                if r.status_code in (200, 201):
                    self.registered.put((node, r.json()))
                    self.wake_w.send(b"x")
                    return
                err = "HTTP %d: %s" % (r.status_code, r.text[:200])
                if r.status_code < 500 and r.status_code not in (408, 429):
                    break
            time.sleep(delay)
            delay = min(delay * 2, 8)
        self.registered.put((node, {"error": err}))
        self.wake_w.send(b"x")

    def add(self, count, token):
        if self.batch is not None:
            say("error an add is in progress")
            return
        base = len(self.nodes)
        self.batch = {"want": base + count, "t0": time.monotonic()}
        for k in range(base, base + count):
            n = Node(self, "%s-%04d" % (self.args.prefix, k))
            self.nodes.append(n)
            self.pool.submit(self.register, n, token)

    def on_first_report(self, n):
        self.first_reports += 1
        heapq.heappush(self.timers, (time.monotonic() + self.args.report_interval * random.random(), self.seq, n))
        self.seq += 1
        self.check_batch()

    def check_batch(self):
        if self.batch is not None and self.first_reports >= self.batch["want"]:
            say("added %d %.2f" % (self.first_reports, time.monotonic() - self.batch["t0"]))
            self.batch = None

    # ---- the loop ----
    def commands(self):
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            return False
        self.inbuf += data
        while b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            if not self.command(line.decode()):
                return False
        return True

    def command(self, line):
        words = line.split()
        if not words:
            return True
        if words[0] == "add" and len(words) == 3:
            self.add(int(words[1]), words[2])
        elif words[0] == "stats":
            c = dict(self.count)
            c["nodes"] = len(self.nodes)
            c["connected"] = sum(1 for n in self.nodes if n.connected)
            c["instances"] = sum(len(n.insts) for n in self.nodes)
            say("stats " + " ".join("%s=%d" % kv for kv in sorted(c.items())))
        elif words[0] == "quit":
            return False
        else:
            say("error unknown command: " + line.strip())
        return True

    def run(self):
        next_misc = time.monotonic() + MISC_EVERY_S
        misc_pos = 0
        while True:
            now = time.monotonic()
            timeout = 0.5
            if self.timers:
                timeout = min(timeout, max(0.0, self.timers[0][0] - now))
            if self.pending_connect:
                timeout = 0.0
            for key, mask in self.sel.select(timeout):
                if key.data == "wake":
                    try:
                        self.wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    continue
                if key.data == "stdin":
                    if not self.commands():
                        return
                    continue
                n = key.data
                c = n.client
                if mask & selectors.EVENT_READ:
                    c.loop_read()
                    # TLS may hold decrypted bytes the kernel no longer signals
                    while c._sock is not None and hasattr(c._sock, "pending") and c._sock.pending():
                        c.loop_read()
                if mask & selectors.EVENT_WRITE and c._sock is not None:
                    c.loop_write()
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                due, _, n = heapq.heappop(self.timers)
                if n.connected:
                    n.publish("information", n.report())
                # next report at the node's own phase; a late loop does not make it burst
                nxt = due + self.args.report_interval
                heapq.heappush(self.timers, (nxt if nxt > now else now + self.args.report_interval, self.seq, n))
                self.seq += 1
            # registrations answered: connect a few per turn
            while True:
                try:
                    node, creds = self.registered.get_nowait()
                except queue.Empty:
                    break
                if "error" in creds:
                    say("error registration of %s: %s" % (node.id, creds["error"]))
                    self.batch = None
                    continue
                node.creds = creds
                node.registered_at = time.monotonic()
                if node.renewing:
                    node.renewing = False
                    node.connect()
                else:
                    self.pending_connect.append(node)
            for _ in range(min(CONNECT_PER_TURN, len(self.pending_connect))):
                self.pending_connect.popleft().start()
            for n in [n for n in self.retry if n.retry_at is not None and now >= n.retry_at]:
                self.retry.discard(n)
                self.count["reconnects"] += 1
                n.connect()
            # keepalives, a slice of the clients per turn
            if now >= next_misc and self.nodes:
                end = min(len(self.nodes), misc_pos + max(1, len(self.nodes) // 10))
                for n in self.nodes[misc_pos:end]:
                    if n.client is not None and n.client._sock is not None:
                        n.client.loop_misc()
                misc_pos = end if end < len(self.nodes) else 0
                next_misc = now + (MISC_EVERY_S / 10 if misc_pos else MISC_EVERY_S)

    def close(self):
        self.stopping = True
        for n in self.nodes:
            if n.client is not None and n.client._sock is not None:
                try:
                    n.client.disconnect()
                    n.client.loop_write()
                except (OSError, ssl.SSLError):
                    pass
        self.pool.shutdown(wait=False, cancel_futures=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster-url", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--report-interval", type=float, default=2.0)
    ap.add_argument("--prefix", default="sim")
    ap.add_argument("--renew-after", type=float, default=5.0,
                    help="register again with the credential when the broker still refuses the login this long "
                         "after the registration")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sim = Sim(args)
    say("ready")
    try:
        sim.run()
    finally:
        sim.close()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Fault injection against the contract of docs/reconcile.md: never lose a workload.

Drives oakuk-root, two oakuk-clusters (each with its own mosquitto) and three oakuk-nodes, every
"host" a network namespace on a test underlay bridge 172.31.252.0/24 (tests/e2e/e2elib.py), runs a
few services on them, then injects faults in an order drawn from a seed and checks invariants after
each one heals.

  ctl  172.31.252.1   oakuk-root, guest file server, registry        (the driving process is here)
  c1   172.31.252.2   oakuk-cluster c1 + mosquitto: nodes n1 (.11), n2 (.12)
  c2   172.31.252.3   oakuk-cluster c2 + mosquitto: node n3 (.13)
  every node: --allow-emulation (amd64 unikernels under TCG) and containers (runc); it runs in the
  mount namespace of a holder process of its host, so that a node killed and started again finds
  its instances' namespaces (e2elib Edge.holder)

Services (application "chaos", namespace x<tag>), 4 instances on 6 cores, so that any one node
can be lost and its instances still fit elsewhere:
  uk1  unikernel (amd64 Linux test guest), restart on-failure, reschedule_after_s 10, service IP
  uk2  unikernel,                          restart always,     reschedule_after_s 60
  ct1  container (busybox sleep),          restart always,     reschedule_after_s 10
  ct2  container (busybox httpd),          restart on-failure, reschedule_after_s 60, service IP

Faults (kinds drawn in random order from the seed; targets, durations and API churn too):
  kill_root, kill_cluster, kill_node      SIGKILL, down 0.5-3 s, started again from their state
  kill_broker                             SIGKILL a cluster's mosquitto (the cluster restarts it)
  kill_qemu, kill_container               SIGKILL one instance's QEMU / container init
  stop_cluster, stop_node                 SIGSTOP past its timeout (short: below reschedule_after_s
                                          of every service; long: past 10 s), then SIGCONT
  cut_link                                nftables drop on a node host's underlay interface, healed
With some faults an API change goes first (churn): a container instance deleted and a new one
created, so that the fault hits a deploy and an undeploy in flight.

While a fault lasts, the root (when it answers) must list every acknowledged instance, every
second. Invariants, checked after each fault heals until they hold from one check to another 4 s later
(node_timeout + 1: converged) or the bound passes (then what still fails is counted as violations):
  liveness  every daemon runs; every cluster is active at the root, every node at its cluster
  api       every instance the test created and has not deleted is listed by the root's native
            API (nothing acknowledged is lost), with status RUNNING and ready (the guests' and
            httpd's port 8080 answers the node's probe) and no longer said to be on a silent site
            ("kept there", "cluster X silent for"); nothing else is listed (what the test deleted
            is gone once the removal is confirmed)
  once      every such instance runs exactly once across all node hosts (one QEMU found by its
            -name, or one container found by the instance namespace it runs in), with the right
            runtime for its service, on the node the root names; nothing runs for an instance
            that is not wanted
  leftovers on every node host: no instance namespace, bridge veth, tun device, runc container,
            job record or nftables address (table ip oakuk) for an instance that does not run
            there; no instance namespace in the global /run/netns
  node state  an instance running on a node has its job record there, and runc lists a container
            instance as running
  undisturbed  an instance the fault had no business moving or restarting (every one, for the
            control-plane kills, a node kill and short silences; all but the target, for a
            QEMU/container kill; the 60 s services in long silences too) runs in the same
            process as before the fault
After the last fault every instance is deleted and nothing may be left on any node.

Output: the seed first (replay with --seed), a line per fault and its result (violations with
details and daemon log excerpts), and as the last line
  faults N, invariant violations V, max convergence S s
Exit status 0 only with no violation. Everything made (namespaces, processes, temp dir) is
removed at exit, on failure and on Ctrl-C (KEEP_TMP=1 keeps the temp dir with the daemons' logs).

Usage: chaos.py BUILD_ROOT [--quick | --faults N] [--seed N] [--converge S] [--budget S]"""
import argparse
import os
import random
import re
import signal
import sys
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import e2elib  # noqa: E402
from e2elib import wait_until  # noqa: E402

PREFIX = "172.31.252"
NODE_TIMEOUT = 3        # cluster --node-timeout
CLUSTER_TIMEOUT = 4     # root cluster_timeout_s
FAST, SLOW = 10, 60     # reschedule_after_s of the services
STABLE = NODE_TIMEOUT + 1   # the invariants must hold this long: a node that did not come back is inactive by then
IMAGE = "127.0.0.1:5000/chaos/busybox:1"
KINDS = ["kill_root", "kill_cluster", "kill_node", "kill_broker", "kill_qemu", "kill_container", "stop_cluster",
         "stop_node", "cut_link"]
NODES = {"n1": ("c1", 11), "n2": ("c1", 12), "n3": ("c2", 13)}
T0 = time.time()


def log(msg):
    print("[+%6.1fs] %s" % (time.time() - T0, msg), flush=True)


def service(name, virt, code, restart, resched, **kw):
    m = {"microserviceID": "", "microservice_name": name, "microservice_namespace": "", "virtualization": virt,
         "cmd": [], "memory": 64, "vcpus": 1, "vgpus": 0, "vtpus": 0, "bandwidth_in": 0, "bandwidth_out": 0,
         "storage": 0, "code": code, "state": "", "added_files": [], "restart": restart,
         "reschedule_after_s": resched}
    m.update(kw)
    return m


class Chaos:
    def __init__(self, build, args):
        self.build, self.args = build, args
        self.rng = random.Random(args.seed)
        self.e = None
        self.sid = {}           # service name -> service id
        self.svc_of = {}        # service id -> service name
        self.live = {}          # (service name, n) -> time created: acknowledged, not deleted
        self.deleted = set()    # (service name, n) the test deleted (acknowledged)
        self.faults = 0
        self.violations = 0
        self.during = []        # violations seen while the current fault lasted
        self.changes = []       # instances the last fault moved or restarted (for the log)
        self.convergence = []   # seconds per fault (the bound where it never converged)

    # ---- setup ----
    def setup(self):
        e = self.e = e2elib.Edge(self.build, tag="ch%d" % (os.getpid() % 100000), underlay=PREFIX)
        e.underlay()
        e.host("ctl", 1)
        e.host("c1", 2)
        e.host("c2", 3)
        for n, (_, i) in NODES.items():
            e.host(n, i)
        e.enter("ctl")
        ctl_ip = e.hosts["ctl"][1]
        e.file_server(e.guests, ctl_ip, 8000)
        store = os.path.join(e.tmp, "registry-data")
        e.registry("127.0.0.1", 5000, store=store, name="registry-ctl")
        for n in NODES:
            e.registry("127.0.0.1", 5000, store=store, name="registry-" + n, netns=e.hosts[n][0])
        rootfs = e2elib.make_busybox_rootfs(os.path.join(e.tmp, "busybox-rootfs"))
        e2elib.push_rootfs_image(e.lib_path, rootfs, "127.0.0.1:5000", "chaos/busybox", "1")
        e.start_root(config={"cluster_timeout_s": CLUSTER_TIMEOUT})
        self.clusters = {c: e.add_cluster(c, c, node_timeout=NODE_TIMEOUT) for c in ("c1", "c2")}
        self.nodes = {}
        for n, (c, _) in NODES.items():
            self.nodes[n] = e.start_node(n, n, ["--allow-emulation"], cluster=self.clusters[c], keep_mntns=True)
        for c, cl in self.clusters.items():
            cl.wait_nodes([n for n, (cc, _) in NODES.items() if cc == c])
        wait_until("both clusters with their nodes at the root", lambda: sorted(
            (c["cluster_name"], c.get("active_nodes")) for c in e.api("GET", "/api/v1/clusters").json()) == [
            ("c1", 2), ("c2", 1)], timeout=30)
        files = "http://%s:8000" % ctl_ip
        guest = files + "/guest-amd64-nofiles.tar.gz"
        # 96 MB: the Linux test guest does not boot in 64; readiness: its HTTP server on 8080
        uk = dict(arch=["amd64"], emulation="allow", unikernel={"flavor": "linux"}, memory=96,
                  readiness={"tcp": 8080})
        # service IPs: every node's table ip oakuk then names the instances (checked for leftovers)
        svcs = [service("uk1", "unikernel", guest, "on-failure", FAST, cmd=["chaos-uk1"],
                        addresses={"rr_ip": "10.30.252.1"}, **uk),
                service("uk2", "unikernel", guest, "always", SLOW, cmd=["chaos-uk2"], **uk),
                service("ct1", "container", IMAGE, "always", FAST, cmd=["sleep", "100000"]),
                service("ct2", "container", IMAGE, "on-failure", SLOW, cmd=["httpd", "-f", "-p", "8080", "-h", "/www"],
                        readiness={"tcp": 8080}, addresses={"rr_ip": "10.30.252.2"})]
        for s in svcs:
            s["microservice_namespace"] = e.marker
        r = e.api("POST", "/api/v1/applications", json={
            "sla_version": "v2.0", "customerID": "Admin", "applications": [{
                "applicationID": "", "application_name": "chaos", "application_namespace": e.marker,
                "application_desc": "fault injection", "microservices": svcs}]})
        if r.status_code != 201:
            raise RuntimeError("POST /api/v1/applications: %d %s" % (r.status_code, r.text))
        for sid in r.json()["applications"][0]["microservices"]:
            name = e.api("GET", "/api/v1/services/" + sid).json()["microservice_name"]
            self.sid[name], self.svc_of[sid] = sid, name
        for s in ("uk1", "uk2", "ct1", "ct2"):
            self.create(s)

    # ---- API ----
    def inst_name(self, svc, n):
        return "chaos.%s.%s.%s.instance.%d" % (self.e.marker, svc, self.e.marker, n)

    def create(self, svc):
        r = self.e.api("POST", "/api/v1/services/%s/instances" % self.sid[svc])
        if r.status_code != 201:
            raise RuntimeError("deploy %s: %d %s" % (svc, r.status_code, r.text))
        n = r.json()["instance_number"]
        self.live[(svc, n)] = time.time()
        return n

    def delete(self, svc, n):
        r = self.e.api("DELETE", "/api/v1/services/%s/instances/%d" % (self.sid[svc], n))
        if r.status_code != 200:
            raise RuntimeError("undeploy %s.%d: %d %s" % (svc, n, r.status_code, r.text))
        del self.live[(svc, n)]
        self.deleted.add((svc, n))

    def listed(self):
        """{(service, n): instance entry} as the root's native API lists them."""
        out = {}
        for svc, sid in self.sid.items():
            r = self.e.api("GET", "/api/v1/services/%s/instances" % sid)
            r.raise_for_status()
            for i in r.json():
                out[(svc, i["instance_number"])] = i
        return out

    # ---- invariants ----
    def check(self):
        """The invariants now: a list of violations (strings), and the runtime units seen."""
        v = []
        try:
            listed = self.listed()
        except (requests.RequestException, ValueError) as err:
            return ["api: the root's native API did not answer: %s" % err], {}
        for key in sorted(self.live):
            svc, n = key
            i = listed.get(key)
            if i is None:
                v.append("api: %s.%d was acknowledged (created) and is not listed any more" % key)
            elif i["status"] != "RUNNING":
                v.append("api: %s.%d is %s, not RUNNING: %s" % (svc, n, i["status"], i.get("status_detail")))
            elif re.search(r"kept there|(^|; )cluster \S+ silent for", i.get("status_detail") or ""):
                v.append("api: %s.%d is RUNNING but still said to be on a silent site: %s" % (
                    svc, n, i.get("status_detail")))
            elif i.get("ready") is not True:
                v.append("api: %s.%d is RUNNING but not ready (its readiness probe never answered, or the ready "
                         "state was not reported again)" % key)
        for key in sorted(set(listed) - set(self.live)):
            i = listed[key]
            what = "deleted by the test and still listed" if key in self.deleted else "never created by the test"
            v.append("api: %s.%d %s (%s: %s)" % (key + (what, i["status"], i.get("status_detail"))))
        # every site heard from again: clusters active at the root, nodes at their cluster
        for d in self.all_daemons():
            if not d.alive():
                v.append("liveness: %s is not running (exit status %s)" % (d.name, d.proc.poll()))
        try:
            for c in self.e.api("GET", "/api/v1/clusters").json():
                if c.get("active") is not True:
                    v.append("liveness: cluster %s is not active at the root" % c.get("cluster_name"))
            for c, cl in sorted(self.clusters.items()):
                for nd in cl.nodes():
                    if nd.get("active") is not True:
                        v.append("liveness: node %s is not active at cluster %s" % (nd.get("id"), c))
        except (requests.RequestException, ValueError) as err:
            v.append("liveness: a cluster's or the root's view of the sites did not answer: %s" % err)
        units = self.e.runtime_units()
        wanted = {self.inst_name(*k): k for k in self.live}
        for name, key in sorted(wanted.items()):
            us = units.get(name, [])
            kind = "qemu" if key[0].startswith("uk") else "container"
            node = (listed.get(key) or {}).get("node_id")
            if len(us) != 1:
                v.append("once: %s.%d runs %d times%s" % (key + (len(us), ": " + describe(us) if us else "")))
            elif us[0]["kind"] != kind:
                v.append("once: %s.%d runs as a %s, not a %s" % (key + (us[0]["kind"], kind)))
            elif node and us[0]["host"] != node:
                v.append("once: %s.%d runs on %s, the root says %s" % (key + (us[0]["host"], node)))
        for name in sorted(set(units) - set(wanted)):
            v.append("once: %s runs and is not wanted: %s" % (short(name), describe(units[name])))
        # what each node host holds
        here = {}   # node -> names of wanted instances running there
        for name in wanted:
            for u in units.get(name, []):
                here.setdefault(u["host"], set()).add(name)
        views = {n: self.e.node_view(n) for n in NODES}
        ips = {ip for view in views.values() for name, ip in view["veths"].items() if name in wanted}
        for n, view in views.items():
            mine = here.get(n, set())
            for what in ("netns", "veths", "runc", "jobs"):
                for name in sorted(set(view[what]) - mine):
                    if any(m in name for m in self.e.markers()):
                        v.append("leftovers: %s on %s for %s, which does not run there" % (
                            {"netns": "network namespace", "veths": "bridge veth", "runc": "runc container",
                             "jobs": "job record"}[what], n, short(name)))
            for name in sorted(mine):
                if name not in view["jobs"]:
                    v.append("node state: %s runs on %s without a job record there" % (short(name), n))
                if wanted[name][0].startswith("ct") and view["runc"].get(name) != "running":
                    v.append("node state: runc on %s says container %s is %s" % (
                        n, short(name), view["runc"].get(name, "unknown")))
            for tap in view["taps"]:
                v.append("leftovers: tun device %s in %s's host namespace" % (tap, n))
            for ip in sorted(set(re.findall(r"\b(10\.1[89]\.\d+\.\d+)\b(?!/)", view["nft"])) - ips):
                v.append("leftovers: table ip oakuk on %s names %s, the address of no running instance" % (n, ip))
        for name in os.listdir("/run/netns"):
            if any(m in name for m in self.e.markers()):
                v.append("leftovers: network namespace %s in the machine's /run/netns" % name)
        return v, units

    def converge(self, before=None, exempt=(), t_heal=None):
        """Waits (up to the bound, from t_heal: when the fault ended) until the invariants hold
        from one check to another STABLE s later; then also checks that every instance not in exempt runs in the
        process it ran in before. Returns (seconds to converge or None, violations at the end); the
        instances that moved or restarted are left in self.changes."""
        t_heal = t_heal or time.time()
        deadline = t_heal + self.args.converge
        first_ok, v = None, []
        while True:
            v, units = self.check()
            now = time.time()
            if not v:
                if first_ok is None:
                    first_ok = now
                elif now - first_ok >= STABLE:
                    break
            else:
                first_ok = None
            if now > deadline:
                break
            time.sleep(1 if first_ok is None else 2)
        self.changes = []
        if v:
            return None, v
        if before is not None:
            for name, us in sorted(before.items()):
                key = self.key_of(name)
                if key is None or key not in self.live or len(us) != 1:
                    continue
                now_u = units.get(name, [])
                if len(now_u) == 1 and now_u[0]["pid"] != us[0]["pid"]:
                    self.changes.append("%s %s" % (short(name), us[0]["host"] if us[0]["host"] == now_u[0][
                        "host"] else "%s->%s" % (us[0]["host"], now_u[0]["host"])))
                if name in exempt:
                    continue
                if len(now_u) == 1 and now_u[0]["pid"] != us[0]["pid"]:
                    v.append("undisturbed: %s.%d was %s pid %d on %s, now %s pid %d on %s (restarted or moved "
                             "though this fault did not call for it)" % (key + (
                                 us[0]["kind"], us[0]["pid"], us[0]["host"], now_u[0]["kind"], now_u[0]["pid"],
                                 now_u[0]["host"])))
        return first_ok - t_heal, v

    def key_of(self, name):
        m = re.match(r"chaos\.[^.]+\.([^.]+)\.[^.]+\.instance\.(\d+)$", name)
        return (m.group(1), int(m.group(2))) if m else None

    # ---- faults ----
    def hold(self, secs):
        """Sleeps secs while the fault lasts, asking the root (when it answers) every second whether
        it still lists every acknowledged instance: a partition must not make it forget one."""
        end = time.time() + secs
        while True:
            left = end - time.time()
            if left <= 0:
                return
            try:
                listed = self.listed()
                for key in sorted(set(self.live) - set(listed)):
                    msg = "api: %s.%d was not listed while the fault lasted" % key
                    if msg not in self.during:
                        self.during.append(msg)
            except (requests.RequestException, ValueError):
                pass
            time.sleep(min(1.0, max(0.0, end - time.time())))

    def silence(self, kind):
        """Seconds of silence: short (past the timeout, below FAST - 1 with whatever comes after
        the heal) or long (past FAST)."""
        if self.rng.random() < 0.5:
            base = {"stop_cluster": (1.25 * CLUSTER_TIMEOUT, 1.75 * CLUSTER_TIMEOUT),
                    "stop_node": (1.5 * NODE_TIMEOUT, 2 * NODE_TIMEOUT), "cut_link": (4, 5)}[kind]
            return "short", round(self.rng.uniform(*base), 1)
        return "long", round(self.rng.uniform(FAST + 4, FAST + 8), 1)

    def churn(self):
        """An API change before the fault, or nothing: delete one container instance, create one."""
        if self.rng.random() < 0.5:
            return None
        cts = sorted(k for k in self.live if k[0].startswith("ct"))
        gone = self.rng.choice(cts)
        svc = self.rng.choice(["ct1", "ct2"])
        self.delete(*gone)
        n = self.create(svc)
        return "churn: deleted %s.%d, created %s.%d" % (gone + (svc, n))

    def inject(self, kind, plan):
        """Applies fault kind and heals it; returns (description, instances it may move or restart,
        when the healing began)."""
        e, rng = self.e, self.rng
        exempt = set()
        if kind == "kill_root":
            down = round(rng.uniform(0.5, 3), 1)
            e.root.kill()
            time.sleep(down)
            t_heal = time.time()
            e.root.restart()
            wait_until("root back", lambda: requests.get(e.root_url + "/healthz", timeout=2).ok, timeout=30)
            return "SIGKILL oakuk-root, down %.1f s" % down, exempt, t_heal
        if kind == "kill_cluster":
            c = rng.choice(sorted(self.clusters))
            down = round(rng.uniform(0.5, 3), 1)
            self.clusters[c].stop(signal.SIGKILL)
            self.hold(down)
            t_heal = time.time()
            self.clusters[c].start_again()
            return "SIGKILL cluster %s, down %.1f s" % (c, down), exempt, t_heal
        if kind == "kill_node":
            n = rng.choice(sorted(NODES))
            down = round(rng.uniform(0.5, 2.5), 1)
            self.nodes[n].kill()
            self.hold(down)
            t_heal = time.time()
            self.nodes[n].restart()
            return "SIGKILL node %s, down %.1f s" % (n, down), exempt, t_heal
        if kind == "kill_broker":
            c = rng.choice(sorted(self.clusters))
            pid = self.clusters[c].broker_pid()
            t_heal = time.time()
            if pid:
                os.kill(pid, signal.SIGKILL)
            wait_until("cluster %s back on its broker" % c, lambda: self.clusters[c].healthz()["mqtt_connected"],
                       timeout=30)
            return "SIGKILL mosquitto of %s (pid %s)" % (c, pid), exempt, t_heal
        if kind in ("kill_qemu", "kill_container"):
            want = "qemu" if kind == "kill_qemu" else "container"
            units = e.runtime_units()
            cands = sorted(n for n, us in units.items() if self.key_of(n) in self.live and any(
                u["kind"] == want for u in us))
            if not cands:
                return "%s: nothing of that kind runs" % kind, exempt, time.time()
            name = rng.choice(cands)
            pid = min(u["pid"] for u in units[name] if u["kind"] == want)
            t_heal = time.time()
            os.kill(pid, signal.SIGKILL)
            exempt.add(name)
            return "SIGKILL %s of %s (pid %d)" % ("QEMU" if want == "qemu" else "container init", short(name),
                                                   pid), exempt, t_heal
        length, secs = self.silence(kind)
        # a long silence mostly hits a site that runs an instance that may move (then the copy
        # elsewhere and the returning site's old one are what gets exercised)
        fast = {u["host"] for name, us in plan.items() for u in us
                if u["host"] in NODES and (self.key_of(name) or ("",))[0] in ("uk1", "ct1")}
        aim = length == "long" and fast and rng.random() < 0.75
        if kind == "stop_cluster":
            c = rng.choice(sorted({NODES[h][0] for h in fast} if aim else self.clusters))
            hosts = {n for n, (cc, _) in NODES.items() if cc == c}
            target, what = self.clusters[c].daemon, "SIGSTOP cluster %s" % c
        else:
            n = rng.choice(sorted(fast if aim else NODES))
            hosts = {n}
            target, what = self.nodes[n], ("SIGSTOP node %s" if kind == "stop_node" else "cut the link of %s") % n
        if length == "long":
            # instances of the services that move after FAST s there may move
            for name, us in plan.items():
                key = self.key_of(name)
                if key and key[0] in ("uk1", "ct1") and any(u["host"] in hosts for u in us):
                    exempt.add(name)
        if kind == "cut_link":
            e.cut_link(n)
            self.hold(secs)
            t_heal = time.time()
            e.heal_link(n)
        else:
            target.pause()
            self.hold(secs)
            t_heal = time.time()
            target.resume()
        return "%s for %.1f s (%s)" % (what, secs, length), exempt, t_heal

    def excerpts(self, violations, since):
        """The last log lines of every daemon about the instances the violations name."""
        names = set()
        for line in violations:
            for m in re.finditer(r"\b(uk\d|ct\d)\.(\d+)\b", line):
                names.add(self.inst_name(m.group(1), int(m.group(2))))
        out = []
        daemons = [("root", self.e.root)] + [("cluster " + c, cl.daemon) for c, cl in sorted(self.clusters.items())] + \
            [("node " + n, d) for n, d in sorted(self.nodes.items())]
        for name in sorted(names):
            for label, d in daemons:
                text = d.text()[since.get(d.log_path, 0):]
                lines = [l for l in text.splitlines() if name in l][-4:]
                for l in lines:
                    out.append("      %s | %s" % (label, l[:300]))
        return out

    def run(self):
        a = self.args
        print("chaos: seed %d (replay: %s %s --seed %d --faults %d --converge %d)" % (
            a.seed, sys.argv[0], self.build, a.seed, a.faults, a.converge), flush=True)
        print("chaos: convergence bound %d s per fault%s; node_timeout %d s, cluster_timeout %d s, "
              "reschedule_after_s %d/%d s" % (a.converge, ", fault budget %d s" % a.budget if a.budget else "",
                                               NODE_TIMEOUT, CLUSTER_TIMEOUT, FAST, SLOW), flush=True)
        log("setting up root, clusters c1 c2, nodes n1 n2 n3 on %s.0/24" % PREFIX)
        self.setup()
        log("deployed uk1.0 uk2.0 ct1.0 ct2.0; waiting for the invariants (bound %d s)" % max(a.converge, 150))
        t, v = self.converge_initial()
        if v:
            self.report_violations("setup", v, {}, t)
            self.violations += len(v)
            return self.finish()
        log("setup converged in %.1f s" % t)
        kinds = []
        t_faults = time.time()
        for i in range(a.faults):
            if not kinds:
                kinds = list(KINDS)
                self.rng.shuffle(kinds)
            kind = kinds.pop()
            if a.budget and time.time() - t_faults > a.budget:
                log("fault budget of %d s spent: %d of %d faults done" % (a.budget, i, a.faults))
                break
            since = {d.log_path: len(d.text()) for d in self.all_daemons()}
            plan = self.e.runtime_units()
            self.during = []
            ch = self.churn()
            desc, exempt, t_heal = self.inject(kind, plan)
            self.faults += 1
            log("fault %d/%d %s: %s%s" % (i + 1, a.faults, kind, desc, "; " + ch if ch else ""))
            if ch:
                # the new instance and the deleted one have no process to keep
                exempt |= {n for n in plan if self.key_of(n) not in self.live}
            t, v = self.converge(before=plan, exempt=exempt, t_heal=t_heal)
            v = self.during + v
            if v:
                self.report_violations("fault %d" % (i + 1), v, since, t)
                self.violations += len(v)
                self.convergence.append(t if t is not None else a.converge)
            else:
                log("  converged in %.1f s%s" % (t, "; moved or restarted: " + ", ".join(self.changes)
                                                 if self.changes else ""))
                self.convergence.append(t)
        # the end: everything deleted, nothing left anywhere
        since = {d.log_path: len(d.text()) for d in self.all_daemons()}
        for key in sorted(self.live):
            self.delete(*key)
        log("deleted every instance; waiting for the nodes to be empty")
        t, v = self.converge()
        if v:
            self.report_violations("teardown", v, since, t)
            self.violations += len(v)
        else:
            log("  teardown converged in %.1f s" % t)
        return self.finish()

    def converge_initial(self):
        saved = self.args.converge
        self.args.converge = max(saved, 150)
        try:
            return self.converge()
        finally:
            self.args.converge = saved

    def all_daemons(self):
        return [self.e.root] + [c.daemon for c in self.clusters.values()] + list(self.nodes.values())

    def report_violations(self, what, v, since, t):
        if t is None:
            log("  %s: NOT converged within %d s: %d violations" % (what, self.args.converge, len(v)))
        else:
            log("  %s: converged in %.1f s, but %d violations" % (what, t, len(v)))
        for line in v:
            print("    - " + line, flush=True)
        for line in self.excerpts(v, since)[:60]:
            print(line, flush=True)

    def finish(self):
        mx = max(self.convergence) if self.convergence else 0.0
        print("faults %d, invariant violations %d, max convergence %.1f s" % (self.faults, self.violations, mx),
              flush=True)
        return 1 if self.violations else 0


def short(name):
    """chaos.x<tag>.uk1.x<tag>.instance.0 -> uk1.0"""
    m = re.match(r"chaos\.[^.]+\.([^.]+)\.[^.]+\.instance\.(\d+)$", name)
    return "%s.%s" % m.groups() if m else name


def describe(units):
    return ", ".join("%s pid %d on %s" % (u["kind"], u["pid"], u["host"] or "no node") for u in units)


def main():
    p = argparse.ArgumentParser(description="fault injection: never lose a workload (docs/reconcile.md)")
    p.add_argument("build", help="meson build root")
    p.add_argument("--seed", type=int, default=None, help="replay this seed (default: a new one, printed)")
    p.add_argument("--quick", action="store_true", help="8 faults, bound 60 s each, faults stop after 200 s")
    p.add_argument("--faults", type=int, default=None, help="number of faults (default 40)")
    p.add_argument("--converge", type=int, default=None, help="convergence bound per fault, s (default 90)")
    p.add_argument("--budget", type=int, default=None, help="no new fault after this many s of faults")
    a = p.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    if a.quick:
        a.faults = a.faults or 8
        a.converge = a.converge or 60
        a.budget = a.budget if a.budget is not None else 200
    a.faults = a.faults if a.faults is not None else 40
    a.converge = a.converge or 90
    if os.geteuid() != 0:
        print("chaos: needs root (namespaces, nftables, QEMU, runc)", file=sys.stderr)
        return 77
    c = Chaos(os.path.abspath(a.build), a)
    try:
        return c.run()
    except SystemExit as stop:  # SIGINT/SIGTERM: Edge's handler has removed everything already
        print("chaos: interrupted", flush=True)
        c.finish()
        return stop.code
    except Exception as err:  # noqa: BLE001  (the summary line comes last even then)
        import traceback
        traceback.print_exc()
        print("chaos: aborted: %s" % err, flush=True)
        c.violations += 1
        return c.finish()
    finally:
        if c.e:
            c.e.close()


if __name__ == "__main__":
    sys.exit(main())

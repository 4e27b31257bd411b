#!/usr/bin/python3
"""End-to-end scenarios of docs/reconcile.md (never lose a workload), each its own test, on one
deployment: oakuk-root (cluster_timeout_s 4), two oakuk-clusters (node_timeout 3 s) and their nodes,
every "host" a network namespace on the test underlay 172.31.253.0/24 (tests/e2e/e2elib.py). Needs
root.

  ctl  172.31.253.1   root, cluster r1 (+ mosquitto), guest file server, registry
  r2   172.31.253.2   cluster r2 (+ mosquitto)
  na   172.31.253.11  r1: amd64 unikernels under TCG only (--virtualization unikernel --allow-emulation)
  nb   172.31.253.12  r1: --allow-emulation and containers
  nc   172.31.253.13  r1: containers only
  nd   172.31.253.14  r2: --allow-emulation and containers
  ne   172.31.253.15  r1: joins during test_06; started again with --leave in test_10

Every node runs in the mount namespace of a holder process of its host (Edge.holder), so that its
instance namespaces can be looked at after it stopped. QEMU and container processes are found
through /proc (Edge.runtime_units): that a workload kept running is checked by its pid.

Usage: test_reconcile.py <build root> <source root>"""
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib  # noqa: E402
from e2elib import wait_until  # noqa: E402

BUILD = SOURCE = None
PREFIX = "172.31.253"
CTL_IP = PREFIX + ".1"
FILES = "http://%s:8000" % CTL_IP
GUEST = FILES + "/guest-amd64-nofiles.tar.gz"
IMAGE = "127.0.0.1:5000/rc/busybox:1"
NODE_TIMEOUT = 3
CLUSTER_TIMEOUT = 4
# 96 MB: the Linux test guest does not boot in 64 (it hangs after the BIOS)
UK = dict(arch=["amd64"], emulation="allow", unikernel={"flavor": "linux"}, memory=96)
UNPLACED = ("NoActiveClusterWithCapacity", "NO_QUALIFIED_WORKER_FOUND", "NO_WORKER_CAPACITY")


def ms(name, virt, code, **kw):
    m = {"microserviceID": "", "microservice_name": name, "microservice_namespace": "", "virtualization": virt,
         "cmd": [], "memory": 64, "vcpus": 1, "vgpus": 0, "vtpus": 0, "bandwidth_in": 0, "bandwidth_out": 0,
         "storage": 0, "code": code, "state": "", "added_files": [], "restart": "on-failure"}
    m.update(kw)
    return m


SERVICES = [
    # test_01, test_02: silence is not death (default reschedule_after_s: 60 s)
    ms("keep", "unikernel", GUEST, cmd=["keep"], readiness={"tcp": 8080}, **UK),
    # test_03, test_04: deploys hit by restarts
    ms("web", "container", IMAGE, cmd=["httpd", "-f", "-p", "8080", "-h", "/www"]),
    # test_05: moved after 5 s of silence
    ms("move", "unikernel", GUEST, cmd=["move"], reschedule_after_s=5, readiness={"tcp": 8080}, **UK),
    # test_06, test_10: only node ne qualifies
    ms("late", "container", IMAGE, cmd=["sleep", "100000"], constraints=[{"type": "direct", "node": "ne"}]),
    # test_07: a guest that powers off after 2 s, restarted always
    ms("flap", "unikernel", GUEST, cmd=["exit=2"], restart="always", **UK),
    # test_08: one service, two variants, a container-only node and a TCG unikernel node; 2 vcpus, so
    # that each of the two (2 cores each) takes one instance
    ms("dual", ["unikernel", "container"], {"unikernel": GUEST, "container": IMAGE}, vcpus=2,
       cmd=["httpd", "-f", "-p", "8080", "-h", "/www"], constraints=[{"type": "direct", "node": "nc;na"}],
       readiness={"tcp": 8080}, **UK),
    # test_09: drained off its node
    ms("drain", "unikernel", GUEST, cmd=["drain"], constraints=[{"type": "direct", "node": "na;nb"}],
       readiness={"tcp": 8080}, **UK),
]


class Reconcile(unittest.TestCase):
    edge = None

    @classmethod
    def setUpClass(cls):
        e = cls.edge = e2elib.Edge(BUILD, tag="r%d" % (os.getpid() % 100000), underlay=PREFIX)
        e.underlay()
        e.host("ctl", 1)
        e.host("r2", 2)
        for i, n in enumerate(("na", "nb", "nc", "nd", "ne")):
            e.host(n, 11 + i)
        e.enter("ctl")
        e.file_server(e.guests, CTL_IP, 8000)
        store = os.path.join(e.tmp, "registry-data")
        e.registry("127.0.0.1", 5000, store=store, name="registry-ctl")
        for n in ("na", "nb", "nc", "nd", "ne"):
            e.registry("127.0.0.1", 5000, store=store, name="registry-" + n, netns=e.hosts[n][0])
        rootfs = e2elib.make_busybox_rootfs(os.path.join(e.tmp, "busybox-rootfs"))
        e2elib.push_rootfs_image(e.lib_path, rootfs, "127.0.0.1:5000", "rc/busybox", "1")
        e.start_root(config={"cluster_timeout_s": CLUSTER_TIMEOUT})
        cls.r1 = e.add_cluster("r1", "ctl", node_timeout=NODE_TIMEOUT)
        cls.r2 = e.add_cluster("r2", "r2", node_timeout=NODE_TIMEOUT)
        uk = ["--allow-emulation"]
        cls.nodes = {
            "na": e.start_node("na", "na", uk + ["--virtualization", "unikernel"], cluster=cls.r1, keep_mntns=True),
            "nb": e.start_node("nb", "nb", uk, cluster=cls.r1, keep_mntns=True),
            "nc": e.start_node("nc", "nc", ["--virtualization", "container"], cluster=cls.r1, keep_mntns=True),
            "nd": e.start_node("nd", "nd", uk, cluster=cls.r2, keep_mntns=True),
        }
        cls.cluster_of = {"na": cls.r1, "nb": cls.r1, "nc": cls.r1, "nd": cls.r2, "ne": cls.r1}
        cls.r1.wait_nodes(["na", "nb", "nc"])
        cls.r2.wait_nodes(["nd"])
        wait_until("both clusters with their nodes at the root", lambda: sorted(
            (c["cluster_name"], c.get("active_nodes")) for c in e.api("GET", "/api/v1/clusters").json()) == [
            ("r1", 3), ("r2", 1)], timeout=30)
        svcs = [dict(s, microservice_namespace=e.marker) for s in SERVICES]
        r = e.api("POST", "/api/v1/applications", json={
            "sla_version": "v2.0", "customerID": "Admin", "applications": [{
                "applicationID": "", "application_name": "rc", "application_namespace": e.marker,
                "application_desc": "reconciliation scenarios", "microservices": svcs}]})
        assert r.status_code == 201, r.text
        cls.sid = {}
        for sid in r.json()["applications"][0]["microservices"]:
            cls.sid[e.api("GET", "/api/v1/services/" + sid).json()["microservice_name"]] = sid
        # the CLI's credentials (oakuk node drain)
        cls.cli_env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(e.tmp, "config"))
        p = subprocess.run([e.cli_bin, "login", "--url", e.root_url, "--ca-file", e.ca_file, "--password-stdin"], input=e.admin_password + "\n",
                           env=cls.cli_env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr

    @classmethod
    def tearDownClass(cls):
        if cls.edge:
            if os.environ.get("E2E_SHOW_LOGS"):
                for d in [cls.edge.root, cls.r1.daemon, cls.r2.daemon] + list(cls.nodes.values()):
                    print("==== %s\n%s" % (d.name, d.text()[-4000:]))
            cls.edge.close()

    # ---- helpers ----
    def name(self, svc, n):
        return "rc.%s.%s.%s.instance.%d" % (self.edge.marker, svc, self.edge.marker, n)

    def deploy(self, svc):
        r = self.edge.api("POST", "/api/v1/services/%s/instances" % self.sid[svc])
        self.assertEqual(r.status_code, 201, r.text)
        n = r.json()["instance_number"]
        self.addCleanup(self.undeploy, svc, n)
        return n

    def undeploy(self, svc, n):
        """Deletes the instance (if still there) and waits until it runs nowhere."""
        try:
            self.edge.api("DELETE", "/api/v1/services/%s/instances/%d" % (self.sid[svc], n))
            wait_until("%s.%d gone" % (svc, n), lambda: self.instance(svc, n) is None and not self.units(svc, n),
                       timeout=40)
        except (AssertionError, requests.RequestException) as err:
            print("cleanup of %s.%d: %s" % (svc, n, err), file=sys.stderr)

    def instance(self, svc, n):
        lst = self.edge.api("GET", "/api/v1/services/%s/instances" % self.sid[svc]).json()
        return next((i for i in lst if i["instance_number"] == n), None)

    def units(self, svc, n):
        return self.edge.runtime_units().get(self.name(svc, n), [])

    def wait_running(self, svc, n, timeout=90, node=None, not_node=None):
        def ok():
            i = self.instance(svc, n)
            if not i or i["status"] != "RUNNING":
                return None
            if (node and i["node_id"] != node) or (not_node and i["node_id"] == not_node):
                return None
            return i
        try:
            return wait_until("%s.%d RUNNING%s%s" % (svc, n, " on " + node if node else "",
                                                     " off " + not_node if not_node else ""), ok, timeout=timeout,
                              interval=0.3)
        except AssertionError as err:
            raise AssertionError("%s; now: %r; runs: %r" % (err, self.instance(svc, n), self.units(svc, n))) from None

    def one_unit(self, svc, n, kind="qemu", timeout=30):
        """The single QEMU/container of the instance (waits until exactly one runs)."""
        us = wait_until("%s.%d running exactly once" % (svc, n), lambda: (lambda u: u if len(u) == 1 else None)(
            self.units(svc, n)), timeout=timeout)
        self.assertEqual(us[0]["kind"], kind, us)
        return us[0]

    def cluster_holding(self, inst):
        return self.r1 if inst["cluster_id"] == self.r1.id else self.r2

    def log_mark(self):
        return {d.log_path: len(d.text()) for d in self.daemons()}

    def daemons(self):
        return [self.edge.root, self.r1.daemon, self.r2.daemon] + list(self.nodes.values())

    def logs_since(self, mark, needle):
        out = []
        for d in self.daemons():
            out += ["%s: %s" % (d.name, l) for l in d.text()[mark.get(d.log_path, 0):].splitlines() if needle in l]
        return out

    def log_times(self, mark, daemon, needle):
        """[(epoch seconds, line)] of daemon's log lines since mark that contain needle."""
        d = next(x for x in self.daemons() if x.name == daemon)
        out = []
        for line in d.text()[mark.get(d.log_path, 0):].splitlines():
            m = re.match(r"time=(\S+)Z ", line)
            if needle in line and m:
                t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
                out.append((t.replace(tzinfo=datetime.timezone.utc).timestamp(), line))
        return out

    def watch(self, seconds, fn, interval=0.5):
        """Calls fn every interval for seconds (a bounded loop); fn raises AssertionError to fail."""
        end = time.time() + seconds
        while time.time() < end:
            fn()
            time.sleep(interval)

    # ---- scenarios ----
    def test_01_cluster_silence_keeps_the_instance(self):
        """A cluster silent for 3x cluster_timeout (SIGSTOP): the instance keeps running where it
        is, nothing is deleted or started elsewhere, and after SIGCONT it is re-adopted as it was:
        RUNNING, same cluster and node, the same QEMU."""
        n = self.deploy("keep")
        inst = self.wait_running("keep", n, timeout=120)
        u = self.one_unit("keep", n)
        cl = self.cluster_holding(inst)
        name = self.name("keep", n)
        mark = self.log_mark()
        details = []

        def during():
            i = self.instance("keep", n)
            self.assertIsNotNone(i, "the instance is no longer listed while its cluster is silent")
            self.assertNotIn(i["status"], UNPLACED + ("UNDEPLOYED", "FAILED"), i)
            details.append(i.get("status_detail") or "")
            now = self.units("keep", n)
            self.assertEqual([x["pid"] for x in now], [u["pid"]], "a copy started or the QEMU went: %r" % now)
        cl.daemon.pause()
        try:
            self.watch(3 * CLUSTER_TIMEOUT, during)
        finally:
            cl.daemon.resume()
        self.assertTrue(any(re.search(r"cluster \S+ silent for \d+ s", d) for d in details),
                        "status_detail never said the cluster was silent: %r" % sorted(set(details)))
        back = wait_until("re-adopted: RUNNING and the silence gone from status_detail", lambda: (
            lambda i: i if i["status"] == "RUNNING" and "silent" not in (i.get("status_detail") or "") else None)(
            self.instance("keep", n)), timeout=30)
        self.assertEqual((back["cluster_id"], back["node_id"]), (inst["cluster_id"], inst["node_id"]))
        time.sleep(2)
        self.assertEqual([x["pid"] for x in self.units("keep", n)], [u["pid"]], "the QEMU was restarted or copied")
        self.assertEqual([l for l in self.logs_since(mark, name) if "event=delete" in l], [])

    def test_02_node_site_outage_keeps_the_instance(self):
        """A node's site unreachable for 3x node_timeout (its underlay link cut): the same at the
        node level."""
        n = self.deploy("keep")
        inst = self.wait_running("keep", n, timeout=120)
        u = self.one_unit("keep", n)
        node = inst["node_id"]
        name = self.name("keep", n)
        mark = self.log_mark()

        def during():
            i = self.instance("keep", n)
            self.assertIsNotNone(i, "the instance is no longer listed while its node is cut off")
            self.assertNotIn(i["status"], UNPLACED + ("UNDEPLOYED", "FAILED"), i)
            now = self.units("keep", n)
            self.assertEqual([x["pid"] for x in now], [u["pid"]], "a copy started or the QEMU went: %r" % now)
        self.edge.cut_link(node)
        try:
            self.watch(3 * NODE_TIMEOUT, during)
        finally:
            self.edge.heal_link(node)
        back = wait_until("re-adopted: RUNNING on %s" % node, lambda: (
            lambda i: i if i["status"] == "RUNNING" and "silent" not in (i.get("status_detail") or "") else None)(
            self.instance("keep", n)), timeout=40)
        self.assertEqual(back["node_id"], node)
        time.sleep(2)
        self.assertEqual([x["pid"] for x in self.units("keep", n)], [u["pid"]], "the QEMU was restarted or copied")
        self.assertEqual([l for l in self.logs_since(mark, name) if "event=delete" in l], [])

    def test_03_root_restart_during_deploy(self):
        """The root killed right after it acknowledged a deploy: the instance is still listed after
        the restart and ends RUNNING, exactly once."""
        e = self.edge
        n = self.deploy("web")
        e.root.kill()
        time.sleep(1)
        e.root.restart()
        wait_until("root back", lambda: requests.get(e.root_url + "/healthz", timeout=2).ok, timeout=30)
        self.assertIsNotNone(self.instance("web", n), "the acknowledged instance is gone after the restart")
        self.wait_running("web", n, timeout=60)
        self.one_unit("web", n, kind="container")
        time.sleep(3)
        self.assertEqual(len(self.units("web", n)), 1, self.units("web", n))

    def test_04_cluster_restart_during_deploy(self):
        """Both clusters killed right after the root acknowledged a deploy (whichever the root
        picked, the deploy is in flight there), started again 1 s later: RUNNING exactly once."""
        n = self.deploy("web")
        for c in (self.r1, self.r2):
            c.stop(signal.SIGKILL)
        time.sleep(1)
        for c in (self.r1, self.r2):
            c.start_again()
        self.wait_running("web", n, timeout=60)
        self.one_unit("web", n, kind="container")
        time.sleep(3)
        self.assertEqual(len(self.units("web", n)), 1, self.units("web", n))

    def test_05_node_returns_after_its_instance_moved(self):
        """A node silent (SIGSTOP) past the service's reschedule_after_s (5 s): the instance is
        started elsewhere; when the node comes back its copy is removed and the moved copy keeps
        serving, in the same process."""
        n = self.deploy("move")
        inst = self.wait_running("move", n, timeout=120)
        old = self.one_unit("move", n)
        node = self.nodes[inst["node_id"]]
        node.pause()
        try:
            moved = self.wait_running("move", n, not_node=inst["node_id"], timeout=90)
            new = wait_until("the moved copy's QEMU on %s" % moved["node_id"], lambda: next(
                (x for x in self.units("move", n) if x["host"] == moved["node_id"]), None), timeout=30)
            self.assertIn(old["pid"], [x["pid"] for x in self.units("move", n)],
                          "the silent node's copy is still there until the node is back")
        finally:
            node.resume()
        wait_until("the returning node's copy removed", lambda: [x["pid"] for x in self.units("move", n)] == [
            new["pid"]], timeout=40)
        now = self.wait_running("move", n, timeout=10)
        self.assertEqual(now["node_id"], moved["node_id"], "the instance went back instead of staying moved")
        wait_until("the moved copy ready (its HTTP port answers its node's probe)", lambda: self.instance(
            "move", n).get("ready") is True, timeout=30)
        time.sleep(3)
        self.assertEqual([x["pid"] for x in self.units("move", n)], [new["pid"]], "the moved copy was restarted")
        view = self.edge.node_view(inst["node_id"])
        self.assertNotIn(self.name("move", n), view["netns"] + list(view["veths"]) + view["jobs"], view)

    def test_06_unplaceable_until_a_node_joins(self):
        """A service only node ne qualifies for, deployed before ne exists: it stays listed as
        unplaced with the reasons, and runs on ne once ne joins, with no further API call."""
        n = self.deploy("late")
        i = wait_until("late unplaced", lambda: (lambda i: i if i and i["status"] in UNPLACED else None)(
            self.instance("late", n)), timeout=30)
        self.assertIn(i["status"], ("NoActiveClusterWithCapacity", "NO_QUALIFIED_WORKER_FOUND"), i)
        self.assertRegex(i.get("status_detail") or "", r"r1: .*\S", "no reasons: %r" % i)
        time.sleep(2)
        self.assertIn(self.instance("late", n)["status"], UNPLACED, "an unplaceable instance changed by itself")
        self.nodes["ne"] = self.edge.start_node("ne", "ne", [], cluster=self.r1, keep_mntns=True)
        self.wait_running("late", n, node="ne", timeout=60)
        self.one_unit("late", n, kind="container")

    def test_07_restart_always_backs_off(self):
        """restart: always on a guest that powers off every 2 s: restarted on its node with a
        growing delay, shown in status_detail as 'restart N in S s (backoff)'; never FAILED, never
        moved."""
        n = self.deploy("flap")
        first = self.wait_running("flap", n, timeout=120)
        seen = {}
        end = time.time() + 75
        while time.time() < end and len(seen) < 3:
            i = self.instance("flap", n)
            self.assertNotEqual(i["status"], "FAILED", i)
            self.assertEqual(i["node_id"], first["node_id"], "the node gave the instance up: %r" % i)
            m = re.search(r"restart (\d+) in (\d+) s \(backoff\)", i.get("status_detail") or "")
            if m:
                seen.setdefault(int(m.group(1)), int(m.group(2)))
            time.sleep(0.25)
        print("flap: restart N -> delay S s seen in status_detail: %r" % seen, file=sys.stderr)
        self.assertGreaterEqual(len(seen), 3, "restarts seen in status_detail: %r" % seen)
        delays = [seen[k] for k in sorted(seen)]
        self.assertEqual(delays, sorted(delays), "the backoff shrank: %r" % seen)
        self.assertGreater(delays[-1], delays[0], "the backoff does not grow: %r" % seen)

    def test_08_two_variants_by_node(self):
        """One service with a unikernel and a container variant, two instances, on a container-only
        node (nc) and a TCG unikernel node (na): each node runs the variant it can."""
        a = self.deploy("dual")
        ia = self.wait_running("dual", a, timeout=120)
        b = self.deploy("dual")
        ib = self.wait_running("dual", b, timeout=120)
        self.assertEqual({ia["node_id"], ib["node_id"]}, {"na", "nc"}, (ia, ib))
        for n, i in ((a, ia), (b, ib)):
            u = self.one_unit("dual", n, kind="qemu" if i["node_id"] == "na" else "container")
            self.assertEqual(u["host"], i["node_id"], u)

    def test_09_drain_moves_instances_first(self):
        """oakuk node drain: the drained node's instance is started on another node, and the old
        copy is deleted only once the new one is RUNNING; oakuk nodes shows the node drained."""
        n = self.deploy("drain")
        inst = self.wait_running("drain", n, timeout=120)
        old = self.one_unit("drain", n)
        src = inst["node_id"]
        name = self.name("drain", n)
        mark = self.log_mark()
        p = subprocess.run([self.edge.cli_bin, "node", "drain", src], env=self.cli_env, capture_output=True,
                           text=True, timeout=30)
        self.addCleanup(subprocess.run, [self.edge.cli_bin, "node", "undrain", src], env=self.cli_env,
                        capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        old_gone = None
        end = time.time() + 90
        while time.time() < end and old_gone is None:
            us = self.units("drain", n)
            self.assertTrue(us, "no copy of the instance ran for a moment during the drain")
            if old["pid"] not in [x["pid"] for x in us]:
                old_gone = time.time()
                self.assertEqual(len(us), 1, us)
                new = us[0]
            time.sleep(0.2)
        self.assertIsNotNone(old_gone, "the drained node's copy was never removed: %r" % self.units("drain", n))
        i = self.wait_running("drain", n, not_node=src, timeout=10)
        self.assertEqual(new["host"], i["node_id"])
        # the order, from the nodes' own logs: the new copy RUNNING, then the old one's delete
        running = [t for t in self.log_times(mark, "node-" + i["node_id"], name) if "status=RUNNING" in t[1]]
        deleted = [t for t in self.log_times(mark, "node-" + src, name) if "event=delete" in t[1]]
        self.assertTrue(running and deleted, (running, deleted))
        print("drain: new copy RUNNING %.2f s before the old one's delete" % (deleted[0][0] - running[0][0]),
              file=sys.stderr)
        self.assertLess(running[0][0], deleted[0][0], "the old copy was deleted before the new one ran")
        self.assertEqual(len(self.units("drain", n)), 1)
        js = wait_until("the root's view of %s drained" % src, lambda: (lambda lst: next(
            (x for x in lst if x.get("id") == src and x.get("drained") is True), None))(json.loads(subprocess.run(
                [self.edge.cli_bin, "nodes", "--json"], env=self.cli_env, capture_output=True, text=True,
                timeout=30).stdout)), timeout=15)
        self.assertTrue(js["drained"])
        out = subprocess.run([self.edge.cli_bin, "nodes"], env=self.cli_env, capture_output=True, text=True,
                             timeout=30).stdout
        line = next((l for l in out.splitlines() if re.search(r"\b%s\b" % src, l)), "")
        self.assertIn("drained", line, "oakuk nodes does not show %s drained:\n%s" % (src, out))

    def test_10_leave_removes_the_node_network(self):
        """oakuk-node --leave (node ne of test_06, started again with it): on SIGTERM it stops its
        instances and removes its bridge, VXLAN device and nftables table."""
        node = self.nodes.get("ne")
        if node is None or not node.alive():
            self.skipTest("node ne did not join (test_06)")
        node.stop()
        node = self.nodes["ne"] = self.edge.start_node("ne", "ne", ["--leave"], cluster=self.r1, keep_mntns=True)
        self.r1.wait_nodes(["ne"])
        n = self.deploy("late")
        self.wait_running("late", n, node="ne", timeout=60)
        self.one_unit("late", n, kind="container")
        ns = self.edge.hosts["ne"][0]
        for dev in ("oakuk0", "oakuk-vx"):
            self.assertEqual(e2elib.sh("nsenter", "--net=/run/netns/" + ns, "ip", "link", "show", dev,
                                       check=False).returncode, 0, "ne has no %s to remove" % dev)
        node.stop()
        self.assertFalse(node.alive())
        for dev in ("oakuk0", "oakuk-vx"):
            r = e2elib.sh("nsenter", "--net=/run/netns/" + ns, "ip", "link", "show", dev, check=False)
            self.assertNotEqual(r.returncode, 0, "%s still there after --leave: %s" % (dev, r.stdout))
        r = e2elib.sh("nsenter", "--net=/run/netns/" + ns, "nft", "list", "table", "ip", "oakuk", check=False)
        self.assertNotEqual(r.returncode, 0, "table ip oakuk still there after --leave:\n" + r.stdout)
        self.assertEqual(os.listdir(self.edge.node_netns_dir("ne")), [], "instance namespaces left")
        left = [u for us in self.edge.runtime_units().values() for u in us if u["host"] == "ne"]
        self.assertEqual(left, [], "instances still run on ne")

if __name__ == "__main__":
    BUILD, SOURCE = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    del sys.argv[1:3]
    unittest.main(verbosity=2)

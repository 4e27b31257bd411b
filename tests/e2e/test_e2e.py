#!/usr/bin/python3
"""End-to-end suite: oakuk-root, oakuk-cluster (with its mosquitto) and three oakuk-node hosts, each
"host" a network namespace on a test underlay bridge (tests/e2e/e2elib.py). Needs root.

  ctl  172.31.251.1   root, cluster, guest file server, registry (storage shared with the nodes')
  n1   172.31.251.11  containers only (--virtualization container)
  n2   172.31.251.12  --allow-emulation, only qemu-system-x86_64 in PATH: amd64 unikernels (TCG)
  n3   172.31.251.13  --allow-emulation, every QEMU: amd64 (TCG) and emulated arm64 unikernels

Every node host runs its own docker-registry on 127.0.0.1:5000 over one storage directory (the
node's container runtime reaches plain-http registries on loopback only), so the image reference
127.0.0.1:5000/e2e/busybox:1 means the same image on every host.

Usage: test_e2e.py <build root> <source root>   (tests run in order and share one deployment)"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib  # noqa: E402
from e2elib import UNDERLAY, wait_until  # noqa: E402
from edgelib import report  # noqa: E402

BUILD = SOURCE = None
CTL_IP = UNDERLAY + ".1"
FILES = "http://%s:8000" % CTL_IP
IMAGE = "127.0.0.1:5000/e2e/busybox:1"
NODE_TIMEOUT = 5
UK_IP = "10.30.0.20"
UK_RESCHEDULE_S = 15  # ukamd's reschedule_after_s


def ms(name, virt, code, **kw):
    m = {"microserviceID": "", "microservice_name": name, "microservice_namespace": "", "virtualization": virt,
         "cmd": [], "memory": 32, "vcpus": 1, "vgpus": 0, "vtpus": 0, "bandwidth_in": 0, "bandwidth_out": 0,
         "storage": 0, "code": code, "state": "", "added_files": [], "restart": "on-failure"}
    m.update(kw)
    return m


class E2E(unittest.TestCase):
    edge = None

    @classmethod
    def setUpClass(cls):
        e = cls.edge = e2elib.Edge(BUILD)
        # the thesis descriptor's instances, and the dashboard's container (test_04c)
        e.extra_markers = ["testing.test.testaggr.test", "testing.test.aggr.test"]
        e.underlay()
        e.host("ctl", 1)
        for i, n in ((11, "n1"), (12, "n2"), (13, "n3")):
            e.host(n, i)
        e.enter("ctl")
        e.file_server(e.guests, CTL_IP, 8000)
        # one registry storage, one registry per host on its own loopback
        store = os.path.join(e.tmp, "registry-data")
        e.registries = [e.registry("127.0.0.1", 5000, store=store, name="registry-ctl")]
        for n in ("n1", "n2", "n3"):
            e.registries.append(e.registry("127.0.0.1", 5000, store=store, name="registry-" + n,
                                           netns=e.hosts[n][0]))
        rootfs = e2elib.make_busybox_rootfs(os.path.join(e.tmp, "busybox-rootfs"))
        e2elib.push_rootfs_image(e.lib_path, rootfs, "127.0.0.1:5000", "e2e/busybox", "1")
        # mosquitto behind a gate: while the gate file exists a restarted broker waits
        cls.gate = os.path.join(e.tmp, "broker-gate")
        wrapper = os.path.join(e.tmp, "mosquitto-wrapper")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nwhile [ -e "%s" ]; do sleep 0.1; done\nexec %s "$@"\n' % (cls.gate, e2elib.MOSQUITTO))
        os.chmod(wrapper, 0o755)
        e.start_root()
        e.start_cluster(CTL_IP, node_timeout=NODE_TIMEOUT, extra=["--mosquitto", wrapper])
        cls.nodes = {
            "n1": e.start_node("n1", "n1", ["--virtualization", "container", "--stop-instances"]),
            "n2": e.start_node("n2", "n2", ["--allow-emulation", "--stop-instances"],
                               env=e.path_without(["qemu-system-aarch64", "qemu-system-arm"], "n2")),
            "n3": e.start_node("n3", "n3", ["--allow-emulation", "--stop-instances"]),
        }
        e.wait_nodes(["n1", "n2", "n3"])
        cls.cid = e.api("GET", "/api/v1/clusters").json()[0]["id"]
        wait_until("3 active nodes at the root", lambda: e.api("GET", "/api/v1/clusters/" + cls.cid).json()[
            "active_nodes"] == 3, timeout=20)
        # the application of the placement, connectivity and failure tests
        mk = e.marker
        svcs = [
            ms("ukarm", "unikernel", FILES + "/guest-arm64-nofiles.tar.gz", arch=["arm64"], memory=256,
               cmd=["arm-e2e"], emulation="allow", unikernel={"flavor": "linux"}),
            # moved off a silent node after 15 s (docs/reconcile.md; the default is 60 s)
            ms("ukamd", "unikernel", FILES + "/guest-amd64-nofiles.tar.gz", arch=["amd64"], memory=96,
               cmd=["amd-e2e"], emulation="allow", unikernel={"flavor": "linux"}, port="8080",
               addresses={"rr_ip": UK_IP}, reschedule_after_s=UK_RESCHEDULE_S),
            # 2 vcpus: only n1 has two free cores once n2 and n3 run a unikernel each
            ms("client", "container", IMAGE, vcpus=2, arch=["amd64"], addresses={"rr_ip": "10.30.0.21"},
               # busybox-static's wget crashes without the host's /etc; nc speaks HTTP/1.0 well enough
               # timeout: nc -w bounds the connect, not an answer that stops coming (a guest killed
               # in the middle of one sends no reset)
               cmd=["sh", "-c", "while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc -w 3 %s 8080 || "
                                "echo no-answer; date +stamp-%%s; sleep 1; done" % UK_IP]),
            ms("forbid", "unikernel", FILES + "/guest-amd64-nofiles.tar.gz", arch=["amd64"], memory=64,
               emulation="forbid", unikernel={"flavor": "linux"}),
            ms("late", "container", IMAGE, cmd=["sleep", "3600"]),
        ]
        for s in svcs:
            s["microservice_namespace"] = mk
        sla = {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
            "applicationID": "", "application_name": "e2e", "application_namespace": mk,
            "application_desc": "e2e", "microservices": svcs}]}
        r = e.api("POST", "/api/v1/applications", json=sla)
        assert r.status_code == 201, r.text
        cls.app = r.json()["applications"][0]
        cls.sid = {}
        for sid in cls.app["microservices"]:
            doc = e.api("GET", "/api/v1/services/" + sid).json()
            cls.sid[doc["microservice_name"]] = sid

    @classmethod
    def tearDownClass(cls):
        if cls.edge:
            if os.environ.get("E2E_SHOW_LOGS"):
                for d in ("root", "cluster", "node-n1", "node-n2", "node-n3"):
                    print("==== %s\n%s" % (d, open(os.path.join(cls.edge.tmp, d + ".log")).read()[-4000:]))
            cls.edge.close()

    # ---- helpers ----
    def job(self, svc):
        return "e2e.%s.%s.%s" % (self.edge.marker, svc, self.edge.marker)

    def deploy(self, svc):
        r = self.edge.api("POST", "/api/v1/services/%s/instances" % self.sid[svc])
        self.assertEqual(r.status_code, 201, r.text)
        return r.json()["instance_number"]

    def instance(self, svc, n=0):
        lst = self.edge.api("GET", "/api/v1/services/%s/instances" % self.sid[svc]).json()
        return next((i for i in lst if i["instance_number"] == n), None)

    def wait_status(self, svc, status, n=0, timeout=120, node=None):
        def ok():
            i = self.instance(svc, n)
            if i and i["status"] in ("FAILED", "DEAD") and status not in ("FAILED", "DEAD"):
                raise AssertionError("%s.%d %s: %s" % (svc, n, i["status"], i.get("status_detail")))
            return i if i and i["status"] == status and (node is None or i["node_id"] == node) else None
        try:
            return wait_until("%s instance %d %s%s" % (svc, n, status, " on " + node if node else ""), ok,
                              timeout=timeout, interval=0.3)
        except AssertionError as err:
            raise AssertionError("%s; now: %r" % (err, self.instance(svc, n))) from None

    USAGE = ("cpu", "memory", "cpu_percent", "memory_percent", "cpu_history", "memory_history")

    def services_settled(self):
        """The service documents without what every report changes (instances' CPU and memory)."""
        services = self.edge.api("GET", "/api/v1/services").json()
        for s in services:
            for i in s.get("instance_list", []):
                for k in self.USAGE:
                    i.pop(k, None)
        return services

    def client_log(self):
        i = self.instance("client")
        path = os.path.join(self.edge.tmp, "node-" + i["node_id"], "container", "instances",
                            self.job("client") + ".instance.0", "output.log")
        with open(path, errors="replace") as f:
            return f.read()

    def answers_since(self, t0):
        """Guest answers ('ip: ...' lines) the client printed after time t0 (the client stamps)."""
        out, stamp, pending = [], 0, []
        for line in self.client_log().splitlines():
            if line.startswith("stamp-"):
                stamp = int(line[6:])
                if stamp >= t0:
                    out.extend(pending)
                pending = []
            elif line.startswith("ip: "):
                pending.append(line[4:].strip())
        return out

    def qemu_pids(self, instance_name):
        pids = []
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    with open("/proc/%s/cmdline" % e, "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv and b"qemu-system" in argv[0] and instance_name.encode() in argv:
                    pids.append(int(e))
        return pids

    def node_creds(self, name):
        with open(os.path.join(self.edge.tmp, "node-" + name, "node.json")) as f:
            return json.load(f)

    # ---- tests, in order ----
    def test_01_placement(self):
        e = self.edge
        self.deploy("ukarm")
        wait_until("ukarm placed on a node", lambda: (self.instance("ukarm") or {}).get("status") in (
            "NODE_SCHEDULED", "CREATING", "RUNNING"), timeout=30)
        self.deploy("ukamd")
        amd = self.wait_status("ukamd", "RUNNING", timeout=150)
        self.assertEqual(amd["node_id"], "n2", "the amd64 unikernel belongs on n2 (n3 has less free memory)")
        arm = self.wait_status("ukarm", "RUNNING", timeout=240)
        self.assertEqual(arm["node_id"], "n3", "only n3 emulates arm64")
        self.deploy("client")
        cl = self.wait_status("client", "RUNNING", timeout=90)
        self.assertEqual(cl["node_id"], "n1", "2 vcpus are free only on n1")
        explain = requests.get(e.cluster_url + "/api/v1/services/%s/explain" % self.job("client"), timeout=5).json()
        text = "\n".join(explain["lines"])
        for n in ("n2", "n3"):
            # refused for its cores: the client needs 2 vcpus and the unikernel there holds one
            line = next((l for l in explain["lines"] if l.startswith("node %s: " % n)), None)
            self.assertIsNotNone(line, text)
            m = re.match(r"node %s: insufficient resources: needs 2 vcpus / \d+ MB, free (\d+) vcpus / " % n, line)
            self.assertIsNotNone(m, text)
            self.assertLess(int(m.group(1)), 2, line)
        # emulation forbidden: no node has KVM. The root refuses from the cluster's aggregate and the
        # node list it carries: NO_QUALIFIED_WORKER_FOUND, naming each node's reason...
        self.deploy("forbid")
        bad = wait_until("forbid refused", lambda: (lambda i: i if i and i["status"] in (
            "NO_QUALIFIED_WORKER_FOUND", "NoActiveClusterWithCapacity") else None)(self.instance("forbid")),
            timeout=30)
        self.assertEqual(bad["status"], "NO_QUALIFIED_WORKER_FOUND", bad["status_detail"])
        self.assertRegex(bad["status_detail"], r"cluster edge1: .*emulation")
        for n, why in (("n1", r"unikernel"), ("n2", r"emulation"), ("n3", r"emulation")):
            self.assertRegex(bad["status_detail"], r"cluster edge1: node %s: [^;]*%s" % (n, why))
        # ...and the cluster, handed the same job as the root would send it, names each node's reason
        job = e.api("GET", "/api/v1/services/" + self.sid["forbid"]).json()
        job.pop("instance_list", None)
        job.update(instance_number=7, placement={"virtualization": "unikernel", "arch": "amd64",
                                                 "code": FILES + "/guest-amd64-nofiles.tar.gz"})
        r = requests.post(e.cluster_url + "/api/service/%s/7" % self.sid["forbid"], json=job, timeout=10,
                          headers={"Authorization": "Bearer " + e.cluster_token()})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["status"], "NO_QUALIFIED_WORKER_FOUND", r.text)
        lines = requests.get(e.cluster_url + "/api/v1/services/%s/explain" % self.job("forbid"), timeout=5).json()[
            "lines"]
        for n, why in (("n1", r"(?i)unikernel"), ("n2", r"(?i)emulation"), ("n3", r"(?i)emulation")):
            line = next((l for l in lines if n in l), None)
            self.assertIsNotNone(line, "no explanation for %s: %s" % (n, lines))
            self.assertRegex(line, why)
        self.assertEqual(self.instance("forbid", 7), None)

    def wait_answers(self, what, t0, timeout, pred=lambda answer: True):
        """Waits for guest answers (pred true) the client printed after t0; on failure shows the
        client's output and the ends of the cluster's and the nodes' logs."""
        try:
            return wait_until(what, lambda: [a for a in self.answers_since(t0) if pred(a)], timeout=timeout)
        except AssertionError as err:
            logs = "\n".join("--- %s:\n%s" % (d.name, d.tail(15)) for d in [self.edge.cluster, *self.nodes.values()])
            for short in sorted(self.nodes):
                ns = self.edge.hosts[short][0]
                rules = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "oakuk"],
                                       capture_output=True, text=True).stdout
                logs += "\n--- nft in %s:\n%s" % (short, rules)
            raise AssertionError("%s; client output ends: %s\n%s" % (err, self.client_log()[-600:], logs)) from None

    def test_02_container_reaches_unikernel_by_service_ip(self):
        t0 = int(time.time())
        self.wait_answers("client answers from the unikernel", t0, timeout=40)
        log = self.client_log()
        self.assertIn("oakuk-guest", log)
        self.assertIn("args: amd-e2e", log)
        n2_subnet = next(n["subnet"] for n in self.edge.cluster_nodes() if n["id"] == "n2")
        ans = self.answers_since(t0)
        self.assertTrue(ans[-1].startswith(n2_subnet.rsplit(".", 1)[0] + "."), (ans, n2_subnet))

    def test_03_unikernel_reaches_container_by_service_ip(self):
        # The test guest only serves, it never calls out; the reverse direction is checked from the
        # unikernel's node n2: a container there reaches a busybox httpd container on n3 through
        # service IP 10.30.0.22 (DNAT on n2, VXLAN to n3). n1's cores are all taken by the client.
        e = self.edge
        r = e.api("POST", "/api/v1/applications", json={
            "sla_version": "v2.0", "customerID": "Admin", "applications": [{
                "applicationID": "", "application_name": "back", "application_namespace": e.marker,
                "application_desc": "reverse", "microservices": [dict(ms(
                    "www", "container", IMAGE, cmd=["httpd", "-f", "-p", "8080", "-h", "/www"],
                    addresses={"rr_ip": "10.30.0.22"}, port="8080",
                    constraints=[{"type": "direct", "node": "n3"}]), microservice_namespace=e.marker)]}]})
        self.assertEqual(r.status_code, 201, r.text)
        sid = r.json()["applications"][0]["microservices"][0]
        self.sid["www"] = sid
        self.deploy("www")
        self.wait_status("www", "RUNNING", timeout=60, node="n3")
        # the caller: a container next to the unikernel on n2 (the test guest cannot call out)
        r = e.api("POST", "/api/v1/applications", json={
            "sla_version": "v2.0", "customerID": "Admin", "applications": [{
                "applicationID": "", "application_name": "call", "application_namespace": e.marker,
                "application_desc": "reverse", "microservices": [dict(ms(
                    "caller", "container", IMAGE, constraints=[{"type": "direct", "node": "n2"}],
                    cmd=["sh", "-c", "while true; do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | "
                                     "timeout 5 nc -w 3 10.30.0.22 8080; sleep 1; done"]), microservice_namespace=e.marker)]}]})
        self.assertEqual(r.status_code, 201, r.text)
        self.sid["caller"] = r.json()["applications"][0]["microservices"][0]
        self.deploy("caller")
        self.wait_status("caller", "RUNNING", timeout=60, node="n2")
        out = os.path.join(e.tmp, "node-n2", "container", "instances",
                           "call.%s.caller.%s.instance.0" % (e.marker, e.marker), "output.log")
        def read():
            with open(out, errors="replace") as f:
                return f.read()
        body = wait_until("n2's caller reaches the n3 container at 10.30.0.22", lambda: (lambda t: t if (
            "busybox container" in t) else None)(read()), timeout=30)
        r = e.api("DELETE", "/api/v1/services/%s/instances/0" % self.sid["caller"])
        self.assertEqual(r.status_code, 200, r.text)
        self.assertIn("hello from the busybox container", body)
        # n3 needs its core back for the unikernel that moves there in test_08
        r = e.api("DELETE", "/api/v1/services/%s/instances/0" % sid)
        self.assertEqual(r.status_code, 200, r.text)
        wait_until("www gone", lambda: self.instance("www") is None, timeout=30)

    def test_03b_oci_two_arch_index(self):
        """docs/unikernels.md "OCI images": `oakuk pkg` packs the amd64 and arm64 test guests as one
        index and pushes it; a service with that reference and no arch is resolved by the root (pinned
        to the index digest, arch = the index's) and runs the amd64 manifest under
        qemu-system-x86_64; one asking for arm64 lands on n3, the only node that runs arm64 (emulated),
        under qemu-system-aarch64; both answer on their service IPs from another node. Moving the tag
        afterwards changes nothing a new instance runs."""
        e = self.edge
        ref = "127.0.0.1:5000/e2e/guests:1"

        def pkg(cmd):
            p = subprocess.run([e.cli_bin, "pkg", "--from-tar", "amd64=" + os.path.join(e.guests, "guest-amd64-nofiles.tar.gz"),
                                "--from-tar", "arm64=" + os.path.join(e.guests, "guest-arm64-nofiles.tar.gz"),
                                "--cmd", cmd, "--push", ref, "--insecure-registry", "127.0.0.1:5000"],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            return p.stdout
        out = pkg("oci-e2e")
        pinned = next(l.split()[1] for l in out.splitlines() if l.startswith("pinned "))
        r = e.api("POST", "/api/v1/applications", json={
            "sla_version": "v2.0", "customerID": "Admin", "applications": [{
                "applicationID": "", "application_name": "oci", "application_namespace": e.marker,
                "application_desc": "OCI unikernels", "microservices": [
                    dict(ms("ociarm", "unikernel", ref, arch=["arm64"], memory=256, emulation="allow",
                            unikernel={"flavor": "linux"}, port="18081:8080", addresses={"rr_ip": "10.30.0.31"}),
                         microservice_namespace=e.marker),
                    dict(ms("ociany", "unikernel", ref, memory=96, emulation="allow", unikernel={"flavor": "linux"},
                            port="18080:8080", addresses={"rr_ip": "10.30.0.30"}), microservice_namespace=e.marker)]}]})
        self.assertEqual(r.status_code, 201, r.text)
        for sid in r.json()["applications"][0]["microservices"]:
            doc = e.api("GET", "/api/v1/services/" + sid).json()
            self.sid[doc["microservice_name"]] = sid
        anydoc = e.api("GET", "/api/v1/services/" + self.sid["ociany"]).json()
        self.assertEqual(anydoc["code"], pinned, anydoc)
        self.assertEqual(sorted(anydoc["arch"]), ["amd64", "arm64"], anydoc)
        # arm64 first: only n3 runs it, and each of n2 and n3 has one core left
        self.deploy("ociarm")
        self.wait_status("ociarm", "RUNNING", timeout=240, node="n3")
        self.deploy("ociany")
        self.wait_status("ociany", "RUNNING", timeout=240, node="n2")
        for svc, qemu in (("ociarm", b"qemu-system-aarch64"), ("ociany", b"qemu-system-x86_64")):
            pids = self.qemu_pids("oci.%s.%s.%s.instance.0" % (e.marker, svc, e.marker))
            self.assertEqual(len(pids), 1, svc)
            with open("/proc/%d/cmdline" % pids[0], "rb") as f:
                self.assertTrue(f.read().split(b"\0")[0].endswith(qemu), svc)
        client_ns = "/proc/%d/root/run/netns/%s.instance.0" % (self.nodes["n1"].pid, self.job("client"))
        fetch = ("import sys, urllib.request; "
                 "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")

        def answer(ip):
            return wait_until("HTTP on %s:8080 from the client's namespace on n1" % ip, lambda: (
                lambda p: p.stdout if p.returncode == 0 else None)(e2elib.sh(
                    "nsenter", "--net=" + client_ns, sys.executable, "-c", fetch, "http://%s:8080/" % ip,
                    check=False)), timeout=240)
        for ip in ("10.30.0.31", "10.30.0.30"):
            self.assertIn("args: oci-e2e", answer(ip))
        # the tag moves: what the service runs does not
        pkg("oci-moved")
        r = e.api("DELETE", "/api/v1/services/%s/instances/0" % self.sid["ociany"])
        self.assertEqual(r.status_code, 200, r.text)
        wait_until("ociany.0 gone", lambda: self.instance("ociany") is None, timeout=60)
        n = self.deploy("ociany")
        self.wait_status("ociany", "RUNNING", n=n, timeout=240, node="n2")
        body = answer("10.30.0.30")
        self.assertIn("args: oci-e2e", body)
        self.assertNotIn("oci-moved", body)
        for svc, k in (("ociany", n), ("ociarm", 0)):
            r = e.api("DELETE", "/api/v1/services/%s/instances/%d" % (self.sid[svc], k))
            self.assertEqual(r.status_code, 200, r.text)
        wait_until("OCI instances gone", lambda: self.instance("ociany", n) is None and self.instance("ociarm") is None,
                   timeout=60)

    def test_04_thesis_flow_over_compat_api(self):
        e = self.edge
        with open(os.path.join(SOURCE, "tests", "fixtures", "thesis", "aggregation-container.json")) as f:
            sla = json.load(f)
        m = sla["applications"][0]["microservices"][0]
        # never contact the lab's 192.168.1.173: local image, no lab addresses, the lab's arm boards -> amd64
        m["code"], m["cmd"], m["arch"] = IMAGE, ["sleep", "3600"], ["amd64"]
        url = e.root_url
        # the callers of test_03 are gone: wait until the root's view of the cluster shows their cores free
        wait_until("free cores in the root's aggregate", lambda: e.api("GET", "/api/v1/clusters/" + self.cid).json()[
            "cpu_cores"] >= 2, timeout=20)
        tok = requests.post(url + "/api/auth/login", json={"username": "Admin", "password": e.admin_password},
                            timeout=5).json()["token"]
        h = {"Authorization": "Bearer " + tok}
        r = requests.post(url + "/api/application", json=sla, headers=h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        apps = json.loads(r.json())
        app = next(a for a in apps if a["application_name"] == "testing")
        sid = app["microservices"][0]
        r = requests.post(url + "/api/service/%s/instance" % sid, headers=h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)

        def first():
            doc = json.loads(requests.get(url + "/api/service/" + sid, headers=h, timeout=5).json())
            return doc["instance_list"][0] if doc["instance_list"] and doc["instance_list"][0][
                "status"] == "RUNNING" else None
        try:
            inst = wait_until("thesis instance RUNNING", first, timeout=60)
        except AssertionError as err:
            raise AssertionError("%s: %s" % (err, requests.get(url + "/api/service/" + sid, headers=h,
                                                                 timeout=5).json())) from None
        n = inst["instance_number"]
        r = requests.delete(url + "/api/service/%s/instance/%d" % (sid, n), headers=h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        wait_until("instance_list empty", lambda: json.loads(requests.get(
            url + "/api/service/" + sid, headers=h, timeout=5).json())["instance_list"] == [], timeout=30)
        node = self.nodes[inst["node_id"]]
        ns_path = "/proc/%d/root/run/netns/testing.test.testaggr.test.instance.%d" % (node.pid, n)
        wait_until("its network namespace removed", lambda: not os.path.exists(ns_path), timeout=30)
        requests.delete(url + "/api/application/" + app["applicationID"], headers=h, timeout=10)

    def test_04b_thesis_flow_unikernel_over_compat_api(self):
        """The thesis's Appendix A as it shows it, with its nginx unikernel (the service record's
        descriptor): login, POST /api/application, take microservices[0], POST .../instance, GET
        until instance_list[0] is RUNNING and ready, the service answers on its port, DELETE, and the
        very next GET lists no instance; the native API shows it terminating until the cluster
        confirms, then its network namespace is gone on its node."""
        e = self.edge
        with open(os.path.join(SOURCE, "tests", "fixtures", "thesis", "nginx-unikernel.json")) as f:
            sla = json.load(f)
        m = sla["applications"][0]["microservices"][0]
        # only what the fixtures README allows: the local amd64 test guest instead of the lab's
        # 192.168.1.173, and emulation (this machine's KVM hangs guests: TCG)
        m["code"] = FILES + "/guest-amd64-nofiles.tar.gz"
        m["emulation"] = "allow"
        url = e.root_url
        wait_until("a free amd64 unikernel core in the root's aggregate", lambda: e.api(
            "GET", "/api/v1/clusters/" + self.cid).json()["aggregation_per_architecture"]["amd64"]["cpu_cores"] >= 1,
            timeout=20)
        tok = requests.post(url + "/api/auth/login", json={"username": "Admin", "password": e.admin_password},
                            timeout=5).json()["token"]
        h = {"Authorization": "Bearer " + tok}
        r = requests.post(url + "/api/application", json=sla, headers=h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        app = next(a for a in json.loads(r.json()) if a["application_name"] == "testing")
        sid = app["microservices"][0]
        r = requests.post(url + "/api/service/%s/instance" % sid, headers=h, timeout=10)
        self.assertEqual(r.status_code, 200, r.text)

        def service():
            return json.loads(requests.get(url + "/api/service/" + sid, headers=h, timeout=5).json())

        def first_ready():
            lst = service()["instance_list"]
            if lst and lst[0]["status"] in ("FAILED", "DEAD", "NoActiveClusterWithCapacity",
                                            "NO_QUALIFIED_WORKER_FOUND", "NO_WORKER_CAPACITY"):
                raise AssertionError("thesis unikernel %s: %s" % (lst[0]["status"], lst[0]["status_detail"]))
            return lst[0] if lst and lst[0]["status"] == "RUNNING" and lst[0].get("ready") is True else None
        try:
            inst = wait_until("thesis unikernel RUNNING and ready", first_ready, timeout=240, interval=0.5)
        except AssertionError as err:
            last = service()["instance_list"]
            hint = " (RUNNING, but its node never reported it ready)" if last and last[0]["status"] == "RUNNING" else ""
            raise AssertionError("%s%s: %s" % (err, hint, last)) from None
        self.assertIsInstance(inst["ready_ms"], int)
        n, node = inst["instance_number"], inst["node_id"]
        self.assertIn(node, ("n2", "n3"), "only n2 and n3 run unikernels")
        name = "testing.test.testaggr.test.instance.%d" % n
        # "port": "80:80": the node's port 80 reaches the guest's
        node_ip = e.hosts[node][1]
        body = wait_until("HTTP on %s's port 80" % node, lambda: (lambda r: r.text if r.ok else None)(
            requests.get("http://%s:80/" % node_ip, timeout=5)), timeout=30)
        self.assertIn("oakuk-guest", body)
        # "rr_ip": "10.30.30.30": another service reaches it by its service IP on port 80, here from
        # the client container's namespace on n1 (through n1's DNAT and the VXLAN to the node)
        # (busybox-static's wget crashes here: Python fetches it)
        client_ns = "/proc/%d/root/run/netns/%s.instance.0" % (self.nodes["n1"].pid, self.job("client"))
        fetch = ("import sys, urllib.request; "
                 "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
        body = wait_until("HTTP on 10.30.30.30:80 from the client's namespace", lambda: (
            lambda p: p.stdout if p.returncode == 0 else None)(e2elib.sh(
                "nsenter", "--net=" + client_ns, sys.executable, "-c", fetch, "http://10.30.30.30:80/", check=False)),
            timeout=30)
        self.assertIn("oakuk-guest", body)
        # The cluster is held (SIGSTOP) while the DELETE is made, so that what the APIs show before
        # it confirms is seen for certain; it goes on right after.
        os.kill(e.cluster.pid, signal.SIGSTOP)
        try:
            r = requests.delete(url + "/api/service/%s/instance/%d" % (sid, n), headers=h, timeout=10)
            self.assertEqual(r.status_code, 200, r.text)
            self.assertEqual(service()["instance_list"], [], "the GET after the DELETE still lists the instance")
            native = e.api("GET", "/api/v1/services/%s/instances" % sid).json()
            self.assertEqual([(i["instance_number"], i["status"]) for i in native], [(n, "UNDEPLOYED")], native)
            self.assertIn("to confirm the removal", native[0]["status_detail"])
        finally:
            os.kill(e.cluster.pid, signal.SIGCONT)
        wait_until("the cluster's confirmation: the native API drops it too", lambda: e.api(
            "GET", "/api/v1/services/%s/instances" % sid).json() == [], timeout=30)
        ns_path = "/proc/%d/root/run/netns/%s" % (self.nodes[node].pid, name)
        wait_until("its network namespace removed on %s" % node, lambda: not os.path.exists(ns_path), timeout=60)
        wait_until("its QEMU gone", lambda: not self.qemu_pids(name), timeout=30)
        self.assertEqual(service()["instance_list"], [])
        requests.delete(url + "/api/application/" + app["applicationID"], headers=h, timeout=10)

    def test_04c_dashboard(self):
        """The dashboard (docs/dashboard.md) in headless Chromium against this edge: log in; register
        the thesis descriptor (its nginx unikernel and its aggregation container) with a mistake and
        see it at its path; fix and register; deploy the unikernel and the container and see both
        RUNNING and ready without a reload; explain a placement; open the unikernel's console;
        undeploy it; scale the container to 2 (two cores are free for this test, the earlier tests'
        instances hold the rest), then to 0; delete the application; log out. Screenshots of each
        step in meson-logs/e2e-dashboard/."""
        import browserlib
        from browserlib import By, wait
        e = self.edge
        with open(os.path.join(SOURCE, "tests", "fixtures", "thesis", "nginx-unikernel.json")) as f:
            sla = json.load(f)
        with open(os.path.join(SOURCE, "tests", "fixtures", "thesis", "aggregation-container.json")) as f:
            aggr = json.load(f)["applications"][0]["microservices"][0]
        uk = sla["applications"][0]["microservices"][0]
        # only what the fixtures README allows: local images, no lab addresses, TCG
        uk["code"], uk["emulation"] = FILES + "/guest-amd64-nofiles.tar.gz", "allow"
        aggr.update(microservice_name="aggr", code=IMAGE, cmd=["sleep", "3600"], arch=["amd64"],
                    addresses={"rr_ip": "10.30.30.31"})
        sla["applications"][0]["microservices"].append(aggr)
        bad = json.loads(json.dumps(sla))
        bad["applications"][0]["microservices"][0]["arch"] = ["amd46"]
        bad_path = os.path.join(e.tmp, "thesis-with-a-mistake.json")
        with open(bad_path, "w") as f:
            json.dump(bad, f, indent=2)
        wait_until("a free amd64 unikernel core and 2 cores in the root's aggregate", lambda: (lambda c: c[
            "aggregation_per_architecture"]["amd64"]["cpu_cores"] >= 1 and c["cpu_cores"] >= 2)(
            e.api("GET", "/api/v1/clusters/" + self.cid).json()), timeout=30)
        b = browserlib.chromium(1280, 1000)
        d = browserlib.Dashboard(b, e.root_url, os.path.join(BUILD, "meson-logs", "e2e-dashboard"))
        app_id = None
        try:
            d.open()
            d.login("Admin", e.admin_password)
            d.logged_in()
            d.shot("logged-in")
            d.view("register")
            d.upload(bad_path)
            self.assertIn("refused (1 problem)", d.register())
            self.assertEqual([p for p, _ in d.problems()], ["applications[0].microservices[0].arch[0]"])
            self.assertIn('unknown architecture "amd46"', d.problems()[0][1])
            d.shot("mistake-at-its-path")
            d.set_descriptor(sla)
            self.assertIn("registered: testing.test.", d.register())
            d.shot("registered")
            app_id = next(a["applicationID"] for a in e.api("GET", "/api/v1/applications").json()
                          if a["application_name"] == "testing")
            d.view("apps")
            wait("both services listed", lambda: d.card("testaggr.test") and d.card("aggr.test"), timeout=10)
            d.press("testaggr.test", "button.deploy")
            d.press("aggr.test", "button.deploy")

            def ready(name, count):
                rows = d.instances(name)
                bad = [r for r in rows if r["Status"] in ("FAILED", "DEAD", "NO_QUALIFIED_WORKER_FOUND")]
                if bad:
                    raise AssertionError("%s: %s" % (name, bad))
                good = [r for r in rows if r["Status"] == "RUNNING" and r["Ready"] == "yes"]
                return rows if len(good) == count == len(rows) else None
            seen = lambda: (d.instances("testaggr.test"), d.instances("aggr.test"))  # noqa: E731
            wait("the container RUNNING and ready", lambda: ready("aggr.test", 1), timeout=60, seen=seen)
            d.shot("container-ready", card="aggr.test")
            uk_row = wait("the unikernel RUNNING and ready", lambda: ready("testaggr.test", 1), timeout=240,
                          interval=0.5, seen=seen)[0]
            self.assertEqual((uk_row["Virtualization"], uk_row["Arch"], uk_row["Accel"]), ("unikernel", "amd64", "TCG"))
            self.assertIn(uk_row["Node"], ("n2", "n3"))
            c_row = d.instances("aggr.test")[0]
            self.assertEqual((c_row["Virtualization"], c_row["Accel"]), ("container", "—"))
            self.assertRegex(uk_row["Memory"], r"^\d+(\.\d)? MB$")
            d.shot("both-ready", card="testaggr.test")
            d.press("testaggr.test", "button.explain")
            text = wait("the explanation", lambda: d.card("testaggr.test").find_element(
                By.CSS_SELECTOR, "pre.explanation").text, timeout=15)
            self.assertIn("Instance 0: RUNNING on %s" % uk_row["Node"], text)
            self.assertIn("Nodes of cluster", text)
            d.shot("explained", card="testaggr.test")
            d.row_button("testaggr.test", 0, "button.console")
            api_lines = e.api("GET", "/api/v1/services/%s/instances/0/logs" % next(
                s["microserviceID"] for s in e.api("GET", "/api/v1/services").json()
                if s["job_name"] == "testing.test.testaggr.test")).json()["lines"]
            self.assertTrue(api_lines)
            wait("the console shows the guest's output", lambda: api_lines[0] in d.text("#console-text"), timeout=15)
            self.assertIn("node " + uk_row["Node"], d.text("#console-status"))
            d.shot("console")
            d.find("#console-close").click()
            # the edge has two cores free for this test (the earlier tests' instances hold the rest):
            # the unikernel's goes to the container's second instance
            d.row_button("testaggr.test", 0, "button.undeploy")
            wait("the unikernel gone", lambda: d.instances("testaggr.test") == [], timeout=90, seen=seen)
            d.scale("aggr.test", 2)
            wait("two containers RUNNING and ready", lambda: ready("aggr.test", 2), timeout=90, seen=seen)
            d.shot("scaled-to-2", card="aggr.test")
            d.scale("aggr.test", 0)
            wait("every instance gone", lambda: d.instances("aggr.test") == [] and d.instances("testaggr.test") == [],
                 timeout=90, seen=seen)
            d.shot("undeployed", card="testaggr.test")
            d.view("infra")
            nodes = wait("the nodes listed", lambda: [r.text for r in b.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")]
                         if len(b.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")) == 3 else None)
            self.assertTrue(any(r.startswith("n2 ") and "TCG" in r for r in nodes), nodes)
            d.shot("clusters-and-nodes")
            d.view("apps")
            d.find("section.app[data-app='%s'] button.delete-app" % app_id).click()
            b.switch_to.alert.accept()
            wait("the application gone", lambda: not b.find_elements(By.CSS_SELECTOR, "section.app[data-app='%s']" % app_id),
                 timeout=15)
            app_id = None
            d.find("#logout").click()
            wait("the login form", lambda: d.find("#login-view").is_displayed())
            d.shot("logged-out")
            self.assertEqual(d.console_problems(expected_statuses=(400,)), [])
        finally:
            b.quit()
            if app_id:
                e.api("DELETE", "/api/v1/applications/" + app_id)

    def test_05_security(self):
        e = self.edge
        sid = self.sid["ukamd"]
        endpoints = [("GET", "/api/applications/"), ("GET", "/api/application/" + self.app["applicationID"]),
                     ("POST", "/api/application/"), ("GET", "/api/service/" + sid),
                     ("POST", "/api/service/%s/instance" % sid), ("DELETE", "/api/service/%s/instance/0" % sid),
                     ("GET", "/api/clusters/"), ("GET", "/api/v1/services"), ("GET", "/api/v1/clusters"),
                     ("POST", "/api/v1/applications"), ("POST", "/api/v1/clusters/tokens"),
                     ("DELETE", "/api/v1/services/" + sid), ("POST", "/api/information/" + self.cid),
                     ("POST", "/api/v1/clusters/%s/status" % self.cid)]
        before = self.services_settled()
        for method, path in endpoints:
            for hdr in ({}, {"Authorization": "Bearer not-a-token"}):
                r = requests.request(method, e.root_url + path, headers=hdr, json={}, timeout=5)
                self.assertEqual(r.status_code, 401, (method, path, hdr, r.text))
        self.assertEqual(requests.get(e.root_url + "/healthz", timeout=5).status_code, 200)
        self.assertEqual(requests.post(e.root_url + "/api/auth/login", json={"username": "Admin", "password": "x"},
                                       timeout=5).status_code, 401)
        # malformed JSON on every body-taking endpoint: 400 with a message, nothing changes
        for method, path in [("POST", "/api/application/"), ("POST", "/api/v1/applications"),
                             ("PUT", "/api/application/" + self.app["applicationID"]),
                             ("POST", "/api/auth/login"), ("POST", "/api/v1/clusters/tokens")]:
            r = e.api(method, path, data=b"{broken")
            self.assertEqual(r.status_code, 400, (path, r.text))
            self.assertIn("message", r.json()["error"])
        for path in ["/api/node/register"]:
            r = requests.post(e.cluster_url + path, data=b"{broken", timeout=5)
            self.assertEqual(r.status_code, 400, (path, r.text))
        self.assertEqual(self.services_settled(), before)
        # MQTT: n1's credentials cannot publish on n2's topics (the broker's ACL): n2 never gets the job
        # and the cluster never takes the report. (No spy with n2's login: it would replace n2's session.)
        c1 = self.node_creds("n1")
        job = {"job_name": "evil.x.y.z", "instance_number": 0, "virtualization": "container", "code": IMAGE}

        def pub(creds, topic, payload):
            return subprocess.run(["mosquitto_pub", "-h", CTL_IP, "-p", str(e.mqtt_port), "--cafile", e.ca_file, "-u",
                                   creds["mqtt_username"], "-P", creds["mqtt_password"], "-q", "1", "-t", topic,
                                   "-m", payload], capture_output=True, timeout=10).returncode
        pub(c1, "nodes/n2/control/deploy", json.dumps(job))
        pub(c1, "nodes/n2/information", json.dumps({"id": "n2", "memory": 999999}))
        # malformed payloads on every topic a node may write (and on its own control topics)
        rejected = self.metric("oakuk_cluster_mqtt_rejected_total")
        for topic in ("information", "job", "lwt"):
            pub(c1, "nodes/n1/" + topic, "{broken")
        wait_until("cluster counted the rejections", lambda: self.metric(
            "oakuk_cluster_mqtt_rejected_total") >= rejected + 2, timeout=10)
        time.sleep(1.5)
        self.assertTrue(self.nodes["n1"].alive() and self.nodes["n2"].alive())
        self.assertNotIn("evil", self.nodes["n2"].text(), "n1 published on n2's control topic")
        self.assertNotIn("999999", json.dumps([n for n in e.cluster_nodes() if n["id"] == "n2"]),
                         "n1 published n2's report")
        # the broker binds client ids to user names: every connection above with n1's login replaced
        # n1's own (which reconnected), so nobody holds two sessions of one node. What a node does
        # with malformed messages on its control topics (only the cluster may publish there) is
        # test-node.py's test_03.
        self.assertIn("broker connection lost", self.nodes["n1"].text())
        self.assertEqual(self.services_settled(), before)
        self.assertEqual(self.instance("client")["status"], "RUNNING")
        e.wait_nodes(["n1", "n2", "n3"])

    def metric(self, name):
        text = requests.get(self.edge.cluster_url + "/metrics", timeout=5).text
        return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")))

    def test_05b_tls_on_every_hop(self):
        """docs/security.md: root, cluster and broker speak only TLS under the root's CA. A plaintext
        client, a client trusting another CA and a node presenting another node's credential are
        each refused, and nothing changes."""
        e = self.edge
        before = self.services_settled()
        c1 = self.node_creds("n1")
        other = os.path.join(e.tmp, "other-ca")
        os.makedirs(other, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=another CA", "-days", "1", "-keyout", os.path.join(other, "ca.key"),
                        "-out", os.path.join(other, "ca.crt")], check=True, capture_output=True)
        other_ca = os.path.join(other, "ca.crt")
        for url in (e.root_url, e.cluster_url):
            # plaintext HTTP to a TLS port: no answer but a closed connection
            with self.assertRaises(requests.exceptions.ConnectionError, msg=url):
                requests.get(url.replace("https://", "http://") + "/healthz", timeout=5)
            # a client that trusts another CA refuses the server
            with self.assertRaises(requests.exceptions.SSLError, msg=url):
                requests.get(url + "/healthz", timeout=5, verify=other_ca)
            self.assertEqual(requests.get(url + "/healthz", timeout=5).status_code, 200)

        def mqtt(*tls):
            return subprocess.run(["mosquitto_pub", "-h", CTL_IP, "-p", str(e.mqtt_port)] + list(tls) +
                                  ["-u", c1["mqtt_username"], "-P", c1["mqtt_password"], "-q", "1", "-t",
                                   "nodes/n1/information", "-m", "{broken"], capture_output=True, text=True,
                                  timeout=20)
        self.assertNotEqual(mqtt().returncode, 0, "the broker took a plaintext connection")
        self.assertNotEqual(mqtt("--cafile", other_ca).returncode, 0, "a client trusting another CA connected")
        self.assertEqual(mqtt("--cafile", e.ca_file).returncode, 0)
        # the CLI refuses a root that its --ca-file did not sign
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(e.tmp, "config-other-ca"))
        p = subprocess.run([e.cli_bin, "login", e.root_url, "--ca-file", other_ca, "--password-stdin"],
                           input=e.admin_password + "\n", env=env, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("refused", p.stderr)
        # a node presenting n1's credential as n2 (with or without a join token): 409, n2 untouched
        n2_before = next(n for n in e.cluster_nodes() if n["id"] == "n2")
        caps = report("n2", 99999, ip=UNDERLAY + ".99")
        for body, refusal in (({"capabilities": caps, "credential": c1["mqtt_password"]}, (401, "unauthorized")),
                              ({"capabilities": caps, "credential": c1["mqtt_password"],
                                "join_token": e.node_join_token}, (409, "name_taken"))):
            r = requests.post(e.cluster_url + "/api/node/register", json=body, timeout=10)
            self.assertEqual((r.status_code, r.json()["error"]["code"]), refusal, r.text)
        n2 = next(n for n in e.cluster_nodes() if n["id"] == "n2")
        self.assertTrue(n2["active"])
        self.assertEqual(n2.get("ip"), n2_before.get("ip"))
        self.assertNotEqual(n2.get("ip"), UNDERLAY + ".99")
        self.assertEqual(self.services_settled(), before)
        e.wait_nodes(["n1", "n2", "n3"])

    def test_06_restart_root_and_cluster(self):
        e = self.edge
        before = {s: self.instance(s) for s in ("ukamd", "ukarm", "client")}
        pids = {s: self.qemu_pids(self.job(s) + ".instance.0") for s in ("ukamd", "ukarm")}
        self.assertTrue(all(pids.values()), pids)
        e.restart_root()
        e.restart_cluster()
        e.wait_nodes(["n1", "n2", "n3"])
        time.sleep(2)
        t0 = int(time.time())
        for s, i in before.items():
            now = self.instance(s)
            self.assertEqual((now["status"], now["node_id"]), ("RUNNING", i["node_id"]), s)
        for s, p in pids.items():
            self.assertEqual(self.qemu_pids(self.job(s) + ".instance.0"), p, "%s's QEMU was restarted" % s)
        self.wait_answers("client still gets answers", t0, timeout=30)

    def test_07_broker_restart_and_deploy_during_outage(self):
        e = self.edge
        pid = e.broker_pid()
        open(self.gate, "w").close()
        os.kill(pid, signal.SIGKILL)
        wait_until("cluster sees the broker gone", lambda: self.metric("oakuk_cluster_mqtt_connected") == 0)
        n = self.deploy("late")
        time.sleep(2)
        os.unlink(self.gate)
        wait_until("cluster reconnected", lambda: self.metric("oakuk_cluster_mqtt_connected") == 1, timeout=20)
        self.wait_status("late", "RUNNING", n=n, timeout=60)
        e.wait_nodes(["n1", "n2", "n3"], timeout=20)
        self.assertEqual(self.metric("oakuk_cluster_deliveries_pending"), 0)
        # its core is given back for test_08
        r = e.api("DELETE", "/api/v1/services/%s/instances/%d" % (self.sid["late"], n))
        self.assertIn(r.status_code, (200, 202, 204), r.text)
        wait_until("late gone", lambda: self.instance("late", n) is None, timeout=30)

    def test_07b_apply_rolls_a_unikernel_to_a_new_image(self):
        """oakuk apply of a changed descriptor (docs/cli.md "apply"): a Unikraft-format unikernel
        service rolls from the 0.15.0 test kernel to the 0.16.3 one with a ready instance at every
        moment (sampled as fast as the API answers); then a change to an image that does not exist fails on its
        node, is rolled back, and the old instance never stops being ready. Runs while n2 and n3
        each have one core free (the old and the new instance need one each)."""
        e = self.edge
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(e.tmp, "cli-config"))
        job = "roll.%s.ukroll.%s" % (e.marker, e.marker)

        def sla_file(code):
            svc = ms("ukroll", "unikernel", FILES + "/" + code, arch=["amd64"], memory=32, cmd=["stay"],
                     emulation="allow", readiness={"serial": "Hello from the oakuk test kernel"},
                     microservice_namespace=e.marker)
            doc = {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
                "applicationID": "", "application_name": "roll", "application_namespace": e.marker,
                "application_desc": "rolling update", "microservices": [svc]}]}
            path = os.path.join(e.tmp, "roll-%s.json" % code.split(".tar")[0])
            with open(path, "w") as f:
                json.dump(doc, f)
            return path

        def apply(code, *args):
            return subprocess.run([e.cli_bin, "apply", sla_file(code), "--timeout", "120", *args], env=env,
                                  capture_output=True, text=True, timeout=400)

        def instances():
            return e.api("GET", "/api/v1/services/%s/instances" % sid).json()

        p = apply("ukguest-0.15.0.tar.gz")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        sid = re.search(r"service %s ([0-9a-f]{24}): created" % re.escape(job), p.stdout).group(1)
        r = e.api("POST", "/api/v1/services/%s/instances" % sid)
        self.assertEqual(r.status_code, 201, r.text)
        wait_until("instance 0 ready", lambda: any(i["ready"] for i in instances()), timeout=120, interval=0.3)
        samples, errors, stop = [], [], threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    got = instances()
                    samples.append((time.time(), sorted(i["instance_number"] for i in got if i["ready"])))
                except Exception as err:  # noqa: BLE001 -- reported below
                    errors.append(repr(err))
                time.sleep(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            t0 = time.time()
            p = apply("ukguest-0.16.3.tar.gz")
            rolled = time.time() - t0
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("updated to revision 2 (was 1)", p.stdout)
            self.assertRegex(p.stdout, r"instance 1 ready after [\d.]+ s; instance 0 deleted")
            new = self.wait_until_only(instances, 1)
            self.assertEqual((new["revision"], new["ready"]), (2, True), new)
            log = e.api("GET", "/api/v1/services/%s/instances/1/logs" % sid).json()
            self.assertIn("0.16.3", json.dumps(log))
            # an image that is not there: the node fails it, the rollout deletes it and rolls back
            p = apply("ukguest-missing.tar.gz")
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            self.assertIn("the rollout to revision 3 failed: instance 2: FAILED", p.stderr)
            self.assertIn("rolled back: revision 2 is current again", p.stdout)
            self.assertEqual(e.api("GET", "/api/v1/services/" + sid).json()["revision"], 2)
        finally:
            stop.set()
            sampler.join(timeout=10)
        self.assertEqual(errors, [])
        self.assertGreater(len(samples), 5)
        empty = [t for t, ready in samples if not ready]
        self.assertEqual(empty, [], "moments with no ready instance during the rollout")
        seen = {n for t, ready in samples for n in ready}  # it watched the change itself
        self.assertTrue({0, 1} <= seen, seen)
        # and exactly, from the nodes' own logs: instance 0 was stopped after instance 1 was ready
        logs = "".join(open(os.path.join(e.tmp, "node-%s.log" % n), errors="replace").read() for n in ("n2", "n3"))

        def when(event, n):
            m = re.search(r"time=(\S+) .*event=%s instance=%s\.instance\.%d " % (event, re.escape(job), n), logs)
            self.assertIsNotNone(m, "no event=%s of instance %d in the nodes' logs" % (event, n))
            return m.group(1)
        self.assertLess(when("ready", 1), when("delete", 0))
        self.assertEqual(self.wait_until_only(instances, 1)["ready"], True)
        print("rolled a unikernel to a new image in %.1f s (%d samples, never without a ready instance)"
              % (rolled, len(samples)), file=sys.stderr)
        # its cores are given back for test_08
        r = e.api("DELETE", "/api/v1/applications/" + e.api("GET", "/api/v1/services/" + sid).json()["applicationID"])
        self.assertEqual(r.status_code, 200, r.text)
        wait_until("the rolled service's QEMU gone", lambda: not self.qemu_pids(job + ".instance.1"), timeout=60)

    def wait_until_only(self, instances, n):
        """Waits until instance n is the only one the service lists (the others' removal confirmed)."""
        return wait_until("only instance %d left" % n, lambda: (lambda lst: lst[0] if [i["instance_number"] for i in lst]
                                                                == [n] else None)(instances()), timeout=60)

    def test_08_node_killed_unikernel_moves(self):
        e = self.edge
        name = self.job("ukamd") + ".instance.0"
        qemu = self.qemu_pids(name)
        self.assertTrue(qemu)
        log_before = len(e.cluster.text())
        self.nodes["n2"].kill()
        for p in qemu:
            os.kill(p, signal.SIGKILL)
        t_kill = time.time()
        # a partition is not a death: kept on the silent node (and said so) until reschedule_after_s
        kept = wait_until("ukamd kept on silent n2", lambda: (lambda i: i if i and "kept there" in
                          i.get("status_detail", "") else None)(self.instance("ukamd")), timeout=NODE_TIMEOUT + 10)
        self.assertEqual(kept["node_id"], "n2")
        self.assertLess(time.time() - t_kill, UK_RESCHEDULE_S)
        moved = self.wait_status("ukamd", "RUNNING", node="n3", timeout=UK_RESCHEDULE_S + 10 + 60)
        t_moved = time.time() - t_kill
        # the move itself starts within reschedule_after_s + 10 s; the rest is the TCG boot
        self.assertEqual(moved["node_id"], "n3")
        n3_subnet = next(n["subnet"] for n in e.cluster_nodes() if n["id"] == "n3")
        t0 = int(time.time())
        ans = self.wait_answers("the service IP follows to n3", t0, timeout=30,
                                pred=lambda a: a.startswith(n3_subnet.rsplit(".", 1)[0] + "."))
        self.assertTrue(ans)
        print("unikernel moved and RUNNING %.1f s after the kill" % t_moved, file=sys.stderr)
        # it moved because n2 stayed silent for reschedule_after_s, not for some other reason
        ev = e.cluster.text()[log_before:]
        m = re.search(r'event=schedule instance=%s node=n3 .*msg="moved off node n2 \(no report for (\d+) s\)"'
                      % re.escape(name), ev)
        self.assertIsNotNone(m, ev[-3000:])
        self.assertGreaterEqual(int(m.group(1)), UK_RESCHEDULE_S)

    def test_09_main_job_once(self):
        e = self.edge
        ns = e.tag + "-job"
        e._ns_add(ns)
        env = dict(os.environ, OAKUK_BUILDDIR=BUILD)
        # nsenter, not `ip netns exec`: the latter's private /sys hides the cgroup tree
        p = subprocess.run(["nsenter", "--net=/run/netns/" + ns, os.path.join(SOURCE, "scripts", "edge.sh"), "--once",
                            "--state-dir", os.path.join(e.tmp, "edge-job")], env=env, capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        self.assertIn("oakuk-guest", p.stdout)
        self.assertIn("args: hello-from-the-unikernel", p.stdout)
        self.assertFalse(os.path.exists("/run/netns/oakuk-edge-node"), "edge.sh left its namespace")


if __name__ == "__main__":
    BUILD, SOURCE = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    del sys.argv[1:3]
    unittest.main(verbosity=2, failfast=True)

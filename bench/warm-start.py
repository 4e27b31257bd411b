#!/usr/bin/python3
"""bench/warm-start (issue 17): deploy request -> ready through oakuk-root, oakuk-cluster and
oakuk-node, for the same service started four ways, in one run, interleaved:

  cold boot         unikernel.start "boot": QEMU boots the kernel;
  snapshot restore  unikernel.start "snapshot": QEMU loads the service's snapshot (saved by the
                    warm-up deploy, which booted) and lets it run;
  pooled restore    unikernel.warm_pool 1: a QEMU the node started ahead (after the warm-up,
                    whose instance saved the snapshot) takes the deploy; the pool lingers 60 s
                    after a service's last instance, so it is there for every run;
  busybox container busybox httpd with runc, the reference.

for the amd64 Linux test guest (busybox httpd, ready when port 8080 answers) and the multiboot test
kernel (ready when its console says "ukguest: ticking"), each with a network (the NAT layout) and
1 vCPU. A scratch edge in namespaces (tests/e2e/e2elib.py, underlay 172.31.247.0/24). It prints,
per variant, the median and range of request -> ready (the root's ready_ms) and of the node's own
part (deploy arrival -> ready, from its phase metrics), and the ratios, and checks the issue's goals
on this machine.

Usage: warm-start.py BUILD_DIR [--runs N]    (root)"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "thesis"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import bench_thesis  # noqa: E402  (the edge's deploy/undeploy helpers and the node's phase metrics)

PREFIX = "172.31.247"
PHASES = ("fetch", "unpack", "network", "boot", "ready")


def log(msg):
    print("warm-start: " + msg, flush=True)


class WarmStart(bench_thesis.Bench):
    def up(self):
        e = self.edge_start("ws", PREFIX)
        files = {}
        for name in ("guest-amd64-nofiles.tar.gz", "ukguest-0.16.3.tar.gz"):
            files[name] = os.path.join(e.guests, name)
            if not os.path.exists(files[name]):
                raise SystemExit("warm-start: %s is missing (build the test guests)" % files[name])
        self.serve_files(files)
        self.registries()
        self.accel = self.daemons_up()

    def register(self):
        mk = self.e.marker
        base = "http://%s:8000/" % self.ctl_ip

        def svc(name, virt, code, **kw):
            m = {"microserviceID": "", "microservice_name": name, "microservice_namespace": mk,
                 "virtualization": virt, "cmd": [], "memory": 96, "vcpus": 1, "code": code,
                 "arch": ["amd64"], "restart": "never"}
            m.update(kw)
            return m
        linux = dict(emulation="allow", cmd=["web"], readiness={"tcp": 8080})
        multiboot = dict(emulation="allow", cmd=["ticks"], memory=32, readiness={"serial": "ukguest: ticking"})
        self.services = {
            ("linux", "cold boot"): svc("lxcold", "unikernel", base + "guest-amd64-nofiles.tar.gz",
                                        unikernel={"flavor": "linux", "net": "nat"}, **linux),
            ("linux", "snapshot restore"): svc("lxsnap", "unikernel", base + "guest-amd64-nofiles.tar.gz",
                                               unikernel={"flavor": "linux", "start": "snapshot"}, **linux),
            ("multiboot", "cold boot"): svc("mbcold", "unikernel", base + "ukguest-0.16.3.tar.gz",
                                            unikernel={"net": "nat"}, **multiboot),
            ("multiboot", "snapshot restore"): svc("mbsnap", "unikernel", base + "ukguest-0.16.3.tar.gz",
                                                   unikernel={"start": "snapshot"}, **multiboot),
            ("linux", "pooled restore"): svc("lxpool", "unikernel", base + "guest-amd64-nofiles.tar.gz",
                                             unikernel={"flavor": "linux", "start": "snapshot", "warm_pool": 1},
                                             **linux),
            ("multiboot", "pooled restore"): svc("mbpool", "unikernel", base + "ukguest-0.16.3.tar.gz",
                                                 unikernel={"start": "snapshot", "warm_pool": 1}, **multiboot),
            ("container", "busybox"): svc("ctr", "container", "127.0.0.1:5000/bench/busybox:1",
                                          cmd=["httpd", "-f", "-p", "80", "-h", "/www"], readiness={"tcp": 80}),
        }
        sla = {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
            "applicationID": "", "application_name": "warm", "application_namespace": mk,
            "application_desc": "bench/warm-start", "microservices": list(self.services.values())}]}
        r = self.e.api("POST", "/api/v1/applications", json=sla)
        if r.status_code != 201:
            raise SystemExit("warm-start: registration refused: " + r.text)
        key_of = {m["microservice_name"]: k for k, m in self.services.items()}
        self.sid = {}
        for sid in r.json()["applications"][0]["microservices"]:
            doc = self.e.api("GET", "/api/v1/services/" + sid).json()
            self.sid[key_of[doc["microservice_name"]]] = (sid, doc["job_name"])

    def run(self):
        for key in self.services:  # warm-up: images cached, snapshots saved
            n, inst = self.deploy(key)
            log("warm-up %s, %s: ready after %d ms" % (key[0], key[1], inst["ready_ms"]))
            self.undeploy(key, n)
        self.samples = {key: [] for key in self.services}
        self.phases = {}
        for k in range(self.args.runs):
            for key in self.services:
                virt = "container" if key[0] == "container" else "unikernel"
                before = bench_thesis.metrics(self.e, "n1")
                n, inst = self.deploy(key)
                after = bench_thesis.metrics(self.e, "n1")
                phases = {p: (after.get((p, virt), (0, 0))[0] - before.get((p, virt), (0, 0))[0]) * 1000
                          for p in PHASES}
                node_ms = sum(phases.values())
                self.samples[key].append((inst["ready_ms"], node_ms))
                self.phases.setdefault(key, []).append(phases)
                log("run %d %s, %s: ready after %d ms (node %.0f ms)" % (k + 1, key[0], key[1], inst["ready_ms"],
                                                                         node_ms))
                self.undeploy(key, n)

    def report(self):
        med = {}
        print()
        print("warm-start: deploy request -> ready through the node, %d interleaved runs each, accel %s"
              % (self.args.runs, self.accel))
        print("  %-34s %10s %14s %12s" % ("", "median ms", "range ms", "node median"))
        for key, s in self.samples.items():
            total = [t for t, _ in s]
            node = [m for _, m in s]
            med[key] = statistics.median(total)
            print("  %-34s %10.0f %7.0f..%-6.0f %12.0f" % ("%s, %s" % key, med[key], min(total), max(total),
                                                          statistics.median(node)))
        print("warm-start: the node's part by phase (medians, ms):")
        print("  %-34s" % "" + "".join("%9s" % p for p in PHASES))
        for key, runs in self.phases.items():
            print("  %-34s" % ("%s, %s" % key) + "".join("%9.1f" % statistics.median(r[p] for r in runs)
                                                          for p in PHASES))
        ctr = med[("container", "busybox")]
        for guest in ("linux", "multiboot"):
            cold = med[(guest, "cold boot")]
            for how in ("snapshot restore", "pooled restore"):
                ours = med[(guest, how)]
                print("warm-start: %s: ours (%s) %.0f ms, reference (cold boot) %.0f ms, ratio %.1fx; container "
                      "%.0f ms, ours/container %.2f" % (guest, how, ours, cold, cold / ours, ctr, ours / ctr))
        lx = med[("linux", "cold boot")] / med[("linux", "snapshot restore")]
        print("warm-start: goal 'Linux guest restore >= 20x faster than its cold boot': %.1fx, %s"
              % (lx, "met" if lx >= 20 else "NOT met"))
        mb = med[("multiboot", "pooled restore")]
        print("warm-start: goal 'pooled restore of the multiboot guest <= the container': %.0f ms vs %.0f ms, %s"
              % (mb, ctr, "met" if mb <= ctr else "NOT met"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("warm-start: run as root (namespaces, QEMU, runc)")
    a.build = os.path.abspath(a.build)
    b = WarmStart(a)
    try:
        b.up()
        b.register()
        b.run()
    finally:
        b.down()
    b.report()


if __name__ == "__main__":
    main()

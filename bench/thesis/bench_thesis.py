#!/usr/bin/python3
"""bench-thesis: the evaluation of the thesis oakuk follows, repeated on this machine with any images
(docs/evaluation.md; run it with scripts/bench-thesis.sh).

A scratch edge: oakuk-root, oakuk-cluster and one oakuk-node in a namespace "host"
(tests/e2e/e2elib.py, underlay 172.31.249.0/24). Three services, each with 1 vCPU and 96 MB and
serving HTTP on port 80:
  unikernel    the unikernel image (default: the project's amd64 Linux test guest, busybox httpd);
  container    a container image (default: busybox httpd, a rootfs built from busybox-static);
  nginx        nginx as a container, its rootfs built from Debian's nginx packages (the ones
               nginx-light installs), so that a unikernel nginx has a container nginx to compare with;
plus a busybox client container, from whose namespace the service IPs are reached.

It writes OUT/report.md and one PNG per figure:
  startup.png     (the thesis's Fig. 5.7) deploy request -> RUNNING and -> ready, each bar split into
                  the node's phases (image from the cache, network setup, VMM/runtime start, boot to
                  ready) and the control plane (the rest of request -> RUNNING); medians of N
                  interleaved runs, whiskers min..max;
  throughput.png  (Fig. 5.5) wrk against each service through the instance IP, the service IP and a
                  port mapping: requests/s; latency percentiles in the report;
  sizes.png       (Table 5.2) compressed and unpacked image sizes, and the node's memory per running
                  instance (QEMU RSS and PSS, the container's cgroup memory);
  cpu.png         (Fig. 5.3) the service's CPU vs the whole node's while serving a fixed request rate.
Every figure of one report comes from one run; the report states the machine.

Usage: bench_thesis.py --build DIR [--unikernel-image URL|PATH] [--container-image REF]
                       [--runs N] [--wrk-seconds S] [--out DIR]
       bench_thesis.py --load URL RATE SECONDS   (the fixed-rate client, run in a namespace)"""
import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "e2e"))

PREFIX = "172.31.249"
PHASES = ("fetch", "unpack", "network", "boot", "ready")
MEMORY_MB = 96
BAD = ("FAILED", "DEAD", "NO_QUALIFIED_WORKER_FOUND")


def log(msg):
    print("bench-thesis: " + msg, flush=True)


# ---- the fixed-rate client (--load) ----

def load(url, rate, seconds):
    """GETs url at rate requests/s for seconds from a few threads; prints {"sent", "ok", "cpu_s"}."""
    u = urllib.parse.urlsplit(url)
    interval = 1.0 / rate
    t0 = time.monotonic()
    counts = {"sent": 0, "ok": 0}
    lock = threading.Lock()

    def worker(k, workers):
        conn = None
        n = k
        while True:
            due = t0 + n * interval
            if due - t0 >= seconds:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
                conn.request("GET", u.path or "/")
                r = conn.getresponse()
                r.read()
                good = r.status == 200
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except OSError:
                good = False
                conn = None
            with lock:
                counts["sent"] += 1
                counts["ok"] += good
            n += workers

    workers = 4
    threads = [threading.Thread(target=worker, args=(k, workers)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts["cpu_s"] = sum(os.times()[:2])
    print(json.dumps(counts))


# ---- what the machine is ----

def machine():
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    kvm = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
    with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"cores": os.cpu_count(), "cpu": model.group(1) if model else platform.machine(),
            "kernel": platform.release(), "qemu": qemu, "runc": runc, "kvm_device": kvm,
            "memory_mb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)}


# ---- images ----

def nginx_debs(cache):
    """Debian's nginx and nginx-common packages (what nginx-light installs) in cache, downloaded once
    (apt-get download: nothing is installed or started on this machine)."""
    os.makedirs(cache, exist_ok=True)
    if not any(n.startswith("nginx_") for n in os.listdir(cache)):
        os.chmod(cache, 0o755)
        p = subprocess.run(["apt-get", "download", "nginx", "nginx-common"], cwd=cache, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit("bench-thesis: apt-get download nginx nginx-common: " + p.stderr[-400:])
    return cache


def nginx_rootfs(dest, work, debs):
    """nginx as Debian packages it, unpacked with dpkg -x, with the shared libraries its binary
    needs copied from this machine."""
    unpacked = os.path.join(work, "nginx-debs")
    for deb in sorted(os.listdir(debs)):
        subprocess.run(["dpkg", "-x", os.path.join(debs, deb), unpacked], check=True)
    os.makedirs(dest)
    for d in ("usr/sbin", "etc/nginx", "var/log/nginx", "var/lib/nginx", "tmp", "www", "proc", "dev", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(os.path.join(unpacked, "usr/sbin/nginx"), os.path.join(dest, "usr/sbin/nginx"))
    shutil.copy2(os.path.join(unpacked, "etc/nginx/mime.types"), os.path.join(dest, "etc/nginx/mime.types"))
    ldd = subprocess.run(["ldd", os.path.join(dest, "usr/sbin/nginx")], capture_output=True, text=True, check=True)
    for lib in re.findall(r"(/\S+\.so[^\s]*)", ldd.stdout):
        target = os.path.join(dest, lib.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(lib), target)
    with open(os.path.join(dest, "etc/nginx/nginx.conf"), "w") as f:
        f.write("daemon off;\nuser root;\nworker_processes 1;\nerror_log stderr;\npid /run/nginx.pid;\n"
                "events { worker_connections 1024; }\nhttp {\n  include /etc/nginx/mime.types;\n"
                "  access_log off;\n  server { listen 80; root /www; }\n}\n")
    with open(os.path.join(dest, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc/group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    with open(os.path.join(dest, "www", "index.html"), "w") as f:
        f.write("hello from the nginx container\n")
    return dest


def registry_sizes(registry, ref):
    """(compressed bytes of the layers, unpacked bytes of their files) of image registry/name:tag."""
    name, tag = ref.split("/", 1)[1].rsplit(":", 1)
    base = "http://%s/v2/%s" % (registry, name)
    accept = ", ".join(("application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json"))
    import requests
    man = requests.get("%s/manifests/%s" % (base, tag), headers={"Accept": accept}, timeout=10).json()
    packed = unpacked = 0
    for layer in man["layers"]:
        packed += layer["size"]
        blob = requests.get("%s/blobs/%s" % (base, layer["digest"]), timeout=60).content
        with tarfile.open(fileobj=__import__("io").BytesIO(blob), mode="r:*") as t:
            unpacked += sum(m.size for m in t.getmembers() if m.isfile())
    return packed, unpacked


def tarball_sizes(path):
    with tarfile.open(path, "r:*") as t:
        return os.path.getsize(path), sum(m.size for m in t.getmembers() if m.isfile())


# ---- measuring ----

def metrics(e, short):
    """{(phase, virtualization): (sum, count)} of the node's deploy phase histogram."""
    ns = e.hosts[short][0]
    text = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "http://127.0.0.1:10200/metrics"],
                          capture_output=True, text=True, check=True).stdout
    out = {}
    for m in re.finditer(r'^oakuk_node_deploy_phase_seconds_(sum|count)\{([^}]*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        key = (labels.get("phase"), labels.get("virtualization"))
        s, c = out.get(key, (0.0, 0))
        out[key] = (s + float(m.group(3)), c) if m.group(1) == "sum" else (s, c + int(float(m.group(3))))
    return out


def root_running_at(e, job, n):
    """Wall-clock seconds of the root's log line saying instance n of job is RUNNING."""
    pat = re.compile(r'^time=(\S+) .*?event=status instance=%s\.instance\.%d .*?status=RUNNING' % (re.escape(job), n))
    with open(e.root.log_path, errors="replace") as f:
        for line in f:
            m = pat.match(line)
            if m:
                return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
    return None


class Bench:
    def __init__(self, args):
        self.args = args
        self.runs = args.runs
        self.results = {}

    # ---- the edge ----
    def edge_start(self, tag, prefix=PREFIX):
        """The edge's hosts: namespaces ctl (entered: root and cluster run there) and n1 (the node)
        on the underlay prefix.0/24."""
        import e2elib
        from e2elib import wait_until
        self.wait_until = wait_until
        e = self.e = e2elib.Edge(self.args.build, tag="%s%d" % (tag, os.getpid() % 100000), underlay=prefix)
        e.underlay()
        self.ctl_ip = e.host("ctl", 1)[1]
        self.node_ip = e.host("n1", 11)[1]
        e.enter("ctl")
        return e

    def serve_files(self, files):
        """An HTTP file server on ctl:8000 of files, {name: path}."""
        d = os.path.join(self.e.tmp, "files")
        os.makedirs(d)
        for name, path in files.items():
            os.symlink(path, os.path.join(d, name))
        self.e.file_server(d, self.ctl_ip, 8000)

    def registries(self):
        """A docker-registry on 127.0.0.1:5000 in ctl and in n1, sharing one store, holding the busybox
        image (bench/busybox:1)."""
        import e2elib
        e = self.e
        store = os.path.join(e.tmp, "registry-data")
        e.registry("127.0.0.1", 5000, store=store, name="registry-ctl")
        e.registry("127.0.0.1", 5000, store=store, name="registry-n1", netns=e.hosts["n1"][0])
        rootfs = e2elib.make_busybox_rootfs(os.path.join(e.tmp, "busybox-rootfs"))
        e2elib.push_rootfs_image(e.lib_path, rootfs, "127.0.0.1:5000", "bench/busybox", "1")

    def daemons_up(self):
        """Root and cluster in ctl, node n1 (emulation allowed); returns the node's accelerator once it
        is in the root's aggregate."""
        e = self.e
        e.start_root()
        e.start_cluster(self.ctl_ip)
        self.node = e.start_node("n1", "n1", ["--allow-emulation", "--stop-instances"])
        e.wait_nodes(["n1"])
        self.wait_until("the node in the root's aggregate",
                        lambda: e.api("GET", "/api/v1/clusters").json()[0]["active_nodes"] == 1, timeout=30)
        node = e.api("GET", "/api/v1/clusters").json()[0]["nodes"][0]
        return (node.get("unikernel") or {}).get("accel", "none")

    def up(self):
        self.debs = nginx_debs(os.path.join(self.args.build, "bench-thesis", "debs"))  # before any namespace
        import e2elib
        e = self.edge_start("bt")
        files = {name: os.path.join(e.guests, name) for name in os.listdir(e.guests) if name.endswith(".tar.gz")}
        self.uk_file = None
        uk = self.args.unikernel_image
        if uk is None:
            self.uk_file = os.path.join(e.guests, "guest-amd64-nofiles.tar.gz")
            self.uk_code = "http://%s:8000/guest-amd64-nofiles.tar.gz" % self.ctl_ip
            self.uk_label = "the amd64 Linux test guest (busybox httpd)"
        elif os.path.exists(uk):
            self.uk_file = os.path.abspath(uk)
            files["unikernel.tar.gz"] = self.uk_file
            self.uk_code = "http://%s:8000/unikernel.tar.gz" % self.ctl_ip
            self.uk_label = os.path.basename(uk)
        else:
            self.uk_code, self.uk_label = uk, uk
        self.serve_files(files)
        self.registries()
        e2elib.push_rootfs_image(e.lib_path, nginx_rootfs(os.path.join(e.tmp, "nginx-rootfs"), e.tmp, self.debs),
                                 "127.0.0.1:5000", "bench/nginx", "1")
        self.ctr_code = self.args.container_image or "127.0.0.1:5000/bench/busybox:1"
        self.ctr_label = self.args.container_image or "busybox httpd (busybox-static)"
        self.results["accel"] = self.daemons_up()

    def down(self):
        if getattr(self, "e", None):
            self.e.close()

    def register(self):
        mk = self.e.marker

        def svc(name, virt, code, port, rr_ip, **kw):
            m = {"microserviceID": "", "microservice_name": name, "microservice_namespace": mk,
                 "virtualization": virt, "cmd": [], "memory": MEMORY_MB, "vcpus": 1, "code": code,
                 "arch": ["amd64"], "port": "%d:80" % port, "addresses": {"rr_ip": rr_ip}, "restart": "never"}
            m.update(kw)
            return m
        uk_extra = {"emulation": "allow"}
        if self.args.unikernel_image is None:
            uk_extra["unikernel"] = {"flavor": "linux"}
        ctr_cmd = [] if self.args.container_image else ["httpd", "-f", "-p", "80", "-h", "/www"]
        self.services = {
            "unikernel": svc("uk", "unikernel", self.uk_code, 18081, "10.30.49.1", **uk_extra),
            "container": svc("ctr", "container", self.ctr_code, 18082, "10.30.49.2", cmd=ctr_cmd),
            "nginx": svc("nginx", "container", "127.0.0.1:5000/bench/nginx:1", 18083, "10.30.49.3",
                         cmd=["/usr/sbin/nginx", "-c", "/etc/nginx/nginx.conf"]),
        }
        # the same two without a network (the thesis's deployments without the overlay): no port,
        # no service IP; the test guest says on its console when it is up
        uk_none = dict(self.services["unikernel"], microservice_name="uknonet", network="none")
        ctr_none = dict(self.services["container"], microservice_name="ctrnonet", network="none")
        for m in (uk_none, ctr_none):
            del m["port"], m["addresses"]
        if self.args.unikernel_image is None:
            uk_none["readiness"] = {"serial": "oakuk-guest: ready"}
        self.services["unikernel, no network"] = uk_none
        self.services["container, no network"] = ctr_none
        client = {"microserviceID": "", "microservice_name": "client", "microservice_namespace": mk,
                  "virtualization": "container", "cmd": ["sleep", "100000"], "memory": 16, "vcpus": 1,
                  "code": "127.0.0.1:5000/bench/busybox:1", "arch": ["amd64"], "restart": "never"}
        sla = {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
            "applicationID": "", "application_name": "bench", "application_namespace": mk,
            "application_desc": "bench-thesis", "microservices": list(self.services.values()) + [client]}]}
        r = self.e.api("POST", "/api/v1/applications", json=sla)
        if r.status_code != 201:
            raise SystemExit("bench-thesis: registration refused: " + r.text)
        ids = r.json()["applications"][0]["microservices"]
        key_of = {m["microservice_name"]: k for k, m in self.services.items()}
        key_of["client"] = "client"
        self.sid = {}  # service key -> (service id, job name)
        for sid in ids:
            doc = self.e.api("GET", "/api/v1/services/" + sid).json()
            self.sid[key_of[doc["microservice_name"]]] = (sid, doc["job_name"])

    def instance(self, name, n):
        sid = self.sid[name][0]
        lst = self.e.api("GET", "/api/v1/services/%s/instances" % sid).json()
        return next((i for i in lst if i["instance_number"] == n), None)

    def deploy(self, name, timeout=300):
        """Deploys one instance of name and waits until it is ready: (n, instance entry). It waits
        first until the root's view of the node has a core free: a core the last undeploy freed is
        only seen with the node's next report."""
        sid = self.sid[name][0]
        self.wait_until("a free core in the root's aggregate", lambda: self.e.api(
            "GET", "/api/v1/clusters").json()[0]["cpu_cores"] >= 1, timeout=30, interval=0.05)
        r = self.e.api("POST", "/api/v1/services/%s/instances" % sid)
        r.raise_for_status()
        n = r.json()["instance_number"]
        t0 = time.time()
        while True:
            i = self.instance(name, n)
            if i and i["status"] in BAD:
                raise SystemExit("bench-thesis: %s instance %d %s: %s" % (name, n, i["status"], i["status_detail"]))
            if i and i["status"] == "RUNNING" and i.get("ready") and "ready_ms" in i:
                return n, i
            if time.time() - t0 > timeout:
                raise SystemExit("bench-thesis: %s instance %d not ready within %d s: %s" % (name, n, timeout, i))
            time.sleep(0.05)

    def undeploy(self, name, n):
        sid = self.sid[name][0]
        self.e.api("DELETE", "/api/v1/services/%s/instances/%d" % (sid, n)).raise_for_status()
        self.wait_until("%s instance %d gone" % (name, n), lambda: self.instance(name, n) is None, timeout=120,
                        interval=0.1)
        # the root forgets it when the cluster sent the delete; the next deploy must not find the
        # node still stopping this one (its time would count in the next one's)
        job = self.instance_name(name, n)
        self.wait_until("%s instance %d gone from the node" % (name, n), lambda: job not in self.e.runtime_units()
                        and job not in self.e.node_view("n1")["netns"], timeout=60, interval=0.05)

    # ---- 1. startup ----
    def startup(self):
        """Interleaved runs of the unikernel and the container, each with and without a network:
        request -> RUNNING (the root's log) and -> ready (the root's ready_ms), and the node's phases
        from its metrics."""
        kinds = {"unikernel": "unikernel", "container": "container", "unikernel, no network": "unikernel",
                 "container, no network": "container"}
        for name in kinds:  # warm-up: the node caches the images
            n, _ = self.deploy(name)
            self.undeploy(name, n)
        runs = {name: [] for name in kinds}
        for k in range(self.runs):
            for name, virt in kinds.items():
                before = metrics(self.e, "n1")
                t0 = time.time()
                n, inst = self.deploy(name)
                after = metrics(self.e, "n1")
                running_at = self.wait_until("the root's RUNNING line", lambda: root_running_at(
                    self.e, self.sid[name][1], n), timeout=10)
                ph = {p: after.get((p, virt), (0, 0))[0] - before.get((p, virt), (0, 0))[0] for p in PHASES}
                to_running = running_at - inst["requested_at"] / 1000.0
                node_part = ph["fetch"] + ph["unpack"] + ph["network"] + ph["boot"]
                runs[name].append({"to_running_ms": to_running * 1000, "to_ready_ms": inst["ready_ms"],
                                   "phases_ms": {p: v * 1000 for p, v in ph.items()},
                                   "control_plane_ms": max(0.0, (to_running - node_part) * 1000),
                                   "client_ms": (time.time() - t0) * 1000})
                log("startup run %d %s: ready after %d ms" % (k + 1, name, inst["ready_ms"]))
                self.undeploy(name, n)
        self.results["startup"] = runs

    # ---- 2. throughput, 3. memory, 4. cpu (with all three services running) ----
    def serving(self):
        """Each service in turn (the node has a core for it and one for the client, no more: nothing
        is overcommitted), beside the client container whose namespace reaches the service IPs."""
        cn, _ = self.deploy("client")
        self.client_netns = self.netns_path("client", cn)
        tp, mem, cpu = {}, {}, {}
        for name in ("unikernel", "container", "nginx"):
            n, inst = self.deploy(name)
            job = self.instance_name(name, n)
            unit = self.e.runtime_units()[job][0]
            ip = self.e.node_view("n1")["veths"][job]
            rr = self.services[name]["addresses"]["rr_ip"]
            port = int(self.services[name]["port"].split(":")[0])
            ns_node = ["ip", "netns", "exec", self.e.hosts["n1"][0]]
            ns_client = ["nsenter", "--net=" + self.client_netns]
            tp[name] = {
                "instance IP": self.wrk(ns_node, "http://%s:80/" % ip),
                "service IP": self.wrk(ns_client, "http://%s:80/" % rr),
                "port mapping": self.wrk([], "http://%s:%d/" % (self.node_ip, port)),
            }
            mem[name] = self.memory(unit)
            cpu[name] = self.cpu_at_rate(ns_node, "http://%s:80/" % ip, unit)
            log("served %s: %d req/s through the instance IP" % (name, tp[name]["instance IP"]["rps"]))
            self.undeploy(name, n)
        self.undeploy("client", cn)
        self.results.update(throughput=tp, memory=mem, cpu=cpu)

    def instance_name(self, name, n):
        return "%s.instance.%d" % (self.sid[name][1], n)

    def netns_path(self, name, n):
        return "/proc/%d/root/run/netns/%s" % (self.node.pid, self.instance_name(name, n))

    def wrk(self, prefix, url):
        """wrk for the configured seconds, 1 thread, 16 connections: req/s and latency percentiles."""
        cmd = prefix + ["wrk", "-t1", "-c16", "-d%ds" % self.args.wrk_seconds, "--latency", url]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.wrk_seconds + 60)
        if p.returncode != 0:
            raise SystemExit("bench-thesis: %s: %s" % (" ".join(cmd), p.stderr[-300:]))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", p.stdout).group(1))

        def ms(v, unit):
            return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        lat = {q: ms(*re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % q, p.stdout).groups()) for q in ("50", "90", "99")}
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
        return {"rps": rps, "p50_ms": lat["50"], "p90_ms": lat["90"], "p99_ms": lat["99"],
                "non_2xx": int(errors.group(1)) if errors else 0}

    def memory(self, unit):
        """QEMU: RSS and PSS of its process; a container: its cgroup's memory (v1 or v2)."""
        pid = unit["pid"]
        if unit["kind"] == "qemu":
            out = {}
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    k = line.split(":")[0]
                    if k in ("Rss", "Pss"):
                        out[k.lower() + "_kb"] = int(line.split()[1])
            return out
        return {"cgroup_kb": cgroup_memory_kb(pid)}

    def cpu_at_rate(self, prefix, url, unit):
        """The service's CPU (QEMU's process, or the container's cgroup) and the whole node's (this
        machine's, less the client's own) while a client asks for url at a fixed rate."""
        rate, seconds = self.args.rate, self.args.cpu_seconds
        hz = os.sysconf("SC_CLK_TCK")
        svc0, node0, t0 = service_cpu_s(unit), machine_cpu_s(hz), time.monotonic()
        p = subprocess.run(prefix + [sys.executable, os.path.abspath(__file__), "--load", url, str(rate), str(seconds)],
                           capture_output=True, text=True, timeout=seconds + 60)
        wall = time.monotonic() - t0
        if p.returncode != 0:
            raise SystemExit("bench-thesis: the fixed-rate client failed: " + p.stderr[-300:])
        client = json.loads(p.stdout.strip().splitlines()[-1])
        svc = (service_cpu_s(unit) - svc0) / wall * 100
        node = (machine_cpu_s(hz) - node0 - client["cpu_s"]) / wall * 100
        return {"rate": rate, "answered": client["ok"] / seconds, "sent": client["sent"],
                "service_cpu_pct": svc, "node_cpu_pct": node}

    def sizes(self):
        out = {}
        if self.uk_file:
            packed, unpacked = tarball_sizes(self.uk_file)
            out["unikernel"] = {"compressed": packed, "unpacked": unpacked}
        out["container"] = dict(zip(("compressed", "unpacked"), registry_sizes("127.0.0.1:5000", self.ctr_code)))
        out["nginx"] = dict(zip(("compressed", "unpacked"), registry_sizes("127.0.0.1:5000",
                                                                          "127.0.0.1:5000/bench/nginx:1")))
        self.results["sizes"] = out


def service_cpu_s(unit):
    if unit["kind"] == "qemu":
        with open("/proc/%d/stat" % unit["pid"]) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    path = cgroup_dir(unit["pid"], "cpuacct")
    if path and os.path.exists(os.path.join(path, "cpuacct.usage")):
        with open(os.path.join(path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9
    with open(os.path.join(cgroup_dir(unit["pid"], ""), "cpu.stat")) as f:
        return int(re.search(r"usage_usec (\d+)", f.read()).group(1)) / 1e6


def machine_cpu_s(hz):
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / hz  # all but idle and iowait


def cgroup_dir(pid, controller):
    """The directory of pid's cgroup for a v1 controller ("" for the v2 hierarchy)."""
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller and controller in ctrls.split(","):
                for base in ("/sys/fs/cgroup/" + controller, "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory"):
                    if os.path.isdir(base + path) and os.path.exists(os.path.join(base + path, "tasks")):
                        if controller == "memory" and "memory" not in base:
                            continue
                        return base + path
            if not controller and ctrls == "":
                return "/sys/fs/cgroup/unified" + path if os.path.isdir("/sys/fs/cgroup/unified" + path) else \
                    "/sys/fs/cgroup" + path
    return None


def cgroup_memory_kb(pid):
    path = cgroup_dir(pid, "memory")
    if path and os.path.exists(os.path.join(path, "memory.usage_in_bytes")):
        with open(os.path.join(path, "memory.usage_in_bytes")) as f:
            return int(f.read()) // 1024
    with open(os.path.join(cgroup_dir(pid, ""), "memory.current")) as f:
        return int(f.read()) // 1024


def main():
    ap = argparse.ArgumentParser(description="The thesis's evaluation on this machine (docs/evaluation.md).")
    ap.add_argument("--build", required=False)
    ap.add_argument("--unikernel-image", help="a unikernel image: a URL or file of a tar.gz, or an OCI reference")
    ap.add_argument("--container-image", help="a container image reference the node can pull, serving HTTP on 80")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=100, help="requests/s of the CPU figure")
    ap.add_argument("--cpu-seconds", type=int, default=10)
    ap.add_argument("--out", default="bench-thesis-out")
    ap.add_argument("--load", nargs=3, metavar=("URL", "RATE", "SECONDS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.load:
        load(a.load[0], int(a.load[1]), int(a.load[2]))
        return
    if not a.build:
        ap.error("--build is required")
    if a.runs < 1 or a.wrk_seconds < 1 or a.rate < 1 or a.cpu_seconds < 1:
        ap.error("--runs, --wrk-seconds, --rate and --cpu-seconds must be at least 1")
    a.build = os.path.abspath(a.build)
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    import report
    b = Bench(a)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        b.up()
        b.register()
        b.startup()
        b.serving()
        b.sizes()
    finally:
        b.down()
    b.results.update(machine=machine(), started=started.isoformat(timespec="seconds"),
                     runs=a.runs, wrk_seconds=a.wrk_seconds, unikernel=b.uk_label, container=b.ctr_label,
                     memory_mb=MEMORY_MB, finished=datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds"))
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(b.results, f, indent=1)
    report.write(b.results, a.out)
    log("wrote %s/report.md and its figures" % a.out)


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()

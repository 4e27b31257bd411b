#!/usr/bin/python3
"""e2e-deploy: what root, cluster and node add to starting a unikernel.

  ours       API request (POST /api/v1/services/<id>/instances at oakuk-root) -> the root reports
             RUNNING, for the amd64 test guest (TCG) whose image the node has cached, through
             oakuk-cluster (MQTT) and oakuk-node in its own "host" namespace (tests/e2e/e2elib.py);
  reference  the runtime alone: bench/unikernel-deploy's "to-running" (net setup + oakuk_runtime_deploy
             -> RUNNING), run in the same invocation.
A TCG boot varies by +-50 ms from one run to the next, more than the control plane costs, so a
difference of two medians says little. The control plane's share is therefore also taken per deploy:
the node logs when the deploy message arrived and when the instance became RUNNING (event=deploy,
event=status), the root when it learnt RUNNING (event=status), and everything else between the API
request and the root's RUNNING is the control plane (API, cluster's placement, the MQTT hops, the
status report to the root).
The whole run is done twice, with TLS on every hop (the default) and with --insecure on every
daemon, to price TLS. After the deploys of each, the idle RSS (and PSS, anonymous) and CPU of each daemon
over 10 s, from /proc, against two floors measured the same way at the same time (bench/rss-floor.c):
  rss-floor      the libraries the daemons are built on, alone (GLib/GIO, glib-networking's GnuTLS,
                 libsoup 3, json-glib, SQLite): a key made, a database written, one HTTPS request served
                 and one made, then idle;
  rss-floor-tls  GIO's TLS streams and json-glib only (no libsoup, no SQLite): the least any daemon with
                 TLS on GIO needs.
Needs root.

Usage: e2e-deploy.py <build root> <unikernel-deploy binary> <rss-floor> <rss-floor-tls>"""
import datetime
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import e2elib  # noqa: E402
from e2elib import wait_until  # noqa: E402

RUNS = 15
LOG_LINE = re.compile(r'^time=(\S+) .*? event=(deploy|status) instance=(\S+)(?: .*?status=(\S+))?')


def log_times(log_path, n):
    """(deploy received, RUNNING) wall-clock times of instance n (the bench's only service) in a
    daemon's log, in seconds; deploy is None in the root's log, which has no such event."""
    instance_suffix = ".instance.%d" % n
    got, running = None, None
    with open(log_path, errors="replace") as f:
        for line in f:
            m = LOG_LINE.match(line)
            if not m or not m.group(3).endswith(instance_suffix):
                continue
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            if m.group(2) == "deploy":
                got, running = t, None
            elif m.group(4) == "RUNNING" and running is None:
                running = t
    if running is None:
        raise SystemExit("e2e-deploy: no RUNNING line for instance %d in %s" % (n, log_path))
    return got, running


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def memory_kb(pid):
    """Rss, Pss (shared library pages divided among their users) and Anonymous, in kB."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("Rss", "Pss", "Anonymous"):
                out[key] = int(line.split()[1])
    return out


def deploys(build, insecure):
    """One edge (root, cluster, one node), TLS on every hop or, insecure, none: RUNS deploys of the
    cached image after a warm-up; returns [(API -> RUNNING, node's deploy -> RUNNING)] in ms after
    printing the idle figures of each daemon, then tears the edge down."""
    e = e2elib.Edge(build, tag="eb%d%s" % (os.getpid() % 10000, "p" if insecure else "t"), insecure=insecure)
    try:
        e.underlay()
        ctl_ip = e.host("ctl", 1)[1]
        e.host("n1", 11)
        e.enter("ctl")
        e.file_server(e.guests, ctl_ip, 8000)
        e.start_root()
        e.start_cluster(ctl_ip)
        node = e.start_node("n1", "n1", ["--allow-emulation", "--stop-instances"])
        e.wait_nodes(["n1"])
        wait_until("node in the root's aggregate",
                   lambda: e.api("GET", "/api/v1/clusters").json()[0]["active_nodes"] == 1)
        return measure(e, node, ctl_ip, "--insecure" if insecure else "TLS")
    finally:
        e.close()


def measure(e, node, ctl_ip, label):
    sla = {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
        "applicationID": "", "application_name": "bench", "application_namespace": e.marker,
        "application_desc": "e2e-deploy", "microservices": [{
            "microserviceID": "", "microservice_name": "uk", "microservice_namespace": e.marker,
            "virtualization": "unikernel", "cmd": ["bench"], "memory": 96, "vcpus": 1,
            "code": "http://%s:8000/guest-amd64-nofiles.tar.gz" % ctl_ip, "arch": ["amd64"],
            "emulation": "allow", "unikernel": {"flavor": "linux"}, "restart": "never"}]}]}
    r = e.api("POST", "/api/v1/applications", json=sla)
    r.raise_for_status()
    sid = r.json()["applications"][0]["microservices"][0]

    def status(n):
        lst = e.api("GET", "/api/v1/services/%s/instances" % sid).json()
        return next((i for i in lst if i["instance_number"] == n), None)

    def one():
        """(API request -> RUNNING at the root, the node's own deploy -> RUNNING), in ms. Both ends
        come from the daemons' logs: the bench polls every 20 ms, and polling faster would take
        CPU from the guest booting under TCG on this 2-core machine and slow down what it measures."""
        t0 = time.time()
        r = e.api("POST", "/api/v1/services/%s/instances" % sid)
        r.raise_for_status()
        n = r.json()["instance_number"]
        while True:
            i = status(n)
            if i and i["status"] == "RUNNING":
                _, at_root = log_times(e.root.log_path, n)
                got, running = log_times(node.log_path, n)
                if got is None:
                    raise SystemExit("e2e-deploy: no deploy line for instance %d in the node's log" % n)
                dt = ((at_root - t0) * 1000, (running - got) * 1000)
                break
            if i and i["status"] in ("FAILED", "DEAD", "NO_QUALIFIED_WORKER_FOUND", "NoActiveClusterWithCapacity"):
                raise SystemExit("e2e-deploy: instance %d %s: %s" % (n, i["status"], i.get("status_detail")))
            if time.time() - t0 > 120:
                raise SystemExit("e2e-deploy: instance %d not RUNNING within 120 s" % n)
            time.sleep(0.02)
        e.api("DELETE", "/api/v1/services/%s/instances/%d" % (sid, n)).raise_for_status()
        wait_until("instance %d gone" % n, lambda: status(n) is None, timeout=60, interval=0.05)
        return dt

    one()  # warm-up: the node downloads and caches the image
    ours = [one() for _ in range(RUNS)]
    idle_figures(e, node, label)
    return ours


def start_floor(binary):
    """A floor program (bench/rss-floor.c), once it has made its exchange and idles."""
    p = subprocess.Popen([binary], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise SystemExit("e2e-deploy: %s: %s" % (binary, (line + p.stderr.read()).strip()[-500:]))
    return p


def idle_figures(e, node, label):
    """Idle (nothing deployed) RSS, PSS, anonymous memory and CPU of each daemon over 10 s, and the
    same of the two floors, then each daemon's RSS against them and against the 10 MB target."""
    floors = [(os.path.basename(b), start_floor(b)) for b in FLOORS]
    try:
        time.sleep(2)
        daemons = [("oakuk-root", e.root.pid), ("oakuk-cluster", e.cluster.pid), ("oakuk-node", node.pid),
                   ("mosquitto", e.broker_pid())] + [(n, p.pid) for n, p in floors]
        hz = os.sysconf("SC_CLK_TCK")
        before = {n: cpu_ticks(p) for n, p in daemons}
        t0 = time.monotonic()
        time.sleep(10)
        wall = time.monotonic() - t0
        rss = {}
        for n, p in daemons:
            cpu = (cpu_ticks(p) - before[n]) / hz / wall * 100
            m = memory_kb(p)
            rss[n] = m.get("Rss", 0)
            print("idle %s (%s): rss %d kB (pss %d kB, anonymous %d kB), cpu %.2f%%%s" % (
                n, label, m.get("Rss", 0), m.get("Pss", 0), m.get("Anonymous", 0), cpu,
                " (the cluster's broker)" if n == "mosquitto" else
                " (floor: the libraries alone)" if n.startswith("rss-floor") else ""))
    finally:
        for _, p in floors:
            p.kill()
            p.wait()
    floor, floor_tls = rss[floors[0][0]], rss[floors[1][0]]
    for n in ("oakuk-root", "oakuk-cluster", "oakuk-node"):
        print("idle-rss %s (%s): ours %d kB, reference %d kB (rss-floor), ratio %.2f; rss-floor-tls %d kB; "
              "target 10240 kB: %s" % (n, label, rss[n], floor, rss[n] / floor, floor_tls,
                                       "met" if rss[n] <= 10240 else "NOT met"))


FLOORS = []


def main():
    build, uk_bench = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    FLOORS.extend(os.path.abspath(a) for a in sys.argv[3:5])
    if len(FLOORS) != 2:
        raise SystemExit("usage: e2e-deploy.py <build root> <unikernel-deploy> <rss-floor> <rss-floor-tls>")
    tls = deploys(build, insecure=False)
    plain = deploys(build, insecure=True)
    # the runtime alone, same machine, same run
    p = subprocess.run([uk_bench, str(RUNS)], capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit("e2e-deploy: %s failed: %s" % (uk_bench, p.stderr[-500:]))
    m = re.search(r"to-running: ours ([0-9.]+) ms", p.stdout)
    if not m:
        raise SystemExit("e2e-deploy: no to-running figure in: " + p.stdout)
    ref = float(m.group(1))
    for name, ours in (("TLS", tls), ("--insecure", plain)):
        med = statistics.median(t for t, _ in ours)
        share = [t - rt for t, rt in ours]
        print("e2e-deploy (%s): ours %.1f ms, reference %.1f ms (runtime alone), ratio %.2f (medians of %d runs "
              "each)" % (name, med, ref, med / ref, len(ours)))
        print("e2e-deploy (%s): control plane per deploy (API -> RUNNING minus the node's deploy -> RUNNING): "
              "median %.1f ms, min %.1f, max %.1f (target < 50 ms)" % (
                  name, statistics.median(share), min(share), max(share)))
        print("e2e-deploy (%s): runs (total/node ms): %s" % (name, ", ".join("%.0f/%.0f" % x for x in ours)))
    tls_share = statistics.median(t - rt for t, rt in tls)
    plain_share = statistics.median(t - rt for t, rt in plain)
    print("e2e-deploy: TLS costs %.1f ms per deploy on the control plane (median share %.1f ms with TLS, "
          "%.1f ms without)" % (tls_share - plain_share, tls_share, plain_share))


if __name__ == "__main__":
    main()

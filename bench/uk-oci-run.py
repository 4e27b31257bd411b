#!/usr/bin/python3
"""uk-oci-run: a unikernel pulled, unpacked, deployed and ready, as an OCI image vs as its Oakestra
tarball over HTTP (#11), cold and warm cache.

  ours       `oakuk run` of an OCI reference in a local docker-registry: the multiboot test kernel's
             tarball (ukguest-0.16.3.tar.gz) converted by `oakuk pkg --from-tar` into KraftKit's
             layout and pushed; tag resolution, index, manifest, config, layers, unpack, deploy, boot;
  reference  `oakuk run` of the same tarball served by python3's http.server: download, unpack,
             deploy, boot.
Both time from the spawn of `oakuk run` to its "ready" line (the guest printed "Hello from the oakuk
test kernel", --ready-serial; the kernel is told to stay, then the run is ended with Ctrl-C), read as
it comes. Cold: a new state directory (image cache) each run;
warm: the same one again (the tag resolved anew, the tarball revalidated). The runs of both are
interleaved, all inside a scratch network namespace (registry, file server and guest), so the
machine's own network is not touched. Prints medians:
  uk-oci-run cold: ours X ms, reference Y ms, ratio Z
  uk-oci-run warm: ours X ms, reference Y ms, ratio Z
Needs root, /usr/bin/docker-registry and QEMU. Usage: uk-oci-run.py <build root>"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = 5
READY = "Hello from the oakuk test kernel"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    build = os.path.abspath(sys.argv[1])
    oakuk = os.path.join(build, "tools", "oakuk", "oakuk")
    guests = os.path.join(build, "tests", "guests")
    tarball = os.path.join(guests, "ukguest-0.16.3.tar.gz")
    for need in (oakuk, tarball, "/usr/bin/docker-registry"):
        if not os.path.exists(need):
            raise SystemExit("uk-oci-run: %s is missing" % need)
    ns = "oakuk-bench-ocirun-%d" % os.getpid()
    tmp = tempfile.mkdtemp(prefix="oakuk-bench-ocirun-")
    procs = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        inns = ["nsenter", "--net=/run/netns/" + ns, "--"]
        reg_port, files_port = free_port(), free_port()
        cfg = os.path.join(tmp, "registry.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n"
                    "http:\n  addr: 127.0.0.1:%d\n" % (tmp, reg_port))
        procs.append(subprocess.Popen(inns + ["/usr/bin/docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(inns + [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                              "--directory", guests, str(files_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in (reg_port, files_port):
            for _ in range(100):
                if subprocess.run(inns + ["curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:%d/" % port]).returncode \
                        in (0, 22):
                    break
                time.sleep(0.1)
        ref = "127.0.0.1:%d/bench/ukguest:1" % reg_port
        p = subprocess.run(inns + [oakuk, "pkg", "--from-tar", "amd64=" + tarball, "--push", ref,
                                   "--insecure-registry", "127.0.0.1:%d" % reg_port],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise SystemExit("uk-oci-run: oakuk pkg: " + p.stderr)
        url = "http://127.0.0.1:%d/ukguest-0.16.3.tar.gz" % files_port

        def run(image, state):
            """ms from the spawn of oakuk run to its ready line."""
            t0 = time.monotonic()
            r = subprocess.Popen(inns + [oakuk, "run", "--allow-emulation", "--arch", "amd64", "--ready-serial",
                                         READY, "--state-dir", state, "--insecure-registry",
                                         "127.0.0.1:%d" % reg_port, image, "--", "stay"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            took = None
            for line in r.stderr:
                if " ready " in line:
                    took = (time.monotonic() - t0) * 1000
                    r.send_signal(signal.SIGINT)  # the guest stays ("stay"); Ctrl-C ends the run
                    break
            rest = r.stderr.read()
            rc = r.wait(120)
            if took is None or rc != 0:
                raise SystemExit("uk-oci-run: oakuk run %s: exit %d, ready line %s: %s" % (
                    image, rc, "seen" if took else "missing", rest[-500:]))
            return took

        results = {}
        for k in range(RUNS):
            for name, image in (("ours", ref), ("reference", url)):
                state = os.path.join(tmp, "state-%s-%d" % (name, k))
                cold = run(image, state)
                warm = run(image, state)
                results.setdefault((name, "cold"), []).append(cold)
                results.setdefault((name, "warm"), []).append(warm)
                shutil.rmtree(state, ignore_errors=True)
        for phase in ("cold", "warm"):
            ours = statistics.median(results[("ours", phase)])
            ref_ms = statistics.median(results[("reference", phase)])
            print("uk-oci-run %s: ours %.1f ms, reference %.1f ms, ratio %.2f (medians of %d; pull/download, "
                  "unpack, deploy, boot to ready)" % (phase, ours, ref_ms, ours / ref_ms, RUNS))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

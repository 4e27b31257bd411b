#!/usr/bin/env python3
"""Boots a built test guest under QEMU TCG (never KVM) in a scratch network namespace with a tap,
and checks what a runtime relies on: the ready line, both Unikraft network conventions, the
arguments after "--", HTTP on port 8080, the 9p share, exit and crash.

Usage: check-guest.py ARCH IMAGE-WORKDIR   (needs root; prints TAP)
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

arch, workdir = sys.argv[1], pathlib.Path(sys.argv[2])
kernel, initrd = workdir / f"{arch}-kernel", workdir / f"{arch}-initrd"
QEMU = {"amd64": ["qemu-system-x86_64", "-machine", "pc,accel=tcg"],
        "arm64": ["qemu-system-aarch64", "-machine", "virt,accel=tcg", "-cpu", "cortex-a57"]}[arch]
CONSOLE = {"amd64": "ttyS0", "arm64": "ttyAMA0"}[arch]
BOOT_TIMEOUT = 180
ns = f"oakg-{arch}-{os.getpid()}"
tests = []


def sh(*argv):
    subprocess.run(argv, check=True)


def ok(cond, name, detail=""):
    tests.append((bool(cond), name, detail))


class Guest:
    def __init__(self, tmp, name, append, files=None):
        self.serial = tmp / f"{name}.log"
        argv = ["ip", "netns", "exec", ns] + QEMU + [
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-m", "256", "-smp", "1",
            "-serial", f"file:{self.serial}", "-kernel", str(kernel), "-initrd", str(initrd),
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
            "-append", f"console={CONSOLE} quiet panic=-1 {append}"]
        if files:
            argv += ["-fsdev", f"local,id=fs0,path={files},security_model=none",
                     "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=fs0"]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def log(self):
        try:
            return self.serial.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text, timeout=BOOT_TIMEOUT):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return time.monotonic() - self.start
            if self.proc.poll() is not None and text not in self.log():
                return None
            time.sleep(0.2)
        return None

    def wait_exit(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def http_get(url):
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                        "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=20).read().decode())",
                        url], capture_output=True, text=True, timeout=60)
    return r.stdout


def main():
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root (network namespace, tap)")
        return 0
    for f in (kernel, initrd):
        if not f.exists():
            print(f"Bail out! {f} missing: build the guests first")
            return 1
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="oakuk-guest-"))
    sh("ip", "netns", "add", ns)
    guests = []
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "tuntap", "add", "tap0", "mode", "tap")
        sh("ip", "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "tap0")
        sh("ip", "-n", ns, "link", "set", "tap0", "up")
        files = tmp / "files"
        files.mkdir()
        (files / "hello.txt").write_text("hello from the host\n")

        # 1: Unikraft >= 0.16.1 convention, 9p share, HTTP.
        g = Guest(tmp, "new", "netdev.ip=10.99.0.2/24:10.99.0.1 -- hello world", files)
        guests.append(g)
        t = g.wait_for("oakuk-guest: ready")
        ok(t is not None, f"{arch}: boots to the ready line (netdev.ip)", g.log()[-2000:])
        if t is not None:
            print(f"# {arch}: ready after {t:.1f} s (TCG)")
            ok("ready ip=10.99.0.2 files=yes args=hello world" in g.log(), f"{arch}: ready line names ip, 9p share and args",
               g.log()[-500:])
            body = http_get("http://10.99.0.2:8080/")
            ok("args: hello world" in body and "hello.txt: hello from the host" in body,
               f"{arch}: HTTP on 8080 returns args and /files/hello.txt", body)
        g.stop()

        # 2: Unikraft < 0.16.1 convention, then exit by itself.
        g = Guest(tmp, "old", "netdev.ipv4_addr=10.99.0.3 netdev.ipv4_gw_addr=10.99.0.1 "
                  "netdev.ipv4_subnet_mask=255.255.255.0 -- exit=3")
        guests.append(g)
        t = g.wait_for("oakuk-guest: ready")
        ok(t is not None and "ready ip=10.99.0.3 files=no args=exit=3" in g.log(),
           f"{arch}: old netdev.ipv4_* convention configures the address", g.log()[-2000:])
        if t is not None:
            body = http_get("http://10.99.0.3:8080/")
            ok("ip: 10.99.0.3" in body, f"{arch}: HTTP answers on the old-convention address", body)
        rc = g.wait_exit(120)
        ok(rc == 0 and "oakuk-guest: exiting" in g.log(), f"{arch}: exit=N powers the guest off (qemu rc {rc})",
           g.log()[-1000:])

        # 3: crash ends in a kernel panic and (with -no-reboot) QEMU exits.
        g = Guest(tmp, "crash", "netdev.ip=10.99.0.4/24:10.99.0.1 -- crash")
        guests.append(g)
        g.wait_for("oakuk-guest: panic")
        rc = g.wait_exit(120)
        log = g.log()
        ok(rc is not None and "oakuk-guest: panic: crash requested" in log and "Kernel panic" in log,
           f"{arch}: crash prints a panic line and QEMU exits", log[-1000:])
    finally:
        for g in guests:
            g.stop()
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"1..{len(tests)}")
    for i, (good, name, detail) in enumerate(tests, 1):
        print(f"{'ok' if good else 'not ok'} {i} - {name}")
        if not good:
            for line in detail.splitlines()[-30:]:
                print(f"# {line}")
    return 0 if all(t[0] for t in tests) else 1


if __name__ == "__main__":
    sys.exit(main())

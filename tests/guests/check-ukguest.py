#!/usr/bin/env python3
"""Boots the oakuk test kernels (imitated Unikraft x86_64 QEMU images) under plain QEMU TCG (never
KVM) and checks what the runtime relies on: the file format (ELF32 i386, multiboot v1, version
string), the console, both network conventions and which one each version honours, the arguments
after "--", env.vars, and what QMP and QEMU's exit code report for exit, crash, reset, sleep and
stay + quit.

Usage: check-ukguest.py GUESTS-BUILD-DIR   (prints TAP; no root needed)
"""
import json
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

guests = pathlib.Path(sys.argv[1])
CODENAMES = {"0.16.3": "Telesto", "0.15.0": "Pandora"}
QEMU = "qemu-system-x86_64"
NEW = "netdev.ip=10.0.0.2/24:10.0.0.1"
OLD = "netdev.ipv4_addr=10.0.0.3 netdev.ipv4_gw_addr=10.0.0.1 netdev.ipv4_subnet_mask=255.255.0.0"
BOOT_TIMEOUT = 60
tests = []


def ok(cond, name, detail=""):
    tests.append((bool(cond), name, detail))


class Qmp:
    """A QMP client: greeting, qmp_capabilities, then a thread that keeps every event until QEMU
    closes the socket."""

    def __init__(self, path, first=(), timeout=30):
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rb")
        self.events, self.replies = [], []
        self.cond = threading.Condition()
        try:
            if "QMP" not in self._read():
                raise RuntimeError("no QMP greeting")
            for cmd in ("qmp_capabilities",) + tuple(first):
                self.execute(cmd)
        except Exception:
            self.sock.close()
            raise
        self.reader = threading.Thread(target=self._reader, daemon=True)
        self.reader.start()

    def _read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("QMP closed")
        return json.loads(line)

    def _reader(self):
        while True:
            try:
                msg = self._read()
            except (OSError, EOFError, ValueError):
                return
            with self.cond:
                (self.events if "event" in msg else self.replies).append(msg)
                self.cond.notify_all()

    def send(self, cmd):
        self.sock.sendall(json.dumps({"execute": cmd}).encode() + b"\n")

    def execute(self, cmd):
        """Before the reader thread runs: send and read up to the reply."""
        self.send(cmd)
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            elif "return" in msg:
                return msg["return"]
            else:
                raise RuntimeError(f"QMP {cmd}: {msg}")

    def close(self):
        """After QEMU is gone: the reader has seen everything QEMU sent once it meets the end."""
        self.reader.join(5)
        self.sock.close()


class Guest:
    """One QEMU. Started paused (-S) and let go with `cont` once QMP is connected, so that no event
    of a short-lived guest is missed."""

    def __init__(self, tmp, name, version, append, pvpanic=True):
        self.serial = tmp / f"{name}.log"
        sock = tmp / f"{name}.qmp"
        argv = [QEMU, "-machine", "pc,accel=tcg", "-cpu", "max", "-nodefaults", "-no-user-config",
                "-nographic", "-no-reboot", "-S", "-serial", f"file:{self.serial}",
                "-kernel", str(guests / f"ukguest-{version}.kernel"), "-m", "32",
                "-qmp", f"unix:{sock},server=on,wait=off", "-append", append]
        if pvpanic:
            argv += ["-device", "pvpanic"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.qmp = None
        try:
            self.qmp = Qmp(sock, first=("cont",))
        except Exception:
            self.stop()
            raise

    def log(self):
        try:
            return self.serial.read_bytes().decode("latin-1")
        except FileNotFoundError:
            return ""

    def wait_for(self, text, timeout=BOOT_TIMEOUT):
        """The monotonic time of the last look that did not see text yet (a lower bound on when it
        was written), or None."""
        end = time.monotonic() + timeout
        before = time.monotonic()
        while time.monotonic() < end:
            if text in self.log():
                return before
            if self.proc.poll() is not None:
                return None
            before = time.monotonic()
            time.sleep(0.02)
        return None

    def wait_exit(self, timeout=BOOT_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def events(self, name=None):
        if self.qmp is None:
            return []
        with self.qmp.cond:
            return [e for e in self.qmp.events if name is None or e["event"] == name]

    def shutdowns(self):
        return [(e["data"].get("guest"), e["data"].get("reason")) for e in self.events("SHUTDOWN")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.qmp is not None:
            self.qmp.close()

    def detail(self):
        stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
        return f"{self.log()}\nevents: {self.events()}\nqemu stderr: {stderr}"


def check_file(version):
    codename = CODENAMES[version]
    data = (guests / f"ukguest-{version}.kernel").read_bytes()
    elf32_i386 = data[:4] == b"\x7fELF" and data[4] == 1 and struct.unpack_from("<H", data, 18)[0] == 3
    ok(elf32_i386, f"{version}: the kernel is an ELF32 file for EM_386")
    header = None
    for off in range(0, min(len(data), 8192) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == 0x1BADB002:
            header = (off, flags, checksum)
            break
    ok(header is not None and (0x1BADB002 + header[1] + header[2]) & 0xFFFFFFFF == 0
       and not header[1] & 0x10000,
       f"{version}: multiboot v1 header, 4-byte aligned in the first 8 KiB, valid checksum, no a.out kludge",
       f"header: {header}")
    ok(f"Unikraft {codename} {version}".encode() in data, f"{version}: the file says 'Unikraft {codename} {version}'")
    with tarfile.open(guests / f"ukguest-{version}.tar.gz") as t:
        names = t.getnames()
        same = names == ["kernel"] and t.extractfile("kernel").read() == data
    ok(same, f"{version}: the image holds just `kernel`, the same bytes", f"members: {names}")


def lines_of(g):
    return g.log().replace("\r", "").split("\n")


def boot(tmp, name, version, append, timeout=BOOT_TIMEOUT, pvpanic=True):
    """Boots a guest that ends by itself; returns (guest, QEMU exit code or None)."""
    g = Guest(tmp, name, version, append, pvpanic)
    rc = g.wait_exit(timeout)
    g.stop()
    return g, rc


def check_new_style(tmp):
    g, rc = boot(tmp, "new", "0.16.3", f"{NEW} -- a b")
    log = g.log()
    lines = log.replace("\r", "").split("\n")
    ok(log.startswith("\x1b") and "\x1bc\x1b[?7l\x1b[2J\x1b[0m\0\0\r\n\r\n   ." in log,
       "0.16.3: the console starts with ESC; the kernel resets the terminal and sends two NULs", repr(log[:200]))
    ok("                  Telesto 0.16.3~oakuktest" in lines
       and not any("Telesto 0.16.3~" in line and "Unikraft" in line for line in lines),
       "0.16.3: codename and version under the banner, without the word Unikraft", log)
    ok(any(line.startswith("ukguest: cmdline: ") and line.endswith(f" {NEW} -- a b") for line in lines),
       "0.16.3: prints the whole command line (QEMU puts the kernel's path first)", log)
    ok("ukguest: netdev.ip=10.0.0.2/24:10.0.0.1" in lines
       and "ukguest: netdev.ipv4_addr=(none) netdev.ipv4_gw_addr=(none) netdev.ipv4_subnet_mask=(none)" in lines,
       "0.16.3: both netdev lines, netdev.ip parsed", log)
    ok("en1: Set IPv4 address 10.0.0.2 mask 255.255.255.0 gw 10.0.0.1" in lines,
       "0.16.3: netdev.ip= configures the address (lwIP's line)", log)
    ok('ukguest: argv: "a" "b"' in lines and "Hello from the oakuk test kernel" in lines,
       "0.16.3: hello line and the arguments after --", log)
    ok(rc == 0 and g.shutdowns() == [(True, "guest-shutdown")] and "ukguest: powering off" in lines,
       f"0.16.3: powers off by ACPI: QEMU exits 0, SHUTDOWN guest-shutdown (rc {rc}, {g.shutdowns()})",
       g.detail())


def check_conventions(tmp):
    parsed_old = ("ukguest: netdev.ipv4_addr=10.0.0.3 netdev.ipv4_gw_addr=10.0.0.1 "
                  "netdev.ipv4_subnet_mask=255.255.0.0")
    parsed_new = "ukguest: netdev.ip=10.0.0.2/24:10.0.0.1"
    cases = (("0.16.3", f"{OLD} --", parsed_old, None),
             ("0.15.0", f"{OLD} --", parsed_old, "en1: Set IPv4 address 10.0.0.3 mask 255.255.0.0 gw 10.0.0.1"),
             ("0.15.0", f"{NEW} --", parsed_new, None),
             ("0.15.0", "netdev.ipv4_addr=10.0.0.4 --",
              "ukguest: netdev.ipv4_addr=10.0.0.4 netdev.ipv4_gw_addr=(none) netdev.ipv4_subnet_mask=(none)",
              "en1: Set IPv4 address 10.0.0.4 mask 255.255.255.0 gw 0.0.0.0"))
    for i, (version, append, parsed, configured) in enumerate(cases):
        g, rc = boot(tmp, f"conv{i}", version, append)
        lines = lines_of(g)
        set_lines = [line for line in lines if "Set IPv4 address" in line]
        ok(rc == 0 and parsed in lines and set_lines == ([configured] if configured else []),
           f"{version} '{append}': parsed; {configured or 'no address configured'}", g.detail())


def check_args_and_env(tmp):
    g, rc = boot(tmp, "nodashes", "0.16.3", f"{NEW} exit")
    lines = lines_of(g)
    ok(rc == 0 and f'ukguest: argv: "{NEW}" "exit"' in lines and "ukguest: netdev.ip=(none)" in lines
       and not any("Set IPv4 address" in line for line in lines),
       "0.16.3 without --: every token is an argument and no address is configured", g.detail())

    g, rc = boot(tmp, "env", "0.16.3", f"env.vars=[ FOO=bar BAZ=1 ] {NEW} --")
    lines = lines_of(g)
    ok(rc == 0 and "ukguest: env FOO=bar" in lines and "ukguest: env BAZ=1" in lines and "ukguest: argv:" in lines
       and any(line.startswith("en1: Set IPv4 address 10.0.0.2") for line in lines),
       "env.vars=[ ... ] parsed, no arguments", g.detail())

    g, rc = boot(tmp, "bad", "0.16.3", "netdev.ip=10.0.0.300/24 --")
    lines = lines_of(g)
    ok(rc == 0 and "ukguest: bad netdev parameter netdev.ip=10.0.0.300/24" in lines
       and not any("Set IPv4 address" in line for line in lines),
       "a malformed address is reported and configures nothing", g.detail())


def check_crash(tmp):
    g, rc = boot(tmp, "crash", "0.16.3", f"{NEW} -- crash")
    crit = [line for line in lines_of(g) if "CRIT:" in line]
    panics = [e["data"] for e in g.events("GUEST_PANICKED")]
    print(f"# crash: qemu rc {rc}, GUEST_PANICKED {panics}, SHUTDOWN {g.shutdowns()}")
    ok(any("Unhandled Trap" in line for line in crit) and rc is not None
       and (panics or (True, "guest-panic") in g.shutdowns()),
       f"crash: CRIT lines, pvpanic seen by QMP, QEMU exits (rc {rc})", g.detail())

    # Without a pvpanic device the port write goes nowhere and the ACPI power-off follows.
    g, rc = boot(tmp, "crash-nopvpanic", "0.15.0", "-- crash", pvpanic=False)
    lines = lines_of(g)
    print(f"# crash without pvpanic: qemu rc {rc}, events {[e['event'] for e in g.events()]}")
    ok(any("Unhandled Trap" in line for line in lines) and "ukguest: powering off" in lines and rc == 0
       and g.shutdowns() == [(True, "guest-shutdown")] and not g.events("GUEST_PANICKED"),
       f"crash without pvpanic: CRIT lines, then a plain power-off (rc {rc})", g.detail())


def check_reset(tmp):
    g, rc = boot(tmp, "reset", "0.15.0", "-- reset")
    print(f"# reset: qemu rc {rc}, SHUTDOWN {g.shutdowns()}")
    ok(rc == 0 and "ukguest: resetting" in g.log() and g.shutdowns() == [(True, "guest-reset")],
       f"reset: triple fault, SHUTDOWN guest-reset, QEMU exits 0 (rc {rc})", g.detail())


def check_sleep(tmp):
    g = Guest(tmp, "sleep", "0.16.3", "-- sleep=2")
    try:
        hello = g.wait_for("Hello from the oakuk test kernel")
        rc = g.wait_exit(120)
        gone = time.monotonic()
    finally:
        g.stop()
    took = gone - hello if hello is not None and rc is not None else None
    print(f"# sleep=2: QEMU gone {took if took is None else round(took, 2)} s after the hello line")
    ok(took is not None and took >= 2.0 and rc == 0 and g.shutdowns() == [(True, "guest-shutdown")],
       f"sleep=2: powers off at least 2 s after the hello line (rc {rc})", g.detail())


def check_stay(tmp):
    g = Guest(tmp, "stay", "0.15.0", "-- stay")
    try:
        up = g.wait_for("ukguest: staying up")
        time.sleep(3)
        running = up is not None and g.proc.poll() is None
        g.qmp.send("quit")
        rc = g.wait_exit(30)
    finally:
        g.stop()
    print(f"# stay + quit: qemu rc {rc}, SHUTDOWN {g.shutdowns()}")
    ok(running, "stay: still running after 3 s", g.detail())
    ok(rc == 0 and g.shutdowns() == [(False, "host-qmp-quit")], f"stay: QMP quit ends it (rc {rc})", g.detail())


def main():
    if shutil.which(QEMU) is None:
        print(f"1..0 # SKIP {QEMU} not installed")
        return 0
    for v in CODENAMES:
        for suffix in ("kernel", "tar.gz"):
            if not (guests / f"ukguest-{v}.{suffix}").exists():
                print(f"Bail out! {guests}/ukguest-{v}.{suffix} missing: build it first")
                return 1
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="oakuk-ukguest-"))
    try:
        for v in CODENAMES:
            check_file(v)
        for check in (check_new_style, check_conventions, check_args_and_env, check_crash, check_reset,
                      check_sleep, check_stay):
            try:
                check(tmp)
            except Exception as e:  # one broken boot must not hide the other checks
                ok(False, f"{check.__name__}: {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"1..{len(tests)}")
    for i, (good, name, detail) in enumerate(tests, 1):
        print(f"{'ok' if good else 'not ok'} {i} - {name}")
        if not good:
            for line in detail.splitlines()[-30:]:
                print(f"# {line!r}" if "\x1b" in line or "\0" in line else f"# {line}")
    return 0 if all(t[0] for t in tests) else 1


if __name__ == "__main__":
    sys.exit(main())

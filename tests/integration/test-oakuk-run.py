#!/usr/bin/python3
"""Integration test of `oakuk run`: the amd64 test guest under TCG on the local bridge, reached on
127.0.0.1 through a port mapping, its console on stdout, and SIGINT removing everything the run
made (netns, veth, tap, nftables mapping, bridge and table it created, QEMU, instance dir, cgroup).
Also the refusals (wrong-arch bare kernel, no KVM, no QEMU) and a crashing guest (exit 3), readiness
(exit 4 when it does not come), and the project's multiboot test kernel in Unikraft's x86 format
(tests/guests/ukguest): both netdev conventions, a clean power-off (exit 0), a crash and a reset (exit 3),
a guest given the wrong convention (the runtime says so).

The run happens inside a scratch network namespace acting as the node, so the bridge, nftables
table and forwarding settings `oakuk run` makes never touch the machine's own network. That
namespace starts with net.ipv4.ip_forward=0, and every run must leave it so (it enables forwarding
while it runs). Records of runs go to a scratch $OAKUK_RUN_DIR. Also: exit 2 for every class of bad
argument, --detach with `oakuk ps` and `oakuk stop`, and the message without privileges.

Usage: test-oakuk-run.py <path to oakuk>   (guests from $OAKUK_GUESTS_DIR); needs root."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgelib import ports  # noqa: E402

OAKUK = None
GUESTS = pathlib.Path(os.environ.get("OAKUK_GUESTS_DIR", "/nonexistent"))
IMAGE = GUESTS / "guest-amd64.tar.gz"
KERNEL = GUESTS / "amd64-kernel"
UKGUEST = {v: GUESTS / f"ukguest-{v}.kernel" for v in ("0.16.3", "0.15.0")}
HOSTNS = f"oakuk-trun-{os.getpid()}"
NSENTER = ["/usr/bin/nsenter", f"--net=/run/netns/{HOSTNS}", "--"]
RUN_DIR = None  # $OAKUK_RUN_DIR of every command, made in __main__


def sh(*argv):
    """Runs a command inside the node namespace."""
    return subprocess.run([*NSENTER, *argv], capture_output=True, text=True)


def links():
    out = sh("ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def nft_table_exists():
    return sh("nft", "list", "table", "ip", "oakuk").returncode == 0


def http_get(url):
    """GET from inside the node namespace; returns the body or None."""
    r = sh("curl", "-sf", "--max-time", "5", url)
    return r.stdout if r.returncode == 0 else None


def ip_forward():
    """net.ipv4.ip_forward of the node namespace."""
    return sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()


def oakuk(*args, timeout=300):
    """`oakuk ARGS` inside the node namespace, to its end."""
    return subprocess.run([*NSENTER, OAKUK, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pids_of(needle):
    """Processes whose command line contains needle (as a separate argument)."""
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle.encode() in argv and b"-name" in argv:
            out.append(int(p.name))
    return out


class Run:
    """`oakuk run` in the background, stdout and stderr collected by threads."""

    def __init__(self, *args, env=None):
        self.out, self.err = [], []
        self.p = subprocess.Popen([*NSENTER, OAKUK, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, env=env)
        self.threads = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                        for s, b in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _pump(stream, buf):
        for line in iter(stream.readline, b""):
            buf.append(line.decode(errors="replace"))

    def stdout(self):
        return "".join(self.out)

    def stderr(self):
        return "".join(self.err)

    def wait_for(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = pred()
            if m:
                return m
            if self.p.poll() is not None:
                time.sleep(0.3)  # let the pumps finish
                return pred()
            time.sleep(0.2)
        return None

    def finish(self, timeout):
        rc = self.p.wait(timeout=timeout)
        for t in self.threads:
            t.join(5)
        return rc

    def close(self):
        for t in self.threads:
            t.join(5)
        self.p.stdout.close()
        self.p.stderr.close()

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class RunBase(unittest.TestCase):
    def setUp(self):
        if os.getuid() != 0:
            self.skipTest("needs root (netns, nftables, cgroups)")
        if not IMAGE.exists() or not shutil.which("qemu-system-x86_64"):
            self.skipTest("needs qemu-system-x86_64 and the amd64 test guest ($OAKUK_GUESTS_DIR)")
        self.state = tempfile.mkdtemp(prefix="oakuk-itest-run-")
        self.name = f"itrun{os.getpid()}-{self._testMethodName[5:13]}"
        self.links_before = links()
        self.table_before = nft_table_exists()
        self.runs = []

    def tearDown(self):
        for r in self.runs:
            r.kill()
            r.close()
        if os.path.exists(os.path.join(RUN_DIR, self.name)):  # a detached one a failed test left
            oakuk("stop", self.name)
        shutil.rmtree(self.state, ignore_errors=True)

    def start(self, *args, env=None):
        r = Run("--state-dir", self.state, "--name", self.name, *args, env=env)
        self.runs.append(r)
        return r

    def assert_nothing_left(self, port=None):
        self.assertFalse(os.path.exists(f"/run/netns/{self.name}"), "netns left behind")
        # Links: other tests may add their own meanwhile, so only look for what a run makes.
        new = {l for l in links() - self.links_before if l.startswith("oakuk")}
        self.assertEqual(new, set(), "links left behind")
        if not self.table_before:
            self.assertFalse(nft_table_exists(), "nftables table oakuk left behind")
        ruleset = sh("nft", "list", "ruleset").stdout
        self.assertNotIn(self.name, ruleset)
        if port:
            self.assertIsNone(re.search(rf"\b{port}\b", ruleset), f"port {port} still mapped")
        self.assertEqual(pids_of(self.name), [], "QEMU still running")
        for left in (pathlib.Path(self.state, "runs", self.name), pathlib.Path(RUN_DIR, self.name)):
            self.assertFalse(left.exists(), f"{left} left behind")
        self.assertEqual(ip_forward(), "0", "net.ipv4.ip_forward not put back")
        for cg in (f"/sys/fs/cgroup/oakuk/{self.name}", f"/sys/fs/cgroup/memory/oakuk/{self.name}"):
            self.assertFalse(os.path.exists(cg), f"cgroup {cg} left behind")


class OakukRun(RunBase):
    def test_http_console_sigint(self):
        port = ports(1)[0]
        r = self.start("--allow-emulation", "-p", f"{port}:8080", str(IMAGE), "--", "hello")
        line = r.wait_for(lambda: re.search(rf"oakuk: instance {self.name} at ([0-9.]+), ports {port}->8080",
                                            r.stderr()), 60)
        self.assertIsNotNone(line, f"no instance line; stderr: {r.stderr()}")
        ip = line.group(1)
        self.assertTrue(ip.startswith("10.18.255."), ip)  # the default subnet
        ready = f"oakuk-guest: ready ip={ip} files=yes args=hello"
        self.assertTrue(r.wait_for(lambda: ready in r.stdout(), 120),
                        f"console never showed the ready line; stdout: {r.stdout()}; stderr: {r.stderr()}")
        body = None
        for _ in range(20):
            body = http_get(f"http://127.0.0.1:{port}/cgi-bin/index.cgi")
            if body is not None:
                break
            time.sleep(0.5)
        self.assertIsNotNone(body, "127.0.0.1:%d never answered" % port)
        self.assertIn(f"ip: {ip}", body)
        self.assertIn("args: hello", body)
        self.assertIn("hello.txt: hello from the oakuk test guest", body)  # the image's files/ by 9p
        # While it runs, everything exists.
        self.assertTrue(os.path.exists(f"/run/netns/{self.name}"))
        self.assertEqual(len(pids_of(self.name)), 1)
        self.assertIn(f"{port}", sh("nft", "list", "table", "ip", "oakuk").stdout)

        r.p.send_signal(signal.SIGINT)
        self.assertEqual(r.finish(30), 0, r.stderr())
        self.assertIn(f"stopping instance {self.name}", r.stderr())
        self.assert_nothing_left(port)

    def test_nat_mode(self):
        """The thesis layout with a real guest: the guest sits at 192.168.1.2 behind DNAT inside its
        netns, reached by instance IP and through the port mapping."""
        port = ports(1)[0]
        r = self.start("--allow-emulation", "--net", "nat", "-p", f"{port}:8080", str(IMAGE), "--", "nat")
        line = r.wait_for(lambda: re.search(rf"oakuk: instance {self.name} at ([0-9.]+), ports {port}->8080",
                                            r.stderr()), 60)
        self.assertIsNotNone(line, f"no instance line; stderr: {r.stderr()}")
        ip = line.group(1)
        ready = "oakuk-guest: ready ip=192.168.1.2 "
        self.assertTrue(r.wait_for(lambda: ready in r.stdout(), 120),
                        f"console never showed the ready line; stdout: {r.stdout()}; stderr: {r.stderr()}")
        for url in (f"http://{ip}:8080/cgi-bin/index.cgi", f"http://127.0.0.1:{port}/cgi-bin/index.cgi"):
            body = None
            for _ in range(20):
                body = http_get(url)
                if body is not None:
                    break
                time.sleep(0.5)
            self.assertIsNotNone(body, f"{url} never answered")
            self.assertIn("ip: 192.168.1.2", body)
            self.assertIn("args: nat", body)
        r.p.send_signal(signal.SIGINT)
        self.assertEqual(r.finish(30), 0, r.stderr())
        self.assert_nothing_left(port)

    def test_wrong_arch_bare_kernel(self):
        r = self.start("--allow-emulation", "--arch", "arm64", str(KERNEL))
        rc = r.finish(60)
        self.assertNotEqual(rc, 0)
        err = r.stderr()
        self.assertIn("built for amd64", err)
        self.assertIn("arm64", err)
        self.assert_nothing_left()

    def test_no_kvm_refused(self):
        kvm_flags = re.search(r"^flags\s*:.*\b(vmx|svm)\b", pathlib.Path("/proc/cpuinfo").read_text(), re.M)
        if kvm_flags and os.path.exists("/dev/kvm"):
            self.skipTest("KVM may be usable here")
        r = self.start(str(KERNEL))
        self.assertEqual(r.finish(60), 1)
        self.assertRegex(r.stderr(), r"no KVM \(.+\); pass --allow-emulation to run under TCG")
        self.assert_nothing_left()

    def test_missing_qemu(self):
        env = dict(os.environ, PATH="/nonexistent-oakuk-bin")
        r = self.start("--allow-emulation", str(IMAGE), env=env)
        self.assertEqual(r.finish(60), 1)
        self.assertIn("no qemu-system-x86_64 found", r.stderr())
        self.assert_nothing_left()

    def test_bad_image(self):
        bogus = pathlib.Path(self.state, "bogus.tar.gz")
        bogus.write_bytes(b"not an image")
        r = self.start("--allow-emulation", str(bogus))
        self.assertEqual(r.finish(60), 1)
        self.assertIn(f"image {bogus}", r.stderr())
        self.assert_nothing_left()

    def test_guest_crash(self):
        r = self.start("--allow-emulation", str(IMAGE), "--", "crash")
        rc = r.finish(180)
        self.assertEqual(rc, 3, r.stderr())
        err = r.stderr()
        self.assertIn(f"instance {self.name} crashed (DEAD): the guest crashed", err)
        self.assertIn("Kernel panic", err)  # the panic line, although the register dump follows it
        self.assertIn("last serial lines", err)
        self.assertIn("oakuk-guest: panic: crash requested", r.stdout())  # the console was streamed
        self.assert_nothing_left()


class OciRun(RunBase):
    """`oakuk run` with OCI images made by `oakuk pkg` from the test guests' tarballs: a reference
    in a docker-registry (on loopback inside the node namespace) and an oci-archive:, the host's
    platform picked from a two-architecture index, the image's Cmd as the guest's arguments unless
    ARGS are given, the tarball's files/ shared, and a platform the image lacks refused by name."""

    @classmethod
    def setUpClass(cls):
        cls.reg = None
        if os.getuid() != 0 or not os.access("/usr/bin/docker-registry", os.X_OK) \
                or not (GUESTS / "guest-arm64-nofiles.tar.gz").exists():
            return
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-itest-runoci-")
        cls.addr = f"127.0.0.1:{ports(1)[0]}"
        cfg = os.path.join(cls.tmp, "config.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {cls.tmp}/data\n"
                    f"http:\n  addr: {cls.addr}\n")
        cls.reg = subprocess.Popen([*NSENTER, "/usr/bin/docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        for _ in range(100):
            if sh("curl", "-sf", f"http://{cls.addr}/v2/").returncode == 0:
                break
            time.sleep(0.1)
        tars = ["--from-tar", f"amd64={GUESTS / 'guest-amd64.tar.gz'}",
                "--from-tar", f"arm64={GUESTS / 'guest-arm64-nofiles.tar.gz'}", "--cmd", "fromimage"]
        cls.ref = f"{cls.addr}/guests/hello:1"
        cls.archive = os.path.join(cls.tmp, "hello.oci.tar")
        cls.amd64_only = os.path.join(cls.tmp, "ukguest.oci.tar")
        for args in (["--push", cls.ref], ["--output", cls.archive],
                     ["--kernel", str(UKGUEST["0.16.3"]), "--output", cls.amd64_only]):
            p = subprocess.run([*NSENTER, OAKUK, "pkg", *(tars if args[0] != "--kernel" else []), *args],
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stderr

    @classmethod
    def tearDownClass(cls):
        if cls.reg:
            cls.reg.terminate()
            cls.reg.wait(10)
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        super().setUp()
        if not self.reg:
            self.skipTest("needs /usr/bin/docker-registry and the arm64 test guest")

    def run_until_ready(self, image, *args, want_args):
        port = ports(1)[0]
        r = self.start("--allow-emulation", "-p", f"{port}:8080", image, *args)
        line = r.wait_for(lambda: re.search(rf"oakuk: instance {self.name} at ([0-9.]+)", r.stderr()), 120)
        self.assertIsNotNone(line, f"no instance line; stderr: {r.stderr()}")
        ip = line.group(1)
        ready = f"oakuk-guest: ready ip={ip} files=yes args={want_args}"
        self.assertTrue(r.wait_for(lambda: ready in r.stdout(), 120),
                        f"console never showed {ready!r}; stdout: {r.stdout()}; stderr: {r.stderr()}")
        body = None
        for _ in range(20):
            body = http_get(f"http://127.0.0.1:{port}/cgi-bin/index.cgi")
            if body is not None:
                break
            time.sleep(0.5)
        self.assertIsNotNone(body, "127.0.0.1:%d never answered" % port)
        self.assertIn("hello.txt: hello from the oakuk test guest", body)  # the image's files by 9p
        r.p.send_signal(signal.SIGINT)
        self.assertEqual(r.finish(30), 0, r.stderr())
        self.assert_nothing_left(port)

    def test_registry_reference_host_platform(self):
        self.run_until_ready(self.ref, want_args="fromimage")

    def test_oci_archive_with_args(self):
        self.run_until_ready("oci-archive:" + self.archive, "--arch", "amd64", "--", "given", want_args="given")

    def test_platform_missing(self):
        r = self.start("--allow-emulation", "--arch", "arm64", "oci-archive:" + self.amd64_only)
        self.assertEqual(r.finish(60), 1, r.stderr())
        self.assertIn(f"image oci-archive:{self.amd64_only}", r.stderr())
        self.assertIn("arm64", r.stderr())
        self.assert_nothing_left()

    def test_unreachable_registry(self):
        ref = f"127.0.0.1:{ports(1)[0]}/guests/hello:1"
        r = self.start("--allow-emulation", ref)
        self.assertEqual(r.finish(60), 1, r.stderr())
        self.assertIn(f"image {ref}", r.stderr())
        self.assert_nothing_left()


class HostSettings(RunBase):
    """net.ipv4.ip_forward (0 in the node namespace) is 1 while a run needs it and put back when the
    last run ends: after a clean end, a crash, SIGTERM, and only after the second of two runs."""

    def setUp(self):
        super().setUp()
        if not UKGUEST["0.16.3"].exists():
            self.skipTest("the multiboot test kernel was not built (tests/guests/meson.build)")

    def start_staying(self, name=None):
        args = ["--allow-emulation", "--ready-serial", "ukguest: staying up", str(UKGUEST["0.16.3"]), "--", "stay"]
        if name:
            r = Run("--state-dir", self.state, "--name", name, *args)
            self.runs.append(r)
        else:
            r = self.start(*args)
        self.assertTrue(r.wait_for(lambda: re.search(r"instance \S+ ready \d+ ms", r.stderr()), 120), r.stderr())
        return r

    def test_clean_end(self):
        self.assertEqual(ip_forward(), "0")
        r = self.start("--allow-emulation", str(UKGUEST["0.16.3"]))
        self.assertEqual(r.finish(120), 0, r.stderr())
        self.assertIn("the guest powered off", r.stderr())
        self.assert_nothing_left()

    def test_crash(self):
        r = self.start("--allow-emulation", str(UKGUEST["0.16.3"]), "--", "crash")
        self.assertEqual(r.finish(120), 3, r.stderr())
        self.assert_nothing_left()

    def test_sigterm(self):
        r = self.start_staying()
        self.assertEqual(ip_forward(), "1", "the run did not enable forwarding")
        r.p.send_signal(signal.SIGTERM)
        self.assertEqual(r.finish(60), 0, r.stderr())
        self.assertIn(f"stopping instance {self.name}", r.stderr())
        self.assert_nothing_left()

    def test_last_run_restores(self):
        other = self.name + "-b"
        a = self.start_staying()
        b = self.start_staying(other)
        a.p.send_signal(signal.SIGINT)
        self.assertEqual(a.finish(60), 0, a.stderr())
        self.assertEqual(ip_forward(), "1", "forwarding removed while another run needs it")
        self.assertIn("oakuk0", links(), "bridge removed while another run uses it")
        b.p.send_signal(signal.SIGINT)
        self.assertEqual(b.finish(60), 0, b.stderr())
        self.assertFalse(os.path.exists(f"/run/netns/{other}"))
        self.assert_nothing_left()


class BadArguments(RunBase):
    """Every class of bad argument is exit 2 with a message naming it, before anything is made."""

    def test_run_exit_2(self):
        img = str(UKGUEST["0.16.3"])
        pw = os.path.join(self.state, "missing-password")
        cases = [
            (["--bogus", img], "Unknown option"),
            ([], "IMAGE is missing"),
            ([img, "extra"], "exactly one IMAGE"),
            (["--memory", "lots", img], "--memory"),
            (["--memory", "8", img], "--memory"),
            (["--vcpus", "0", img], "--vcpus"),
            (["--ready-port", "70000", img], "--ready-port"),
            (["--ready-timeout", "-1", img], "--ready-timeout"),
            (["--ready-serial", "", img], "--ready-serial"),
            (["--flavor", "windows", img], "--flavor"),
            (["--net", "bridge", img], "--net"),
            (["--arch", "x86", img], "--arch"),
            (["--uk-version", "latest", img], "--uk-version"),
            (["--files", "/nonexistent-oakuk-dir", img], "--files"),
            (["--subnet", "10.18.255.1/24", img], "--subnet"),
            (["--subnet", "banana", img], "--subnet"),
            (["-p", "8080", img], "-p"),
            (["-p", "1:70000", img], "-p"),
            (["-p", "80:80/sctp", img], "-p"),
            (["--insecure-registry", "a b", img], "--insecure-registry"),
            (["--name", "bad name", img], "--name"),
            (["--name", "x" * 65, img], "--name"),
            (["--username", "u", img], "--username and --password-file"),
            (["--username", "u", "--password-file", pw, img], "--password-file"),
            ([img, "--", "two words"], "guest argument"),
            (["/nonexistent-oakuk-image.tar.gz"], "image /nonexistent-oakuk-image.tar.gz"),
            (["oci-archive:/nonexistent-oakuk.tar"], "no such file"),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                p = oakuk("run", "--state-dir", self.state, "--name", self.name, "--allow-emulation", *args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(want, p.stderr)
        self.assert_nothing_left()

    def test_ps_stop_exit_2(self):
        for args in (["ps", "extra"], ["ps", "--bogus"], ["stop"], ["stop", "a", "b"], ["stop", "bad/name"],
                     ["stop", "--bogus", "x"]):
            with self.subTest(args=args):
                p = oakuk(*args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(f"oakuk {args[0]}: ", p.stderr)


class Detach(RunBase):
    """`oakuk run --detach` returns once the guest is ready and leaves it running (its QEMU in a
    session of its own, reached through its port mapping); `oakuk ps` lists it, `oakuk stop`
    removes everything and puts the host settings back."""

    def ps(self):
        p = oakuk("ps", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        return {i["name"]: i for i in json.loads(p.stdout)}

    def test_detach_ps_stop(self):
        port = ports(1)[0]
        p = oakuk("run", "--detach", "--state-dir", self.state, "--name", self.name, "--allow-emulation",
                  "-p", f"{port}:8080", str(IMAGE), "--", "detached")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, f"{self.name}\n")  # the name only: no console
        # The CLI is gone; the guest is not.
        qemu = pids_of(self.name)
        self.assertEqual(len(qemu), 1, p.stderr)
        self.assertNotEqual(os.getsid(qemu[0]), os.getsid(0), "QEMU shares the caller's session")
        body = http_get(f"http://127.0.0.1:{port}/cgi-bin/index.cgi")
        self.assertIsNotNone(body, "the detached guest does not answer on its port")
        self.assertIn("args: detached", body)
        ip = re.search(r"ip: ([0-9.]+)", body).group(1)
        self.assertEqual(ip_forward(), "1")
        listed = self.ps().get(self.name)
        self.assertIsNotNone(listed, "oakuk ps does not list the instance")
        self.assertEqual(listed["state"], "RUNNING")
        self.assertEqual(listed["pid"], qemu[0])
        self.assertEqual(listed["ip"], ip)
        self.assertEqual(listed["image"], str(IMAGE))
        self.assertTrue(listed["detached"])
        self.assertEqual(listed["ports"], [f"{port}:8080"])
        self.assertRegex(listed["started"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        table = oakuk("ps")
        self.assertEqual(table.returncode, 0, table.stderr)
        row = [line.split() for line in table.stdout.splitlines() if line.startswith(self.name + " ")]
        self.assertEqual(len(row), 1, table.stdout)
        self.assertEqual(row[0][2:5], ["RUNNING", ip, str(qemu[0])])
        # Its name is taken while it exists.
        again = oakuk("run", "--detach", "--state-dir", self.state, "--name", self.name, "--allow-emulation",
                      str(IMAGE))
        self.assertEqual(again.returncode, 1, again.stderr)
        self.assertIn(f"an instance named {self.name} exists already (RUNNING", again.stderr)
        stop = oakuk("stop", self.name)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertEqual(stop.stdout, f"{self.name}\n")
        self.assertNotIn(self.name, self.ps())
        self.assert_nothing_left(port)

    def test_detached_guest_ends_then_stop(self):
        """A detached guest that powers off is listed DEAD until `oakuk stop` removes its leftovers."""
        if not UKGUEST["0.16.3"].exists():
            self.skipTest("the multiboot test kernel was not built")
        p = oakuk("run", "--detach", "--state-dir", self.state, "--name", self.name, "--allow-emulation",
                  str(UKGUEST["0.16.3"]))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, f"{self.name}\n")
        state = None
        for _ in range(600):
            state = self.ps()[self.name]["state"]
            if state == "DEAD":
                break
            time.sleep(0.1)
        self.assertEqual(state, "DEAD")
        self.assertTrue(os.path.exists(f"/run/netns/{self.name}"), "the network went before oakuk stop")
        stop = oakuk("stop", self.name)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assert_nothing_left()

    def test_detach_guest_dies_first(self):
        if not UKGUEST["0.16.3"].exists():
            self.skipTest("the multiboot test kernel was not built")
        p = oakuk("run", "--detach", "--state-dir", self.state, "--name", self.name, "--allow-emulation",
                  "--ready-serial", "never printed", str(UKGUEST["0.16.3"]), "--", "crash")
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertIn(f"instance {self.name} crashed", p.stderr)
        self.assert_nothing_left()

    def test_detach_interrupted(self):
        """Ctrl-C before the guest is ready: `run --detach` stops it, cleans up and fails (exit 1)."""
        if not UKGUEST["0.16.3"].exists():
            self.skipTest("the multiboot test kernel was not built")
        r = self.start("--detach", "--allow-emulation", "--ready-serial", "never printed", "--ready-timeout", "0",
                       str(UKGUEST["0.16.3"]), "--", "stay")
        self.assertTrue(r.wait_for(lambda: f"instance {self.name} at " in r.stderr(), 120), r.stderr())
        r.p.send_signal(signal.SIGINT)
        self.assertEqual(r.finish(60), 1, r.stderr())
        self.assertEqual(r.stdout(), "")
        self.assertIn(f"stopping instance {self.name}", r.stderr())
        self.assert_nothing_left()

    def test_stop_foreground(self):
        if not UKGUEST["0.16.3"].exists():
            self.skipTest("the multiboot test kernel was not built")
        r = self.start("--allow-emulation", "--ready-serial", "ukguest: staying up", str(UKGUEST["0.16.3"]),
                       "--", "stay")
        self.assertTrue(r.wait_for(lambda: f"instance {self.name} ready" in r.stderr(), 120), r.stderr())
        self.assertFalse(self.ps()[self.name]["detached"])
        stop = oakuk("stop", self.name)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertEqual(r.finish(30), 0, r.stderr())
        self.assertIn(f"stopping instance {self.name}", r.stderr())
        self.assert_nothing_left()

    def test_stop_after_cli_killed(self):
        """A foreground `oakuk run` killed with SIGKILL cleans nothing: ps still lists its instance,
        and `oakuk stop` adopts its QEMU, stops it and removes the rest."""
        if not UKGUEST["0.16.3"].exists():
            self.skipTest("the multiboot test kernel was not built")
        r = self.start("--allow-emulation", "--ready-serial", "ukguest: staying up", str(UKGUEST["0.16.3"]),
                       "--", "stay")
        self.assertTrue(r.wait_for(lambda: f"instance {self.name} ready" in r.stderr(), 120), r.stderr())
        r.p.kill()
        r.finish(30)
        self.assertEqual(len(pids_of(self.name)), 1)
        listed = self.ps()[self.name]
        self.assertEqual((listed["state"], listed["detached"]), ("RUNNING", False))
        stop = oakuk("stop", self.name)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assert_nothing_left()

    def test_stop_unknown(self):
        p = oakuk("stop", "no-such-instance")
        self.assertEqual(p.returncode, 6, p.stderr)
        self.assertIn("no instance no-such-instance started by oakuk run", p.stderr)


class Unprivileged(RunBase):
    """Without root (nobody), run and stop say what they need and exit 4 before making anything;
    ps, which only reads, works. nobody runs a copy of oakuk, its library and the image in a
    directory it can read: a checkout may lie below one only root can enter (CI clones into a
    0700 temporary directory)."""

    def setUp(self):
        super().setUp()
        self.copy = tempfile.mkdtemp(prefix="oakuk-itest-nobody-")
        self.addCleanup(shutil.rmtree, self.copy, ignore_errors=True)
        os.chmod(self.copy, 0o755)
        lib = os.path.join(os.path.dirname(OAKUK), "..", "..", "lib", "liboakuk.so.0")
        for src in (OAKUK, lib, str(UKGUEST["0.16.3"])):
            shutil.copy(src, self.copy)
        self.bin = os.path.join(self.copy, os.path.basename(OAKUK))

    def nobody(self, *args):
        pre = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env",
               "LD_LIBRARY_PATH=" + self.copy]
        return subprocess.run([*NSENTER, *pre, self.bin, *args], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def test_run_stop_ps(self):
        img = os.path.join(self.copy, UKGUEST["0.16.3"].name)
        for args in (["run", "--allow-emulation", "--name", self.name, img],
                     ["run", "--detach", "--allow-emulation", "--name", self.name, img], ["stop", self.name]):
            with self.subTest(args=args):
                p = self.nobody(*args)
                self.assertEqual(p.returncode, 4, p.stderr)
                self.assertIn("needs root or CAP_NET_ADMIN", p.stderr)
        p = self.nobody("ps")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("NAME "), p.stdout)
        self.assert_nothing_left()


def oci_archive(path, manifest_of):
    """An OCI image layout tarball at path, written here from the published layouts (not by oakuk
    pkg): manifest_of(blob) -> (manifest dict, platform dict or None), blob(bytes) storing a blob and
    giving its descriptor fields; index.json names one image index holding the manifest."""
    import hashlib
    import io
    import json
    import tarfile
    blobs = {}

    def blob(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return {"digest": d, "size": len(data)}

    def js(o):
        return json.dumps(o, sort_keys=True).encode()
    manifest, platform = manifest_of(blob, js)
    m = dict(blob(js(manifest)), mediaType="application/vnd.oci.image.manifest.v1+json")
    if platform:
        m["platform"] = platform
    index = blob(js({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                     "manifests": [m]}))
    top = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        dict(index, mediaType="application/vnd.oci.image.index.v1+json",
             annotations={"org.opencontainers.image.ref.name": "latest"})]}
    with tarfile.open(path, "w") as t:
        for name, data in [("oci-layout", js({"imageLayoutVersion": "1.0.0"})), ("index.json", js(top))] + [
                ("blobs/sha256/" + d.split(":")[1], b) for d, b in blobs.items()]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))


def layer_tar(files):
    """An uncompressed tar layer of {path: bytes}."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


class ThirdPartyLayoutRun(RunBase):
    """`oakuk run` boots the multiboot test kernel packed as KraftKit packs a Unikraft image (an index
    entry with platform qemu/x86_64, the kernel alone in an uncompressed layer at /unikraft/bin/kernel,
    Cmd as the kernel arguments) and as urunc expects one (com.urunc.unikernel.* annotations on the
    manifest, the kernel where .binary says, .cmdline as the arguments), both layouts written by this
    test from their published descriptions, not by `oakuk pkg`."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-itest-layouts-")
        kernel = UKGUEST["0.16.3"].read_bytes() if UKGUEST["0.16.3"].exists() else None
        cls.kraftkit = os.path.join(cls.tmp, "kraftkit.oci.tar")
        cls.urunc = os.path.join(cls.tmp, "urunc.oci.tar")
        if kernel is None:
            return

        def kraftkit(blob, js):
            layer = layer_tar({"unikraft/bin/kernel": kernel})
            ld = blob(layer)
            plat = {"architecture": "x86_64", "os": "qemu", "os.version": "0.16.3"}
            config = blob(js(dict(plat, config={"Cmd": ["kraft", "layout"]},
                                  rootfs={"type": "layers", "diff_ids": [ld["digest"]]})))
            return ({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json", platform=plat),
                     "layers": [dict(ld, mediaType="application/vnd.oci.image.layer.v1.tar",
                                     annotations={"org.unikraft.kernel.image": "/unikraft/bin/kernel"})],
                     "annotations": {"org.unikraft.kernel.version": "0.16.3",
                                     "sh.kraftkit.version": "0.11.6"}}, plat)

        def urunc(blob, js):
            layer = layer_tar({"unikernel/kernel": kernel, "conf/app.conf": b"hello\n"})
            ld = blob(layer)
            config = blob(js({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["ignored"]},
                              "rootfs": {"type": "layers", "diff_ids": [ld["digest"]]}}))
            return ({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                     "layers": [dict(ld, mediaType="application/vnd.oci.image.layer.v1.tar")],
                     "annotations": {"com.urunc.unikernel.unikernelType": "unikraft",
                                     "com.urunc.unikernel.hypervisor": "qemu",
                                     "com.urunc.unikernel.binary": "/unikernel/kernel",
                                     "com.urunc.unikernel.cmdline": "urunc layout",
                                     "com.urunc.unikernel.unikernelVersion": "0.16.3"}},
                    {"architecture": "amd64", "os": "linux"})
        oci_archive(cls.kraftkit, kraftkit)
        oci_archive(cls.urunc, urunc)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        super().setUp()
        if not UKGUEST["0.16.3"].exists():
            self.skipTest("the multiboot test kernel was not built (tests/guests/meson.build)")

    def boot(self, archive, want_argv):
        r = self.start("--allow-emulation", "--arch", "amd64", "oci-archive:" + archive)
        self.assertEqual(r.finish(180), 0, r.stderr())
        out, err = r.stdout(), r.stderr()
        self.assertIn("Telesto 0.16.3~oakuktest", out)  # the test kernel booted
        ip = re.search(rf"oakuk: instance {self.name} at ([0-9.]+)", err).group(1)
        self.assertIn(f"ukguest: netdev.ip={ip}/24:10.18.255.1", out)  # 0.16.3's convention
        self.assertIn(f"ukguest: argv: {want_argv}", out)
        self.assertIn(f"instance {self.name} DEAD: exited cleanly: the guest powered off", err)
        self.assert_nothing_left()

    def test_kraftkit_layout(self):
        self.boot(self.kraftkit, '"kraft" "layout"')

    def test_urunc_layout(self):
        self.boot(self.urunc, '"urunc" "layout"')


class UkGuestRun(RunBase):
    """`oakuk run` with the multiboot test kernel (a 32-bit ELF with a multiboot header, as Unikraft's
    x86 QEMU images): recognised, its Unikraft version detected from its content, its console clean."""

    def setUp(self):
        super().setUp()
        if not all(k.exists() for k in UKGUEST.values()):
            self.skipTest("the multiboot test kernel was not built (tests/guests/meson.build)")

    def assert_clean_console(self, r):
        out = r.stdout()
        for bad in ("\x1b", "\x00", "\r"):
            self.assertNotIn(bad, out, f"console on stdout holds {bad!r}")

    def test_clean_exit_new_convention(self):
        r = self.start("--allow-emulation", str(UKGUEST["0.16.3"]), "--", "a", "b")
        self.assertEqual(r.finish(120), 0, r.stderr())
        out, err = r.stdout(), r.stderr()
        ip = re.search(rf"oakuk: instance {self.name} at ([0-9.]+)", err).group(1)
        self.assertIn("Telesto 0.16.3~oakuktest", out)  # the banner, its escapes gone
        self.assertIn(f"ukguest: netdev.ip={ip}/24:10.18.255.1", out)
        self.assertIn(f"en1: Set IPv4 address {ip} mask 255.255.255.0 gw 10.18.255.1", out)
        self.assertIn('ukguest: argv: "a" "b"', out)
        self.assertIn(f"instance {self.name} DEAD: exited cleanly: the guest powered off", err)
        self.assert_clean_console(r)
        self.assert_nothing_left()

    def test_ready_text_then_power_off(self):
        """A guest that prints its --ready-serial text and powers off at once ends before the next
        probe tick: it is still reported ready (before its end), from one last look at its console."""
        # console and messages on one pipe, as `oakuk run ... 2>&1 | less` has them
        p = subprocess.run([*NSENTER, OAKUK, "run", "--state-dir", self.state, "--name", self.name,
                            "--allow-emulation", "--ready-serial", "Hello from the oakuk test kernel",
                            str(UKGUEST["0.16.3"])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout)
        ready = p.stdout.find(f"instance {self.name} ready ")
        end = p.stdout.find(f"instance {self.name} DEAD: exited cleanly")
        self.assertGreaterEqual(ready, 0, p.stdout)
        self.assertGreater(end, ready, p.stdout)
        self.assert_nothing_left()

    def test_old_convention_by_version(self):
        r = self.start("--allow-emulation", str(UKGUEST["0.15.0"]))
        self.assertEqual(r.finish(120), 0, r.stderr())
        out = r.stdout()
        ip = re.search(rf"oakuk: instance {self.name} at ([0-9.]+)", r.stderr()).group(1)
        self.assertIn(f"ukguest: netdev.ipv4_addr={ip} netdev.ipv4_gw_addr=10.18.255.1 "
                      "netdev.ipv4_subnet_mask=255.255.255.0", out)
        self.assertIn("ukguest: netdev.ip=(none)", out)
        self.assertIn(f"en1: Set IPv4 address {ip} mask 255.255.255.0", out)
        self.assert_nothing_left()

    def test_crash(self):
        r = self.start("--allow-emulation", str(UKGUEST["0.16.3"]), "--", "crash")
        self.assertEqual(r.finish(120), 3, r.stderr())
        err = r.stderr()
        self.assertIn(f"instance {self.name} crashed (DEAD): the guest panicked", err)
        self.assertIn("CRIT: [libkvmplat]", err)  # the console's crash lines in the detail
        self.assertIn("Unhandled Trap 14", r.stdout())
        self.assert_clean_console(r)
        self.assert_nothing_left()

    def test_reset(self):
        r = self.start("--allow-emulation", str(UKGUEST["0.16.3"]), "--", "reset")
        self.assertEqual(r.finish(120), 3, r.stderr())
        self.assertIn(f"instance {self.name} crashed (DEAD): the guest reset itself", r.stderr())
        self.assert_nothing_left()

    def test_wrong_convention_is_named(self):
        """0.15-style parameters given to a 0.16.3 guest: it boots, never configures its address, never
        answers; the runtime says why, and the run ends after --ready-timeout (exit 7)."""
        port = ports(1)[0]
        r = self.start("--allow-emulation", "--uk-version", "0.15.0", "-p", f"{port}:8080", "--ready-timeout", "8",
                       str(UKGUEST["0.16.3"]), "--", "stay")
        self.assertEqual(r.finish(120), 7, r.stderr())
        err = r.stderr()
        ip = re.search(rf"oakuk: instance {self.name} at ([0-9.]+)", err).group(1)
        self.assertIn("waiting until it is ready: tcp port 8080", err)
        self.assertIn(f"guest did not configure {ip} (wrong netdev parameters for Unikraft 0.15.0?)", err)
        self.assertIn(f"not ready after 8 s", err)
        self.assertNotIn("Set IPv4 address", r.stdout())
        self.assert_nothing_left(port)

    def test_ready_on_console(self):
        r = self.start("--allow-emulation", "--ready-serial", "Hello from the oakuk test kernel", str(UKGUEST["0.16.3"]),
                       "--", "stay")
        line = r.wait_for(lambda: re.search(rf"instance {self.name} ready (\d+) ms after its start \(\"Hello from",
                                            r.stderr()), 120)
        self.assertIsNotNone(line, r.stderr())
        self.assertNotIn("did not configure", r.stderr())  # it did: en1's line came before the text
        r.p.send_signal(signal.SIGINT)
        self.assertEqual(r.finish(30), 0, r.stderr())
        self.assert_nothing_left()


if __name__ == "__main__":
    OAKUK = sys.argv.pop(1)
    RUN_DIR = tempfile.mkdtemp(prefix="oakuk-itest-rundir-")
    os.chmod(RUN_DIR, 0o755)  # as oakuk makes /run/oakuk/run: oakuk ps reads it as any user
    os.environ["OAKUK_RUN_DIR"] = RUN_DIR
    if os.getuid() == 0:
        subprocess.run(["ip", "netns", "add", HOSTNS], check=True)
        subprocess.run(["ip", "-n", HOSTNS, "link", "set", "lo", "up"], check=True)
        # A new namespace may inherit the machine's forwarding: the node starts without it here.
        subprocess.run([*NSENTER, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    try:
        prog = unittest.main(verbosity=2, exit=False)
    finally:
        if os.getuid() == 0:
            subprocess.run(["ip", "netns", "del", HOSTNS])
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    sys.exit(0 if prog.result.wasSuccessful() else 1)

"""The unikernel runtime through the binding: the project's test guest (tests/guests, found
through OAKUK_GUESTS_DIR) fetched into an image cache by file:// URL, deployed with QEMU under TCG
(never KVM: nested KVM hangs guests), watched until RUNNING and ready, its console read, stopped
and checked gone. Needs root (cgroups; QEMU runs as the unprivileged user "nobody")."""

import gc
import hashlib
import os
import shutil
import tempfile
import time
import unittest

import oakuk

GUESTS = os.environ.get("OAKUK_GUESTS_DIR")
QEMU_USER = "nobody"


def guest(name):
    return os.path.join(GUESTS, name) if GUESTS else None


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def proc_status(pid):
    with open("/proc/%d/status" % pid, encoding="utf-8") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def need_guest(test):
    if os.geteuid() != 0:
        test.skipTest("needs root (cgroups; QEMU is started as an unprivileged user)")
    if not shutil.which("qemu-system-x86_64"):
        test.skipTest("needs qemu-system-x86_64")
    if not GUESTS or not os.path.exists(guest("guest-amd64.tar.gz")):
        test.skipTest("needs the amd64 test guest (OAKUK_GUESTS_DIR; built as root)")


class Fixture(unittest.TestCase):
    """A scratch directory holding an image cache and the runtime's state; removed afterwards,
    after the runtime (whose last reference stops whatever a failed test left running)."""

    def setUp(self):
        need_guest(self)
        self.tmp = tempfile.mkdtemp(prefix="oakuk-py-rt-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.cache = oakuk.ImageCache(os.path.join(self.tmp, "cache"), file_allowed_dirs=[GUESTS])
        self.state = os.path.join(self.tmp, "state")
        self.rt = oakuk.qemu_runtime(self.state, allow_emulation=True, run_as=QEMU_USER)
        self.addCleanup(self.rt.close)

    def name(self, what):
        return "py%d.%s.instance.0" % (os.getpid(), what)

    def image(self):
        return self.cache.fetch("file://" + guest("guest-amd64.tar.gz"))

    def spec(self, what, **settings):
        settings.setdefault("accel", "tcg")
        settings.setdefault("memory_mb", 96)
        return oakuk.InstanceSpec.from_image(self.name(what), self.image(), **settings)


class Images(Fixture):
    def test_fetch_file_url_verifies_and_unpacks(self):
        path = guest("guest-amd64.tar.gz")
        digest = sha256(path)
        progress = []
        img = self.cache.fetch("file://" + path, sha256=digest, progress=lambda b, t: progress.append((b, t)))
        self.assertEqual(img.sha256, digest)
        self.assertEqual(img.url, "file://" + path)
        self.assertEqual((img.flavor, img.arch), ("linux", "amd64"))
        self.assertTrue(img.dir.startswith(self.cache.dir))
        self.assertTrue(os.path.isfile(img.kernel))
        self.assertTrue(os.path.isfile(img.initrd))
        with open(os.path.join(img.files_dir, "hello.txt"), encoding="utf-8") as f:
            self.assertTrue(f.read())
        self.assertIn("console=ttyS0", img.cmdline_extra)
        self.assertIsNone(img.digest)
        self.assertTrue(progress and progress[-1][0] == os.path.getsize(path), progress)
        self.assertGreater(self.cache.size, 0)
        # a second fetch with the digest is served from the cache: the same directory
        self.assertEqual(self.cache.fetch("file://" + path, sha256=digest).dir, img.dir)

    def test_fetch_errors_carry_code_and_message(self):
        path = guest("guest-amd64.tar.gz")
        with self.assertRaises(oakuk.OakukError) as cm:
            self.cache.fetch("file://" + path, sha256="0" * 64)
        self.assertEqual(cm.exception.code_name, "OAKUK_EVERIFY")
        self.assertIn("0" * 64, cm.exception.message)
        outside = os.path.join(self.tmp, "elsewhere.tar.gz")
        shutil.copy(path, outside)
        with self.assertRaises(oakuk.OakukError) as cm:
            self.cache.fetch("file://" + outside)
        self.assertEqual(cm.exception.code_name, "OAKUK_EPERM")
        self.assertIn(outside, cm.exception.message)
        with self.assertRaises(oakuk.OakukError) as cm:
            self.cache.fetch("file://" + guest("no-such-guest.tar.gz"))
        self.assertIn(cm.exception.code_name, ("OAKUK_ENOTFOUND", "OAKUK_EPERM"))

    def test_invalid_option_names_its_path(self):
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.ImageCache(os.path.join(self.tmp, "c2"), max_entries=0)
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
        self.assertIn("max_entries", cm.exception.path or cm.exception.message)

    def test_prune_keeps_images_in_use(self):
        img = self.image()
        self.assertEqual(self.cache.prune(), 0)
        self.assertTrue(os.path.isdir(img.dir))
        kept = img.dir
        del img
        self.assertGreater(self.cache.prune(), 0)
        self.assertFalse(os.path.exists(kept))

    def test_image_outlives_the_cache_object(self):
        img = self.image()
        kernel = img.kernel
        del self.cache
        gc.collect()
        self.assertEqual(img.kernel, kernel)
        self.assertTrue(os.path.isfile(kernel))
        spec = oakuk.InstanceSpec.from_image("py.keep.instance.0", img)
        del img
        gc.collect()
        self.assertEqual(spec.kernel, kernel)  # the spec copied the path

    def test_kernel_inspection(self):
        img = self.image()
        self.assertEqual(oakuk.image.kernel_arch(img.kernel), "amd64")
        # Debian's kernel is a bzImage with a PVH note; the inspector names what QEMU uses
        self.assertIn(oakuk.image.kernel_format(img.kernel), ("PVH (64-bit ELF)", "bzImage"))
        flavor, version = oakuk.image.kernel_unikraft_version(img.kernel)
        self.assertEqual(flavor, "linux")
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.image.kernel_arch(img.initrd)
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
        uk = guest("ukguest-0.16.3.kernel")
        if os.path.exists(uk):
            self.assertEqual(oakuk.image.kernel_unikraft_version(uk), ("unikraft", "0.16.3"))
            self.assertIn("multiboot", oakuk.image.kernel_format(uk))


class Probe(unittest.TestCase):
    def test_probe_and_command(self):
        if not shutil.which("qemu-system-x86_64"):
            self.skipTest("needs qemu-system-x86_64")
        caps = oakuk.qemu_probe(allow_emulation=True)
        self.assertEqual(caps.host_arch, "amd64")
        self.assertIsNotNone(caps.qemu_version("amd64"))
        self.assertIn(caps.accel_for_arch("amd64"), ("kvm", "tcg"))
        if not caps.kvm:
            self.assertTrue(caps.kvm_reason)
        self.assertIn('"qemu_version"', caps.to_json())
        if not GUESTS or not os.path.exists(guest("amd64-kernel")):
            return
        spec = oakuk.InstanceSpec("py.argv.instance.0", kernel=guest("amd64-kernel"),
                                  initrd=guest("amd64-initrd"), accel="tcg", memory_mb=96, args=["a", "b"])
        with tempfile.TemporaryDirectory(prefix="oakuk-py-argv-") as d:
            argv = oakuk.qemu_build_argv(spec, d)
        self.assertTrue(argv[0].endswith("qemu-system-x86_64"), argv)
        self.assertIn(guest("amd64-kernel"), argv)
        self.assertTrue(any("tcg" in a for a in argv), argv)
        spec.add_arg("has space")
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.qemu_build_argv(spec, "/nonexistent")
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")


class Lifecycle(Fixture):
    def test_deploy_running_ready_console_undeploy(self):
        name = self.name("life")
        spec = self.spec("life", args=["hello"], readiness_serial="oakuk-guest: ready")
        self.assertEqual((spec.accel, spec.arch, spec.flavor), ("tcg", "amd64", "linux"))
        self.assertEqual(spec.args, ["hello"])
        statuses = []
        readies = []
        self.rt.on_status(lambda inst, status, detail: statuses.append((inst, status)))
        self.rt.on_ready(lambda inst, ms: readies.append((inst, ms)))
        self.rt.deploy(spec)
        self.assertEqual(self.rt.instances, [name])

        running = self.rt.wait_status(name, "RUNNING", timeout=60)
        self.assertEqual(running.instance, name)
        self.assertEqual([s for _, s in statuses][:2], ["CREATING", "RUNNING"])
        self.assertEqual(self.rt.status(name), "RUNNING")
        pid = self.rt.pid(name)
        self.assertTrue(pid_alive(pid), pid)
        st = proc_status(pid)
        self.assertEqual(st["Uid"].split()[0], str(__import__("pwd").getpwnam(QEMU_USER).pw_uid))
        self.assertEqual(st["NoNewPrivs"], "1")

        ready_ms = self.rt.wait_ready(name, timeout=180)
        self.assertTrue(self.rt.ready(name))
        self.assertGreater(ready_ms, 0)
        self.assertEqual(readies, [(name, ready_ms)])
        console = self.rt.wait_console(name, "oakuk-guest: ready ip=none files=yes args=hello", timeout=30)
        self.assertNotIn("\x1b", console)  # cleaned: SeaBIOS's escape sequences are gone
        self.assertTrue(self.rt.console_path(name).startswith(self.state))
        cpu, rss_kb = self.rt.stats(name)
        self.assertGreaterEqual(cpu, 0.0)
        self.assertGreater(rss_kb, 0)
        self.assertEqual(self.rt.exit_kind(name), "none")

        with self.assertRaises(oakuk.OakukError) as cm:
            self.rt.deploy(self.spec("life"))
        self.assertEqual(cm.exception.code_name, "OAKUK_EEXISTS")

        self.rt.undeploy(name)
        self.rt.wait_status(name, "UNDEPLOYED", timeout=30)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(pid_alive(pid), "QEMU %d outlived undeploy" % pid)
        self.assertEqual(self.rt.instances, [])
        self.assertIsNone(self.rt.status(name))
        self.assertEqual(self.rt.pid(name), 0)
        self.assertIsNone(self.rt.console_path(name))
        self.assertFalse(os.path.exists(os.path.join(self.state, "instances", name)))
        with self.assertRaises(oakuk.OakukError) as cm:
            self.rt.undeploy(name)
        self.assertEqual(cm.exception.code_name, "OAKUK_ENOTFOUND")

    def test_one_shot_guest_that_exits_completes(self):
        name = self.name("exit")
        self.rt.deploy(self.spec("exit", args=["exit"], one_shot=True))
        event = self.rt.wait_status(name, "COMPLETED", timeout=180)
        self.assertEqual(event.instance, name)
        self.assertEqual(self.rt.exit_kind(name), "clean")
        self.assertIn("oakuk-guest: exiting", self.rt.console(name))
        self.rt.undeploy(name)
        self.rt.wait_status(name, "UNDEPLOYED", timeout=30)

    def test_callback_errors_surface_in_the_wait(self):
        name = self.name("cberr")

        def fail_on_running(instance, status, detail):
            if status == "RUNNING":
                raise RuntimeError("callback saw " + instance)

        self.rt.on_status(fail_on_running)
        self.rt.deploy(self.spec("cberr", args=["exit"], one_shot=True))
        with self.assertRaises(RuntimeError) as cm:
            self.rt.wait_status(name, "COMPLETED", timeout=180)
        self.assertIn(name, str(cm.exception))
        # the status itself was recorded: waiting again goes on from there
        self.rt.wait_status(name, "COMPLETED", timeout=180)
        self.assertEqual([e.status for e in self.rt.events if e.instance == name][:2], ["CREATING", "RUNNING"])
        self.rt.undeploy(name)
        self.rt.wait_status(name, "UNDEPLOYED", timeout=30)

    def test_crash_is_dead_with_the_panic_line(self):
        name = self.name("crash")
        # panic=-1 asks for a reboot; QEMU runs with -no-reboot, so the instance ends DEAD, and a
        # crash is never COMPLETED, even one-shot
        self.rt.deploy(self.spec("crash", args=["crash"], one_shot=True))
        with self.assertRaises(oakuk.OakukError) as cm:
            self.rt.wait_status(name, "COMPLETED", timeout=180)
        self.assertIn("DEAD while waiting for COMPLETED", cm.exception.message)
        self.assertIn("Kernel panic", cm.exception.message)  # the detail: the last serial lines
        self.assertEqual(self.rt.pid(name), 0)
        self.assertEqual(self.rt.exit_kind(name), "crash")
        kind, line = oakuk.console.crash(self.rt.console_path(name))
        self.assertEqual(kind, "linux")
        self.assertIn("Kernel panic", line)
        self.rt.undeploy(name)
        self.rt.wait_status(name, "UNDEPLOYED", timeout=30)

    def test_invalid_specs_raise_with_the_reason(self):
        with self.assertRaises(oakuk.OakukError) as cm:
            self.rt.deploy(oakuk.InstanceSpec("bad name!", kernel=guest("amd64-kernel")))
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
        self.assertIn("bad name!", cm.exception.message)
        spec = self.spec("arm")
        spec.arch = "arm64"
        with self.assertRaises(oakuk.OakukError) as cm:
            self.rt.deploy(spec)
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
        self.assertIn("built for amd64 but the instance runs arm64", cm.exception.message)
        self.assertEqual(self.rt.instances, [])

    def test_root_is_refused_as_qemu_user(self):
        with self.assertRaises(oakuk.OakukError) as cm:
            oakuk.qemu_runtime(os.path.join(self.tmp, "state2"), run_as="root")
        self.assertEqual(cm.exception.code_name, "OAKUK_EINVAL")
        self.assertEqual(cm.exception.path, "run_as")

    def test_closing_the_runtime_stops_its_instances(self):
        name = self.name("close")
        self.rt.deploy(self.spec("close"))
        self.rt.wait_status(name, "RUNNING", timeout=60)
        pid = self.rt.pid(name)
        self.assertTrue(pid_alive(pid))
        self.rt.close()
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(pid_alive(pid), "QEMU %d outlived its runtime" % pid)
        with self.assertRaises(ValueError):
            self.rt.deploy(self.spec("close"))


class ConsoleText(unittest.TestCase):
    def test_cleaner(self):
        c = oakuk.console.Console()
        out = c.feed(b"\x1b[2J\x1b[01;01Hboot\r\nhal")
        out += c.feed(b"f \xe2\x82")
        out += c.finish()
        self.assertEqual(out, "boot\nhalf \ufffd")

    def test_tail_and_crash(self):
        with tempfile.TemporaryDirectory(prefix="oakuk-py-console-") as d:
            log = os.path.join(d, "serial.log")
            with open(log, "wb") as f:
                f.write(b"one\n\n  two  \nKernel panic - not syncing: Attempted to kill init!\n")
            self.assertEqual(oakuk.console.tail(log, 2), "  two  \nKernel panic - not syncing: Attempted to kill init!")
            self.assertEqual(oakuk.console.tail(log, 10, flags=oakuk.console.SKIP_EMPTY | oakuk.console.STRIP).split("\n")[:2],
                             ["one", "two"])
            kind, line = oakuk.console.crash(log)
            self.assertEqual(kind, "linux")
            self.assertTrue(line.startswith("Kernel panic"))
            with self.assertRaises(oakuk.OakukError) as cm:
                oakuk.console.tail(os.path.join(d, "missing.log"))
            self.assertEqual(cm.exception.code_name, "OAKUK_ENOTFOUND")
        self.assertIsNone(oakuk.console.line_crash("all is well"))
        self.assertEqual(oakuk.console.line_crash("CRIT: [libukboot] boot failed"), "unikraft")


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""Integration test of `oakuk pkg` (docs/cli.md): the project's amd64 and arm64 test guests and the
ukguest multiboot kernel (tests/guests, never downloaded images) packed into one two-architecture
index in KraftKit's layout, written as an OCI layout tarball and pushed to a local docker-registry
(Debian's, on loopback; plain and htpasswd), the printed digests checked against what the registry
serves; --from-tar from the guests' Oakestra tarballs; and every bad command line refused with exit
2 naming the option and the file, nothing written.

Usage: test-pkg.py <path to oakuk>   (guests from $OAKUK_GUESTS_DIR)"""
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import base64

OAKUK = None
GUESTS = pathlib.Path(os.environ.get("OAKUK_GUESTS_DIR", "/nonexistent"))
REGISTRY_BIN = "/usr/bin/docker-registry"
USER, PASS = "oakuk", "registry secret 1"
ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, tmp, auth):
        self.dir = tempfile.mkdtemp(dir=tmp, prefix="registry-")
        self.addr = "127.0.0.1:%d" % free_port()
        cfg = ("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n"
               "http:\n  addr: %s\n" % (self.dir, self.addr))
        self.auth = auth
        if auth:
            pw = os.path.join(self.dir, "htpasswd")
            with open(pw, "w") as f:
                f.write("%s:%s\n" % (USER, crypt.crypt(PASS, crypt.mksalt(crypt.METHOD_BLOWFISH))))
            cfg += "auth:\n  htpasswd:\n    realm: oakuk-test\n    path: %s\n" % pw
        with open(os.path.join(self.dir, "config.yml"), "w") as f:
            f.write(cfg)
        self.log = open(os.path.join(self.dir, "registry.log"), "w")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", os.path.join(self.dir, "config.yml")],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(tuple([self.addr.split(":")[0], int(self.addr.split(":")[1])]), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()

    def get(self, path, accept=ACCEPT):
        req = urllib.request.Request("http://%s%s" % (self.addr, path), headers={"Accept": accept})
        if self.auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.headers, r.read()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digests(out):
    """`oakuk pkg`'s stdout: "index <d>", "<arch> <d>"..., "pinned <ref>" → dict."""
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


class PkgTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-pkg-test-")
        cls.plain = Registry(cls.tmp, False)
        cls.authed = Registry(cls.tmp, True)

    @classmethod
    def tearDownClass(cls):
        cls.plain.stop()
        cls.authed.stop()
        if os.environ.get("KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def oakuk(self, *args, stdin=None):
        p = subprocess.run([OAKUK, "pkg"] + [str(a) for a in args], input=stdin, capture_output=True, text=True,
                           timeout=300)
        return p.returncode, p.stdout, p.stderr

    def two_arch_args(self):
        return ["--kernel", "amd64=%s" % (GUESTS / "amd64-kernel"), "--initrd", "amd64=%s" % (GUESTS / "amd64-initrd"),
                "--kernel", "arm64=%s" % (GUESTS / "arm64-kernel"), "--initrd", "arm64=%s" % (GUESTS / "arm64-initrd"),
                "--cmd", "hello"]

    def read_layout(self, path):
        """The index the layout tarball's index.json points to, and a blob reader."""
        t = tarfile.open(path)
        outer = json.load(t.extractfile("index.json"))
        blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":", 1)[1]).read()  # noqa: E731
        idx_digest = outer["manifests"][0]["digest"]
        raw = blob(idx_digest)
        self.assertEqual(sha256(raw), idx_digest)
        return t, idx_digest, json.loads(raw), blob

    def test_output_two_arch_layout(self):
        out_path = os.path.join(self.tmp, "two.oci.tar")
        rc, out, err = self.oakuk(*self.two_arch_args(), "--output", out_path, "--name", "guests/hello:1")
        self.assertEqual(rc, 0, err)
        d = parse_digests(out)
        self.assertEqual(set(d), {"index", "amd64", "arm64"}, out)
        self.assertIn("oci-archive:file://" + out_path, err)
        t, idx_digest, idx, blob = self.read_layout(out_path)
        self.assertEqual(idx_digest, d["index"])
        qemu = {m["platform"]["architecture"]: m["digest"] for m in idx["manifests"]
                if m["platform"]["os"] == "qemu"}
        self.assertEqual(qemu, {"x86_64": d["amd64"], "arm64": d["arm64"]})
        # KraftKit's layout: the kernel at /unikraft/bin/kernel, Cmd the arguments.
        man = json.loads(blob(d["amd64"]))
        cfg = json.loads(blob(man["config"]["digest"]))
        self.assertEqual((cfg["os"], cfg["architecture"]), ("qemu", "x86_64"))
        self.assertEqual(cfg["config"]["Cmd"], ["hello"])
        kernel = (GUESTS / "amd64-kernel").read_bytes()
        found = False
        for layer in man["layers"]:
            lt = tarfile.open(fileobj=__import__("io").BytesIO(blob(layer["digest"])))
            for m in lt.getmembers():
                if m.name.lstrip("./").lstrip("/") == "unikraft/bin/kernel":
                    found = lt.extractfile(m).read() == kernel
        t.close()
        self.assertTrue(found, "no /unikraft/bin/kernel layer holding the amd64 kernel")
        # Reproducible: the same inputs, the same digests.
        rc, out2, err = self.oakuk(*self.two_arch_args(), "--output", out_path + ".2", "--name", "guests/hello:1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out2, out)

    def test_push_plain(self):
        ref = "%s/guests/hello:1" % self.plain.addr
        rc, out, err = self.oakuk(*self.two_arch_args(), "--push", ref)
        self.assertEqual(rc, 0, err)
        d = parse_digests(out)
        self.assertEqual(d["pinned"], "%s/guests/hello@%s" % (self.plain.addr, d["index"]))
        headers, body = self.plain.get("/v2/guests/hello/manifests/1")
        self.assertEqual(sha256(body), d["index"])
        idx = json.loads(body)
        archs = {m["platform"]["architecture"] for m in idx["manifests"] if m["platform"]["os"] == "qemu"}
        self.assertEqual(archs, {"x86_64", "arm64"})
        for arch in ("amd64", "arm64"):
            _, man = self.plain.get("/v2/guests/hello/manifests/" + d[arch])
            self.assertEqual(sha256(man), d[arch])

    def test_push_auth(self):
        ref = "%s/guests/secret:1" % self.authed.addr
        kernel = ["--kernel", GUESTS / "ukguest-0.16.3.kernel"]
        rc, out, err = self.oakuk(*kernel, "--push", ref)
        self.assertEqual(rc, 1, err)
        self.assertIn("--push " + ref, err)
        self.assertEqual(out, "")
        pwfile = os.path.join(self.tmp, "registry-password")
        with open(pwfile, "w") as f:
            f.write(PASS + "\n")
        rc, out, err = self.oakuk(*kernel, "--push", ref, "--username", USER, "--password-file", pwfile)
        self.assertEqual(rc, 0, err)
        d = parse_digests(out)
        self.assertEqual(set(d), {"index", "amd64", "pinned"})
        _, body = self.authed.get("/v2/guests/secret/manifests/1")
        self.assertEqual(sha256(body), d["index"])
        rc, out, err = self.oakuk(*kernel, "--push", ref, "--username", USER, "--password-stdin", stdin=PASS + "\n")
        self.assertEqual(rc, 0, err)
        self.assertEqual(parse_digests(out)["index"], d["index"])

    def test_from_tar(self):
        out_path = os.path.join(self.tmp, "fromtar.oci.tar")
        rc, out, err = self.oakuk("--from-tar", "amd64=%s" % (GUESTS / "guest-amd64.tar.gz"),
                                  "--from-tar", GUESTS / "guest-arm64-nofiles.tar.gz", "--output", out_path)
        self.assertEqual(rc, 0, err)
        d = parse_digests(out)
        self.assertEqual(set(d), {"index", "amd64", "arm64"})
        t, _, idx, blob = self.read_layout(out_path)
        man = json.loads(blob(d["amd64"]))
        names = set()
        for layer in man["layers"]:
            lt = tarfile.open(fileobj=__import__("io").BytesIO(blob(layer["digest"])))
            names |= {m.name.lstrip("./").lstrip("/") for m in lt.getmembers()}
        t.close()
        self.assertIn("hello.txt", names)  # the tarball's files/ became the image's files
        self.assertIn("unikraft/bin/initrd", names)
        # A tarball whose kernel is not the arch named: refused, naming the tarball.
        rc, out, err = self.oakuk("--from-tar", "amd64=%s" % (GUESTS / "guest-arm64.tar.gz"), "--output", out_path)
        self.assertEqual(rc, 2, err)
        self.assertIn("guest-arm64.tar.gz: the kernel is an arm64 kernel, not amd64", err)

    def test_bad_command_lines(self):
        out_path = os.path.join(self.tmp, "bad.oci.tar")
        amd64 = "amd64=%s" % (GUESTS / "amd64-kernel")
        cases = [
            ([], "no kernel"),
            (["--kernel", amd64], "exactly one of --output"),
            (["--kernel", amd64, "--output", out_path, "--push", "%s/x:1" % self.plain.addr], "exactly one of"),
            (["--kernel", "riscv64=/x", "--output", out_path], 'architecture "riscv64" is not amd64 or arm64'),
            (["--kernel", "amd64=/nonexistent/k", "--output", out_path], "--kernel amd64=/nonexistent/k: No such file"),
            (["--kernel", "arm64=%s" % (GUESTS / "amd64-kernel"), "--output", out_path],
             "amd64-kernel: the kernel is an amd64 kernel, not arm64"),
            (["--kernel", "amd64=%s" % (GUESTS / "amd64-initrd"), "--output", out_path], "amd64-initrd"),
            (["--kernel", amd64, "--kernel", amd64, "--output", out_path], "a second kernel for amd64"),
            (["--kernel", amd64, "--initrd", "arm64=%s" % (GUESTS / "arm64-initrd"), "--output", out_path],
             "--initrd arm64=...: no kernel for arm64"),
            (["--kernel", amd64, "--initrd", str(GUESTS / "amd64-initrd"), "--output", out_path],
             "say which kernel it goes with"),
            (["--kernel", amd64, "--files", "/nonexistent/dir", "--output", out_path], "--files /nonexistent/dir"),
            (["--kernel", amd64, "--cmd", "a b", "--output", out_path], '--cmd "a b"'),
            (["--kernel", amd64, "--env", "NOEQUALS", "--output", out_path], "--env NOEQUALS"),
            (["--kernel", amd64, "--uk-version", "banana", "--output", out_path], "--uk-version banana"),
            (["--kernel", amd64, "--push", "%s/Bad/Name:1" % self.plain.addr], "--push"),
            (["--kernel", amd64, "--output", out_path, "--username", "u"], "go with --push"),
            (["--kernel", amd64, "--push", "%s/x:1" % self.plain.addr, "--username", "u"], "give its password"),
            (["--kernel", amd64, "--output", out_path, "stray"], 'unexpected argument "stray"'),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                rc, out, err = self.oakuk(*args)
                self.assertEqual(rc, 2, err)
                self.assertIn(want, err)
                self.assertEqual(out, "")
                self.assertFalse(os.path.exists(out_path))

    def test_output_unwritable(self):
        rc, out, err = self.oakuk("--kernel", GUESTS / "ukguest-0.16.3.kernel", "--output", "/nonexistent/dir/x.tar")
        self.assertEqual(rc, 1, err)
        self.assertIn("--output /nonexistent/dir/x.tar", err)

    def test_push_unreachable(self):
        port = free_port()
        rc, out, err = self.oakuk("--kernel", GUESTS / "ukguest-0.16.3.kernel", "--push", "127.0.0.1:%d/x:1" % port)
        self.assertEqual(rc, 1, err)
        self.assertIn("--push 127.0.0.1:%d/x:1" % port, err)


if __name__ == "__main__":
    OAKUK = sys.argv.pop(1)
    if not os.access(REGISTRY_BIN, os.X_OK) or not (GUESTS / "arm64-kernel").exists() \
            or not (GUESTS / "ukguest-0.16.3.kernel").exists():
        print("1..0 # SKIP needs %s (Debian's docker-registry) and the test guests" % REGISTRY_BIN)
        sys.exit(77)
    unittest.main(verbosity=2)

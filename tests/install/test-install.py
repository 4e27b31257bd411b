#!/usr/bin/python3
"""`meson install` into a scratch DESTDIR, and the installed tree as an operator gets it
(docs/deploy.md): systemd units with this prefix's paths (systemd-analyze verify, with the man
pages they name), sysusers.d and tmpfiles.d applied to a scratch root, example configurations
naming every key the daemons know (and accepted by them), man pages that groff formats without a
warning, the docs, the .pc file and the headers; the root unit's ExecStart run as written (its
variables substituted) up to /healthz over TLS and a clean stop; `oakuk-cluster join` against that
root with a real token, the cluster unit's ExecStart registering it as an unprivileged user (its
mosquitto too), join's foreground start; `oakuk-node join`; join's systemd path (sysusers,
daemon-reload, enable --now) against stand-ins in a private mount namespace; and every refusal of
join (malformed token, bad URL, another root's config, another CA's state, paths the unit does not
read) with a clear message, a non-zero exit, no secret in it and nothing written.

Usage: test-install.py <build dir>"""
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = None
SOURCE = os.environ.get("OAKUK_SOURCE_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEST = None  # the DESTDIR
OPT = {}  # meson's directory options, absolute
FP = "ab" * 32  # a well-formed CA fingerprint
TOKEN = "oakuk1.%s.%s" % (FP, "0123456789abcdef" * 3)
PROCS = []


def setUpModule():
    global DEST
    DEST = tempfile.mkdtemp(prefix="oakuk-install-")
    opts = json.loads(subprocess.run(["meson", "introspect", "--buildoptions", BUILD], check=True,
                                     capture_output=True, text=True).stdout)
    values = {o["name"]: o["value"] for o in opts}
    prefix = values["prefix"]
    for name in ("bindir", "sbindir", "sysconfdir", "datadir", "mandir", "includedir", "libdir"):
        v = values[name]
        OPT[name] = v if os.path.isabs(v) else os.path.join(prefix, v)
    OPT["prefix"] = prefix
    r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet", "--destdir", DEST],
                       capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(DEST, ignore_errors=True)  # tearDownModule does not run after a failed setUpModule
        raise RuntimeError("meson install failed:\n" + r.stdout + r.stderr)


def tearDownModule():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    if DEST:
        shutil.rmtree(DEST, ignore_errors=True)


def d(path):
    """An installed path inside the DESTDIR."""
    return DEST + path


def unit_path(name):
    return d(os.path.join(OPT["prefix"], "lib", "systemd", "system", name))


def unit_values(name, key):
    with open(unit_path(name)) as f:
        return [line.split("=", 1)[1].strip() for line in f if line.startswith(key + "=")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_keys(daemon, array):
    """The config keys a daemon accepts: its own list in main.c."""
    with open(os.path.join(SOURCE, "daemons", daemon, "main.c")) as f:
        text = f.read()
    body = re.search(r"%s\[\] = \{(.*?)NULL\}" % array, text, re.S).group(1)
    return set(re.findall(r'"([a-z_]+)"', body))


def https_get(port, path, ca_file, timeout=5):
    ctx = ssl.create_default_context(cafile=ca_file)
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def https_call(port, method, path, ca_file, body=None, token=None):
    ctx = ssl.create_default_context(cafile=ca_file)
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        c.request(method, path, json.dumps(body) if body is not None else None, headers)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


def wait_for(what, fn, timeout=30, proc=None, log=None):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s: the process exited (%d): %s" % (what, proc.returncode, log and open(log).read()))
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.2)
    raise AssertionError("%s: not within %d s (%s)%s" % (what, timeout, last, log and "\n" + open(log).read()))


def stop(proc, timeout):
    """SIGTERM (the units' KillSignal) must end it within the unit's TimeoutStopSec."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


UNIT_USER = 65534  # nobody/nogroup stands in for the units' oakuk-root and oakuk-cluster


def unit_user(unit, state_dir):
    """What systemd does for User= and StateDirectory=: the directory (0700) and everything in it
    belong to the unit's user, and the process runs as that user. Popen arguments."""
    if not unit_values(unit, "User") or os.geteuid() != 0:
        return {}  # root's unit, or not root at all: then the caller is the unprivileged user
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    for top, dirs, files in os.walk(state_dir):
        for name in [top] + [os.path.join(top, x) for x in dirs + files]:
            os.chown(name, UNIT_USER, UNIT_USER)
    return {"user": UNIT_USER, "group": UNIT_USER, "extra_groups": []}


def exec_start(unit, state_dir, replace=()):
    """The unit's ExecStart as argv: the program from the DESTDIR, ${STATE_DIRECTORY} substituted."""
    (line,) = unit_values(unit, "ExecStart")
    argv = [a.replace("${STATE_DIRECTORY}", state_dir) for a in line.split()]
    argv[0] = d(argv[0])
    for old, new in replace:
        argv = [new if a == old else a for a in argv]
    return argv


class Installed(unittest.TestCase):
    def test_programs_and_units(self):
        for prog in ("oakuk-root", "oakuk-cluster", "oakuk-node"):
            self.assertTrue(os.access(d(os.path.join(OPT["sbindir"], prog)), os.X_OK), prog)
            unit = prog + ".service"
            with open(unit_path(unit)) as f:
                text = f.read()
            self.assertNotIn("@", text.replace("@FILE", ""), "unsubstituted variable in " + unit)
            (start,) = unit_values(unit, "ExecStart")
            self.assertTrue(start.startswith(os.path.join(OPT["sbindir"], prog) + " "), start)
            self.assertEqual(unit_values(unit, "StateDirectory"), ["oakuk/" + prog.split("-")[1]])
            self.assertEqual(unit_values(unit, "StateDirectoryMode"), ["0700"])
            if prog != "oakuk-root":
                self.assertIn("--config " + os.path.join(OPT["sysconfdir"], "oakuk", prog.split("-")[1] + ".conf"),
                              start)
        self.assertTrue(os.access(d(os.path.join(OPT["bindir"], "oakuk")), os.X_OK))
        # No root where none is needed; the node builds networks and runs as root.
        self.assertEqual(unit_values("oakuk-root.service", "User"), ["oakuk-root"])
        self.assertEqual(unit_values("oakuk-cluster.service", "User"), ["oakuk-cluster"])
        self.assertEqual(unit_values("oakuk-node.service", "User"), [])

    def test_sysusers_and_tmpfiles_apply(self):
        lib = os.path.join(OPT["prefix"], "lib")
        sysusers = d(os.path.join(lib, "sysusers.d", "oakuk.conf"))
        tmpfiles = d(os.path.join(lib, "tmpfiles.d", "oakuk.conf"))
        with open(sysusers) as f:
            users = {line.split()[1] for line in f if line.startswith("u ")}
        self.assertEqual(users, {"oakuk-root", "oakuk-cluster"})
        if shutil.which("systemd-sysusers") is None:
            self.skipTest("systemd-sysusers is not installed (Debian package systemd)")
        scratch = tempfile.mkdtemp(prefix="oakuk-sysroot-", dir=DEST)
        os.makedirs(os.path.join(scratch, "etc"))
        r = subprocess.run(["systemd-sysusers", "--root=" + scratch, sysusers], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(scratch, "etc", "passwd")) as f:
            created = {line.split(":")[0] for line in f}
        self.assertLessEqual(users, created)
        r = subprocess.run(["systemd-tmpfiles", "--root=" + scratch, "--create", tmpfiles], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        for path in (os.path.join(OPT["sysconfdir"], "oakuk"), "/var/lib/oakuk"):
            st = os.stat(scratch + path)
            self.assertTrue(stat.S_ISDIR(st.st_mode), path)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o755, path)

    def test_systemd_analyze_verify(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed (Debian package systemd)")
        # verify --root needs the targets the units name: the machine's own.
        sysroot = tempfile.mkdtemp(prefix="oakuk-verify-", dir=DEST)
        shutil.copytree(d(OPT["prefix"]), sysroot + OPT["prefix"], symlinks=True, dirs_exist_ok=True)
        shutil.copytree("/usr/lib/systemd/system", sysroot + "/usr/lib/systemd/system", symlinks=True,
                        dirs_exist_ok=True)
        # Documentation=man:... must name installed pages: man looks in the DESTDIR's.
        env = dict(os.environ, MANPATH=d(OPT["mandir"]))
        for prog in ("oakuk-root", "oakuk-cluster", "oakuk-node"):
            unit = os.path.join(OPT["prefix"], "lib", "systemd", "system", prog + ".service")
            r = subprocess.run(["systemd-analyze", "verify", "--root=" + sysroot, unit], capture_output=True,
                               text=True, env=env)
            self.assertEqual((r.returncode, r.stderr.strip()), (0, ""), prog)

    def test_example_configs_name_every_key(self):
        for daemon, arrays in (("root", ["root_config_keys"]), ("cluster", ["cluster_config_keys"]),
                               ("node", ["node_config_keys", "registry_config_keys"])):
            path = d(os.path.join(OPT["sysconfdir"], "oakuk", daemon + ".conf.example"))
            with open(path) as f:
                text = f.read()
            documented = set(re.findall(r"^#([a-z_]+) =", text, re.M))
            known = set().union(*(daemon_keys(daemon, a) for a in arrays))
            self.assertEqual(documented, known, daemon)
            # Every key has its own comment above it.
            for key in known:
                self.assertRegex(text, r"# [^\n]+\n(#[^ \n][^\n]*\n)*#%s =" % key, key)

    def test_example_configs_are_accepted(self):
        """Each daemon starts with its example as --config (one-shot modes that read all settings)."""
        etc = d(os.path.join(OPT["sysconfdir"], "oakuk"))
        sbin = d(OPT["sbindir"])
        with tempfile.TemporaryDirectory(dir=DEST) as tmp:
            runs = [
                [sbin + "/oakuk-root", "--config", etc + "/root.conf.example", "--state-dir", tmp + "/r",
                 "--reset-admin"],
                [sbin + "/oakuk-cluster", "--config", etc + "/cluster.conf.example", "--state-dir", tmp + "/c",
                 "--new-join-token", "--insecure"],
                [sbin + "/oakuk-node", "--config", etc + "/node.conf.example", "--state-dir", tmp + "/n",
                 "--prune-images"],
            ]
            for argv in runs:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, "%s: %s" % (argv, r.stderr))

    def test_man_pages(self):
        pages = {"oakuk": "1", "oakuk-root": "8", "oakuk-cluster": "8", "oakuk-node": "8"}
        for name, sec in pages.items():
            path = d(os.path.join(OPT["mandir"], "man" + sec, "%s.%s" % (name, sec)))
            with open(path) as f:
                src = f.read()
            self.assertTrue(src.startswith('.TH %s %s ' % (name.upper(), sec)), path)
            for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS" if name != "oakuk" else "COMMANDS"):
                self.assertIn("\n.SH %s\n" % section, src, "%s: %s" % (name, section))
            if shutil.which("groff"):
                r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", path], capture_output=True, text=True)
                self.assertEqual((r.returncode, r.stderr), (0, ""), path)
            if shutil.which("man"):
                r = subprocess.run(["man", "-l", path], capture_output=True, text=True,
                                   env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0"))
                self.assertEqual(r.returncode, 0, r.stderr)
                text = re.sub(".\x08", "", r.stdout)  # no overstrike bold or underline
                want = ["--context", "oakuk token [OPTION...] create cluster|node"] if name == "oakuk" else ["--config"]
                if name in ("oakuk-cluster", "oakuk-node"):
                    want += ["%s join [OPTION...]" % name, "--no-start"]
                for w in want:
                    self.assertTrue(w in text, "%s: no %r in the formatted page" % (name, w))

    def test_completion(self):
        """The installed completion is what the built CLI prints, and bash loads it for oakuk."""
        path = d(os.path.join(OPT["datadir"], "bash-completion", "completions", "oakuk"))
        with open(path) as f:
            installed = f.read()
        cli = os.path.join(BUILD, "tools", "oakuk", "oakuk")
        self.assertEqual(installed, subprocess.run([cli, "completion", "bash"], capture_output=True, text=True,
                                                   check=True).stdout)
        r = subprocess.run(["bash", "-c", 'source "$1" && complete -p oakuk', "bash", path], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("oakuk", r.stdout)

    def test_docs_pc_headers(self):
        doc = d(os.path.join(OPT["datadir"], "doc", "liboakuk"))
        for md in ("deploy.md", "security.md", "cluster.md", "node.md", "api.md", "cli.md"):
            self.assertTrue(os.path.isfile(os.path.join(doc, md)), md)
        self.assertEqual(sorted(os.listdir(doc)), sorted(os.listdir(os.path.join(SOURCE, "docs"))))
        inc = d(os.path.join(OPT["includedir"], "oakuk"))
        self.assertEqual(sorted(os.listdir(inc)), sorted(os.path.basename(h) for h in
                                                          glob.glob(os.path.join(SOURCE, "include", "oakuk", "*.h"))))
        pc = glob.glob(d(os.path.join(OPT["libdir"], "pkgconfig", "oakuk.pc")))
        self.assertEqual(len(pc), 1)
        if shutil.which("pkg-config"):
            env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc[0]), PKG_CONFIG_SYSROOT_DIR=DEST)
            r = subprocess.run(["pkg-config", "--cflags", "--libs", "oakuk"], capture_output=True, text=True,
                               env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("-I" + d(OPT["includedir"]), r.stdout)
            self.assertIn("-loakuk", r.stdout)
        self.assertTrue(glob.glob(d(os.path.join(OPT["libdir"], "liboakuk.so.0*"))))


class Join(unittest.TestCase):
    """oakuk-cluster join / oakuk-node join --no-start, and their refusals."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oakuk-join-", dir=DEST)
        self.sbin = d(OPT["sbindir"])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def join(self, prog, *args, ok=True):
        # A strict umask must not change the modes join states (0644 config, 0755 parents).
        r = subprocess.run([os.path.join(self.sbin, prog), "join"] + list(args), capture_output=True, text=True,
                           timeout=30, preexec_fn=lambda: os.umask(0o077))
        if ok:
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r

    def refused(self, prog, args, message, code=1):
        r = self.join(prog, *args, ok=False)
        self.assertEqual(r.returncode, code, r.stdout + r.stderr)
        self.assertIn(message, r.stderr)
        self.assertNotIn(TOKEN.split(".")[2], r.stdout + r.stderr, "the token's secret was printed")
        return r

    def mode(self, path):
        return stat.S_IMODE(os.stat(path).st_mode)

    def config(self, path):
        import configparser
        cp = configparser.ConfigParser(interpolation=None)
        cp.read(path)
        return cp

    def test_cluster_join_no_start(self):
        conf, state = self.tmp + "/etc/cluster.conf", self.tmp + "/lib/oakuk/cluster"
        r = self.join("oakuk-cluster", "https://root.example:10000/", TOKEN, "--name", "edge-1", "--config", conf,
                      "--state-dir", state, "--no-start")
        out = r.stdout
        for step in ("pins the root CA " + FP, "state directory %s (0700)" % state,
                     "wrote the join token to %s/join-token (0600)" % state, "wrote %s (0644)" % conf,
                     "not started (--no-start)"):
            self.assertIn(step, out)
        self.assertNotIn(TOKEN, out)
        cp = self.config(conf)
        self.assertEqual(dict(cp["cluster"]), {"root_url": "https://root.example:10000",
                                               "join_token": "@%s/join-token" % state, "name": "edge-1",
                                               "state_dir": state})
        self.assertEqual(self.mode(conf), 0o644)
        self.assertEqual(self.mode(state), 0o700)
        self.assertEqual(self.mode(os.path.dirname(state)), 0o755)
        self.assertEqual(self.mode(state + "/join-token"), 0o600)
        with open(state + "/join-token") as f:
            self.assertEqual(f.read(), TOKEN + "\n")
        # Joining the same root again (a new token) is fine, and keeps the operator's settings.
        with open(conf, "a") as f:
            f.write("listen = 127.0.0.1:10111\n")
        os.chmod(conf, 0o640)
        token2 = "oakuk1.%s.%s" % (FP, "f" * 48)
        with open(self.tmp + "/token", "w") as f:
            f.write(token2 + "\n")
        self.join("oakuk-cluster", "https://root.example:10000", "@" + self.tmp + "/token", "--config", conf,
                  "--state-dir", state, "--no-start")
        cp = self.config(conf)
        self.assertEqual(cp["cluster"]["listen"], "127.0.0.1:10111")
        self.assertEqual(cp["cluster"]["name"], "edge-1")
        self.assertEqual(self.mode(conf), 0o640, "an operator's mode is kept")
        with open(state + "/join-token") as f:
            self.assertEqual(f.read(), token2 + "\n")
        # Another root: refused unless --force, which keeps the other settings.
        with open(conf) as f:
            before = f.read()
        self.refused("oakuk-cluster", ["https://other:10000", TOKEN, "--config", conf, "--state-dir", state,
                                       "--no-start"],
                     "%s already joins https://root.example:10000 ([cluster] root_url); refusing to join "
                     "https://other:10000 (--force replaces it" % conf)
        with open(conf) as f:
            self.assertEqual(f.read(), before, "a refused join changed the config")
        self.join("oakuk-cluster", "https://other:10000", TOKEN, "--config", conf, "--state-dir", state, "--no-start",
                  "--force")
        cp = self.config(conf)
        self.assertEqual((cp["cluster"]["root_url"], cp["cluster"]["listen"]), ("https://other:10000",
                                                                                "127.0.0.1:10111"))

    def test_node_join_no_start(self):
        conf, state = self.tmp + "/node.conf", self.tmp + "/node"
        with open(conf, "w") as f:  # an operator's join_token would win over join_token_file: it goes
            f.write("[node]\njoin_token = oakuk1.old\nreport_interval = 5\n")
        self.join("oakuk-node", "https://cluster.example:10100", TOKEN, "--name", "n1", "--config", conf,
                  "--state-dir", state, "--no-start")
        cp = self.config(conf)
        self.assertEqual(dict(cp["node"]), {"cluster_url": "https://cluster.example:10100", "report_interval": "5",
                                            "join_token_file": state + "/join-token", "name": "n1",
                                            "state_dir": state})
        self.assertEqual(self.mode(state + "/join-token"), 0o600)
        # --insecure: an http URL and a plain secret, said in the config.
        conf2 = self.tmp + "/node2.conf"
        self.join("oakuk-node", "http://10.0.0.1:10100", "plainsecret", "--insecure", "--config", conf2,
                  "--state-dir", self.tmp + "/node2", "--no-start")
        self.assertEqual(self.config(conf2)["node"]["insecure"], "true")

    def test_refusals(self):
        conf, state = self.tmp + "/c.conf", self.tmp + "/state"
        common = ["--config", conf, "--state-dir", state, "--no-start"]
        url = "https://root.example:10000"
        bad_tokens = ["oakuk1.%s" % FP, "oakuk1.%s.xyz" % FP, "oakuk1.%s.%s" % ("ab" * 31, "00" * 24),
                      "oakuk1.%s.%s.00" % (FP, "00" * 24), "plainsecret", ""]
        for bad in bad_tokens:
            self.refused("oakuk-cluster", [url, bad] + common,
                         "TOKEN: not a join token oakuk1.<64 hex digits: the root CA's SHA-256>.<hex secret>")
        self.refused("oakuk-node", ["http://c:10100", "plainsecret"] + common, "plain HTTP needs --insecure")
        for bad in ("ftp://root:10000", "root.example:10000", "https://", "https://root:10000/api",
                    "https://user@root:10000", "https://root:10000?x=1", "https://root:99999"):
            self.refused("oakuk-cluster", [bad, TOKEN] + common, "ROOT_URL '%s': not a base URL" % bad)
        self.refused("oakuk-node", ["https://c:10100", "@" + self.tmp + "/missing"] + common, "TOKEN file")
        self.refused("oakuk-cluster", [url, TOKEN, "--name", "-bad name"] + common, "--name '-bad name'")
        self.refused("oakuk-cluster", [url, TOKEN, "--config", "relative.conf", "--no-start"],
                     "must be absolute paths")
        self.assertFalse(os.path.exists(conf) or os.path.exists(state), "a refused join wrote something")
        # Usage errors: exit 2.
        self.refused("oakuk-cluster", [url] + common, "expected ROOT_URL TOKEN", code=2)
        self.refused("oakuk-node", ["https://c:1", TOKEN, "--bogus"], "Unknown option --bogus", code=2)
        # An unreadable config is not overwritten without --force.
        with open(conf, "w") as f:
            f.write("this is not a key file\n")
        self.refused("oakuk-cluster", [url, TOKEN] + common, "exists and cannot be read")
        # A state directory that trusts another CA (an earlier join) is not silently rejoined.
        os.makedirs(state + "/pki")
        if shutil.which("openssl") is None:
            self.skipTest("openssl is not installed: no other CA to try")
        pem = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                              "-nodes", "-keyout", "/dev/null", "-subj", "/CN=other", "-days", "1"],
                             capture_output=True, text=True, check=True).stdout
        with open(state + "/pki/ca.crt", "w") as f:
            f.write(pem)
        self.refused("oakuk-node", ["https://c:10100", TOKEN, "--config", self.tmp + "/n.conf", "--state-dir",
                                    state, "--no-start"],
                     "the token names the CA %s: this state belongs to another control plane" % FP)


class JoinUnderSystemd(unittest.TestCase):
    """join's systemd path, in a mount namespace where /run/systemd/system exists (what sd_booted
    looks at), the config and state directories are tmpfs, and systemctl and systemd-sysusers are
    stand-ins that record their arguments."""

    SCRIPT = r"""
set -e
mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system
mount -t tmpfs tmpfs "$ETC_PARENT" && mount -t tmpfs tmpfs /var/lib
set +e
"$@"
echo "rc=$?"
cat "$CONFIG" 2>/dev/null
"""

    def setUp(self):
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            self.skipTest("needs root and unshare(1) for a private mount namespace")
        self.tmp = tempfile.mkdtemp(prefix="oakuk-join-sd-", dir=DEST)
        self.bin = os.path.join(self.tmp, "bin")
        os.makedirs(self.bin)
        self.log = os.path.join(self.tmp, "calls")
        for prog in ("systemctl", "systemd-sysusers"):
            with open(os.path.join(self.bin, prog), "w") as f:
                f.write('#!/bin/sh\necho "%s $*" >> %s\n[ -z "$FAKE_FAIL" ] || [ "$1" != enable ]\n' % (prog, self.log))
            os.chmod(os.path.join(self.bin, prog), 0o755)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_join(self, prog, args, fail=False):
        conf = os.path.join(OPT["sysconfdir"], "oakuk", prog.split("-")[1] + ".conf")
        env = dict(os.environ, PATH=self.bin + ":" + os.environ["PATH"], CONFIG=conf,
                   ETC_PARENT=OPT["sysconfdir"])
        if fail:
            env["FAKE_FAIL"] = "1"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.SCRIPT, "sh",
                os.path.join(d(OPT["sbindir"]), prog), "join"] + args
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        calls = []
        if os.path.exists(self.log):
            with open(self.log) as f:
                calls = f.read().splitlines()
            os.unlink(self.log)
        return r, calls

    def test_enables_the_unit(self):
        r, calls = self.run_join("oakuk-cluster", ["https://root.example:10000", TOKEN, "--name", "c1"])
        self.assertIn("rc=0", r.stdout, r.stderr)
        self.assertEqual(calls, ["systemd-sysusers ", "systemctl daemon-reload",
                                 "systemctl enable --now oakuk-cluster.service"])
        for step in ("running systemd-sysusers", "running systemctl daemon-reload",
                     "running systemctl enable --now oakuk-cluster.service", "oakuk-cluster.service is running"):
            self.assertIn(step, r.stdout)
        self.assertIn("join_token=@/var/lib/oakuk/cluster/join-token", r.stdout)
        # The node runs as root: no system user to make.
        r, calls = self.run_join("oakuk-node", ["https://cluster.example:10100", TOKEN])
        self.assertIn("rc=0", r.stdout, r.stderr)
        self.assertEqual(calls, ["systemctl daemon-reload", "systemctl enable --now oakuk-node.service"])
        self.assertIn("join_token_file=/var/lib/oakuk/node/join-token", r.stdout)

    def test_refusals(self):
        r, calls = self.run_join("oakuk-cluster", ["https://root.example:10000", TOKEN], fail=True)
        self.assertIn("rc=1", r.stdout)
        self.assertIn("systemctl enable --now oakuk-cluster.service: Child process exited with code 1 (see "
                      "journalctl -u oakuk-cluster.service)", r.stderr)
        # Paths the unit does not read: only with --no-start.
        r, calls = self.run_join("oakuk-node", ["https://c:10100", TOKEN, "--config", self.tmp + "/n.conf"])
        self.assertIn("rc=1", r.stdout)
        self.assertIn("--config: the oakuk-node.service unit reads", r.stderr)
        self.assertEqual(calls, [])
        self.assertFalse(os.path.exists(self.tmp + "/n.conf"))
        r, calls = self.run_join("oakuk-node", ["https://c:10100", TOKEN, "--state-dir", "/srv/node"])
        self.assertIn("--state-dir: the oakuk-node.service unit reads", r.stderr)


class UnitsRun(unittest.TestCase):
    """The units' ExecStart lines, as installed, on scratch state; a real join in between."""

    def test_root_unit_then_cluster_join(self):
        tmp = tempfile.mkdtemp(prefix="oakuk-run-", dir=DEST)
        for path in (DEST, tmp):  # the units' users reach their state directories and the programs
            os.chmod(path, 0o755)
        rstate, cstate = tmp + "/root", tmp + "/cluster"
        rport = free_port()
        argv = exec_start("oakuk-root.service", rstate, [("0.0.0.0:10000", "127.0.0.1:%d" % rport)])
        self.assertIn("127.0.0.1:%d" % rport, argv, "the unit's --listen")
        rlog = open(tmp + "/root.log", "w")
        self.addCleanup(rlog.close)
        root = subprocess.Popen(argv, stdout=rlog, stderr=subprocess.STDOUT, **unit_user("oakuk-root.service", rstate))
        PROCS.append(root)
        ca = rstate + "/pki/ca.crt"
        wait_for("root /healthz over TLS", lambda: os.path.exists(ca) and https_get(rport, "/healthz", ca)[0] == 200,
                 proc=root, log=tmp + "/root.log")
        with open(rstate + "/admin-password") as f:
            password = f.read().strip()
        st, login = https_call(rport, "POST", "/api/auth/login", ca, {"username": "Admin", "password": password})
        self.assertEqual(st, 200, login)
        st, tok = https_call(rport, "POST", "/api/v1/tokens", ca, {"kind": "cluster"}, token=login["token"])
        self.assertEqual(st, 201, tok)
        with open(tmp + "/cluster-token", "w") as f:
            f.write(tok["token"])
        os.chmod(tmp + "/cluster-token", 0o600)

        # join --no-start into an operator's config (ports of its own), then the unit's ExecStart.
        conf = tmp + "/cluster.conf"
        cport, mport = free_port(), free_port()
        with open(conf, "w") as f:
            f.write("[cluster]\nlisten = 127.0.0.1:%d\nmqtt_port = %d\nadvertise_url = https://127.0.0.1:%d\n"
                    % (cport, mport, cport))
        sbin = d(OPT["sbindir"])
        r = subprocess.run([sbin + "/oakuk-cluster", "join", "https://127.0.0.1:%d" % rport, "@" + tmp + "/cluster-token",
                            "--name", "installed", "--config", conf, "--state-dir", cstate, "--no-start"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        unit_conf = os.path.join(OPT["sysconfdir"], "oakuk", "cluster.conf")
        argv = exec_start("oakuk-cluster.service", cstate, [(unit_conf, conf)])
        clog = open(tmp + "/cluster.log", "w")
        self.addCleanup(clog.close)
        # Not root: the cluster and the mosquitto it starts need none (the unit's User=).
        cluster = subprocess.Popen(argv, stdout=clog, stderr=subprocess.STDOUT,
                                   **unit_user("oakuk-cluster.service", cstate))
        PROCS.append(cluster)

        def registered():
            st, lst = https_call(rport, "GET", "/api/v1/clusters", ca, token=login["token"])
            return st == 200 and "installed" in json.dumps(lst)

        wait_for("the joined cluster registered at the root", registered, timeout=60, proc=cluster,
                 log=tmp + "/cluster.log")
        self.assertTrue(os.path.exists(cstate + "/pki/ca.crt"))
        wait_for("cluster /healthz over TLS (the certificate the root signed)",
                 lambda: https_get(cport, "/healthz", ca)[0] == 200, proc=cluster, log=tmp + "/cluster.log")
        wait_for("the cluster's mosquitto listens, run by the cluster's user",
                 lambda: socket.create_connection(("127.0.0.1", mport), timeout=2).close() is None, proc=cluster,
                 log=tmp + "/cluster.log")
        if unit_values("oakuk-cluster.service", "User") and os.geteuid() == 0:
            with open("/proc/%d/status" % cluster.pid) as f:
                self.assertIn("Uid:\t%d\t" % UNIT_USER, f.read())
        self.assertEqual(stop(cluster, 15), 0)

        # Without systemd, join starts the daemon in the foreground (exec) with the config it wrote.
        if not os.path.isdir("/run/systemd/system"):
            flog = open(tmp + "/foreground.log", "w")
            self.addCleanup(flog.close)
            fg = subprocess.Popen([sbin + "/oakuk-cluster", "join", "https://127.0.0.1:%d" % rport,
                                   "@" + tmp + "/cluster-token", "--config", conf, "--state-dir", cstate],
                                  stdout=flog, stderr=subprocess.STDOUT)
            PROCS.append(fg)
            wait_for("join's foreground cluster answers /healthz", lambda: https_get(cport, "/healthz", ca)[0] == 200,
                     proc=fg, log=tmp + "/foreground.log")
            with open("/proc/%d/cmdline" % fg.pid, "rb") as f:
                self.assertEqual(f.read().split(b"\0")[:3], [b"oakuk-cluster", b"--config", conf.encode()])
            self.assertEqual(stop(fg, 15), 0)
            with open(tmp + "/foreground.log") as f:
                self.assertIn("in the foreground", f.read())
        self.assertEqual(stop(root, 15), 0)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    BUILD = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)

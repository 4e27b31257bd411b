#!/usr/bin/python3
"""Logs go to systemd's journal natively: a real systemd-journald (Debian's, in a private mount
namespace with volatile storage, so the host's journal is not touched) and oakuk-root connected
to it as systemd connects a unit's stderr (the journal's stdout stream), or with --log-format
journal. Every record is one journal entry with its priority, the daemon as SYSLOG_IDENTIFIER, the
key=value text as MESSAGE and every key as an OAKUK_* field; values the text format escapes (a
newline) arrive in their field as they were; --log-format text under the journal stays text lines.

Usage: test-journal.py <oakuk-root>"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgelib import ports, wait_until  # noqa: E402

ROOT_BIN = None
JOURNALD = "/lib/systemd/systemd-journald"
JOURNAL_DIR = "/run/log/journal"
CONF = """[Journal]
Storage=volatile
ReadKMSG=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitIntervalSec=0
"""


def private_namespace():
    """Re-executes this test in a private mount namespace (unshare -m) where /run/systemd,
    /run/log and /var/log/journal are fresh tmpfs and journald.conf is ours."""
    if os.environ.get("OAKUK_JOURNAL_NS") == "1":
        return
    env = dict(os.environ, OAKUK_JOURNAL_NS="1")
    os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable] + sys.argv, env)


def mount_tmpfs(path):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], check=True)


def stream_to_journal(identifier):
    """A connection to the journal's stdout stream, as systemd gives a unit's stderr (the header:
    identifier, unit, priority, level prefix, forward to syslog, kmsg, console)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("/run/systemd/journal/stdout")
    s.sendall(("%s\n\n6\n0\n0\n0\n0\n" % identifier).encode())
    s.shutdown(socket.SHUT_RD)
    return s


def entries(**match):
    out = subprocess.run(["journalctl", "-D", JOURNAL_DIR, "--no-pager", "-o", "json", "--all"],
                         capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        e = json.loads(line)
        if all(e.get(k) == v for k, v in match.items()):
            found.append(e)
    return found


class Journal(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(JOURNALD):
            raise RuntimeError("%s is missing: install Debian's systemd package (scripts/install-deps.sh)"
                               % JOURNALD)
        for d in ("/run/systemd", "/run/log"):
            mount_tmpfs(d)
        os.makedirs("/run/systemd/journal")
        if os.path.isdir("/var/log/journal"):
            mount_tmpfs("/var/log/journal")
        cls.tmp = tempfile.TemporaryDirectory(prefix="oakuk-journal-")
        conf = os.path.join(cls.tmp.name, "journald.conf")
        with open(conf, "w") as f:
            f.write(CONF)
        subprocess.run(["mount", "--bind", conf, "/etc/systemd/journald.conf"], check=True)
        cls.journald = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("journald's sockets", lambda: os.path.exists("/run/systemd/journal/stdout")
                   and os.path.exists("/run/systemd/journal/socket"), timeout=10)

    @classmethod
    def tearDownClass(cls):
        cls.journald.terminate()
        cls.journald.wait(timeout=10)
        cls.tmp.cleanup()

    def start_root(self, name, extra, stderr):
        state = os.path.join(self.tmp.name, name)
        port = ports(1)[0]
        p = subprocess.Popen([ROOT_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % port] + extra,
                             stdout=subprocess.DEVNULL, stderr=stderr)
        url = "https://127.0.0.1:%d" % port
        ca = os.path.join(state, "pki", "ca.crt")
        wait_until("oakuk-root up", lambda: os.path.exists(ca) and requests.get(
            url + "/healthz", verify=ca, timeout=2).status_code == 200, timeout=15)
        return p, url, ca, port

    def stop(self, p):
        p.terminate()
        self.assertEqual(p.wait(timeout=15), 0)

    def wait_entry(self, what, **match):
        return wait_until(what, lambda: entries(**match), timeout=10)

    def test_under_systemd_every_record_is_an_entry(self):
        """stderr connected to the journal (as under systemd): native entries, not text lines."""
        s = stream_to_journal("oakuk-root")
        p, url, ca, port = self.start_root("auto", ["--verbose"], s.fileno())
        s.close()
        # A value the text format would escape: a newline in the user name of a denied login.
        r = requests.post(url + "/api/auth/login", json={"username": "eve\nlevel=error", "password": "x"},
                          verify=ca, timeout=10)
        self.assertEqual(r.status_code, 401)
        self.stop(p)
        pid = str(p.pid)
        start = self.wait_entry("the start entry", _PID=pid, OAKUK_EVENT="start")[0]
        self.assertEqual(start["_TRANSPORT"], "journal")  # native protocol, not the stdout stream
        self.assertEqual(start["PRIORITY"], "5")
        self.assertEqual(start["SYSLOG_IDENTIFIER"], "oakuk-root")
        self.assertEqual(start["OAKUK_LISTEN"], "127.0.0.1:%d" % port)
        self.assertEqual(start["OAKUK_TLS"], "true")
        self.assertEqual(start["OAKUK_MSG"], "oakuk-root listening")
        self.assertTrue(start["MESSAGE"].startswith("event=start listen=127.0.0.1:%d " % port), start["MESSAGE"])
        self.assertNotIn("time=", start["MESSAGE"])  # the journal keeps the time itself
        http = self.wait_entry("a debug entry (--verbose)", _PID=pid, OAKUK_EVENT="http", OAKUK_PATH="/healthz")
        self.assertEqual(http[0]["PRIORITY"], "7")
        login = self.wait_entry("the denied login", _PID=pid, OAKUK_EVENT="login")[0]
        self.assertEqual(login["OAKUK_USER"], "eve\nlevel=error")  # the field as it was
        self.assertIn('user="eve\\nlevel=error"', login["MESSAGE"])  # the text escaped: no forged line
        self.wait_entry("the shutdown entry", _PID=pid, OAKUK_EVENT="shutdown")
        # Nothing came as text through the stream.
        self.assertEqual(entries(_PID=pid, _TRANSPORT="stdout"), [])

    def test_warning_priority(self):
        """A failed start (the port is taken) is a warning entry, priority 4."""
        s = stream_to_journal("oakuk-root")
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        state = os.path.join(self.tmp.name, "taken")
        p = subprocess.run([ROOT_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % taken.getsockname()[1]],
                           stdout=subprocess.DEVNULL, stderr=s.fileno(), timeout=30)
        s.close()
        taken.close()
        self.assertNotEqual(p.returncode, 0)
        fatal = self.wait_entry("the fatal entry", OAKUK_EVENT="fatal", SYSLOG_IDENTIFIER="oakuk-root")
        self.assertEqual(fatal[-1]["PRIORITY"], "4")
        self.assertIn("Address already in use", fatal[-1]["OAKUK_MSG"])

    def test_explicit_journal_and_explicit_text(self):
        """--log-format journal writes entries whatever stderr is; --log-format text under the
        journal stays key=value lines (the journal records them from the stream)."""
        err = os.path.join(self.tmp.name, "stderr")
        with open(err, "w") as f:
            p, *_ = self.start_root("explicit", ["--log-format", "journal"], f)
            self.stop(p)
        self.wait_entry("the start entry", _PID=str(p.pid), OAKUK_EVENT="start", _TRANSPORT="journal")
        with open(err) as f:
            self.assertEqual(f.read(), "")
        s = stream_to_journal("oakuk-root-text")
        p, *_ = self.start_root("text", ["--log-format", "text"], s.fileno())
        s.close()
        self.stop(p)
        lines = self.wait_entry("text lines", _PID=str(p.pid), _TRANSPORT="stdout")
        self.assertTrue(any("event=start " in e["MESSAGE"] and e["MESSAGE"].startswith("time=") for e in lines))
        self.assertEqual(entries(_PID=str(p.pid), _TRANSPORT="journal"), [])

    def test_unknown_log_format_is_refused(self):
        p = subprocess.run([ROOT_BIN, "--state-dir", os.path.join(self.tmp.name, "bad"), "--log-format", "syslog"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--log-format: 'syslog' is not 'text', 'json' or 'journal'", p.stderr)


if __name__ == "__main__":
    private_namespace()
    ROOT_BIN = sys.argv.pop(1)
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""Integration test of the `oakuk` control-plane commands against a real oakuk-root and
oakuk-cluster (with its own mosquitto), both with TLS, and a fake node played by
mosquitto_pub/mosquitto_sub: login pinning the root's CA like ssh, tokens, users and the commands.

Usage: test-cli.py <oakuk> <oakuk-root> <oakuk-cluster>"""
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import termios
import time
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edgelib  # noqa: E402

OAKUK = ROOT_BIN = CLUSTER_BIN = None

SLA = {
    "sla_version": "v2.0", "customerID": "Admin",
    "applications": [{
        "applicationID": "", "application_name": "shop", "application_namespace": "test",
        "application_desc": "cli test",
        "microservices": [
            {"microserviceID": "", "microservice_name": "web", "microservice_namespace": "test",
             "virtualization": "container", "cmd": [], "memory": 100, "vcpus": 1, "vgpus": 0, "vtpus": 0,
             "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0, "code": "docker.io/library/nginx:latest",
             "arch": ["amd64"], "state": "", "port": "80:80", "added_files": []},
            # No node can give it 500 GB: the scheduler must refuse it.
            {"microserviceID": "", "microservice_name": "huge", "microservice_namespace": "test",
             "virtualization": "container", "cmd": [], "memory": 500000, "vcpus": 1, "vgpus": 0, "vtpus": 0,
             "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0, "code": "docker.io/library/nginx:latest",
             "arch": ["amd64"], "state": "", "port": "", "added_files": []},
            # Only node-z may run it: the root sends it to the cluster, which finds no such node.
            {"microserviceID": "", "microservice_name": "pinned", "microservice_namespace": "test",
             "virtualization": "container", "cmd": [], "memory": 100, "vcpus": 1, "vgpus": 0, "vtpus": 0,
             "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0, "code": "docker.io/library/nginx:latest",
             "arch": ["amd64"], "state": "", "port": "", "added_files": [],
             "constraints": [{"type": "direct", "node": "node-z"}]}]}]}
WEB = "shop.test.web.test"
# A status detail holding what YAML must quote: its indicators, a number, quotes, tabs, non-ASCII.
TRICKY = 'yes: "quoted" \\ #not a comment\ttab - [a] {b} & *c ! | > % @ ` 0x1F é ✓ null ~'
PASSWORD = "correct horse battery staple"  # for the users made here: 12 characters or more


def fingerprint(pem_path):
    with open(pem_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-cli-test-")
        cls.cp = edgelib.ControlPlane(cls.tmp, ROOT_BIN, CLUSTER_BIN)
        cls.node = edgelib.FakeNode(cls.cp, "node-a", 4000)
        cls.node.listen()
        cls.env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(cls.tmp, "config"), OAKUK_URL=cls.cp.root_url,
                       COLUMNS="110")
        cls.creds = os.path.join(cls.tmp, "config", "oakuk", "credentials.json")
        cls.fp = fingerprint(cls.cp.ca_file)
        cls.port = int(cls.cp.root_url.rsplit(":", 1)[1])
        cls.context_name = "127.0.0.1:%d" % cls.port
        cls.pwfile = edgelib.write_secret(os.path.join(cls.tmp, "user-password"), PASSWORD)
        edgelib.wait_until("aggregate with node-a at the root", lambda: any(
            n["id"] == "node-a" for c in edgelib.requests.get(cls.cp.root_url + "/api/v1/clusters",
                                                             headers=cls.cp.headers, timeout=5).json()
            for n in c.get("nodes", [])))

    @classmethod
    def tearDownClass(cls):
        cls.node.alive = False
        edgelib.stop_all()
        if os.environ.get("KEEP_TMP") is None:
            subprocess.run(["rm", "-rf", cls.tmp])

    def oakuk(self, *args, stdin=None, env=None, timeout=60):
        # a session of its own: no controlling terminal to ask on, as in CI
        p = subprocess.run([OAKUK] + list(args), input=stdin, capture_output=True, text=True, timeout=timeout,
                           env=env or self.env, start_new_session=True)
        return p.returncode, p.stdout, p.stderr

    def login(self, env=None):
        rc, out, err = self.oakuk("login", "--ca-file", self.cp.ca_file, "--password-stdin",
                                  stdin=self.cp.admin_password + "\n", env=env)
        self.assertEqual(rc, 0, err)

    def config_env(self, name):
        """An environment with a fresh configuration directory (no credentials, no CA)."""
        return dict(self.env, XDG_CONFIG_HOME=os.path.join(self.tmp, name))

    def stored_ca(self, env):
        return os.path.join(env["XDG_CONFIG_HOME"], "oakuk", "ca-127.0.0.1-%d.crt" % self.port)

    def oakuk_on_terminal(self, args, answers, env):
        """Runs oakuk on a new pseudo-terminal that is its controlling terminal and answers its
        prompts: answers is a list of (text of the prompt, answer). Returns (exit code, everything
        the terminal showed, for each answered prompt whether echo was off while it waited)."""
        master, slave = os.openpty()
        p = subprocess.Popen([OAKUK] + args, stdin=slave, stdout=slave, stderr=slave, env=env,
                             start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        shown, echo_off, pending, seen_upto = b"", [], list(answers), 0
        deadline = time.time() + 30
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                shown += chunk
            if pending and pending[0][0].encode() in shown[seen_upto:]:
                seen_upto = shown.index(pending[0][0].encode(), seen_upto) + len(pending[0][0])
                time.sleep(0.1)  # the prompt is written before echo is turned off: let it settle
                echo_off.append(not termios.tcgetattr(master)[3] & termios.ECHO)
                os.write(master, pending.pop(0)[1].encode() + b"\n")
            if p.poll() is not None and not ready:
                break
        rc = p.wait(timeout=10)
        os.close(master)
        return rc, shown.decode(errors="replace"), echo_off

    def sla_file(self, doc, name):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def root_service(self, job):
        svcs = edgelib.requests.get(self.cp.root_url + "/api/v1/services", headers=self.cp.headers, timeout=5).json()
        return next(s for s in svcs if s["job_name"] == job)

    # ---- tests, in order: they share the control plane's state ----

    def test_01_not_logged_in(self):
        rc, out, err = self.oakuk("status")
        self.assertEqual(rc, 4, err)
        self.assertIn("not logged in to " + self.cp.root_url, err)
        self.assertFalse(os.path.exists(self.creds))

    def test_02_login(self):
        rc, out, err = self.oakuk("login", "--ca-file", self.cp.ca_file, "--password-stdin", stdin="wrong-password\n")
        self.assertEqual(rc, 4, err)
        self.assertIn("invalid username or password", err)
        self.assertFalse(os.path.exists(self.creds))
        rc, out, err = self.oakuk("login", "https://127.0.0.1:1", "--ca-fingerprint", self.fp, "--password-stdin",
                                  stdin="x\n")
        self.assertEqual(rc, 5, err)
        self.assertIn("cannot reach the root at https://127.0.0.1:1", err)
        # A password as an argument is refused: it would show in ps.
        rc, out, err = self.oakuk("login", self.cp.admin_password)
        self.assertEqual(rc, 2, err)
        self.assertIn("the password is never an argument", err)
        self.login()
        self.assertEqual(stat.S_IMODE(os.stat(self.creds).st_mode), 0o600)
        with open(self.creds) as f:
            config = json.load(f)
        # one context, named after the root and made the current one
        self.assertEqual(config["current"], self.context_name)
        self.assertEqual(list(config["contexts"]), [self.context_name])
        c = config["contexts"][self.context_name]
        self.assertEqual(c["url"], self.cp.root_url)
        self.assertEqual(c["username"], "Admin")
        self.assertTrue(c["token"] and c["refresh_token"])
        self.assertNotIn(self.cp.admin_password, json.dumps(config))
        self.assertNotIn("insecure", c)
        # the root's CA is kept beside the credentials, private, and pinned from now on
        ca = self.stored_ca(self.env)
        self.assertEqual(fingerprint(ca), self.fp)
        self.assertEqual(stat.S_IMODE(os.stat(ca).st_mode), 0o600)
        # Interactively: the CA's fingerprint is shown and confirmed, then the password is asked on
        # the terminal, without echo, and never shown.
        env = self.config_env("config-tty")
        rc, shown, echo_off = self.oakuk_on_terminal(["login", self.cp.root_url], [
            ("Trust it? [y/N]", "y"), ("assword", self.cp.admin_password)], env)
        self.assertEqual(rc, 0, shown)
        self.assertIn("SHA-256 fingerprint " + self.fp, shown)
        self.assertEqual(echo_off, [False, True], "echo was on while the password was typed")
        self.assertNotIn(self.cp.admin_password, shown)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "config-tty", "oakuk", "credentials.json")), shown)
        self.assertEqual(fingerprint(self.stored_ca(env)), self.fp)
        # the CA is stored now: no question about it, only the password
        rc, shown, _ = self.oakuk_on_terminal(["login"], [("assword", "wrong-password")], env)
        self.assertEqual(rc, 4, shown)
        self.assertNotIn("Trust it?", shown)
        self.assertIn("invalid username or password", shown)
        # answering no (or nothing) trusts nothing and stores nothing
        env = self.config_env("config-tty-no")
        rc, shown, _ = self.oakuk_on_terminal(["login", self.cp.root_url], [("Trust it? [y/N]", "")], env)
        self.assertEqual(rc, 1, shown)
        self.assertIn("is not trusted; nothing was stored", shown)
        self.assertNotIn("assword", shown)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "config-tty-no", "oakuk")))

    def test_02b_login_pins_the_ca(self):
        url = self.cp.root_url
        # the fingerprint as openssl prints it (upper case, colons) is accepted; later commands pin it
        env = self.config_env("config-fp")
        openssl_fp = ":".join(self.fp[i:i + 2] for i in range(0, 64, 2)).upper()
        rc, out, err = self.oakuk("login", url, "--ca-fingerprint", openssl_fp, "--password-stdin",
                                  stdin=self.cp.admin_password + "\n", env=env)
        self.assertEqual(rc, 0, err)
        self.assertIn("the root's CA %s is pinned" % self.fp, out)
        self.assertEqual(fingerprint(self.stored_ca(env)), self.fp)
        rc, out, err = self.oakuk("clusters", env=env)
        self.assertEqual(rc, 0, err)
        # a wrong fingerprint: refused, naming both; nothing is stored and no password was sent
        env = self.config_env("config-wrong")
        wrong = "0f" * 32
        rc, out, err = self.oakuk("login", url, "--ca-fingerprint", wrong, "--password-stdin",
                                  stdin=self.cp.admin_password + "\n", env=env)
        self.assertEqual(rc, 4, err)
        self.assertIn("presents a certificate from the CA %s, not from the CA %s" % (self.fp, wrong), err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "config-wrong", "oakuk")))
        # a CA file of someone else: the same
        other = edgelib.Ca("someone else's CA")
        other_file = other.write(os.path.join(self.tmp, "other-ca.crt"))
        rc, out, err = self.oakuk("login", url, "--ca-file", other_file, "--password-stdin",
                                  stdin=self.cp.admin_password + "\n", env=env)
        self.assertEqual(rc, 4, err)
        self.assertIn("not from the CA %s you gave" % other.fingerprint, err)
        # no terminal and nothing to pin: refused before anything is sent
        rc, out, err = self.oakuk("login", url, "--password-stdin", stdin=self.cp.admin_password + "\n", env=env)
        self.assertEqual(rc, 2, err)
        self.assertIn("no terminal to confirm", err)
        self.assertIn("--ca-fingerprint", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "config-wrong", "oakuk")))
        # plain http only with --insecure
        rc, out, err = self.oakuk("login", "http://127.0.0.1:%d" % self.port, "--password-stdin",
                                  stdin=self.cp.admin_password + "\n", env=env)
        self.assertEqual(rc, 2, err)
        self.assertIn("is plain HTTP", err)
        self.assertIn("--insecure", err)
        # a stored CA that is not the one the root presents (the root's CA changed, or another
        # server answers there): every command is refused, naming both
        env = self.config_env("config-fp")
        shutil.copy(self.stored_ca(env), os.path.join(self.tmp, "real-ca.crt"))
        other.write(self.stored_ca(env))
        rc, out, err = self.oakuk("status", env=env)
        self.assertEqual(rc, 4, err)
        self.assertIn("presents a certificate from the CA %s, not from the CA %s trusted for it (%s)"
                      % (self.fp, other.fingerprint, self.stored_ca(env)), err)
        self.assertIn("remove %s and log in again" % self.stored_ca(env), err)
        # and a login naming another CA than the stored one too
        shutil.copy(os.path.join(self.tmp, "real-ca.crt"), self.stored_ca(env))
        rc, out, err = self.oakuk("login", url, "--ca-file", other_file, "--password-stdin",
                                  stdin=self.cp.admin_password + "\n", env=env)
        self.assertEqual(rc, 4, err)
        self.assertIn("the CA trusted for %s is %s" % (url, self.fp), err)
        self.assertIn(other.fingerprint, err)
        # without a stored CA, a logged-in command refuses to guess
        os.unlink(self.stored_ca(env))
        rc, out, err = self.oakuk("status", env=env)
        self.assertEqual(rc, 4, err)
        self.assertIn("no CA is stored for " + url, err)

    def test_03_apply_invalid(self):
        bad = json.loads(json.dumps(SLA))
        app = bad["applications"][0]
        app["application_namespace"] = "not valid!"
        app["microservices"][0]["virtualization"] = "vm"
        app["microservices"][1]["arch"] = ["amd64", "arm64"]
        app["microservices"][1]["virtualization"] = "unikernel"
        app["microservices"][1]["code"] = "http://x/kernel-amd64.tar.gz"
        rc, out, err = self.oakuk("apply", self.sla_file(bad, "bad.json"))
        self.assertEqual(rc, 2, err)
        for path in ("applications[0].application_namespace: ", "applications[0].microservices[0].virtualization: ",
                     "applications[0].microservices[1]."):
            self.assertIn(path, err)
        self.assertGreaterEqual(len([l for l in err.splitlines() if l.startswith("applications[0].")]), 3, err)
        self.assertEqual(edgelib.requests.get(self.cp.root_url + "/api/v1/applications", headers=self.cp.headers,
                                              timeout=5).json(), [])
        rc, out, err = self.oakuk("apply", os.path.join(self.tmp, "missing.json"))
        self.assertEqual(rc, 1, err)
        self.assertIn("missing.json", err)

    def test_04_apply(self):
        rc, out, err = self.oakuk("apply", self.sla_file(SLA, "sla.json"))
        self.assertEqual(rc, 0, err)
        web = self.root_service(WEB)
        self.assertRegex(out, r"application shop\.test [0-9a-f]{24}: created\n")
        self.assertIn("service %s %s: created\n" % (WEB, web["microserviceID"]), out)
        self.assertIn("service shop.test.huge.test ", out)
        # Same application again: nothing changes (its services are unchanged, nothing is deployed)
        rc, out, err = self.oakuk("apply", "--json", self.sla_file(SLA, "sla.json"))
        self.assertEqual(rc, 0, err)
        app = json.loads(out)["applications"][0]
        self.assertEqual((app["name"], app["change"]), ("shop", "applied"))
        self.assertEqual({s["job_name"]: (s["change"], s["revision"]) for s in app["services"]},
                         {WEB: ("unchanged", 1), "shop.test.huge.test": ("unchanged", 1),
                          "shop.test.pinned.test": ("unchanged", 1)})

    def test_04w_apply_prints_warnings(self):
        """Keys accepted but not acted on come back from the root as warnings with their path,
        printed on stderr one per line; stdout (and --json's document) keeps its shape."""
        def delete_app(out):
            m = re.search(r"application \S+ ([0-9a-f]{24})", out) or re.search(r'"id"\s*:\s*"([0-9a-f]{24})"', out)
            self.assertIsNotNone(m, out)
            edgelib.requests.delete(self.cp.root_url + "/api/v1/applications/" + m.group(1), headers=self.cp.headers,
                                    timeout=5)
        doc = json.loads(json.dumps(SLA))
        app = doc["applications"][0]
        app["application_name"] = "warned"
        app["microservices"] = [dict(app["microservices"][0], vgpus=1, bandwidth_out=5)]
        rc, out, err = self.oakuk("apply", self.sla_file(doc, "warned.json"))
        self.assertEqual(rc, 0, err)
        delete_app(out)
        self.assertRegex(out, r"application warned\.test [0-9a-f]{24}: created\n")
        self.assertNotIn("warning", out)
        warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
        self.assertEqual(len(warnings), 2, err)
        self.assertTrue(warnings[0].startswith("warning: applications[0].microservices[0].vgpus: accepted but not "
                                               "acted on: no node reports GPUs"), err)
        self.assertEqual(warnings[1], "warning: applications[0].microservices[0].bandwidth_out: accepted but not "
                                      "acted on: no bandwidth is reserved or limited")
        # the same keys at their defaults (vgpus: 0, ...) print nothing; --json keeps stdout a document
        app["application_name"] = "quiet"
        app["microservices"] = [dict(app["microservices"][0], vgpus=0, bandwidth_out=0)]
        rc, out, err = self.oakuk("apply", "--json", self.sla_file(doc, "quiet.json"))
        self.assertEqual(rc, 0, err)
        delete_app(out)
        self.assertEqual(json.loads(out)["applications"][0]["name"], "quiet")
        self.assertNotIn("warning", err)

    def test_05_deploy_wait_running(self):
        p = subprocess.Popen([OAKUK, "deploy", "web", "--wait", "--timeout", "60"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        job = self.node.expect("control/deploy", lambda m: m["job_name"] == WEB and m["instance_number"] == 0)
        self.assertEqual(job["instance_name"], WEB + ".instance.0")
        time.sleep(1.2)
        self.node.status(WEB, 0, "CREATING", "downloading image: 40%")
        time.sleep(1.2)
        self.node.status(WEB, 0, "CREATING", "downloading image: 100%")
        time.sleep(1.2)
        self.node.instances.add(WEB + ".instance.0")
        # RUNNING says only that the runtime is up: the wait goes on until the node finds it ready
        # (a node older than readiness sends no "ready": not ready)
        self.node.status(WEB, 0, "RUNNING")
        time.sleep(2)
        self.assertIsNone(p.poll(), "deploy --wait returned on RUNNING before the instance was ready")
        self.node.status(WEB, 0, "RUNNING", ready=True, ready_ms=2800)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out + err)
        lines = out.splitlines()
        self.assertIn("instance 0 of %s requested: CLUSTER_SCHEDULED" % WEB, lines[0])
        progress = [l for l in lines if l.startswith("[")]
        statuses = [l.split()[2] for l in progress]
        self.assertEqual(statuses[-1], "RUNNING", out)
        waiting = [i for i, l in enumerate(progress) if "RUNNING" in l and "running, waiting for readiness" in l]
        self.assertEqual(len(waiting), 1, out)
        self.assertEqual(waiting[0], len(progress) - 2, out)  # then the ready line, the last one
        self.assertRegex(progress[-1], r"RUNNING +node node-a  ready \d+ ms after the request$")
        self.assertIn("NODE_SCHEDULED", statuses, out)
        self.assertTrue(any("downloading image: 40%" in l for l in progress), out)
        self.assertTrue(any("downloading image: 100%" in l for l in progress), out)
        self.assertTrue(all(s in statuses for s in ("CREATING", "RUNNING")), out)
        # one line per change: no line repeats its predecessor's status and detail
        changes = [l.split("]", 1)[1] for l in progress]
        self.assertEqual(len(changes), len([c for i, c in enumerate(changes) if i == 0 or c != changes[i - 1]]))

    def test_05b_deploy_wait_ends_without_readiness(self):
        # instance 1 runs but never becomes ready: --timeout ends the wait, exit 1 with the detail
        p = subprocess.Popen([OAKUK, "deploy", "web", "--wait", "--timeout", "6"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        self.node.expect("control/deploy", lambda m: m["job_name"] == WEB and m["instance_number"] == 1)
        self.node.instances.add(WEB + ".instance.1")
        self.node.status(WEB, 1, "RUNNING", "probe: connection refused", ready=False)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("running, waiting for readiness; probe: connection refused", out)
        self.assertIn("timed out after 6 s; instance 1 is RUNNING, not ready yet: probe: connection refused", err)
        # instance 2 dies while its readiness is awaited: exit 1 with the status and its detail
        p = subprocess.Popen([OAKUK, "deploy", "web", "--wait", "--timeout", "60"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        self.node.expect("control/deploy", lambda m: m["job_name"] == WEB and m["instance_number"] == 2)
        self.node.instances.add(WEB + ".instance.2")
        self.node.status(WEB, 2, "RUNNING", ready=False)
        time.sleep(1.5)
        self.node.status(WEB, 2, "DEAD", "guest exited: kernel panic")
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("running, waiting for readiness", out)
        self.assertIn("instance 2 of %s: DEAD: guest exited: kernel panic" % WEB, err)
        for n in (1, 2):
            rc, out, err = self.oakuk("undeploy", "web", str(n), "--wait", "--timeout", "30")
            self.assertEqual(rc, 0, out + err)
            self.node.expect("control/delete", lambda m: m["job_name"] == WEB and m["instance_number"] == n)
            self.node.instances.discard(WEB + ".instance.%d" % n)

    def test_06_deploy_refused(self):
        # refused by the root: no cluster has the memory
        t0 = time.time()
        rc, out, err = self.oakuk("deploy", "shop.test.huge.test", "--wait", "--timeout", "60")
        self.assertEqual(rc, 1, out + err)
        self.assertLess(time.time() - t0, 30)
        self.assertIn("instance 0 of shop.test.huge.test: NoActiveClusterWithCapacity: cluster edge1: insufficient", err)
        self.assertIn("shop.test.huge.test: cluster selection at the root:", out)
        self.assertRegex(out, r"\n  cluster edge1: insufficient resources: needs 1 vcpus / 500000 MB")
        # refused by the cluster: the root's explanation and the cluster's node-level one
        rc, out, err = self.oakuk("deploy", "pinned", "--wait", "--timeout", "60")
        self.assertEqual(rc, 1, out + err)
        # no node anywhere qualifies (the pin names an unknown node): the root says so, node by node
        self.assertIn("instance 0 of shop.test.pinned.test: NO_QUALIFIED_WORKER_FOUND", err)
        self.assertIn("cluster edge1: node node-a: excluded by direct constraint (allowed nodes: node-z)", err)
        self.assertIn("refused by cluster ", out)
        self.assertIn("cluster edge1: node selection for instance 0:", out)
        self.assertRegex(out, r"\n  node node-a: .*")

    def test_07_status(self):
        rc, out, err = self.oakuk("status")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["APP", "SERVICE", "INSTANCE", "NODE", "VIRT", "ARCH", "STATUS", "READY",
                                            "READY-MS", "DETAIL"])
        rc, doc, err = self.oakuk("status", "--json")
        ready_ms = next(r for r in json.loads(doc) if r["service"] == "web")["ready_ms"]
        web = [l.split() for l in lines if l.split()[1:2] == ["web"]]
        self.assertEqual(web, [["shop", "web", "0", "node-a", "container", "amd64", "RUNNING", "yes", str(ready_ms),
                                "-"]])
        self.assertEqual(len([l for l in lines if l.split()[1] == "pinned"]), 1)
        huge = next(l for l in lines if l.split()[1] == "huge")
        self.assertIn("NoActiveClusterWithCapacity", huge)
        self.assertEqual(huge.split()[7:9], ["no", "-"])
        self.assertTrue(huge.endswith("..."), huge)  # the long explanation is cut to COLUMNS=110
        self.assertTrue(all(len(l) <= 110 for l in lines), out)
        rc, out, err = self.oakuk("status", "--json")
        self.assertEqual(rc, 0, err)
        rows = json.loads(out)
        web = next(r for r in rows if r["service"] == "web")
        self.assertEqual((web["instance"], web["node"], web["cluster"], web["virtualization"], web["arch"],
                          web["status"], web["job_name"]), (0, "node-a", "edge1", "container", "amd64", "RUNNING", WEB))
        # the root's own measure (from the deploy request to its learning of readiness), not the node's
        self.assertIs(web["ready"], True)
        self.assertIsInstance(web["ready_ms"], int)
        self.assertNotEqual(web["ready_ms"], 2800)
        self.assertGreater(web["ready_ms"], 2000)  # test_05 waited > 5 s before the node said ready
        huge = next(r for r in rows if r["service"] == "huge")
        self.assertIs(huge["ready"], False)
        self.assertNotIn("ready_ms", huge)
        self.assertGreater(len(huge["status_detail"]), 100)  # not cut in JSON

    def test_08_status_watch(self):
        p = subprocess.Popen([OAKUK, "status", "--watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=self.env)
        time.sleep(3.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0, err)
        self.assertGreaterEqual(out.count("Every 2s: oakuk status"), 2, out)
        self.assertGreaterEqual(out.count("RUNNING"), 2, out)

    def test_09_explain(self):
        rc, out, err = self.oakuk("explain", WEB)
        self.assertEqual(rc, 0, err)
        self.assertIn(WEB + ": cluster selection at the root:", out)
        self.assertIn("instance 0: RUNNING on cluster edge1", out)
        # the cluster keeps the last node selection of the service: test_05b's instance 2
        self.assertIn("cluster edge1: node selection for instance 2:", out)
        self.assertRegex(out, r"\n  .*node-a")
        rc, out, err = self.oakuk("explain", "--json", "web")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["job_name"], WEB)
        self.assertTrue(doc["lines"])
        self.assertEqual(doc["clusters"][0]["cluster_name"], "edge1")
        self.assertTrue(any("node-a" in l for l in doc["clusters"][0]["lines"]))

    def test_10_nodes_and_clusters(self):
        rc, out, err = self.oakuk("nodes")
        self.assertEqual(rc, 0, err)
        rows = [l.split() for l in out.splitlines()]
        self.assertEqual(rows[0][:4], ["CLUSTER", "NODE", "IP", "ARCH"])
        row = next(r for r in rows if r[1] == "node-a")
        self.assertEqual(row[:5], ["edge1", "node-a", "127.0.0.1", "amd64", "container"])
        self.assertIn("3.0/4", row)  # 25 % of 4 cores busy
        self.assertIn("yes", row)
        rc, out, err = self.oakuk("nodes", "--json")
        node = json.loads(out)[0]
        self.assertEqual((node["id"], node["cluster_name"], node["active"], node["memory"]), ("node-a", "edge1", True, 4000))
        self.assertLess(abs(time.time() * 1000 - node["last_seen_ms"]), 10000)
        rc, out, err = self.oakuk("clusters")
        self.assertEqual(rc, 0, err)
        row = next(l.split() for l in out.splitlines() if "edge1" in l)
        self.assertEqual(row[1:5], ["edge1", "lab", "yes", "1/1"])
        rc, out, err = self.oakuk("clusters", "--json")
        self.assertEqual(json.loads(out)[0]["cluster_name"], "edge1")

    def test_11_logs(self):
        self.node.logs[WEB + ".instance.0"] = ["booting", "listening on :80", "GET / 200"]
        rc, out, err = self.oakuk("logs", "web", "0", "--lines", "2")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "listening on :80\nGET / 200\n")
        req = self.node.logs_requests[-1]
        self.assertEqual((req["instance"], req["lines"]), (WEB + ".instance.0", 2))
        rc, out, err = self.oakuk("logs", "--json", WEB)
        self.assertEqual(json.loads(out)["lines"], ["booting", "listening on :80", "GET / 200"])
        self.assertEqual(json.loads(out)["node"], "node-a")
        # the node does not know the instance: its error comes back, exit 6
        del self.node.logs[WEB + ".instance.0"]
        rc, out, err = self.oakuk("logs", "web")
        self.assertEqual(rc, 6, err)
        self.assertIn("no instance %s.instance.0 on this node" % WEB, err)
        rc, out, err = self.oakuk("logs", "web", "7")
        self.assertEqual(rc, 6, err)
        self.assertIn("has no instance 7", err)
        # a silent node: the cluster gives up after 5 s
        self.node.answer_logs = False
        t0 = time.time()
        rc, out, err = self.oakuk("logs", "web")
        self.node.answer_logs = True
        self.assertEqual(rc, 1, err)
        self.assertIn("did not answer the logs request", err)
        self.assertLess(time.time() - t0, 9)

    def test_12_unknown_service_and_usage(self):
        for cmd in (["deploy", "nosuch"], ["logs", "nosuch"], ["explain", "nosuch"], ["undeploy", "nosuch"]):
            rc, out, err = self.oakuk(*cmd)
            self.assertEqual(rc, 6, err)
            self.assertIn('no service "nosuch"', err)
        rc, out, err = self.oakuk("deploy")
        self.assertEqual(rc, 2, err)
        rc, out, err = self.oakuk("undeploy", "web", "x")
        self.assertEqual(rc, 2, err)

    def test_13_token_refresh(self):
        with open(self.creds) as f:
            config = json.load(f)
        c = config["contexts"][config["current"]]
        bad = c["token"] = c["token"][:-4] + "AAAA"  # a bad signature: the root answers 401
        with open(self.creds, "w") as f:
            json.dump(config, f)
        rc, out, err = self.oakuk("status")
        self.assertEqual(rc, 0, err)
        with open(self.creds) as f:
            config = json.load(f)
        fresh = config["contexts"][config["current"]]
        self.assertNotEqual(fresh["token"], bad)
        self.assertEqual(stat.S_IMODE(os.stat(self.creds).st_mode), 0o600)
        # without a usable refresh token the user is told to log in again
        fresh["token"] = fresh["refresh_token"] = "garbage"
        with open(self.creds, "w") as f:
            json.dump(config, f)
        rc, out, err = self.oakuk("status")
        self.assertEqual(rc, 4, err)
        self.assertIn("run oakuk login", err)
        self.login()

    def test_14_root_unreachable(self):
        dead = "https://127.0.0.1:%d" % edgelib.ports(1)[0]
        env = dict(self.env, XDG_CONFIG_HOME=os.path.join(self.tmp, "config-dead"), OAKUK_URL=dead)
        os.makedirs(os.path.join(self.tmp, "config-dead", "oakuk"))
        # the credentials file of one root that older versions wrote: read as a context of its own
        with open(self.creds) as f:
            config = json.load(f)
        c = config["contexts"][config["current"]]
        c["url"] = dead
        with open(os.path.join(self.tmp, "config-dead", "oakuk", "credentials.json"), "w") as f:
            json.dump(c, f)
        shutil.copy(self.cp.ca_file, os.path.join(self.tmp, "config-dead", "oakuk",
                                                  "ca-127.0.0.1-%s.crt" % dead.rsplit(":", 1)[1]))
        rc, out, err = self.oakuk("status", env=env)
        self.assertEqual(rc, 5, err)
        self.assertIn("cannot reach the root at " + dead, err)
        # version: the client's all the same, the root's unknown, exit 5
        rc, out, err = self.oakuk("version", env=env)
        self.assertEqual(rc, 5, err)
        self.assertIn("Client: oakuk ", out)
        self.assertIn("Server: unknown (the root could not be reached)", out)

    def test_15_undeploy(self):
        rc, out, err = self.oakuk("undeploy", "web", "--wait", "--timeout", "30")
        self.assertEqual(rc, 0, err)
        self.assertIn("instance 0:", out)
        self.node.expect("control/delete", lambda m: m["job_name"] == WEB and m["instance_number"] == 0)
        web = self.root_service(WEB)
        self.assertEqual(web["instance_list"], [])
        rc, out, err = self.oakuk("status", "--json")
        row = next(r for r in json.loads(out) if r["service"] == "web")
        self.assertIsNone(row["instance"])
        self.assertIsNone(row["ready"])
        rc, out, err = self.oakuk("undeploy", "web")
        self.assertEqual(rc, 0, err)
        self.assertIn("has no instances", out)

    def test_16_token_create(self):
        rc, out, err = self.oakuk("token", "create", "cluster")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^oakuk1\.%s\.[0-9a-f]{48}\n$" % self.fp)
        t0 = time.time()
        rc, out, err = self.oakuk("token", "create", "cluster", "--ttl", "2h", "--uses", "3", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual((doc["kind"], doc["uses"]), ("cluster", 3))
        self.assertLess(abs(doc["expires_at"] / 1000 - (t0 + 7200)), 60)
        # a node token, made by the cluster: a node registers with it
        rc, out, err = self.oakuk("token", "create", "node", "--cluster", "edge1", "--ttl", "90s")
        self.assertEqual(rc, 0, err)
        token = out.strip()
        self.assertTrue(token.startswith("oakuk1.%s." % self.fp), token)
        r = edgelib.requests.post(self.cp.cluster_url + "/api/node/register", timeout=10, verify=self.cp.ca_file,
                                  json={"join_token": token, "capabilities": edgelib.report("node-tok", 1000)})
        self.assertEqual(r.status_code, 201, r.text)
        for args, want in ((["node"], "give --cluster NAME"), (["cluster", "--cluster", "edge1"], "node tokens only"),
                           (["cluster", "--ttl", "10x"], "--ttl"), (["cluster", "--ttl", "30s"], "--ttl"),
                           (["cluster", "--uses", "0"], "--uses"), (["vm"], "expected cluster or node")):
            rc, out, err = self.oakuk("token", "create", *args)
            self.assertEqual(rc, 2, (args, err))
            self.assertIn(want, err)
            self.assertEqual(out, "")
        rc, out, err = self.oakuk("token", "create", "node", "--cluster", "nosuch")
        self.assertEqual(rc, 6, err)

    def test_17_users(self):
        rc, out, err = self.oakuk("user", "create", "alice", "--role", "Application_Provider", "--password-file",
                                  self.pwfile)
        self.assertEqual(rc, 0, err)
        self.assertIn("user alice created (Application_Provider)", out)
        # asked twice on the terminal, without echo
        rc, shown, echo_off = self.oakuk_on_terminal(
            ["user", "create", "bob", "--role", "Infrastructure_Provider"],
            [("Password for the new user bob", PASSWORD), ("The same again", PASSWORD)], self.env)
        self.assertEqual(rc, 0, shown)
        self.assertEqual(echo_off, [True, True])
        self.assertNotIn(PASSWORD, shown)
        rc, out, err = self.oakuk("user", "list")
        self.assertEqual(rc, 0, err)
        rows = [l.split() for l in out.splitlines()]
        self.assertEqual(rows[0], ["USER", "ROLE"])
        for row in (["Admin", "Admin"], ["alice", "Application_Provider"], ["bob", "Infrastructure_Provider"]):
            self.assertIn(row, rows)
        rc, out, err = self.oakuk("user", "list", "--json")
        self.assertIn({"username": "alice", "role": "Application_Provider"}, json.loads(out))
        self.assertNotIn(PASSWORD, out)
        # refusals: an unknown role, no password source without a terminal, a short password
        rc, out, err = self.oakuk("user", "create", "carol", "--role", "Root", "--password-file", self.pwfile)
        self.assertEqual(rc, 2, err)
        self.assertIn("Application_Provider", err)
        rc, out, err = self.oakuk("user", "create", "carol", "--role", "Admin")
        self.assertEqual(rc, 2, err)
        self.assertIn("--password-file", err)
        short = edgelib.write_secret(os.path.join(self.tmp, "short-password"), "short")
        rc, out, err = self.oakuk("user", "create", "carol", "--role", "Admin", "--password-file", short)
        self.assertEqual(rc, 1, err)
        self.assertIn("12", err)
        # each role's CLI: an Application_Provider may not make tokens (403, exit 1), an
        # Infrastructure_Provider may
        for user, want in (("alice", 1), ("bob", 0)):
            env = self.config_env("config-" + user)
            rc, out, err = self.oakuk("login", "--ca-file", self.cp.ca_file, "--username", user, "--password-file",
                                      self.pwfile, env=env)
            self.assertEqual(rc, 0, err)
            rc, out, err = self.oakuk("token", "create", "cluster", env=env)
            self.assertEqual(rc, want, err)
            if want:
                self.assertIn("forbidden (HTTP 403)", err)
                self.assertIn("needs the role", err)
                self.assertEqual(out, "")
                rc, out, err = self.oakuk("user", "list", env=env)
                self.assertEqual(rc, 1, err)
        rc, out, err = self.oakuk("user", "remove", "alice")
        self.assertEqual(rc, 0, err)
        self.assertIn("user alice removed", out)
        rc, out, err = self.oakuk("user", "list", "--json")
        self.assertNotIn("alice", [u["username"] for u in json.loads(out)])
        rc, out, err = self.oakuk("user", "remove", "alice")
        self.assertEqual(rc, 6, err)
        rc, out, err = self.oakuk("user", "remove", "bob")
        self.assertEqual(rc, 0, err)

    # ---- day-2 commands: scale, -o, version, contexts, completion, delete ----

    def instances_of(self, job):
        return sorted(i["instance_number"] for i in self.root_service(job)["instance_list"]
                      if i["status"] != "UNDEPLOYED")

    def test_18_scale_up(self):
        for args, want in ((["web", "-1"], 'N "-1" is not a number of instances'),
                           (["web", "x"], 'N "x" is not a number of instances'),
                           (["web", "1001"], "from 0 to 1000"), (["web"], "SERVICE N expected"),
                           (["web", "1", "--timeout", "0"], "--timeout must be positive")):
            rc, out, err = self.oakuk("scale", *args)
            self.assertEqual(rc, 2, (args, err))
            self.assertIn(want, err)
        rc, out, err = self.oakuk("scale", "nosuch", "1")
        self.assertEqual(rc, 6, err)
        self.assertIn('no service "nosuch"', err)
        self.assertEqual(self.instances_of(WEB), [])
        first = self.root_service(WEB)["next_instance_progressive_number"]
        p = subprocess.Popen([OAKUK, "scale", "web", "2", "--wait", "--timeout", "60"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        nums = [first, first + 1]
        for n in nums:
            self.node.expect("control/deploy", lambda m: m["job_name"] == WEB and m["instance_number"] == n)
        for n in nums:
            self.node.instances.add(WEB + ".instance.%d" % n)
        # as a node does, the status is reported again until the wait ends
        deadline = time.time() + 60
        while p.poll() is None and time.time() < deadline:
            for n in nums:
                self.node.status(WEB, n, "RUNNING", ready=True, ready_ms=100)
            time.sleep(1)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertIn("%s: 0 -> 2 instances: deployed instances %d, %d" % (WEB, min(nums), max(nums)), out)
        self.assertTrue(out.rstrip().endswith("2/2 running and ready"), out)
        self.assertEqual(self.instances_of(WEB), sorted(nums))
        rc, out, err = self.oakuk("scale", WEB, "2")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "%s has 2 instances already\n" % WEB)
        # an instance that cannot be placed ends the wait: exit 1 with its status
        rc, out, err = self.oakuk("scale", "huge", "1", "--wait", "--timeout", "30")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("of shop.test.huge.test: NoActiveClusterWithCapacity", err)
        # a detail holding what YAML must quote, for test_19
        self.node.status(WEB, max(nums), "RUNNING", TRICKY, ready=True, ready_ms=100)
        edgelib.wait_until("the tricky detail at the root", lambda: any(
            i["status_detail"] == TRICKY for i in self.root_service(WEB)["instance_list"]))

    def json_and_yaml(self, args, volatile=(), env=None):
        """The output of args with -o json and with -o yaml, parsed, without the volatile keys;
        asked again (up to 5 times) while they differ, as the data may change between the two."""
        def strip(doc):
            if isinstance(doc, dict):
                return {k: strip(v) for k, v in doc.items() if k not in volatile}
            if isinstance(doc, list):
                return [strip(v) for v in doc]
            return doc
        for _ in range(5):
            rc, out, err = self.oakuk(*(args + ["-o", "json"]), env=env)
            self.assertEqual(rc, 0, err)
            rc, text, err = self.oakuk(*(args + ["-o", "yaml"]), env=env)
            self.assertEqual(rc, 0, err)
            doc, ydoc = strip(json.loads(out)), strip(yaml.safe_load(text))
            if doc == ydoc:
                return doc, text
            time.sleep(0.5)
        self.assertEqual(ydoc, doc, text)

    def test_19_output_formats(self):
        # YAML: the same data as JSON, whatever the strings hold
        rows, text = self.json_and_yaml(["status"])
        self.assertIn(TRICKY, [r["status_detail"] for r in rows])
        rc, out, err = self.oakuk("status", "--json")

        def settled(rows):  # a refusal's detail counts down its seconds ("not retried for 16 s ...")
            return [dict(r, status_detail=re.sub(r"\bfor \d+ s\b", "for N s", r["status_detail"])) for r in rows]
        self.assertEqual(settled(json.loads(out)), settled(rows))
        self.json_and_yaml(["nodes"], volatile=("last_seen_ms", "cpu_percent", "memory_percent"))
        self.json_and_yaml(["clusters"], volatile=("aggregate_received_at_ms", "cpu_percent", "memory_percent",
                                                    "nodes"))
        self.json_and_yaml(["version"])
        # user names YAML 1.1 would read as booleans, numbers or null
        odd = ["yes", "No", "null", "1e3", "0x1F", "007", "1.5", "on", ".inf", "2026-12-05"]
        for name in odd:
            rc, out, err = self.oakuk("user", "create", name, "--role", "Application_Provider", "--password-file",
                                      self.pwfile)
            self.assertEqual(rc, 0, err)
        try:
            users, text = self.json_and_yaml(["user", "list"])
            self.assertTrue(set(odd) <= {u["username"] for u in users}, text)
            self.assertTrue(all(isinstance(u["username"], str) for u in yaml.safe_load(text)), text)
        finally:
            for name in odd:
                self.oakuk("user", "remove", name)
        # wide: more columns
        rc, out, err = self.oakuk("status", "-o", "wide")
        self.assertEqual(rc, 0, err)
        lines = [l.split() for l in out.splitlines()]
        self.assertEqual(lines[0], ["APP", "NAMESPACE", "SERVICE", "INSTANCE", "CLUSTER", "NODE", "VIRT", "ARCH",
                                    "STATUS", "READY", "READY-MS", "SERVICE-ID", "DETAIL"])
        web = next(l for l in lines if l[2] == "web")
        self.assertEqual(web[:5], ["shop", "test", "web", web[3], "edge1"])
        self.assertIn(self.root_service(WEB)["microserviceID"], web)
        rc, out, err = self.oakuk("nodes", "-o", "wide")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.split()[:5], ["CLUSTER", "CLUSTER-ID", "NODE", "HOST", "IP"])
        self.assertIn("MEM%", out.splitlines()[0])
        rc, out, err = self.oakuk("clusters", "-o", "wide")
        self.assertEqual(rc, 0, err)
        self.assertIn("REGISTERED", out.splitlines()[0])
        self.assertTrue(out.splitlines()[0].rstrip().endswith("URL"), out)
        self.assertIn(self.cp.cluster_url, out)
        rc, out, err = self.oakuk("user", "list", "-o", "wide")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.split()[:2], ["USER", "ROLE"])
        # bad formats and combinations: exit 2 before anything is asked
        for args, want in ((["status", "-o", "xml"], '-o "xml": unknown output format (json, yaml or wide)'),
                           (["nodes", "--json", "-o", "yaml"], "--json and -o yaml exclude each other"),
                           (["clusters", "-o"], "Missing argument for -o"),
                           (["user", "remove", "x", "-o", "json"], "-o goes with list only"),
                           (["version", "-o", "table"], "unknown output format")):
            rc, out, err = self.oakuk(*args)
            self.assertEqual(rc, 2, (args, err))
            self.assertIn(want, err)
            self.assertEqual(out, "")
        rc, out, err = self.oakuk("status", "-o", "json", "--json")
        self.assertEqual(rc, 0, err)
        # --watch -o json: one JSON object per line and round, nothing else
        for fmt in (["-o", "json"], ["--json"]):
            p = subprocess.Popen([OAKUK, "status", "--watch"] + fmt, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=self.env)
            time.sleep(3.2)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=10)
            self.assertEqual(p.returncode, 0, err)
            lines = out.splitlines()
            self.assertGreaterEqual(len(lines), 2, out)
            for line in lines:
                doc = json.loads(line)
                self.assertEqual(set(doc), {"time", "rows"})
                self.assertIn(WEB, [r["job_name"] for r in doc["rows"]])
        # --watch -o yaml: one YAML document per round
        p = subprocess.Popen([OAKUK, "status", "--watch", "-o", "yaml"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        time.sleep(3.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0, err)
        docs = list(yaml.safe_load_all(out))
        self.assertGreaterEqual(len(docs), 2, out)
        self.assertIn(TRICKY, [r["status_detail"] for r in docs[0]["rows"]])

    def test_20_scale_down(self):
        nums = self.instances_of(WEB)
        self.assertEqual(len(nums), 2)
        # both run and are ready: the newest goes
        rc, out, err = self.oakuk("scale", "web", "1", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual((doc["job_name"], doc["from"], doc["to"], doc["deployed"], doc["undeployed"]),
                         (WEB, 2, 1, [], [max(nums)]))
        self.node.expect("control/delete", lambda m: m["job_name"] == WEB and m["instance_number"] == max(nums))
        self.node.instances.discard(WEB + ".instance.%d" % max(nums))
        p = subprocess.Popen([OAKUK, "scale", "web", "0", "--wait", "--timeout", "30"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        self.node.expect("control/delete", lambda m: m["job_name"] == WEB and m["instance_number"] == min(nums))
        self.node.instances.discard(WEB + ".instance.%d" % min(nums))
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertIn("%s: 1 -> 0 instances: undeployed instance %d" % (WEB, min(nums)), out)
        self.assertTrue(out.rstrip().endswith("0/0 running and ready"), out)
        self.assertEqual(self.root_service(WEB)["instance_list"], [])

    def test_21_version(self):
        server = edgelib.requests.get(self.cp.root_url + "/healthz", timeout=5).json()["version"]
        rc, out, err = self.oakuk("version")
        self.assertEqual(rc, 0, err)
        client = re.search(r"^Client: oakuk (\S+)$", out, re.M).group(1)
        self.assertIn("Server: oakuk-root %s at %s\n" % (server, self.cp.root_url), out)
        rc, out, err = self.oakuk("--version")
        self.assertEqual(out, "oakuk %s\n" % client)
        rc, out, err = self.oakuk("version", "-o", "json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"client": {"version": client}, "server": {
            "version": server, "url": self.cp.root_url, "context": self.context_name}})
        rc, out, err = self.oakuk("version", "--client")
        self.assertEqual((rc, out), (0, "Client: oakuk %s\n" % client))
        # not logged in: the client's version, and the root's is unknown (exit 0)
        env = self.config_env("config-none")
        rc, out, err = self.oakuk("version", env=env)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "Client: oakuk %s\nServer: unknown (not logged in to %s)\n" % (client, self.cp.root_url))
        rc, out, err = self.oakuk("version", "--json", env=env)
        self.assertEqual(json.loads(out)["server"], None)
        rc, out, err = self.oakuk("version", "extra")
        self.assertEqual(rc, 2, err)

    def test_22_contexts(self):
        env = self.config_env("config-ctx")
        del env["OAKUK_URL"]
        # the credentials file of one root that older versions wrote: a context named after the root
        with open(self.creds) as f:
            config = json.load(f)
        old = dict(config["contexts"][config["current"]])
        os.makedirs(os.path.join(env["XDG_CONFIG_HOME"], "oakuk"))
        creds = os.path.join(env["XDG_CONFIG_HOME"], "oakuk", "credentials.json")
        with open(creds, "w") as f:
            json.dump(old, f)
        shutil.copy(self.cp.ca_file, self.stored_ca(env))
        rc, out, err = self.oakuk("context", "list", "-o", "json", env=env)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), [{"name": self.context_name, "url": self.cp.root_url, "username": "Admin",
                                            "current": True, "insecure": False}])
        rc, out, err = self.oakuk("status", "-o", "json", env=env)
        self.assertEqual(rc, 0, err)
        self.assertIn(WEB, [r["job_name"] for r in json.loads(out)])
        # a second root, logged in to as context "lab2": it becomes the current one
        port2 = edgelib.ports(1)[0]
        state2 = os.path.join(self.tmp, "root2")
        root2 = edgelib.Daemon([ROOT_BIN, "--state-dir", state2, "--listen", "127.0.0.1:%d" % port2],
                               os.path.join(self.tmp, "root2.log"))
        root2.start()
        url2, ca2 = "https://127.0.0.1:%d" % port2, os.path.join(state2, "pki", "ca.crt")
        try:
            pw2 = edgelib.wait_until("root2's admin password",
                                     lambda: edgelib.read_text(os.path.join(state2, "admin-password")), timeout=10)
            edgelib.wait_until("root2 answers", lambda: edgelib.requests.get(url2 + "/healthz", verify=ca2, timeout=5).ok)
            rc, out, err = self.oakuk("login", url2, "--context", "lab2", "--ca-file", ca2, "--password-stdin",
                                      stdin=pw2 + "\n", env=env)
            self.assertEqual(rc, 0, err)
            self.assertIn("(context lab2, now the current one;", out)
            self.check_contexts(env, url2)
        finally:
            root2.stop()
        with open(creds) as f:
            config = json.load(f)
        self.assertEqual((config["current"], sorted(config["contexts"])), (self.context_name, sorted(["lab2", self.context_name])))
        self.assertEqual(stat.S_IMODE(os.stat(creds).st_mode), 0o600)
        # forgetting: another one, then the current one (no current context left), then an unknown one
        rc, out, err = self.oakuk("context", "remove", "lab2", env=env)
        self.assertEqual((rc, out), (0, "removed context lab2\n"), err)
        rc, out, err = self.oakuk("context", "list", "-o", "name", env=env)
        self.assertEqual(out, self.context_name + "\n")
        rc, out, err = self.oakuk("context", "remove", self.context_name, env=env)
        self.assertEqual((rc, out), (0, "removed context %s (there is no current context now)\n" % self.context_name), err)
        rc, out, err = self.oakuk("context", "current", env=env)
        self.assertEqual(rc, 4, err)
        rc, out, err = self.oakuk("status", env=env)
        self.assertEqual(rc, 4, err)  # not logged in any more
        rc, out, err = self.oakuk("context", "remove", "lab2", env=env)
        self.assertEqual(rc, 6, err)
        self.assertIn('no context "lab2"', err)
        rc, out, err = self.oakuk("context", "remove", env=env)
        self.assertEqual(rc, 2, err)

    def check_contexts(self, env, url2):
        first = self.context_name
        rc, out, err = self.oakuk("context", "current", env=env)
        self.assertEqual((rc, out), (0, "lab2\n"), err)
        rc, out, err = self.oakuk("context", "list", env=env)
        self.assertEqual(rc, 0, err)
        rows = [l.split() for l in out.splitlines()]
        self.assertEqual(rows[0], ["CURRENT", "NAME", "URL", "USER"])
        self.assertIn(["*", "lab2", url2, "Admin"], rows)
        self.assertIn(["-", first, self.cp.root_url, "Admin"], rows)
        rc, out, err = self.oakuk("context", "list", "-o", "name", env=env)
        self.assertEqual(sorted(out.split()), sorted(["lab2", first]))
        rc, out, err = self.oakuk("context", "list", "-o", "wide", env=dict(env, COLUMNS="500"))
        self.assertIn(self.stored_ca(env), out)
        # the current context's root: the second, which has no services
        rc, out, err = self.oakuk("status", "-o", "json", env=env)
        self.assertEqual((rc, json.loads(out)), (0, []), err)
        # another one for a single command: --context before or after the command, or $OAKUK_CONTEXT
        for args, e in ((["--context", first, "status", "-o", "json"], env),
                        (["--context=" + first, "status", "-o", "json"], env),
                        (["status", "--context", first, "-o", "json"], env),
                        (["status", "-o", "json"], dict(env, OAKUK_CONTEXT=first))):
            rc, out, err = self.oakuk(*args, env=e)
            self.assertEqual(rc, 0, (args, err))
            self.assertIn(WEB, [r["job_name"] for r in json.loads(out)], args)
        rc, out, err = self.oakuk("context", "current", env=dict(env, OAKUK_CONTEXT=first))
        self.assertEqual(out, first + "\n")
        rc, out, err = self.oakuk("version", "-o", "json", "--context", "lab2", env=env)
        self.assertEqual(json.loads(out)["server"]["url"], url2)
        # unknown contexts and conflicts
        for args, e, code, want in (
                (["--context", "nosuch", "status"], env, 6, 'no context "nosuch"'),
                (["status"], dict(env, OAKUK_CONTEXT="nosuch"), 6, 'no context "nosuch"'),
                (["context", "use", "nosuch"], env, 6, 'no context "nosuch"'),
                (["context", "current"], dict(env, OAKUK_CONTEXT="nosuch"), 6, 'no context "nosuch"'),
                (["--context"], env, 2, "--context needs a NAME"),
                (["context", "bogus"], env, 2, "expected list [-o FORMAT], use NAME, current, or remove NAME"),
                (["context", "use"], env, 2, "expected list"),
                (["context", "list", "-o", "xml"], env, 2, "unknown output format"),
                (["status", "--context", "lab2", "--url", self.cp.root_url], env, 2, 'context "lab2" is for ' + url2),
                (["login", "--context", "bad name", "--password-stdin"], env, 2, "a context name is 1 to 128")):
            rc, out, err = self.oakuk(*args, env=e, stdin="x\n")
            self.assertEqual(rc, code, (args, err))
            self.assertIn(want, err)
        # switching
        rc, out, err = self.oakuk("context", "use", first, env=env)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "switched to context %s (%s)\n" % (first, self.cp.root_url))
        rc, out, err = self.oakuk("status", "-o", "json", env=env)
        self.assertIn(WEB, [r["job_name"] for r in json.loads(out)])
        # no file at all: no current context
        rc, out, err = self.oakuk("context", "current", env=self.config_env("config-none"))
        self.assertEqual(rc, 4, err)
        self.assertIn("no current context (run oakuk login)", err)
        rc, out, err = self.oakuk("context", "list", env=self.config_env("config-none"))
        self.assertEqual((rc, out), (0, "CURRENT  NAME  URL  USER\n"))

    def complete(self, script, lines, env=None):
        """What the completion script offers for each command line (the cursor at its end)."""
        driver = os.path.join(self.tmp, "complete-driver.sh")
        with open(driver, "w") as f:
            f.write('source "$1"\nshift\nfor line in "$@"; do\n'
                    '  COMP_LINE=$line; COMP_POINT=${#line}; read -ra COMP_WORDS <<<"$line"\n'
                    '  COMP_WORDS[0]=%s; COMP_CWORD=${#COMP_WORDS[@]}; COMPREPLY=()\n'
                    '  _oakuk; printf "%%s\\n" "${COMPREPLY[*]}"\ndone\n' % OAKUK)
        p = subprocess.run(["bash", driver, script] + lines, capture_output=True, text=True, timeout=60,
                           env=env or self.env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return [l.split() for l in p.stdout.splitlines()]

    def test_23_completion(self):
        rc, text, err = self.oakuk("completion", "bash")
        self.assertEqual(rc, 0, err)
        script = os.path.join(self.tmp, "oakuk.bash")
        with open(script, "w") as f:
            f.write(text)
        p = subprocess.run(["bash", "-c", 'source "$1" && complete -p oakuk', "-", script], capture_output=True,
                           text=True)
        self.assertEqual(p.stdout, "complete -F _oakuk oakuk\n", p.stderr)
        # every command of `oakuk --help`, and each one's options from its own --help
        rc, out, err = self.oakuk("--help")
        commands = re.findall(r"^  (\S+)", out.split("Commands:")[1], re.M)
        self.assertTrue({"delete", "scale", "version", "context", "completion", "status"} <= set(commands))
        lines = ["oakuk ", "oakuk sc", "oakuk st"] + ["oakuk %s -" % c for c in commands]
        got = self.complete(script, lines)
        self.assertEqual(got[0], commands + ["--context", "--help", "--version"])
        self.assertEqual(got[1], ["scale"])
        self.assertEqual(sorted(got[2]), sorted(c for c in commands if c.startswith("st")))
        for cmd, offered in zip(commands, got[3:]):
            rc, out, err = self.oakuk(cmd, "--help")
            opts = set()
            for short, long in re.findall(r"^\s+(?:(-\w), )?(--[\w-]+)", out, re.M):
                opts |= {long} | ({short} if short else set())
            self.assertTrue(opts <= set(offered), (cmd, opts - set(offered)))
        cases = {
            "oakuk status -o ": ["json", "yaml", "wide"],
            "oakuk status --output=y": ["yaml"],
            "oakuk context list -o ": ["json", "yaml", "wide", "name"],
            "oakuk node ": ["drain", "undrain", "remove"],
            "oakuk token ": ["create"],
            "oakuk token create ": ["cluster", "node"],
            "oakuk user ": ["create", "list", "remove"],
            "oakuk delete ": ["app", "service"],
            "oakuk delete s": ["service"],
            "oakuk context ": ["list", "use", "current", "remove"],
            "oakuk context use ": [self.context_name],
            "oakuk context use 127": [self.context_name],
            "oakuk context use 127.0.0.1:": [str(self.port)],  # bash inserts what follows the ':'
            "oakuk --context ": [self.context_name],
            "oakuk status --context ": [self.context_name],
            "oakuk --context x sca": ["scale"],
            "oakuk completion ": ["bash"],
            "oakuk scale web ": [],
        }
        got = self.complete(script, list(cases))
        for (line, want), offered in zip(cases.items(), got):
            self.assertEqual(offered, want, line)
        # files where a command takes one
        got = self.complete(script, ["oakuk apply %s/sla" % self.tmp, "oakuk login --ca-file %s/other-c" % self.tmp])
        self.assertEqual(got, [[os.path.join(self.tmp, "sla.json")], [os.path.join(self.tmp, "other-ca.crt")]])
        for args in (["completion"], ["completion", "zsh"], ["completion", "bash", "x"]):
            rc, out, err = self.oakuk(*args)
            self.assertEqual(rc, 2, err)
            self.assertIn("bash", err)

    def test_24_delete(self):
        for args, code, want in ((["service", "nosuch"], 6, 'no service "nosuch"'),
                                 (["app", "nosuch"], 6, 'no application "nosuch"'),
                                 (["thing", "x"], 2, "expected app or service"),
                                 (["app"], 2, "expected app|service and one or more NAME|ID"),
                                 # one unknown name: nothing is deleted
                                 (["service", "pinned", "nosuch"], 6, 'no service "nosuch"')):
            rc, out, err = self.oakuk("delete", *args)
            self.assertEqual(rc, code, (args, err))
            self.assertIn(want, err)
            self.assertEqual(out, "")
        pinned = self.root_service("shop.test.pinned.test")
        rc, out, err = self.oakuk("delete", "svc", "pinned")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "service shop.test.pinned.test (%s) deleted; its 1 instance is being undeployed\n"
                         % pinned["microserviceID"])
        jobs = [s["job_name"] for s in edgelib.requests.get(self.cp.root_url + "/api/v1/services",
                                                              headers=self.cp.headers, timeout=5).json()]
        self.assertNotIn("shop.test.pinned.test", jobs)
        self.assertIn(WEB, jobs)
        rc, out, err = self.oakuk("delete", "service", "pinned")
        self.assertEqual(rc, 6, err)
        app = edgelib.requests.get(self.cp.root_url + "/api/v1/applications", headers=self.cp.headers,
                                   timeout=5).json()[0]
        rc, out, err = self.oakuk("delete", "app", "shop.test", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"deleted": [{"kind": "application", "id": app["applicationID"],
                                                        "name": "shop.test"}]})
        for what in ("applications", "services"):
            self.assertEqual(edgelib.requests.get(self.cp.root_url + "/api/v1/" + what, headers=self.cp.headers,
                                                  timeout=5).json(), [])
        rc, out, err = self.oakuk("status", "--json")
        self.assertEqual((rc, json.loads(out)), (0, []))
        rc, out, err = self.oakuk("delete", "app", "shop")
        self.assertEqual(rc, 6, err)
        self.assertIn('no application "shop"', err)


    def test_25_apply_rolls_out(self):
        """apply of a changed descriptor: the service gets its next revision and its instance is
        replaced, the new one deployed with the new image and the old one deleted only once the new
        one is ready; a replacement that fails, or is not ready within --timeout, is deleted and
        the service rolled back; --no-rollout only stores the spec and the next apply finishes."""
        job = "roll.test.svc.test"
        img = ["127.0.0.1:5000/roll/svc:%d" % v for v in range(4)]

        def doc(code, name):
            d = json.loads(json.dumps(SLA))
            app = d["applications"][0]
            app["application_name"] = "roll"
            app["microservices"] = [dict(app["microservices"][0], microservice_name="svc", code=code, port="")]
            return self.sla_file(d, name)

        def deployed(n, code):
            m = self.node.expect("control/deploy", lambda m: m["job_name"] == job and m["instance_number"] == n)
            self.assertEqual(m["code"], code)
            self.node.instances.add("%s.instance.%d" % (job, n))

        def deleted(n):
            self.node.expect("control/delete", lambda m: m["job_name"] == job and m["instance_number"] == n)
            self.node.instances.discard("%s.instance.%d" % (job, n))

        def apply(*args):
            return subprocess.Popen([OAKUK, "apply", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=self.env, start_new_session=True)

        def revisions():
            s = self.root_service(job)
            return s["revision"], sorted((i["instance_number"], i["revision"]) for i in s["instance_list"]
                                         if i["status"] != "UNDEPLOYED")

        rc, out, err = self.oakuk("apply", doc(img[1], "roll1.json"))
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^application roll\.test [0-9a-f]{24}: created\n"
                              r"  service roll\.test\.svc\.test [0-9a-f]{24}: created\n$")
        rc, out, err = self.oakuk("deploy", job)
        self.assertEqual(rc, 0, err)
        deployed(0, img[1])
        self.node.status(job, 0, "RUNNING", ready=True)
        edgelib.wait_until("instance 0 ready at the root", lambda: self.root_service(job)["instance_list"][0]["ready"])
        # the same file: unchanged, nothing rolls
        rc, out, err = self.oakuk("apply", doc(img[1], "roll1.json"))
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"  service roll\.test\.svc\.test [0-9a-f]{24}: unchanged \(revision 1\)\n$")
        # a new image: instance 1 replaces 0, which is deleted only after 1 is ready
        p = apply(doc(img[2], "roll2.json"), "--timeout", "60")
        deployed(1, img[2])
        self.node.status(job, 1, "RUNNING", ready=False)
        time.sleep(2)
        self.assertFalse([m for t, m in self.node.seen if t.endswith("control/delete") and
                          json.loads(m)["job_name"] == job], "an instance was deleted before its replacement was ready")
        self.assertIsNone(p.poll())
        self.node.status(job, 1, "RUNNING", ready=True)
        deleted(0)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertIn(": updated to revision 2 (was 1)\n", out)
        self.assertIn("  %s: instance 1 (revision 2) deployed to replace instance 0 (revision 1)\n" % job, out)
        self.assertRegex(out, r"  %s: instance 1 ready after \d+\.\d s; instance 0 deleted\n" % re.escape(job))
        self.assertEqual(revisions(), (2, [(1, 2)]))
        # the replacement fails: it is deleted, revision 2 is current again, instance 1 stays
        p = apply(doc(img[3], "roll3.json"), "--json")
        deployed(2, img[3])
        self.node.status(job, 2, "FAILED", "image: manifest unknown")
        deleted(2)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("oakuk apply: %s: the rollout to revision 3 failed: instance 2: FAILED: image: manifest unknown"
                      % job, err)
        [svc] = json.loads(out)["applications"][0]["services"]
        self.assertEqual((svc["change"], svc["revision"], svc["rollout"]["rolled_back_to"], svc["rollout"]["replaced"],
                          svc["rollout"]["rolled_back"]), ("updated", 3, 2, [], []))
        self.assertEqual(revisions(), (2, [(1, 2)]))
        # not ready within --timeout: the same
        p = apply(doc(img[3], "roll3.json"), "--timeout", "3")
        deployed(3, img[3])
        self.node.status(job, 3, "RUNNING", "probe: connection refused", ready=False)
        deleted(3)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("instance 3: not ready after 3 s (--timeout): RUNNING (not ready): probe: connection refused", err)
        self.assertIn("  %s: rolled back: revision 2 is current again\n" % job, out)
        self.assertEqual(revisions(), (2, [(1, 2)]))
        # --no-rollout stores the spec only; the next apply of the same file finishes the rollout
        rc, out, err = self.oakuk("apply", "--no-rollout", doc(img[3], "roll3.json"))
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r": updated to revision 5 \(was 2\)\n$")
        self.assertEqual(revisions(), (5, [(1, 2)]))
        p = apply(doc(img[3], "roll3.json"))
        deployed(4, img[3])
        self.node.status(job, 4, "RUNNING", ready=True)
        deleted(1)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertIn(": unchanged (revision 5)\n", out)
        self.assertIn("instance 4 (revision 5) deployed to replace instance 1 (revision 2)", out)
        self.assertEqual(revisions(), (5, [(4, 5)]))
        for args, want in ((["--timeout", "0"], "--timeout must be positive"), (["--timeout", "x"], "--timeout")):
            rc, out, err = self.oakuk("apply", *args, doc(img[3], "roll3.json"))
            self.assertEqual(rc, 2, err)
            self.assertIn(want, err)
        rc, out, err = self.oakuk("delete", "app", "roll.test")
        self.assertEqual(rc, 0, err)


    def read_lines(self, p, n, timeout=15):
        """The next n lines p writes on stdout (bytes read as they come, not waiting for its end)."""
        buf, deadline = getattr(p, "_buf", b""), time.time() + timeout
        while buf.count(b"\n") < n:
            left = deadline - time.time()
            self.assertGreater(left, 0, "only %r from %s" % (buf, p.args))
            if select.select([p.stdout], [], [], left)[0]:
                chunk = os.read(p.stdout.fileno(), 65536)
                self.assertTrue(chunk, "%s ended after %r" % (p.args, buf))
                buf += chunk
        lines = buf.split(b"\n")
        p._buf = b"\n".join(lines[n:])
        return [line.decode() for line in lines[:n]]

    def test_26_describe_top_watch_and_logs_follow(self):
        job = "views.test.v.test"
        name = job + ".instance.0"
        d = json.loads(json.dumps(SLA))
        app = d["applications"][0]
        app["application_name"] = "views"
        app["microservices"] = [dict(app["microservices"][0], microservice_name="v", port="")]
        rc, out, err = self.oakuk("apply", self.sla_file(d, "views.json"))
        self.assertEqual(rc, 0, err)
        rc, out, err = self.oakuk("deploy", job)
        self.assertEqual(rc, 0, err)
        self.node.expect("control/deploy", lambda m: m["job_name"] == job and m["instance_number"] == 0)
        self.node.instances.add(name)
        self.node.status(job, 0, "RUNNING", ready=True)
        edgelib.wait_until("the instance's usage at the root", lambda: (lambda i: i["ready"] and i["memory"] == 10)(
            self.root_service(job)["instance_list"][0]), timeout=20)
        # describe: the spec with its revision, the instances, the placement
        rc, out, err = self.oakuk("describe", "v")
        self.assertEqual(rc, 0, err)
        for want in ("Service:         %s\n" % job, "Revision:        1\n",
                     "Code:            docker.io/library/nginx:latest\n", "Memory (MB):     100\n",
                     "views.test.v.test: cluster selection at the root:\n"):
            self.assertIn(want, out)
        self.assertRegex(out, r"\nINSTANCE +REV +CLUSTER +NODE +STATUS +READY +CPU% +MEM-MB +DETAIL *\n"
                              r"0 +1 +edge1 +node-a +RUNNING +yes +1\.0 +10\.0")
        rc, out, err = self.oakuk("describe", "--json", job)
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual((doc["service"]["job_name"], doc["service"]["revision"], doc["explain"]["job_name"]),
                         (job, 1, job))
        self.assertEqual(self.oakuk("describe", "nosuch")[0], 6)
        self.assertEqual(self.oakuk("describe")[0], 2)
        # top: nodes and instances, busiest first
        rc, out, err = self.oakuk("top")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"CLUSTER +NODE +CPU% +MEM% +MEM-TOTAL +ACTIVE *\nedge1 +node-a +25\.0 +10\.0 +8192 MB +yes")
        self.assertRegex(out, r"\nSERVICE +INSTANCE +NODE +STATUS +CPU% +MEM-MB *\n")
        self.assertRegex(out, r"\n%s +0 +node-a +RUNNING +1\.0 +10\.0" % re.escape(job))
        rc, out, err = self.oakuk("top", "-o", "json")
        rows = json.loads(out)
        self.assertEqual([r["kind"] for r in rows][0], "node")
        self.assertIn({"kind": "instance", "service": job, "instance": 0, "node": "node-a", "status": "RUNNING",
                       "cpu_percent": 1.0, "memory_mb": 10.0}, rows)
        # --watch on the lists: with -o json one {"time", "rows"} line per round, every 2 s
        for cmd, rounds in (("nodes", 2), ("clusters", 1), ("top", 1)):
            p = subprocess.Popen([OAKUK, cmd, "--watch", "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=self.env, start_new_session=True)
            t0 = time.time()
            lines = self.read_lines(p, rounds)
            if rounds == 2:
                self.assertGreater(time.time() - t0, 1.5)
            p.send_signal(signal.SIGINT)
            self.assertEqual(p.wait(timeout=10), 0)
            p.stdout.close()
            p.stderr.close()
            for line in lines:
                o = json.loads(line)
                self.assertEqual(sorted(o), ["rows", "time"])
                self.assertTrue(o["rows"], cmd)
            if cmd == "nodes":
                self.assertEqual(o["rows"][0]["id"], "node-a")
        self.assertEqual(self.oakuk("nodes", "--watch", "extra")[0], 2)
        # logs -f: what is there, then only what comes after it (a line equal to an old one included)
        self.node.logs[name] = ["one", "two"]
        p = subprocess.Popen([OAKUK, "logs", "-f", "v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                             start_new_session=True)
        self.assertEqual(self.read_lines(p, 2), ["one", "two"])
        self.node.logs[name] += ["three", "two"]
        self.assertEqual(self.read_lines(p, 2), ["three", "two"])
        # a log that does not continue the last answer (started again): shown, and said so
        self.node.logs[name] = ["fresh"]
        self.assertEqual(self.read_lines(p, 1), ["fresh"])
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        self.assertEqual((p.returncode, out), (0, b""), err)
        self.assertIn("oakuk logs: %s: its log does not continue the last answer" % name, err.decode())
        # with --json: one object per line
        p = subprocess.Popen([OAKUK, "logs", "-f", "--json", "v", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self.env, start_new_session=True)
        self.assertEqual(json.loads(self.read_lines(p, 1)[0]), {"instance": name, "node": "node-a", "line": "fresh"})
        self.node.logs[name] += ["next"]
        self.assertEqual(json.loads(self.read_lines(p, 1)[0])["line"], "next")
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0)
        rc, out, err = self.oakuk("delete", "app", "views.test")
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    OAKUK, ROOT_BIN, CLUSTER_BIN = sys.argv[1:4]
    del sys.argv[1:4]
    unittest.main(verbosity=2)

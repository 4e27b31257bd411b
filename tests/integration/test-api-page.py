#!/usr/bin/python3
"""The pages oakuk-root serves, in a real browser: headless Chromium from Debian, driven by
chromedriver through python3-selenium (tests/integration/browserlib.py), against a root with TLS.

- The API page (/api/docs, docs/api.md "API description") renders every operation of
  /api/openapi.json and its filter narrows them.
- The dashboard (/, docs/dashboard.md) against a root without clusters: login, registration with
  every problem at its JSON path, the single-service form, live views from the event stream,
  deploy/scale/explain/undeploy of instances the root cannot place, logout.

Each page loads nothing its CSP refuses (the browser reports nothing), a script from another origin
is refused, and a screenshot of each step is written to the test's log directory
(meson-logs/api-page/). The end-to-end dashboard test with running instances is in
tests/e2e/test_e2e.py (test_04c).

Usage: test-api-page.py <oakuk-root> <log directory>"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserlib  # noqa: E402
import edgelib  # noqa: E402
from browserlib import By, wait  # noqa: E402

ROOT_BIN = LOG_DIR = None
FIXTURES = os.environ.get("OAKUK_FIXTURES") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                            "fixtures")
CTX = ssl.create_default_context()
CTX.check_hostname, CTX.verify_mode = False, ssl.CERT_NONE
R = {}


def setUpModule():
    R["tmp"] = tempfile.mkdtemp(prefix="oakuk-api-page-")
    port = edgelib.ports(1)[0]
    R["base"] = "https://127.0.0.1:%d" % port
    state = os.path.join(R["tmp"], "state")
    R["log"] = open(os.path.join(R["tmp"], "root.log"), "wb")
    R["root"] = edgelib.spawn([ROOT_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % port],
                              stdout=subprocess.DEVNULL, stderr=R["log"])

    def healthy():
        try:
            with urllib.request.urlopen(R["base"] + "/healthz", timeout=2, context=CTX) as r:
                return r.status == 200
        except OSError:
            return False
    edgelib.wait_until("oakuk-root answers", healthy, timeout=15)
    with open(os.path.join(state, "admin-password")) as f:
        R["password"] = f.read().strip()
    R["browser"] = browserlib.chromium()
    os.makedirs(LOG_DIR, exist_ok=True)


def tearDownModule():
    R["browser"].quit()
    edgelib.stop(R["root"])
    R["log"].close()
    shutil.rmtree(R["tmp"], True)


def http(method, path, body=None, token=None):
    """(status, headers, body text) of one request to the root."""
    req = urllib.request.Request(R["base"] + path, method=method, data=body)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10, context=CTX) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


class ApiPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.base, cls.browser = R["base"], R["browser"]
        with urllib.request.urlopen(cls.base + "/api/openapi.json", timeout=5, context=CTX) as r:
            cls.doc = json.load(r)

    def shot(self, name):
        path = os.path.join(LOG_DIR, "api-" + name + ".png")
        self.assertTrue(self.browser.save_screenshot(path), path)

    def visible_operations(self):
        return [d for d in self.browser.find_elements(By.CSS_SELECTOR, "details[data-search]") if d.is_displayed()]

    def test_page(self):
        b = self.browser
        b.get_log("browser")  # what earlier tests left
        b.get(self.base + "/api/docs")
        ops = sum(len(item) for item in self.doc["paths"].values())
        edgelib.wait_until("every operation rendered", lambda: len(
            b.find_elements(By.CSS_SELECTOR, "details[data-search]")) == ops, timeout=15)
        self.shot("01-rendered")
        self.assertEqual(b.title, "oakuk-root API")
        headings = [h.text for h in b.find_elements(By.CSS_SELECTOR, "main h2")]
        self.assertEqual(headings, [t["name"] for t in self.doc["tags"]] + ["Schemas"])
        self.assertIn("Version " + self.doc["info"]["version"], b.find_element(By.ID, "about").text)
        # an operation opens with its parameters, body and answers
        rollback = next(d for d in b.find_elements(By.CSS_SELECTOR, "details[data-search]")
                        if "/api/v1/services/{id}/rollback" in d.text)
        rollback.find_element(By.TAG_NAME, "summary").click()
        self.assertIn("Rollback", rollback.text)  # its body's schema
        self.assertIn("409", rollback.text)
        self.shot("02-operation")
        # the filter, by keyboard
        box = b.find_element(By.ID, "filter")
        self.assertEqual(b.find_element(By.CSS_SELECTOR, "label[for=filter]").text, "Filter")
        box.send_keys("rollback")
        edgelib.wait_until("the filter narrows", lambda: len(self.visible_operations()) == 1, timeout=5)
        self.shot("03-filtered")
        box.clear()
        box.send_keys("openapi")
        edgelib.wait_until("two documents", lambda: len(self.visible_operations()) == 2, timeout=5)
        # nothing refused by the CSP, no script error
        problems = [e for e in b.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        self.assertEqual(problems, [])
        # the CSP is enforced: a script injected from another origin is refused, and said so
        b.execute_script("var s = document.createElement('script'); s.src = 'https://cdn.invalid/x.js';"
                         "document.body.appendChild(s);")
        time.sleep(0.5)
        refused = [e for e in b.get_log("browser") if "Content Security Policy" in e["message"]]
        self.assertTrue(refused, "the CSP did not refuse a script from another origin")


class DashboardTest(unittest.TestCase):
    """The dashboard against a root without clusters: every instance stays unplaced, which the
    views must show as it changes, without a reload."""

    def test_dashboard(self):
        b = R["browser"]
        b.get_log("browser")  # what earlier tests left
        d = browserlib.Dashboard(b, R["base"], os.path.join(LOG_DIR, "dashboard"))
        # served by the root itself, under a CSP that allows nothing from elsewhere and no inline script
        status, headers, page = http("GET", "/")
        self.assertEqual(status, 200)
        csp = headers["Content-Security-Policy"]
        self.assertIn("script-src 'self'", csp)
        self.assertIn("default-src 'none'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertNotIn("<script>", page)
        self.assertNotRegex(page, r'(src|href)="(?!#|/[^/])', "the page loads something from elsewhere")
        for path in ("/api/v1/events", "/api/v1/services", "/api/v1/clusters"):
            self.assertEqual(http("GET", path)[0], 401, path)
        self.assertEqual(http("GET", "/ui/openapi.json")[0], 404, "only the page's own files are under /ui/")

        d.open()
        d.shot("login")
        d.login("Admin", "not the password")
        wait("the login error", lambda: "password" in d.text("#login-error") or "invalid" in d.text("#login-error"))
        self.assertTrue(d.find("#login-view").is_displayed())
        d.shot("login-refused")
        d.login("Admin", R["password"])
        d.logged_in()
        self.assertIn("Admin", d.text("#who"))
        self.assertTrue(d.find("#apps-empty").is_displayed())
        d.shot("logged-in")

        # a descriptor with two mistakes, uploaded as a file: both shown, each at its JSON path
        with open(os.path.join(FIXTURES, "thesis", "aggregation-container.json")) as f:
            sla = json.load(f)
        m = sla["applications"][0]["microservices"][0]
        m["code"], m["arch"] = "127.0.0.1:5000/dash/busybox:1", ["amd64"]
        bad = json.loads(json.dumps(sla))
        bad["applications"][0]["microservices"][0]["vcpus"] = "two"
        bad["applications"][0]["microservices"][0]["arch"] = ["amd46"]
        path = os.path.join(R["tmp"], "bad-descriptor.json")
        with open(path, "w") as f:
            json.dump(bad, f, indent=2)
        d.view("register")
        d.upload(path)
        result = d.register()
        self.assertIn("refused (2 problems)", result)
        problems = dict(d.problems())
        self.assertEqual(set(problems), {"applications[0].microservices[0].vcpus",
                                         "applications[0].microservices[0].arch[0]"}, problems)
        self.assertIn("amd46", problems["applications[0].microservices[0].arch[0]"])
        self.assertEqual(d.find("#descriptor").get_attribute("aria-invalid"), "true")
        # a problem selects its value in the descriptor
        d.find("#register-problems li[data-path='applications[0].microservices[0].vcpus'] button").click()
        selected = b.execute_script("const a = document.getElementById('descriptor');"
                                    "return a.value.slice(a.selectionStart, a.selectionEnd);")
        self.assertEqual(selected, '"two"')
        d.shot("register-problems")
        # malformed JSON: one problem, the parser's line and column
        d.set_descriptor('{"sla_version": "v2.0", "applications": [}')
        self.assertIn("refused (1 problem)", d.register())
        self.assertIn("malformed JSON", d.problems()[0][1])
        # fixed: registered, with Oakestra's warnings listed
        d.set_descriptor(sla)
        result = d.register()
        self.assertIn("registered: testing.test.", result)
        self.assertEqual(d.find("#descriptor").get_attribute("aria-invalid"), "false")
        d.shot("registered")

        # one service from the form: a unikernel, else a container, with its own application
        d.find("#sf-app").clear()
        d.find("#sf-app").send_keys("dash")
        d.find("#sf-name").send_keys("web")
        d.find("#sf-virt option[value='unikernel,container']").click()
        d.find("#sf-unikernel").send_keys("https://127.0.0.1:1/amd64.tar.gz")
        d.find("#sf-container").send_keys("127.0.0.1:5000/dash/web:1")
        d.find("#sf-emulation option[value=allow]").click()
        d.find("#sf-port").send_keys("8080:80")
        d.find("#sf-ip").send_keys("10.30.9.9")
        preview = json.loads(d.find("#sf-preview").get_attribute("textContent"))
        ms = preview["applications"][0]["microservices"][0]
        self.assertEqual(ms["virtualization"], ["unikernel", "container"])
        self.assertEqual(ms["code"], {"unikernel": "https://127.0.0.1:1/amd64.tar.gz",
                                      "container": "127.0.0.1:5000/dash/web:1"})
        self.assertEqual((ms["arch"], ms["emulation"], ms["port"], ms["addresses"]),
                         (["amd64"], "allow", "8080:80", {"rr_ip": "10.30.9.9"}))
        d.find("#service-form button[type=submit]").click()
        wait("the service applied", lambda: "applied: dash.default (created): dash.default.web.default created" in d.text(
            "#register-result"), seen=lambda: (d.text("#register-result"), d.problems()))
        d.shot("service-form")
        # a second one with a bad field: refused at its path
        d.find("#sf-name").clear()
        d.find("#sf-name").send_keys("web2")
        d.find("#sf-ip").clear()
        d.find("#sf-ip").send_keys("10.30.9.999")
        d.find("#service-form button[type=submit]").click()
        wait("the bad service IP refused", lambda: [p for p, _ in d.problems()] == [
            "applications[0].microservices[0].addresses.rr_ip"])

        # the views follow the event stream: both applications appear without a reload
        d.view("apps")
        wait("both services listed", lambda: d.card("testaggr.test") and d.card("web.default"))
        self.assertEqual(len(b.find_elements(By.CSS_SELECTOR, "section.app")), 2)
        self.assertIn("virtualization unikernel, container", d.card("web.default").text)
        d.press("testaggr.test", "button.deploy")
        wait("instance 0 listed, unplaced", lambda: [(r["#"], r["Status"], r["Ready"]) for r in
                                                      d.instances("testaggr.test")] ==
             [("0", "NoActiveClusterWithCapacity", "no")], timeout=20)
        rows = d.instances("testaggr.test")
        self.assertIn("cluster", rows[0]["Detail"].lower())
        d.shot("deployed")
        d.press("testaggr.test", "button.explain")
        explanation = wait("the explanation", lambda: d.card("testaggr.test").find_element(
            By.CSS_SELECTOR, "pre.explanation").text)
        self.assertIn("Instance 0: NoActiveClusterWithCapacity", explanation)
        d.shot("explained")
        d.scale("testaggr.test", 3)
        wait("three instances", lambda: [r["#"] for r in d.instances("testaggr.test")] == ["0", "1", "2"], timeout=20)
        d.scale("testaggr.test", 1)
        wait("one instance left", lambda: [r["#"] for r in d.instances("testaggr.test")
                                           if r["Status"] != "UNDEPLOYED"] == ["0"], timeout=20)
        d.shot("scaled")
        d.row_button("testaggr.test", 0, "button.undeploy")
        wait("no instance left", lambda: [r for r in d.instances("testaggr.test") if r["Status"] != "UNDEPLOYED"] == [],
             timeout=20)
        self.assertTrue(d.page_fits(), "the page scrolls sideways on a phone-sized screen")
        # clusters and nodes: none registered, said so
        d.view("infra")
        wait("no clusters said", lambda: d.find("#clusters-empty").is_displayed())
        d.shot("infra")
        # keyboard: the navigation and the forms are reachable with Tab, and buttons are buttons
        self.assertEqual(b.find_elements(By.CSS_SELECTOR, "main [onclick], main div[tabindex='0']"), [])
        unlabelled = b.execute_script("return [...document.querySelectorAll('input, select, textarea')]"
                                      ".filter((e) => e.labels.length === 0).map((e) => e.id)")
        self.assertEqual(unlabelled, [])

        # the root saw what the page did: one application each, service web with its variants
        tok = json.loads(http("POST", "/api/auth/login", json.dumps(
            {"username": "Admin", "password": R["password"]}).encode())[2])["token"]
        svcs = json.loads(http("GET", "/api/v1/services", token=tok)[2])
        self.assertEqual(sorted(s["job_name"] for s in svcs), ["dash.default.web.default", "testing.test.testaggr.test"])

        # log out: back to the login form, the views emptied
        d.find("#logout").click()
        wait("the login form", lambda: d.find("#login-view").is_displayed())
        self.assertEqual(d.text("#login-error"), "Logged out.")
        self.assertFalse(d.find("#nav").is_displayed())
        self.assertEqual(b.find_elements(By.CSS_SELECTOR, "article.service"), [])
        d.shot("logged-out")
        # nothing refused by the CSP, no script error (the refusals were asked for: 400 and 401)
        self.assertEqual(d.console_problems(expected_statuses=(400, 401)), [])
        b.execute_script("var s = document.createElement('script'); s.src = 'https://cdn.invalid/x.js';"
                         "document.body.appendChild(s);")
        time.sleep(0.5)
        self.assertTrue([e for e in b.get_log("browser") if "Content Security Policy" in e["message"]],
                        "the CSP did not refuse a script from another origin")


if __name__ == "__main__":
    ROOT_BIN, LOG_DIR = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    unittest.main(verbosity=2)

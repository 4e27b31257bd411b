#!/usr/bin/python3
"""The API page of oakuk-root (/api/docs, docs/api.md "API description") in a real browser:
headless Chromium from Debian, driven by chromedriver through python3-selenium, against a root with
TLS. The page renders every operation of /api/openapi.json, its filter narrows them, it loads
nothing the CSP refuses (the browser reports none), and a screenshot of each step is written to
the test's log directory (meson-logs/api-page/).

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
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edgelib  # noqa: E402

try:
    from selenium import webdriver
except ImportError:  # a Python of its own (pyenv) beside Debian's python3-selenium
    sys.path.append("/usr/lib/python3/dist-packages")
    from selenium import webdriver
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

ROOT_BIN = LOG_DIR = None
CHROMEDRIVER = "/usr/bin/chromedriver"


class ApiPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="oakuk-api-page-")
        port = edgelib.ports(1)[0]
        cls.base = "https://127.0.0.1:%d" % port
        state = os.path.join(cls.tmp, "state")
        cls.log = open(os.path.join(cls.tmp, "root.log"), "wb")
        cls.root = edgelib.spawn([ROOT_BIN, "--state-dir", state, "--listen", "127.0.0.1:%d" % port],
                                 stdout=subprocess.DEVNULL, stderr=cls.log)
        ctx = ssl.create_default_context(cafile=None)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

        def healthy():
            try:
                with urllib.request.urlopen(cls.base + "/healthz", timeout=2, context=ctx) as r:
                    return r.status == 200
            except OSError:
                return False
        edgelib.wait_until("oakuk-root answers", healthy, timeout=15)
        with urllib.request.urlopen(cls.base + "/api/openapi.json", timeout=5, context=ctx) as r:
            cls.doc = json.load(r)
        o = Options()
        # the root's own CA is not the browser's: trusting it would need a profile of its own
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--ignore-certificate-errors", "--window-size=412,915"):  # a phone-sized window
            o.add_argument(arg)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        cls.browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
        os.makedirs(LOG_DIR, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        edgelib.stop(cls.root)
        cls.log.close()
        shutil.rmtree(cls.tmp, True)

    def shot(self, name):
        path = os.path.join(LOG_DIR, name + ".png")
        self.assertTrue(self.browser.save_screenshot(path), path)

    def visible_operations(self):
        return [d for d in self.browser.find_elements(By.CSS_SELECTOR, "details[data-search]") if d.is_displayed()]

    def test_page(self):
        b = self.browser
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


if __name__ == "__main__":
    ROOT_BIN, LOG_DIR = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    unittest.main(verbosity=2)

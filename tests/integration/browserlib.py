"""The dashboard of oakuk-root (docs/dashboard.md) driven in headless Chromium from Debian, through
chromedriver and python3-selenium: what test-api-page.py and the e2e suite share. Every step can
write a screenshot to the test's log directory."""
import json
import os
import sys
import time

try:
    from selenium import webdriver
except ImportError:  # a Python of its own (pyenv) beside Debian's python3-selenium
    sys.path.append("/usr/lib/python3/dist-packages")
    from selenium import webdriver
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium(width=412, height=915):
    """Headless Chromium, phone-sized by default, logging what the page's console says."""
    o = Options()
    # the root's own CA is not the browser's: trusting it would need a profile of its own
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", "--window-size=%d,%d" % (width, height)):
        o.add_argument(arg)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


def wait(what, fn, timeout=15, interval=0.1, seen=None):
    """fn's first true value within timeout; else AssertionError, with what seen() says when given."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
        except Exception as e:  # an element replaced while read: try again
            last, v = e, None
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s%s%s" % (
        timeout, what, " (%s)" % last if last else "", ": " + str(seen()) if seen else ""))


class Dashboard:
    def __init__(self, browser, base, log_dir):
        self.b, self.base, self.log_dir = browser, base, log_dir
        self.shots = 0
        os.makedirs(log_dir, exist_ok=True)

    def shot(self, name, card=None):
        """Writes NN-name.png to the log directory, with the service card card in view."""
        if card is not None:
            self.b.execute_script("arguments[0].scrollIntoView({block: 'start'})", self.card(card))
        self.shots += 1
        path = os.path.join(self.log_dir, "%02d-%s.png" % (self.shots, name))
        assert self.b.save_screenshot(path), path
        return path

    def find(self, css):
        return self.b.find_element(By.CSS_SELECTOR, css)

    def text(self, css):
        return self.find(css).text

    def open(self):
        self.b.get(self.base + "/")
        wait("the login form", lambda: self.find("#login-user").is_displayed())

    def login(self, user, password):
        self.find("#login-user").clear()
        self.find("#login-user").send_keys(user)
        self.find("#login-password").clear()
        self.find("#login-password").send_keys(password + Keys.ENTER)  # by keyboard

    def logged_in(self):
        return wait("the applications view", lambda: self.find("#apps-view").is_displayed()
                    and self.text("#live") == "live")

    def view(self, name):
        self.find("#nav [data-view=%s]" % name).send_keys(Keys.ENTER)  # by keyboard
        wait("view " + name, lambda: self.find("#%s-view" % name).is_displayed())

    def set_descriptor(self, doc):
        text = doc if isinstance(doc, str) else json.dumps(doc, indent=2)
        self.b.execute_script("const a = document.getElementById('descriptor'); a.value = arguments[0];"
                              "a.dispatchEvent(new Event('input'));", text)

    def upload(self, path):
        self.find("#descriptor-file").send_keys(path)
        with open(path) as f:
            want = f.read()
        wait("the file in the descriptor field", lambda: self.find("#descriptor").get_attribute("value") == want)

    def register(self, apply=False):
        self.find("#register-apply" if apply else "#register-create").click()
        return wait("the registration's answer", lambda: self.text("#register-result") not in ("", "sending…")
                    and self.text("#register-result"))

    def problems(self):
        """[(path, message)] as the page lists them."""
        out = []
        for li in self.b.find_elements(By.CSS_SELECTOR, "#register-problems li"):
            path = li.get_attribute("data-path")
            out.append((path, li.text[len(path or "(document)"):].strip()))
        return out

    def card(self, name):
        """The service card whose heading is name (service.namespace)."""
        for c in self.b.find_elements(By.CSS_SELECTOR, "article.service"):
            if c.find_element(By.CSS_SELECTOR, "h4").text == name:
                return c
        return None

    def instances(self, name):
        """The rows of a service card's instance table, as {column: text}."""
        c = self.card(name)
        if c is None:
            return None
        heads = [th.get_attribute("textContent") for th in c.find_elements(By.CSS_SELECTOR, "thead th")]
        rows = []
        for tr in c.find_elements(By.CSS_SELECTOR, "tbody tr"):
            cells = [td.get_attribute("textContent") for td in tr.find_elements(By.CSS_SELECTOR, "td")]
            rows.append(dict(zip(heads, cells)))
        return rows

    def press(self, name, css):
        """Clicks a button of a service card."""
        btn = self.card(name).find_element(By.CSS_SELECTOR, css)
        self.b.execute_script("arguments[0].scrollIntoView({block: 'center'})", btn)
        btn.click()

    def scale(self, name, n):
        box = self.card(name).find_element(By.CSS_SELECTOR, "input.scale-to")
        box.clear()
        box.send_keys(str(n))
        self.press(name, "button.scale")

    def row_button(self, name, number, css):
        tr = self.card(name).find_element(By.CSS_SELECTOR, "tbody tr[data-instance='%d']" % number)
        btn = tr.find_element(By.CSS_SELECTOR, css)
        self.b.execute_script("arguments[0].scrollIntoView({block: 'center'})", btn)
        btn.click()

    def page_fits(self):
        """No horizontal scrolling of the page itself (tables scroll in their own boxes)."""
        return self.b.execute_script("return document.documentElement.scrollWidth <= "
                                     "document.documentElement.clientWidth")

    def console_problems(self, expected_statuses=()):
        """What the browser's console reported other than failed requests the test caused on
        purpose (their status codes): script errors, CSP refusals."""
        out = []
        for e in self.b.get_log("browser"):
            if e["level"] not in ("SEVERE", "WARNING"):
                continue
            if e.get("source") == "network" and any("status of %d" % s in e["message"] for s in expected_statuses):
                continue
            out.append(e)
        return out

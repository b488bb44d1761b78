#!/usr/bin/env python3
"""The dashboard at GET / on the admin listener, driven in Debian's headless
Chromium through chromium-driver and python3-selenium: the numbers on the page
match /status, the sparklines move under load, the buttons are refused without
the token (no token given, or a wrong one) and, with it, a rollback changes the
route's state and its event appears on the page. A screenshot is saved in
test-artifacts/ beside the test's working directory (SY_ARTIFACTS overrides).
Also: the page and /history as plain HTTP, and the metrics by colour."""
from http.client import HTTPConnection
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

from harness import BIN, Env, SLOW, curl, free_port, http, main, wait_for, wait_port

TOKEN = "dashboard-token-0123456789abcdef"
ARTIFACTS = os.environ.get("SY_ARTIFACTS") or os.path.join(os.getcwd(), "test-artifacts")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False
    # Debian's python3-selenium is in the system Python's dist-packages: when this
    # runs under another interpreter (pyenv, a venv), run again under that one.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and os.path.exists("/usr/lib/python3/dist-packages/selenium"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)


class Dashboard(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.driver = None

    def start(self, record, fleet=False):
        """The gateway; with a record (PostgreSQL) when the test reads events;
        with `fleet`, on a Redis with a second instance whose routes differ."""
        pg = self.env.start_postgres() if record else None
        redis = self.env.start_redis() if fleet else None
        self.legacy = self.env.start_backend("legacy")
        self.blue = self.env.start_backend("blue")
        self.green = self.env.start_backend("green")
        self.port, self.admin = free_port(), free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        cfg = """workers: 2
listen: [{address: 127.0.0.1:%d}]
access_log: %s
admin: {address: 127.0.0.1:%d, token_file: %s}
%s
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
  stts:
    colors: {blue: [127.0.0.1:%d], green: [127.0.0.1:%d]}
    active: blue
    health: {path: /health, interval: 200ms, timeout: 500ms, rise: 2, fall: 2}
routes:
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: stts
    percent_bp: 5000
    test_users: ["42", "admin-7"]
    expose_variant: true
""" % (self.port, self.env.path("access.log"), self.admin, tok,
       ('postgres: {conninfo: "%s", journal: %s}\n' % (pg.conninfo(), self.env.path("journal")) if pg else "") +
       ("redis: {address: 127.0.0.1:%d}" % redis.port if redis else ""),
       self.legacy, self.blue, self.green)
        self.env.start_gateway(cfg, self.port)
        if fleet:  # the same flags, another listener and admin, and other routes: its config hash differs
            self.port2, self.admin2 = free_port(), free_port()
            cfg2 = cfg.replace("127.0.0.1:%d}]" % self.port, "127.0.0.1:%d}]" % self.port2).replace(
                "127.0.0.1:%d," % self.admin, "127.0.0.1:%d," % self.admin2).replace(
                "access.log", "access2.log").replace("percent_bp: 5000", "percent_bp: 4000")
            cfg2 = cfg2.replace("journal: " + self.env.path("journal"), "journal: " + self.env.path("journal2"))
            self.env.start_gateway(cfg2, self.port2, name="gw2")
        wait_port(self.admin)
        self.base = "http://127.0.0.1:%d" % self.admin

    def tearDown(self):
        if self.driver is not None:
            self.driver.quit()
        self.env.close()

    def status(self):
        return json.loads(http("GET", self.base + "/status")[1])

    def nav(self):
        return self.status()["routes"][0]

    def load(self, n):
        """n requests over keep-alive, users spread so both sides get some."""
        c = HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
        for i in range(n):
            c.request("GET", "/x", headers={"X-User-Id": "user-%d" % i})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()

    # --- plain HTTP ----------------------------------------------------------

    def test_page_history_and_colour_metrics(self):
        self.start(record=False)
        s, h, body = curl(self.base + "/")
        self.assertEqual(s, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        page = body.decode()
        self.assertIn("<title>Switchyard</title>", page)
        # Self-contained: nothing is loaded from elsewhere.
        self.assertNotRegex(page, r'(src|href)="(https?:)?//')
        self.load(200)
        def history():
            j = json.loads(http("GET", self.base + "/history?seconds=60")[1])
            r = j["routes"]
            return j if r and sum(r[0]["legacy"]["requests"]) + sum(r[0]["new"]["requests"]) == 200 else None
        hist = wait_for(history, 15, "the history to hold the 200 requests")
        self.assertEqual(hist["routes"][0]["name"], "nav")
        self.assertLessEqual(hist["samples"], 60)
        self.assertEqual(len(hist["routes"][0]["new"]["p99_ms"]), hist["samples"])
        self.assertEqual(http("GET", self.base + "/history?seconds=0")[0], 400)
        # The colours: blue served what new got, green nothing; blue is active.
        new_reqs = self.nav()["window"]["new"]["requests"]
        self.assertGreater(new_reqs, 0)
        metrics = curl(self.base + "/metrics")[2].decode()
        self.assertIn('switchyard_pool_active_color{pool="stts",color="blue"} 1', metrics)
        self.assertIn('switchyard_pool_active_color{pool="stts",color="green"} 0', metrics)
        self.assertIn('switchyard_pool_draining{pool="stts"} 0', metrics)
        self.assertIn('switchyard_color_requests_total{pool="stts",color="blue"} %d' % new_reqs, metrics)
        self.assertIn('switchyard_color_requests_total{pool="stts",color="green"} 0', metrics)
        self.assertIn('switchyard_color_request_duration_seconds_count{pool="stts",color="blue"} %d' % new_reqs, metrics)
        # Basic credentials (a browser's own prompt) are for reads: a write needs the Bearer header.
        s, h, b = curl(self.base + "/routes/nav/percent", "-u", "ops:" + TOKEN, "-H", "Content-Type: application/json",
                       "-d", '{"percent_bp": 5000, "reason": "basic"}')
        self.assertEqual(s, 401, b)
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "metrics"], input=metrics.encode(), capture_output=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # ctl status: the active colour, the draining count, each colour's numbers.
        out = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % self.admin, "status"], capture_output=True,
                             text=True, timeout=30).stdout
        self.assertIn("pool stts            active blue, draining 0", out)
        self.assertRegex(out, r"blue +\(active\) requests %d  errors 0 " % new_reqs)
        self.assertRegex(out, r"green +requests 0  errors 0 ")
        pool = [p for p in self.status()["pools"] if p["name"] == "stts"][0]
        self.assertEqual(pool["colors"]["blue"]["requests"], new_reqs)
        self.assertTrue(pool["colors"]["blue"]["active"])
        self.assertFalse(pool["colors"]["green"]["active"])

    # --- in the browser --------------------------------------------------------

    def browser(self):
        if not (HAVE_SELENIUM and CHROMIUM and CHROMEDRIVER):
            self.skipTest("headless Chromium is not installed (chromium, chromium-driver, python3-selenium: "
                          "deploy/install-deps.sh installs them)")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1200,1100", "--user-data-dir=" + self.env.path("chromium")):
            opts.add_argument(a)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30 * SLOW)
        self.driver.get(self.base + "/")
        self.updates_seen = 0
        return self.driver

    def updates(self):
        return int(self.driver.find_element(By.TAG_NAME, "body").get_attribute("data-updates") or 0)

    def fresh(self):
        """Waits for two more refreshes of the page (the second read /status after now)."""
        start = self.updates()
        wait_for(lambda: self.updates() >= start + 2, 20, "the page to refresh")

    # The page redraws every second: read in one script call, never through a
    # held element (it would go stale).
    def js(self, sel, what):
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? (arguments[1] === 'text' ? "
            "e.textContent.trim() : e.getAttribute(arguments[1])) : null;", sel, what)

    def field(self, f):
        return self.js('[data-route="nav"] [data-f="%s"]' % f, "text")

    def spark(self, key):
        return self.js('polyline[data-spark="%s"]' % key, "points") or ""

    @staticmethod
    def raised(points):
        """Some point above the baseline (y = 21.0 is zero)."""
        return any(float(p.split(",")[1]) < 20.5 for p in points.split())

    def alert(self):
        return WebDriverWait(self.driver, 10 * SLOW).until(EC.alert_is_present())

    def click(self, action):
        self.driver.find_element(By.CSS_SELECTOR, '[data-route="nav"] button[data-action="%s"]' % action).click()

    def message(self):
        return self.driver.find_element(By.ID, "msg").text

    def test_browser(self):
        self.start(record=True, fleet=True)
        d = self.browser()
        wait_for(lambda: self.updates() >= 1, 30, "the page's first update")
        self.assertEqual(self.field("state"), "ramping")
        self.assertIn("no plan", self.field("plan"))

        # The fleet: both instances listed as /fleet lists them, the one whose
        # routes differ flagged, and no other.
        def fleet_matches():
            f = json.loads(http("GET", self.base + "/fleet")[1])
            ids = sorted(i["id"] for i in f["instances"])
            shown = sorted(self.driver.execute_script(
                "return [...document.querySelectorAll('#fleet tr[data-instance]')].map(e => e.dataset.instance);"))
            flagged = self.driver.execute_script(
                "return [...document.querySelectorAll('#fleet tr[data-instance]')].filter("
                "e => e.querySelector('[data-f=differs]')).map(e => e.dataset.instance);")
            want = [i["id"] for i in f["instances"] if i["config_differs"]]
            self.last_fleet = (ids, shown, flagged, want)
            return len(ids) == 2 and shown == ids and len(want) == 1 and flagged == want
        try:
            wait_for(fleet_matches, 20, "the fleet card to match /fleet")
        except AssertionError:
            self.fail("fleet card vs /fleet: %r" % (self.last_fleet,))
        self.assertEqual(self.js("#fleet [data-f=instances]", "text"), "2")

        # Sparklines: flat before any traffic, raised after it.
        before = {k: self.spark("nav/%s/requests" % k) for k in ("legacy", "new")}
        self.assertTrue(before["legacy"] and before["new"], "the sparklines are drawn")
        self.assertFalse(self.raised(before["legacy"]) or self.raised(before["new"]), before)
        self.load(300)
        for side in ("legacy", "new"):
            after = wait_for(lambda: (lambda p: p if self.raised(p) else None)(self.spark("nav/%s/requests" % side)),
                             20, "the %s sparkline to move" % side)
            self.assertNotEqual(after, before[side])
        wait_for(lambda: self.raised(self.spark("nav/new/p99")), 10, "the p99 sparkline to move")

        # The numbers on the page are /status's (no traffic now: they hold still).
        def matches():
            st = self.status()
            r, pool = st["routes"][0], [p for p in st["pools"] if p["name"] == "stts"][0]
            want = {"state": r["state"], "percent": "%.2f %%" % r["percent"],
                    "test_users_count": str(r["test_users_count"]), "version": str(r["version"]),
                    "legacy.requests": str(r["window"]["legacy"]["requests"]),
                    "new.requests": str(r["window"]["new"]["requests"]),
                    "legacy.errors": str(r["window"]["legacy"]["errors"]),
                    "new.p99_ms": "%.1f" % r["window"]["new"]["p99_ms"]}
            got = {k: self.field(k) for k in want}
            pel = self.js('[data-pool="stts"] [data-f="active"]', "text")
            drain = self.js('[data-pool="stts"] [data-f="draining"]', "text")
            ok = got == want and pel == "active " + pool["active"] and drain == str(pool["draining"])
            self.last_compare = (got, want, pel, drain)
            return ok and r["window"]["legacy"]["requests"] + r["window"]["new"]["requests"] == 300
        try:
            wait_for(matches, 20, "the page's numbers to match /status")
        except AssertionError:
            self.fail("page vs /status: %r" % (self.last_compare,))

        # Without the token the buttons are refused: none given ...
        self.click("rollback")
        self.alert().dismiss()  # the token prompt
        wait_for(lambda: "Refused" in self.message(), 10, "the refusal")
        self.assertIn("needs the admin token", self.message())
        # ... or a wrong one: the gateway says 401.
        self.click("rollback")
        a = self.alert()
        a.send_keys("wrong-token-0123456789abcdef")
        a.accept()
        self.alert().accept()  # the confirmation
        wait_for(lambda: "401" in self.message(), 10, "the 401")
        self.assertEqual(self.nav()["state"], "ramping")

        # With the token: the confirmation, the rollback, the new state, the event.
        self.click("rollback")
        a = self.alert()
        a.send_keys(TOKEN)
        a.accept()
        self.alert().accept()
        wait_for(lambda: "Done" in self.message(), 15, "the rollback's answer")
        self.assertEqual(self.nav()["state"], "tripped")
        wait_for(lambda: self.field("state") == "tripped", 10, "the page to show the trip")
        ev = wait_for(lambda: self.js('#events li[data-kind="rollback"]', "text"), 20, "the rollback event on the page")
        self.assertIn("nav", ev)
        self.assertIn("from the dashboard", ev)
        self.assertIn("by dashboard", ev)
        # The token is kept for the tab: resume asks only for the confirmation.
        self.click("resume")
        self.alert().accept()
        wait_for(lambda: self.nav()["state"] == "ramping", 15, "the resume")
        wait_for(lambda: self.field("state") == "ramping", 10, "the page to show the resume")

        # Traffic again, for a picture with numbers in it.
        self.load(200)
        wait_for(lambda: self.field("new.requests") not in (None, "0"), 15, "the new side's numbers")
        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "dashboard.png")
        self.fresh()
        d.save_screenshot(shot)
        self.assertGreater(os.path.getsize(shot), 10000)
        print("screenshot: " + shot)

        # A narrow window: the cards stack, nothing runs off the side of the page.
        d.set_window_size(400, 900)
        self.fresh()
        width = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
        self.assertLessEqual(width[0], width[1], width)
        d.save_screenshot(os.path.join(ARTIFACTS, "dashboard-narrow.png"))


if __name__ == "__main__":
    main()

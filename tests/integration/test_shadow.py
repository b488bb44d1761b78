#!/usr/bin/env python3
"""Shadow traffic with response diffing (issue 16): a sample of legacy's
requests is copied to new (X-Switchyard-Shadow: 1), the answers are compared
(status, chosen headers, JSON body with ignored paths, noise subtraction) and
discarded; results through GET /routes/{name}/diffs, `ctl diffs` and /metrics.
A new side that hangs never holds the user up, and memory stays bounded by
max_inflight."""
import hashlib
import http.client
import json
import os
import re
import subprocess
import time
import unittest

from harness import BIN, SLOW, Env, backend_stats, curl, free_port, main, wait_for

IGNORE = 'diff: {ignore_json: ["$.meta.time", "$.id"]}'


def config(port, admin, legacy, new, routes, workers=2):
    text = """workers: %d
listen:
  - address: 127.0.0.1:%d
access_log: "off"
admin: {address: 127.0.0.1:%d}
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
  new: {endpoints: [127.0.0.1:%d]}
routes:
""" % (workers, port, admin, legacy, new)
    for name, shadow in routes:
        text += """  - name: %s
    match: {path_prefix: /%s/}
    user_key: [{query: user}]
    legacy: legacy
    new: new
    percent_bp: 0
""" % (name, name)
        if shadow is not None:
            text += "    shadow: {%s}\n" % shadow
    return text


def differs(user, pct):
    """backend.py's --json-diff choice of users, reproduced."""
    return int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) % 100 < pct


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


class Shadow(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.conn = None

    def tearDown(self):
        if self.conn is not None:
            self.conn.close()
        self.env.close()

    def start(self, routes, legacy_args=(), new_args=()):
        self.legacy = self.env.start_backend("legacy", args=legacy_args)
        self.new = self.env.start_backend("new", args=new_args)
        self.port, self.admin = free_port(), free_port()
        self.gw = self.env.start_gateway(config(self.port, self.admin, self.legacy, self.new, routes), self.port)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)

    def request(self, method, path, body=None):
        self.conn.request(method, path, body=body)
        r = self.conn.getresponse()
        data = r.read()
        self.assertEqual(r.status, 200, data)
        self.assertEqual(r.getheader("X-Backend"), "legacy")
        return data

    def diffs(self, route):
        s, h, b = curl("http://127.0.0.1:%d/routes/%s/diffs" % (self.admin, route))
        self.assertEqual(s, 200, b)
        return json.loads(b)

    def settled(self, route, n):
        """Waits until n requests of the route ended their shadow one way or another."""
        wait_for(lambda: sum(self.diffs(route)["outcomes"].values()) >= n, what="%d shadow results on %s" % (n, route))
        return self.diffs(route)

    def test_identical_backends_and_ignored_paths(self):
        self.start([("a", "percent_bp: 10000, " + IGNORE), ("b", "percent_bp: 10000")])
        for i in range(60):
            self.request("GET", "/a/json?user=u%d" % i)
            self.request("GET", "/b/json?user=u%d" % i)
        a = self.settled("a", 60)
        self.assertEqual((a["compared"], a["mismatches"]), (60, 0), a)
        self.assertEqual(a["samples"], [])
        # The same answers without the ignored paths: every pair differs on them.
        b = self.settled("b", 60)
        self.assertEqual((b["compared"], b["mismatches"], b["by_kind"]["json"]), (60, 60, 60), b)
        paths = set(p for s in b["samples"] for p in s["paths"])
        self.assertEqual(paths, {"$.id", "$.meta.time"})
        self.assertLessEqual(len(b["samples"]), 32)  # a bounded ring
        # The shadow requests reached new, marked, over pooled keep-alive connections.
        st = backend_stats(self.new)
        self.assertEqual(st["shadow_methods"], {"GET": 120})
        # (how many depends on how many copies overlap: on a loaded box the client's next
        # request arrives while earlier copies still run, so only "some reuse" is certain)
        self.assertLess(st["connections"], 120, st)
        self.assertEqual(backend_stats(self.legacy)["shadow"], 0)

    def test_one_field_for_ten_percent_and_noise(self):
        # Both sides add a random `nonce`; new differs on `price` for 10 % of users.
        self.start([("a", "percent_bp: 10000, noise: true, compare_headers: [content-type], redact_headers: "
                          "[x-backend], " + IGNORE),
                    ("b", "percent_bp: 10000, " + IGNORE + "}\n    trip: {warn_mismatch_rate: 0.5, min_requests: 20")],
                   legacy_args=("--json-random", "nonce"),
                   new_args=("--json-random", "nonce", "--json-diff", "price:10"))
        users = ["user-%d" % i for i in range(400)]
        for u in users:
            self.request("GET", "/a/json?user=" + u)
        expected = sum(differs(u, 10) for u in users)
        a = self.settled("a", len(users))
        rate = a["mismatch_rate"]
        print("\nshadow: %d users, %d differ on price; measured %d mismatches of %d compared (%.1f %%), "
              "noise removed from %d" % (len(users), expected, a["mismatches"], a["compared"], 100 * rate,
                                         a["noise_removed"]))
        self.assertEqual(a["compared"], len(users), a["outcomes"])
        self.assertEqual(a["mismatches"], expected)
        self.assertTrue(0.05 <= rate <= 0.15, rate)
        self.assertEqual(a["by_kind"], {"status": 0, "header": 0, "body": 0, "json": expected})
        self.assertEqual(a["noise_removed"], len(users) - expected)  # every other pair differed only by nonce
        self.assertTrue(a["samples"])
        for s in a["samples"]:
            self.assertEqual(s["paths"], ["$.price"], s)
            self.assertTrue(differs(s["target"].split("user=")[1], 10), s["target"])
            self.assertEqual(json.loads(s["new"]["body"])["price"], "different")
            self.assertEqual(s["legacy"]["headers"]["x-backend"], "[redacted]")
        # Without noise subtraction the random field is a mismatch every time.
        for u in users[:50]:
            self.request("GET", "/b/json?user=" + u)
        b = self.settled("b", 50)
        self.assertEqual(b["mismatches"], 50)
        self.assertIn("$.nonce", b["samples"][0]["paths"])
        # ... and b's warn_mismatch_rate rule fires (a's has none).
        self.env.allowed.append(r"shadow: route b: warn_mismatch_rate")
        wait_for(lambda: self.diffs("b")["warned"], what="the mismatch-rate warning")
        self.assertFalse(self.diffs("a")["warned"])
        with open(self.gw.log_path) as f:
            # checked once a second: it fires once min_requests (20) pairs were compared, at
            # however many of the 50 had arrived by then, every one a mismatch
            m = re.search(r"shadow: route b: warn_mismatch_rate: shadow mismatch rate 100\.00% \((\d+) of (\d+)\)",
                          f.read())
            self.assertIsNotNone(m)
            self.assertEqual(m.group(1), m.group(2))
            self.assertTrue(20 <= int(m.group(2)) <= 50, m.group(0))
        # ctl diffs and the metrics say the same.
        out = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % self.admin, "diffs", "a"], capture_output=True,
                             text=True, timeout=30 * SLOW)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("%d mismatches" % expected, out.stdout)
        self.assertIn("$.price", out.stdout)
        m = curl("http://127.0.0.1:%d/metrics" % self.admin)[2].decode()
        self.assertIn('switchyard_shadow_mismatches_total{route="a",kind="json"} %d\n' % expected, m)
        self.assertIn('switchyard_shadow_requests_total{route="a",outcome="compared"} %d\n' % len(users), m)
        self.assertRegex(m, r'switchyard_shadow_duration_seconds_count\{route="a",variant="new"\} %d\n' % len(users))

    def test_methods(self):
        self.start([("a", "percent_bp: 10000, " + IGNORE),
                    ("p", "percent_bp: 10000, methods: [GET, POST], " + IGNORE)])
        for i in range(10):
            self.request("POST", "/a/json?user=u%d" % i, body=b"x" * 100)
            self.request("HEAD", "/a/json?user=u%d" % i)
            self.request("POST", "/p/json?user=u%d" % i, body=b"y" * 100)
        a = self.settled("a", 20)
        self.assertEqual((a["outcomes"]["method"], a["compared"], a["mismatches"]), (10, 10, 0), a)
        p = self.settled("p", 10)
        self.assertEqual((p["compared"], p["mismatches"]), (10, 0), p)
        # new saw the listed POSTs and the HEADs, never the unlisted POSTs.
        self.assertEqual(backend_stats(self.new)["shadow_methods"], {"HEAD": 10, "POST": 10})
        # A body larger than max_body is not shadowed, and counted.
        self.request("POST", "/p/json?user=big", body=b"z" * (70 * 1024))
        wait_for(lambda: self.diffs("p")["outcomes"]["request_too_large"] == 1, what="request_too_large")

    def test_config_checked(self):
        bad = config(free_port(), free_port(), free_port(), free_port(),
                     [("a", "percent_bp: 20000"), ("b", "diff: {ignore_json: [meta.time]}"), ("c", "colour: red"),
                      ("d", "max_inflight: 0")])
        path = self.env.write_config(bad, "bad.yaml")
        out = subprocess.run([BIN, "check", "-c", path], capture_output=True, text=True, timeout=30 * SLOW)
        self.assertNotEqual(out.returncode, 0)
        for msg in ("20000", "ignore_json paths start with '$'", "unknown key 'colour' in shadow", "0 is out of range (1..1000000)"):
            self.assertIn(msg, out.stdout + out.stderr)
        good = config(free_port(), free_port(), free_port(), free_port(), [("a", "percent_bp: 100, " + IGNORE)])
        path = self.env.write_config(good, "good.yaml")
        out = subprocess.run([BIN, "check", "-c", path], capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def rss_kb(self):
        with open("/proc/%d/status" % self.gw.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def timed(self, path):
        t = time.perf_counter()
        self.request("GET", path)
        return (time.perf_counter() - t) * 1000

    def test_hanging_new_side(self):
        self.start([("on", "percent_bp: 10000, max_inflight: 8, timeout: 3s, " + IGNORE), ("off", None)],
                   new_args=("--hang",))
        for i in range(50):  # warm-up: connections, caches
            self.timed("/off/json?user=w%d" % i)
        rss0 = self.rss_kb()
        n = 400
        off, on = [], []
        t0 = time.time()
        for i in range(n):  # interleaved: a load spike on the box hits both series alike
            # 48 KiB answers: each shadow alive keeps a copy of legacy's
            off.append(self.timed("/off/x?size=49152&user=u%d" % i))
            on.append(self.timed("/on/x?size=49152&user=u%d" % i))
        # Per timeout (3 s) window, at most 8 shadows per worker could start.
        bound = 2 * 8 * (int((time.time() - t0) / 3) + 1)
        rss1 = self.rss_kb()
        d = self.diffs("on")
        print("\nshadow against a hanging new side, %d sequential requests each (48 KiB answers): p50 %.2f ms / p99 %.2f ms with "
              "shadow off, p50 %.2f ms / p99 %.2f ms with shadow on; skipped at max_inflight %d; RSS %d -> %d KiB"
              % (n, pct(off, 0.5), pct(off, 0.99), pct(on, 0.5), pct(on, 0.99), d["outcomes"]["inflight_limit"],
                 rss0, rss1))
        # The user never waits for the shadow (3 s timeout): a generous sanity bound only.
        self.assertLess(pct(on, 0.99), 1500 * SLOW)
        # At most 8 shadows alive per worker: the rest skipped and counted.
        self.assertGreaterEqual(d["outcomes"]["inflight_limit"], n - bound)
        self.assertLessEqual(backend_stats(self.new)["shadow"], bound)
        self.assertLess(rss1 - rss0, 32 * 1024)
        # The hanging ones end at their timeout.
        wait_for(lambda: self.diffs("on")["outcomes"]["new_timeout"] >= 8, what="shadow timeouts")


if __name__ == "__main__":
    main()

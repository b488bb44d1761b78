#!/usr/bin/env python3
"""A connect failure on new sent nothing, so the request is served by legacy
(issue 10, item 5): GET and POST (with a body, one larger than a buffer too)
answered 200 by legacy while new's only endpoint has nothing listening; each
fallback counts as a new-side error for the trip rules (it trips
consecutive_errors), shows in /metrics and in the access log."""
import hashlib
import http.client
import json
import re
import time
import unittest

from harness import SLOW, Env, base_config, curl, free_port, main

TOKEN = "fallback-token-0123456789abcdef"


class Fallback(unittest.TestCase):
    def setUp(self):
        self.env = Env()

    def tearDown(self):
        self.env.close()

    def start(self, trip):
        self.legacy = self.env.start_backend("legacy")
        self.dead = free_port()  # new: one endpoint, nothing listening
        self.port = free_port()
        self.admin = free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        top = "admin: {address: 127.0.0.1:%d, token_file: %s}\n" % (self.admin, tok)
        cfg = base_config(self.port, self.legacy, self.dead, extra_top=top, percent=0,
                          extra_keys="    trip: {%s}\n" % trip)
        self.access_log = self.env.path("access.log")
        self.gw = self.env.start_gateway(cfg.replace("%(log)s", self.access_log), self.port)
        self.env.allowed.append(r"taken out after")

    def route(self):
        return json.loads(curl("http://127.0.0.1:%d/status" % self.admin)[2])["routes"][0]

    def fallbacks(self):
        b = curl("http://127.0.0.1:%d/metrics" % self.admin)[2].decode()
        m = re.search(r'^switchyard_fallbacks_total\{route="nav",reason="connect"\} (\d+)$', b, re.M)
        return int(m.group(1)) if m else None

    def request(self, conn, method, body=None):
        conn.request(method, "/echo", body=body, headers={"X-User-Id": "42"})  # a test user: new
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def access(self, n):
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            with open(self.access_log) as f:  # a line not yet finished (no newline) is not read
                lines = [json.loads(l) for l in f.read().split("\n")[:-1] if l.strip()]
            if len(lines) >= n:
                return lines
            time.sleep(0.05)
        self.fail("access log has fewer than %d lines" % n)

    def test_served_by_legacy_and_counted(self):
        self.start("consecutive_errors: 2, min_requests: 1000000")
        self.assertEqual(self.fallbacks(), 0)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
        s, h, b = self.request(conn, "GET")
        self.assertEqual((s, h["x-backend"], h["x-switchyard-variant"]), (200, "legacy", "legacy"))
        self.assertEqual(json.loads(b)["method"], "GET")
        body = b"p" * 1000
        s, h, b = self.request(conn, "POST", body)
        self.assertEqual((s, h["x-backend"]), (200, "legacy"))
        e = json.loads(b)
        self.assertEqual((e["method"], e["body_length"], e["body_sha256"]),
                         ("POST", len(body), hashlib.sha256(body).hexdigest()))
        conn.close()
        # Two new-side errors in a row: consecutive_errors: 2 trips the route.
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline and self.route()["state"] != "tripped":
            time.sleep(0.02)
        r = self.route()
        self.assertEqual((r["state"], r["reason"]), ("tripped", "consecutive_errors: 2 errors in a row on new"))
        deadline = time.time() + 20 * SLOW  # the trip is at once; the counters reach /metrics at the next tick
        while time.time() < deadline and self.fallbacks() != 2:
            time.sleep(0.02)
        self.assertEqual(self.fallbacks(), 2)
        deadline = time.time() + 20 * SLOW  # merged every 100 ms: longer when loaded
        while time.time() < deadline and self.route()["window"]["new"]["errors"] < 2:
            time.sleep(0.05)
        self.assertEqual(self.route()["window"]["new"]["errors"], 2)
        lines = self.access(2)
        for l, m in zip(lines, ("GET", "POST")):
            self.assertEqual((l["method"], l["status"], l["variant"], l["reason"], l["fallback"], l["error"]),
                             (m, 200, "legacy", "fallback", "connect", None))
            self.assertEqual(l["upstream"], "127.0.0.1:%d" % self.legacy)

    def test_large_post_falls_back_whole(self):
        # A body larger than a buffer: the part held while connecting goes to legacy, then the rest.
        self.start("consecutive_errors: 5, min_requests: 1000000")
        body = bytes(range(256)) * 4096  # 1 MiB
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
        s, h, b = self.request(conn, "POST", body)
        self.assertEqual((s, h["x-backend"]), (200, "legacy"))
        e = json.loads(b)
        self.assertEqual((e["body_length"], e["body_sha256"]), (len(body), hashlib.sha256(body).hexdigest()))
        s, h, b = self.request(conn, "PUT", b"x" * 10)
        self.assertEqual((s, h["x-backend"], json.loads(b)["method"]), (200, "legacy", "PUT"))
        conn.close()
        deadline = time.time() + 20 * SLOW  # the counters reach /metrics at the monitor's next tick
        while time.time() < deadline and self.fallbacks() != 2:
            time.sleep(0.02)
        self.assertEqual(self.fallbacks(), 2)
        print("\nfallback: a 1 MiB POST and a PUT to a refused new answered 200 by legacy; "
              "switchyard_fallbacks_total = %d" % self.fallbacks(), flush=True)


if __name__ == "__main__":
    main()

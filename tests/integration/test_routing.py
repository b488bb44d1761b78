#!/usr/bin/env python3
"""Cohort routing through the real gateway with real curl: header, cookie and
query keys, test users, the override header, X-Switchyard-Variant, the
forwarded headers, keep-alive reuse of upstream connections, the access log."""
import json
import socket
import subprocess

from harness import BIN, GatewayTest, backend_stats, curl, main


def cohort(cfg, route, users):
    r = subprocess.run([BIN, "cohort", route, "-", "-c", cfg], input="\n".join(users) + "\n",
                       capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split())
        out[f["user"]] = f
    return out


class Routing(GatewayTest):
    def test_variants_follow_the_cohort(self):
        gw = self.gateway()
        users = [str(u) for u in range(300)]
        expect = cohort(gw.config_path, "nav", users)
        for u in users[:60]:
            s, h, b = curl(self.url + "/x", "-H", "X-User-Id: " + u)
            self.assertEqual(s, 200)
            self.assertEqual(h["x-switchyard-variant"], expect[u]["variant"], u)
            self.assertEqual(h["x-backend"], expect[u]["variant"])
        # The same user by cookie and by query parameter.
        for u in users[60:90]:
            s, h, b = curl(self.url + "/x", "-b", "theme=dark; uid=" + u)
            self.assertEqual(h["x-backend"], expect[u]["variant"])
            s, h, b = curl(self.url + "/x?a=1&user=" + u)
            self.assertEqual(h["x-backend"], expect[u]["variant"])

    def test_test_users_override_and_anonymous(self):
        self.gateway(percent=0)
        s, h, b = curl(self.url + "/x", "-H", "X-User-Id: 42")
        self.assertEqual((h["x-backend"], h["x-switchyard-variant"]), ("new", "new"))
        s, h, b = curl(self.url + "/x", "-H", "X-User-Id: 43")
        self.assertEqual(h["x-backend"], "legacy")
        s, h, b = curl(self.url + "/x")
        self.assertEqual(h["x-backend"], "legacy")
        # The override comes from a trusted address (127.0.0.1) and is not forwarded.
        s, h, b = curl(self.url + "/echo", "-H", "X-User-Id: 43", "-H", "X-Switchyard-Variant: new")
        self.assertEqual(h["x-backend"], "new")
        names = [k.lower() for k, v in json.loads(b)["headers"]]
        self.assertNotIn("x-switchyard-variant", names)
        lines = self.access_wait(lambda ls: len(ls) >= 4, "the four requests' lines")
        reasons = [l["reason"] for l in lines]
        self.assertEqual(sorted(reasons), ["bucket", "default", "override", "test_user"])

    def test_untrusted_override_is_ignored(self):
        self.gateway(text=None, percent=0)
        # Rewrite with no trusted range: the header must be ignored.
        self.env.stop(self.env.gateways[-1])
        self.env.gateways.pop()
        from harness import base_config
        cfg = base_config(self.port, self.legacy, self.new, percent=0).replace(
            "trusted_cidrs: [127.0.0.0/8]", "trusted_cidrs: [10.0.0.0/8]")
        self.gateway(text=cfg)
        s, h, b = curl(self.url + "/x", "-H", "X-User-Id: 43", "-H", "X-Switchyard-Variant: new")
        self.assertEqual(h["x-backend"], "legacy")

    def test_forwarded_headers(self):
        self.gateway()
        s, h, b = curl(self.url + "/echo", "-H", "X-Forwarded-For: 203.0.113.9", "-H", "Connection: keep-alive, X-Hop",
                       "-H", "X-Hop: secret", "-H", "Keep-Alive: timeout=5", "-H", "TE: trailers",
                       "-H", "X-Forwarded-Proto: https")
        req = json.loads(b)
        hdrs = {k.lower(): v for k, v in req["headers"]}
        self.assertEqual(hdrs["x-forwarded-for"], "203.0.113.9, 127.0.0.1")
        self.assertEqual(hdrs["x-forwarded-proto"], "http")
        self.assertEqual(hdrs["x-forwarded-host"], "127.0.0.1:%d" % self.port)
        self.assertRegex(hdrs["x-request-id"], "^[0-9a-f]{32}$")
        for hop in ("connection", "x-hop", "keep-alive", "te"):
            self.assertNotIn(hop, hdrs)
        s, h, b = curl(self.url + "/echo", "-H", "X-Request-Id: abc-123")
        hdrs = {k.lower(): v for k, v in json.loads(b)["headers"]}
        self.assertEqual(hdrs["x-request-id"], "abc-123")
        self.assertIn("abc-123", [l["request_id"] for l in self.access_wait(lambda ls: len(ls) >= 2)])

    def test_head_and_no_route(self):
        cfg = """workers: 1
listen: [{address: 127.0.0.1:%d}]
access_log: %%(log)s
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
routes:
  - name: api
    match: {host: api.example, path_prefix: /api}
    legacy: legacy
""" % (self.port, self.legacy)
        self.gateway(text=cfg)
        s, h, b = curl(self.url + "/api/x?size=1000", "-H", "Host: api.example", "-I")
        self.assertEqual((s, h["content-length"], b.strip()), (200, "1000", b""))
        self.assertNotIn("x-switchyard-variant", h)
        s, h, b = curl(self.url + "/api/x", "-H", "Host: other.example")
        self.assertEqual(s, 404)
        self.assertIn(b"no route", b)
        s, h, b = curl(self.url + "/other", "-H", "Host: api.example")
        self.assertEqual(s, 404)

    def test_keepalive_reuses_upstream_connections(self):
        self.gateway(workers=1, percent=0)
        before = backend_stats(self.legacy)["connections"]
        # 200 requests, each on a new client connection: the backend sees one.
        for i in range(4):
            urls = [self.url + "/x?i=%d" % j for j in range(50)]
            subprocess.run(["curl", "-s", "-o", "/dev/null"] + urls, check=True)
        stats = backend_stats(self.legacy)
        self.assertEqual(stats["requests"] >= 200, True)
        self.assertLessEqual(stats["connections"] - before, 2, stats)

    def test_access_log_line(self):
        self.gateway()
        curl(self.url + "/x?a=b", "-H", "X-User-Id: 42", "-d", "hello")
        line = self.access_wait(len)[-1]
        for k in ("time", "route", "variant", "reason", "status", "bytes_in", "bytes_out", "duration_ms",
                  "ttfb_ms", "upstream", "request_id", "client", "method", "target"):
            self.assertIn(k, line)
        self.assertEqual((line["route"], line["variant"], line["reason"], line["status"], line["method"]),
                         ("nav", "new", "test_user", 200, "POST"))
        self.assertGreater(line["bytes_in"], 5)


if __name__ == "__main__":
    main()

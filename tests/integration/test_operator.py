#!/usr/bin/env python3
"""What an operator meets first: the README's quickstart order (check before the
quickstart ran), `switchyard cohort --live`, the demo backend's control endpoint
(and the rollback it provokes), plain routes in /status and `ctl status`, a 413
that the client reads whole (lingering close), health probes that read the whole
answer (no reset at the backend), and reads that need the token when the admin
listener is not on loopback. Runs without Redis (flags from the config)."""
import json
import socket
import subprocess
import time

from harness import wait_for
from harness import (BIN, ROOT, SLOW, GatewayTest, backend_stats, base_config, curl, free_port, main,
                     wait_port)

TOKEN = "operator-token-0123456789abcdef"



class Operator(GatewayTest):
    def start(self, admin_host="127.0.0.1", extra_route="", extra_pools=""):
        self.admin = free_port()
        self.token_file = self.env.path("token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        extra = "admin: {address: %s:%d, token_file: %s}" % (admin_host, self.admin, self.token_file)
        text = base_config(self.port, self.legacy, self.new, extra_top=extra, extra_route=extra_route)
        if extra_pools:
            text = text.replace("pools:\n", "pools:\n" + extra_pools, 1)
        self.gw = self.gateway(text=text)
        wait_port(self.admin, proc=self.gw)  # the data port is up; the admin one may come a moment later
        self.base = "http://127.0.0.1:%d" % self.admin  # always connected through loopback
        return self.gw

    def get(self, path, token=None):
        args = [self.base + path] + (["-H", "Authorization: Bearer " + token] if token else [])
        s, h, b = curl(*args)
        return s, json.loads(b) if b.strip() else None

    # --- the quickstart ------------------------------------------------------------

    def test_readme_order_check_before_quickstart(self):
        # From the README's "Build and run": check, in a fresh clone, before the quickstart ran.
        r = subprocess.run([BIN, "check", "-c", "deploy/quickstart.yaml"], cwd=ROOT, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ok", r.stdout)
        # A production config whose token file is missing is still a clear error.
        cfg = self.env.write_config(base_config(self.port, self.legacy, self.new, extra_top=(
            "admin: {address: 127.0.0.1:%d, token_file: %s}" % (free_port(), self.env.path("no-such-token")))
        ).replace("%(log)s", "off"), "prod.yaml")
        r = subprocess.run([BIN, "check", "-c", cfg], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"prod\.yaml:\d+:\d+: admin\.token_file .*no-such-token: No such file")

    def test_demo_backend_control_makes_new_fail_and_the_route_trips(self):
        ctl = "http://127.0.0.1:%d/__control" % self.new
        s, h, b = curl(self.url.replace(str(self.port), str(self.new)) + "/x")
        self.assertEqual(s, 200)
        s, h, b = curl(ctl + "?error_rate=1")
        self.assertEqual((s, json.loads(b)), (200, {"error_rate": "1"}))
        s, h, b = curl("http://127.0.0.1:%d/x" % self.new)
        self.assertEqual(s, 500)
        s, h, b = curl("http://127.0.0.1:%d/health" % self.new)
        self.assertEqual(s, 200)  # health stays up: the comparator, not the health check, must see it
        s, h, b = curl(ctl + "?error_rate=&latency_ms=200")
        self.assertEqual(json.loads(b), {"latency_ms": "200"})
        t0 = time.time()
        s, h, b = curl("http://127.0.0.1:%d/x" % self.new)
        self.assertEqual(s, 200)
        self.assertGreaterEqual(time.time() - t0, 0.2)
        s, h, b = curl(ctl + "?bogus=1")
        self.assertEqual(s, 400)
        s, h, b = curl(ctl + "?reset=1")
        self.assertEqual(json.loads(b), {})
        # As the quickstart prints: make new fail, send users, the route rolls back by itself.
        self.start(extra_route="    trip: {min_requests: 30, consecutive_errors: 5}\n")
        curl(ctl + "?error_rate=0.5")
        users = iter(range(100000))

        def tripped():
            for _ in range(20):
                curl(self.url + "/x", "-H", "X-User-Id: %d" % next(users))
            s, b = self.get("/status")
            return b["routes"][0]["state"] == "tripped"
        wait_for(tripped, what="the automatic rollback")
        s, h, b = curl(self.url + "/x", "-H", "X-User-Id: 42")  # a test user: legacy once tripped
        self.assertEqual(h["x-backend"], "legacy")
        self.env.allowed.append(r"trip")

    # --- cohort --live ----------------------------------------------------------------

    def test_cohort_live_asks_the_gateway(self):
        gw = self.start()
        users = [str(u) for u in range(200)]

        def cohort(*extra):
            r = subprocess.run([BIN, "cohort", "nav", "-", "-c", gw.config_path] + list(extra),
                               input="\n".join(users) + "\n", capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            return [dict(kv.split("=", 1) for kv in line.split()) for line in r.stdout.splitlines()]
        offline, live = cohort(), cohort("--live")
        self.assertEqual(len(live), len(users))
        self.assertEqual({x["flags"] for x in offline}, {"config"})
        self.assertEqual({x["flags"] for x in live}, {"live"})
        for a, b in zip(offline, live):  # same flags so far: same answers
            self.assertEqual((a["bucket"], a["variant"], a["reason"]), (b["bucket"], b["variant"], b["reason"]))
        s, h, b = curl(self.base + "/routes/nav/percent", "-X", "POST", "-H", "Authorization: Bearer " + TOKEN,
                       "--data-binary", '{"percent_bp": 10000}')
        self.assertEqual(s, 200, b)
        offline, live = cohort(), cohort("--live")
        self.assertLess(sum(x["variant"] == "new" for x in offline), len(users))   # the file says 25 %
        self.assertEqual([x["variant"] for x in live], ["new"] * len(users))       # the gateway says 100 %
        for u in ("7", "13"):  # and the gateway routes as --live says
            s, h, b = curl(self.url + "/x", "-H", "X-User-Id: " + u)
            self.assertEqual(h["x-switchyard-variant"], "new")
        r = subprocess.run([BIN, "cohort", "nope", "1", "--live", "-c", gw.config_path], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("404", r.stderr)
        s, b = self.get("/routes/nav/cohort")
        self.assertEqual(s, 400)

    # --- plain routes ----------------------------------------------------------------

    def test_plain_route_is_shown_plain(self):
        plain = "  - name: docs\n    match: {path_prefix: /docs}\n    legacy: legacy\n"
        gw = self.start(extra_route=plain)
        s, h, b = curl(self.url + "/docs/a")
        self.assertEqual((s, h["x-backend"]), (200, "legacy"))
        s, st = self.get("/status")
        docs = [r for r in st["routes"] if r["name"] == "docs"][0]
        nav = [r for r in st["routes"] if r["name"] == "nav"][0]
        self.assertTrue(docs["plain"])
        for k in ("state", "percent_bp", "percent", "test_users"):
            self.assertNotIn(k, docs)
        self.assertIsNone(docs["new"])
        self.assertNotIn("new", docs["window"])
        self.assertFalse(nav["plain"])
        self.assertEqual(nav["state"], "ramping")
        r = subprocess.run([BIN, "ctl", "-c", gw.config_path, "status"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        i = next(k for k, l in enumerate(lines) if l.startswith("docs "))
        self.assertRegex(lines[i], r"^docs\s+plain\s+-> pool legacy$")
        block = []
        for l in lines[i + 1:]:
            if not l.startswith(" "):
                break
            block.append(l)
        self.assertTrue(any(l.split()[0] == "legacy" for l in block if l.strip()), block)
        self.assertFalse(any(l.split()[0] == "new" for l in block if l.strip()), block)
        self.assertNotIn("ramping", lines[i])
        self.assertTrue(any(l.startswith("nav ") and "ramping" in l for l in lines), lines)

    # --- lingering close -------------------------------------------------------------

    def test_413_is_read_whole_without_reset(self):
        self.start()
        body = b"x" * (1 << 20)
        for attempt in range(3):
            s = socket.create_connection(("127.0.0.1", self.admin))
            s.settimeout(30 * SLOW)
            head = (b"POST /routes/nav/percent HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (TOKEN.encode(), len(body)))
            got = b""
            try:
                s.sendall(head + body)
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
            except ConnectionResetError as e:
                self.fail("reset after %d bytes of answer (attempt %d): %r" % (len(got), attempt, got[:200]))
            finally:
                s.close()
            head_, _, rest = got.partition(b"\r\n\r\n")
            self.assertTrue(head_.startswith(b"HTTP/1.1 413 "), got[:200])
            length = int([l for l in head_.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
                         .split(b":")[1])
            self.assertEqual(len(rest), length)
            self.assertIn("64 KiB", json.loads(rest)["reason"])
        s, b = self.get("/status")  # the admin API still answers
        self.assertEqual(s, 200)

    # --- health probes ---------------------------------------------------------------

    def test_health_probe_reads_the_whole_answer(self):
        # A health answer of 256 KiB sent in 64 KiB pieces: a probe that closes after the
        # status line resets the connection under the backend, which counts it.
        hb = self.env.start_backend("checked")
        pool = ("  checked:\n    endpoints: [127.0.0.1:%d]\n"
                "    health: {path: \"/health?size=262144&stream_ms=10\", interval: 200ms, timeout: 3s, rise: 1, fall: 3}\n"
                % hb)
        route = "  - name: chk\n    match: {path_prefix: /chk}\n    legacy: checked\n"
        self.start(extra_pools=pool, extra_route=route)
        looks = [0]

        def probes():
            looks[0] += 1  # each look is one request of the backend's own count
            return backend_stats(hb)["requests"] - looks[0] >= 8
        wait_for(probes, what="8 probes")
        time.sleep(0.3)  # the last probe's streaming ends; then nothing may have been reset
        st = backend_stats(hb)
        self.assertEqual(st["resets"], 0, st)
        s, b = self.get("/status")
        ep = [p for p in b["pools"] if p["name"] == "checked"][0]["endpoints"][0]
        self.assertTrue(ep["up"])
        self.assertGreaterEqual(ep["good_probes"], 1)

    # --- reads off loopback ----------------------------------------------------------

    def test_reads_need_the_token_off_loopback(self):
        self.start(admin_host="0.0.0.0")  # not loopback; reached through 127.0.0.1 only
        for path in ("/status", "/events", "/windows", "/metrics", "/routes/nav/cohort?user=1"):
            s, b = self.get(path)
            self.assertEqual(s, 401, path)
            s, b = self.get(path, token="wrong-token-0123456789abcdef")
            self.assertEqual(s, 401, path)
        s, b = self.get("/status", token=TOKEN)
        self.assertEqual(s, 200)
        s, h, b = curl(self.base + "/metrics", "-H", "Authorization: Bearer " + TOKEN)
        self.assertEqual(s, 200)
        self.assertIn(b"switchyard_requests_total", b)
        s, b = self.get("/routes/nav/cohort?user=42", token=TOKEN)
        self.assertEqual((s, b["variant"], b["reason"]), (200, "new", "test_user"))
        for path in ("/healthz", "/readyz"):
            s, b = self.get(path)
            self.assertEqual(s, 200, path)
        r = subprocess.run([BIN, "ctl", "-c", self.gw.config_path, "-a", "127.0.0.1:%d" % self.admin, "status"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)  # ctl sends the config's token

    def test_reads_open_on_loopback(self):
        self.start()
        for path in ("/status", "/metrics", "/events", "/routes/nav/cohort?user=1"):
            s, h, b = curl(self.base + path)
            self.assertIn(s, (200, 503) if path == "/events" else (200,), path)  # /events: no record configured


if __name__ == "__main__":
    main()

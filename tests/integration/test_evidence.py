#!/usr/bin/env python3
"""Decisions on evidence, with real backends and a real Redis: a clear
regression at low traffic trips on the evidence since the last change (where
the 60 s window never holds enough), and identical sides under load give no
warning and no trip with the example config's rules (the tiers are in
test_tiers.py).

SY_LONG=1 runs the low-traffic case at exactly 2 requests/s in total (about
10 minutes) and the identical sides for 200 s; by default they run at 80
requests/s and 25 s (in a sanitized build too: fewer requests, same time)."""
import http.server
import json
import os
import random
import re
import threading
import time
import unittest

from harness import SLOW, Client, Env, base_config, curl, free_port, main, wait_for

TOKEN = "evidence-token-0123456789abcdef"
LONG = os.environ.get("SY_LONG") == "1"

# deploy/switchyard.example.yaml's trip rules for the bot's handlers.
EXAMPLE_RULES = ("window: 60s, min_requests: 100, max_error_rate: 0.10, max_error_rate_delta: 0.05, "
                 "confidence: 0.99, max_latency_ms: {p99: 10000}, max_latency_ratio: {p99: 1.2}, "
                 "consecutive_errors: 5, critical_error_rate: 0.05, critical_latency_ms: {p99: 10000}, "
                 "warn_error_rate: 0.02, warn_latency_ms: {p99: 7000}")


class Receiver:
    """A real HTTP receiver of the gateway's notifications."""

    def __init__(self):
        got = self.got = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        # one thread per POST: the paced clients' threads share the interpreter, and a
        # receiver slower than the notifier's timeout would see its POSTs retried
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Hook)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def top(self):
        # This receiver runs in the test's process beside its load threads: on a
        # loaded box an answer can take more than a second, and a notification
        # that runs out of tries is dropped (which the tests would read as never sent).
        return "notify: {webhook_url: \"http://127.0.0.1:%d/hook\", timeout: 10s, retries: 3}\n" % self.port

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class Evidence(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.rcv = None

    def tearDown(self):
        if self.rcv:
            self.rcv.close()
        self.env.close()

    def start(self, legacy_args=(), new_args=(), trip="", percent=500, extra_top="", legacy_port=None):
        self.legacy = legacy_port or self.env.start_backend("legacy", args=legacy_args)
        self.new = self.env.start_backend("new", args=new_args)
        self.port, self.admin = free_port(), free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        self.r = self.env.start_redis()
        top = "admin: {address: 127.0.0.1:%d, token_file: %s}\n" % (self.admin, tok)
        top += "redis: {address: 127.0.0.1:%d, resync_interval: 1s}\n" % self.r.port + extra_top
        cfg = base_config(self.port, self.legacy, self.new, extra_top=top, percent=percent,
                          extra_keys="    trip: {%s}\n" % trip)
        self.access_log = self.env.path("access.log")
        self.gw = self.env.start_gateway(cfg.replace("%(log)s", self.access_log), self.port)

    def route(self):
        return json.loads(curl("http://127.0.0.1:%d/status" % self.admin)[2])["routes"][0]

    def paced(self, rate, until, seconds):
        """Clients at `rate` requests/s in total (one per 10 requests/s), a
        fresh user id each request (so a share `percent` of them lands on new),
        until until() or the time is up. Returns the count per variant and the
        seconds it ran."""
        counts = {"legacy": 0, "new": 0}
        lock = threading.Lock()
        stop = threading.Event()
        nthreads = max(1, int(rate // 10))
        t0 = time.time()

        def run(k):
            c = Client(self.port)
            rnd = random.Random(13 + k)
            i = 0
            while not stop.is_set():
                s, h, b = c.get("/x", {"X-User-Id": "u%d" % rnd.randrange(10 ** 9)})
                with lock:
                    v = h.get("x-switchyard-variant")
                    if v in counts:
                        counts[v] += 1
                i += 1
                pause = t0 + i * nthreads / rate - time.time()  # the load's pace, not a readiness wait
                if pause > 0:
                    stop.wait(pause)
            c.close()

        ts = [threading.Thread(target=run, args=(k,)) for k in range(nthreads)]
        for t in ts:
            t.start()
        while time.time() - t0 < seconds and not until():
            time.sleep(0.2)
        stop.set()
        for t in ts:
            t.join()
        return counts, time.time() - t0

    def test_low_traffic_trips_on_evidence(self):
        # 5 % on new; new at 20 % errors, legacy at 1 %. A 10 s window never
        # holds 100 requests of new at this rate (4 a second at most), and
        # 5-in-a-row is off: only the evidence since the change can trip it.
        rate = 2.0 if LONG else 80.0
        self.start(legacy_args=["--error-rate", "0.01"], new_args=["--error-rate", "0.2"],
                   trip="window: 10s, consecutive_errors: 0")
        tripped = lambda: self.route()["state"] == "tripped"
        counts, secs = self.paced(rate, tripped, (1500 if LONG else 150) * SLOW)
        wait_for(tripped, 5 * SLOW, "the trip")
        r = self.route()
        self.assertEqual(r["state"], "tripped")
        self.assertTrue(r["reason"].startswith("max_error_rate"), r["reason"])
        self.assertIn("since the change", r["reason"])
        m = re.search(r"new [0-9.]+% \((\d+)/(\d+)\)", r["reason"])
        self.assertIsNotNone(m, r["reason"])
        n_new = int(m.group(2))
        # How many new-side requests the paired test needs is random: simulated
        # with healthcheck/seq.c at these rates and confidence 0.99, median 54,
        # 95th percentile 102, 99.9th 162. The bound is past the 99.9th.
        self.assertLess(n_new, 200)
        print("\nlow traffic: %.0f req/s in total at 5 %%, new 20 %% vs legacy 1 %% errors: tripped after %d "
              "new-side requests (%d errors), %.0f s of load (client saw %d on new, %d on legacy)"
              % (rate, n_new, int(m.group(1)), secs, counts["new"], counts["legacy"]), flush=True)

    def test_identical_sides_no_warning_no_trip(self):
        rcv = self.rcv = Receiver()
        self.start(legacy_args=["--error-rate", "0.01", "--latency-ms", "2"],
                   new_args=["--error-rate", "0.01", "--latency-ms", "2"], percent=5000, trip=EXAMPLE_RULES,
                   extra_top=rcv.top())
        secs = 200 if LONG else 25  # not stretched when sanitized: fewer requests, same span
        stop = threading.Event()
        n = [0]

        def run(k):
            c = Client(self.port)
            i = k
            while not stop.is_set():
                c.get("/x", {"X-User-Id": "user-%d" % i})
                n[0] += 1
                i += 4
            c.close()

        ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        t0 = time.time()
        worst = "ok"
        while time.time() - t0 < secs:
            r = self.route()
            if r["window"]["verdict"] in ("warn", "critical", "trip"):
                worst = r["window"]["verdict"] + ": " + r["window"]["detail"]
            time.sleep(0.5)
        stop.set()
        for t in ts:
            t.join()
        r = self.route()
        w = r["window"]
        print("\nidentical sides, %.0f s, %d requests (window: new %d, legacy %d; since the change: new %d): "
              "%d warnings, %d criticals, %d trips, %d notifications"
              % (secs, n[0], w["new"]["requests"], w["legacy"]["requests"], w["evidence"]["new"]["requests"],
                 w["warnings"], w["criticals"], w["trips"], len(rcv.got)), flush=True)
        self.assertEqual(r["state"], "ramping", r.get("reason"))
        self.assertEqual((w["warnings"], w["criticals"], w["trips"]), (0, 0, 0), worst)
        self.assertEqual(rcv.got, [])
        self.assertGreater(w["evidence"]["new"]["requests"], 1000)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Rollout plans with real backends, a real Redis and the real binary, the
plan compressed to seconds: it walks test users -> 5 -> 25 -> 75 -> 100 %
under healthy traffic; stops when the route trips; waits on too little
traffic and says how many more requests it needs; pause and continue through
ctl; and with two gateway instances exactly one advances (the lease holder is
killed mid-plan, the other takes over within a lease period)."""
import json
import os
import signal
import subprocess
import threading
import time
import unittest

from harness import BIN, SLOW, Client, Env, base_config, curl, free_port, http, main, wait_for

TOKEN = "plan-token-0123456789abcdef0123"

PLAN = """    plan:
      steps:
        - {test_users_only: true, hold: 1s}
        - {percent: 5, hold: 1s}
        - {percent: 25, hold: 1s}
        - {percent: 75, hold: 1s}
        - {percent: 100}
      gate: {max_error_rate: 0.05, confidence: 0.9, min_requests: %d, latency_not_worse: true,
             latency_tolerance: 1.0}
      lease: %s
      tick: 200ms
"""


class Plans(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.stop_load = threading.Event()
        self.loaders = []

    def tearDown(self):
        self.stop_load.set()
        for t in self.loaders:
            t.join()
        self.env.close()

    def gateway(self, new_args=(), min_requests=30, lease="2s", redis=None, name="gw", trip="consecutive_errors: 0"):
        if not hasattr(self, "legacy"):
            self.legacy = self.env.start_backend("legacy", args=["--latency-ms", "1"])
            self.new = self.env.start_backend("new", args=["--latency-ms", "1"] + list(new_args))
        self.r = redis or getattr(self, "r", None) or self.env.start_redis()
        port, admin = free_port(), free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        top = "admin: {address: 127.0.0.1:%d, token_file: %s}\n" % (admin, tok)
        top += "redis: {address: 127.0.0.1:%d, resync_interval: 1s}\n" % self.r.port
        cfg = base_config(self.port_or(port), self.legacy, self.new, extra_top=top, percent=0,
                          extra_keys="    trip: {%s}\n" % trip + PLAN % (min_requests, lease))
        cfg = cfg.replace("listen:\n  - address: 127.0.0.1:%d" % port, "listen:\n  - address: 127.0.0.1:%d" % port)
        p = self.env.start_gateway(cfg.replace("%(log)s", self.env.path(name + "-access.log")), port, name=name)
        p.port, p.admin = port, admin
        return p

    def port_or(self, port):
        return port

    def plan(self, gw):
        return json.loads(curl("http://127.0.0.1:%d/routes/nav" % gw.admin)[2])

    def hash(self):
        out = self.env.redis(self.r.port, "HGETALL", "switchyard:plan:nav").splitlines()
        return dict(zip(out[0::2], out[1::2]))

    def load(self, gws, threads=4, test_user_every=5):
        """Keep-alive clients on each gateway, fresh user ids and every
        test_user_every-th request from test user 42, until the test ends."""
        def run(gw, k):
            c = Client(gw.port)
            i = k
            while not self.stop_load.is_set():
                user = "42" if i % test_user_every == 0 else "user-%d" % i
                try:
                    c.get("/x", {"X-User-Id": user})
                except Exception:
                    if self.stop_load.wait(0.2):
                        break
                    c = Client(gw.port)
                i += threads
            c.close()
        for gw in gws:
            for k in range(threads):
                t = threading.Thread(target=run, args=(gw, k))
                t.start()
                self.loaders.append(t)

    def ctl(self, gw, *args):
        return subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % gw.admin, "-t", self.env.path("token")] + list(args),
                              capture_output=True, text=True, timeout=60)

    def test_walks_all_steps_under_healthy_traffic(self):
        gw = self.gateway()
        self.load([gw])
        seen = []
        t0 = last = time.time()
        stalled = 0.0  # the longest gap between two looks: a step holds 1 s at least
        while time.time() - t0 < 60 * SLOW:
            r = json.loads(http("GET", "http://127.0.0.1:%d/routes/nav" % gw.admin, timeout=10 * SLOW)[1])
            now = time.time()
            stalled, last = max(stalled, now - last), now
            if not seen or seen[-1] != r["percent_bp"]:
                seen.append(r["percent_bp"])
            if r["plan"]["state"] == "done":
                break
            time.sleep(0.1)
        r = self.plan(gw)
        p = r["plan"]
        print("\nplan walk: percentages seen %s in %.1f s" % (seen, time.time() - t0), flush=True)
        self.assertEqual(p["state"], "done", p)
        self.assertEqual(p["step"], 4)
        self.assertEqual([s["percent_bp"] for s in p["steps"]], [0, 500, 2500, 7500, 10000])
        self.assertTrue(p["steps"][0]["test_users_only"])
        # In order, nothing else, never back; every step seen unless this
        # poller itself stalled longer than a hold (a loaded box).
        self.assertEqual(seen, sorted(set(seen)))
        self.assertTrue(set(seen) <= {0, 500, 2500, 7500, 10000}, seen)
        self.assertEqual((seen[0], seen[-1]), (0, 10000))
        if stalled < 0.9:
            self.assertEqual(seen, [0, 500, 2500, 7500, 10000])
        self.assertEqual(r["percent_bp"], 10000)
        self.assertEqual(r["actor"], "plan")
        h = self.hash()
        self.assertEqual((h["state"], h["step"]), ("done", "4"))
        # /status carries the same plan object
        st = json.loads(curl("http://127.0.0.1:%d/status" % gw.admin)[2])["routes"][0]["plan"]
        self.assertEqual((st["state"], st["step"]), ("done", 4))
        for k in ("steps", "step_started", "hold_left_s", "waiting_for", "needed_requests"):
            self.assertIn(k, st)

    def test_waits_on_too_little_traffic_and_pauses(self):
        gw = self.gateway(min_requests=100000)
        c = Client(gw.port)
        for i in range(20):
            c.get("/x", {"X-User-Id": "42"})
        wait_for(lambda: "more requests on new" in (self.plan(gw)["plan"]["waiting_for"] or ""), 20 * SLOW,
                 "the plan to say what it waits for")
        p = self.plan(gw)["plan"]
        print("\nwaiting: %s (needed_requests %d)" % (p["waiting_for"], p["needed_requests"]), flush=True)
        self.assertEqual((p["state"], p["step"]), ("running", 0))
        self.assertGreater(p["needed_requests"], 99000)
        out = self.ctl(gw, "plan", "nav")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("more requests on new", out.stdout)
        out = self.ctl(gw, "pause", "nav", "--reason", "looking at it")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(self.hash()["state"], "paused")
        self.assertEqual(self.plan(gw)["plan"]["state"], "paused")
        self.assertEqual(self.ctl(gw, "pause", "nav").returncode, 1)  # not running: 409
        before = int(self.hash()["step_started"])
        time.sleep(0.01)
        out = self.ctl(gw, "continue", "nav")
        self.assertEqual(out.returncode, 0, out.stderr)
        h = self.hash()
        self.assertEqual(h["state"], "running")
        self.assertGreater(int(h["step_started"]), before)  # the step's clock restarted

    def test_stops_on_a_trip(self):
        gw = self.gateway(new_args=["--error-rate", "0.4"], trip="consecutive_errors: 0")
        self.load([gw], test_user_every=2)
        wait_for(lambda: self.plan(gw)["plan"]["state"] == "stopped", 40 * SLOW, "the plan to stop")
        r = self.plan(gw)
        print("\nstopped: %s" % r["plan"]["waiting_for"], flush=True)
        self.assertEqual(r["state"], "tripped")
        self.assertIn("route tripped", r["plan"]["waiting_for"])
        self.assertEqual(self.hash()["state"], "stopped")
        out = self.ctl(gw, "continue", "nav")
        self.assertEqual(out.returncode, 1)
        self.assertIn("resume it first", out.stderr)

    def test_two_instances_one_advances_and_takeover(self):
        a = self.gateway(name="a", lease="2s", min_requests=60)
        b = self.gateway(name="b", lease="2s", min_requests=60)
        self.load([a, b], threads=2)
        holders = {}
        trace = []  # (step, holder of the hash at that step)
        killed_at = None
        took_over = None
        t0 = time.time()
        while time.time() - t0 < 90 * SLOW:
            h = self.hash()
            lease = self.env.redis(self.r.port, "GET", "switchyard:plan:nav:lease").strip()
            if h.get("step") is not None and (not trace or trace[-1][0] != h["step"]):
                trace.append((h["step"], h.get("holder")))
            if killed_at is None and h.get("step") == "2" and lease:
                pid = int(lease.split("/")[1])
                victim = a if a.pid == pid else b
                victim.killed = True
                victim.kill()
                victim.wait()
                killed_at, dead = time.time(), lease
            if killed_at and took_over is None and lease and lease != dead:
                took_over = time.time() - killed_at
            if h.get("state") == "done":
                break
            time.sleep(0.05)
        print("\ntwo instances: steps and their writers %s; the lease moved %.1f s after its holder was killed "
              "(lease 2 s)" % (trace, took_over if took_over is not None else -1), flush=True)
        self.assertIsNotNone(killed_at)
        self.assertIsNotNone(took_over)
        # The lease (2 s) runs out, the other's next tick (200 ms) takes it, and
        # this loop (two redis-cli runs a look) sees it: a loaded box adds seconds.
        self.assertLess(took_over, 2.0 + 2.0 * SLOW)
        self.assertEqual(self.hash()["state"], "done")
        steps = [int(s) for s, _ in trace]
        self.assertEqual(steps, sorted(set(steps)))  # never went back, never written twice
        self.assertEqual(steps[-1], 4)
        self.env.allowed.append(r"plan:")


if __name__ == "__main__":
    main()

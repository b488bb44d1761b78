#!/usr/bin/env python3
"""The fleet registry against real processes: three gateways on one redis-server,
one of them with a different config. Each writes its heartbeat (a key with a TTL
and its id in a sorted set); GET /fleet on any of them lists all three, flags the
one whose config differs, and sums the routes' numbers over the instances (30 +
20 + 10 requests sent to the three: 60 in the fleet). `ctl status --fleet` prints
the same. An instance that stops drops out once its heartbeat expires. And a
`scope: fleet` rule: new failing only behind one instance's backend, too few
requests there to judge locally, trips on the fleet's sum, and the trip reaches
all three.

With the per-second deltas (every rule of the monitor on the fleet's sum):
a latency rule where only one instance's new backend is slow and no instance
alone has min_requests trips on the sum, the trip reaches all three, and the
record (PostgreSQL, shared by the three) has exactly ONE trip event for it
(the instance whose claim lands first acts). A reload that changes one
instance's routes flags it in /fleet (the config hash is taken again at
reload). A plan on a route with scope: fleet advances on the fleet's evidence
when no instance alone has the gate's min_requests."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

from harness import BIN, SLOW, Client, Env, free_port, main, wait_for
from harness import http as admin_http


class Fleet(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.legacy = self.env.start_backend("legacy")
        self.new = self.env.start_backend("new")
        self.r = self.env.start_redis()

    def tearDown(self):
        self.env.close()

    def config(self, port, admin, percent=2500, new=None, trip="", top=""):
        return """workers: 1
listen: [{address: 127.0.0.1:%d}]
access_log: "off"
admin: {address: 127.0.0.1:%d}
redis: {address: 127.0.0.1:%d, resync_interval: 1s}
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
  new: {endpoints: [127.0.0.1:%d]}
routes:
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: %d
%s%s""" % (port, admin, self.r.port, self.legacy, new or self.new, percent, trip, top)

    def start(self, name, percent=2500, new=None, trip="", top=""):
        port, admin = free_port(), free_port()
        gw = self.env.start_gateway(self.config(port, admin, percent, new, trip, top), port, name=name)
        gw.port, gw.admin = port, admin
        return gw

    def reload(self, gw, text):
        """Rewrites gw's config and sends SIGHUP; returns once the reload was applied."""
        with open(gw.config_path, "w") as f:
            f.write(text)
        def applied():
            with open(gw.log_path) as f:
                return f.read().count("reload: new requests use the new config")
        before = applied()
        gw.send_signal(signal.SIGHUP)
        wait_for(lambda: applied() > before, what="the reload applied on %s" % gw.log_path)

    def fleet(self, gw, poll=False):
        """GET /fleet. While polling (poll=True) an answer that does not come
        (an ASan gateway on a busy machine can take seconds) is None; otherwise
        it fails the test."""
        try:
            code, body = admin_http("GET", "http://127.0.0.1:%d/fleet" % gw.admin, timeout=10 * SLOW)
        except OSError as e:
            if poll:
                return None
            raise AssertionError("GET /fleet on %s: %s" % (gw.log_path, e))
        if code != 200:
            if poll:
                return None
            raise AssertionError("GET /fleet on %s: %d %s" % (gw.log_path, code, body))
        return json.loads(body)

    def instances(self, gw):
        """How many instances gw sees (0 while it does not answer)."""
        return len((self.fleet(gw, poll=True) or {}).get("instances") or [])

    @staticmethod
    def total(f, route="nav"):
        r = f["routes"].get(route, {})
        return sum(r.get(v, {}).get("requests", 0) for v in ("legacy", "new"))

    def test_three_instances(self):
        a, b = self.start("a"), self.start("b")
        c = self.start("c", percent=5000)  # a different config
        for gw, n in ((a, 30), (b, 20), (c, 10)):
            cl = Client(gw.port)
            for i in range(n):
                s, _, _ = cl.get("/x", {"X-User-Id": str(i)})
                self.assertEqual(s, 200)
            cl.close()
        for gw in (a, b, c):
            wait_for(lambda: self.instances(gw) == 3 and self.total(self.fleet(gw, poll=True) or {"routes": {}}) == 60,
                     timeout=30, what="the fleet seen from %s" % gw.log_path)
        f = self.fleet(a)
        ids = {i["id"]: i for i in f["instances"]}
        self.assertEqual(len(ids), 3)
        own = {str(gw.pid): gw for gw in (a, b, c)}
        differs = [i["id"] for i in f["instances"] if i["config_differs"]]
        self.assertEqual(len(differs), 1)
        self.assertTrue(differs[0].endswith("/%d" % c.pid), differs)
        self.assertEqual(sum(1 for i in f["instances"] if i["self"]), 1)
        self.assertTrue(all(i["version"] for i in f["instances"]))
        self.assertEqual(len(own), 3)
        # the heartbeat keys carry a TTL; the set names every instance
        key = "switchyard:instance:" + differs[0]
        ttl = int(self.env.redis(self.r.port, "PTTL", key))
        self.assertTrue(0 < ttl <= 5000, ttl)
        self.assertEqual(int(self.env.redis(self.r.port, "ZCARD", "switchyard:instances")), 3)
        # ctl status --fleet
        out = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % b.admin, "status", "--fleet"], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.count("CONFIG DIFFERS"), 1, out.stdout)
        self.assertEqual(out.stdout.count("(this one)"), 1)
        rows = [l.split() for l in out.stdout.splitlines() if l.startswith("nav ")]
        self.assertEqual(sum(int(r[2]) for r in rows), 60, out.stdout)
        # the config hash is taken again at a reload: c reloads the config a and b
        # run (its own ports: per-host keys do not count), so nobody differs; then b
        # reloads with a changed route and is the one flagged
        def differing(gw):
            f = self.fleet(gw, poll=True) or {"instances": []}
            return sorted(i["id"] for i in f["instances"] if i["config_differs"]) if len(f["instances"]) == 3 else None
        self.reload(c, self.config(c.port, c.admin))
        for gw in (a, b, c):
            wait_for(lambda: differing(gw) == [], what="c's new hash seen by %s" % gw.log_path)
        self.reload(b, self.config(b.port, b.admin) + "  - name: extra\n    match: {path_prefix: /extra}\n"
                    "    legacy: legacy\n    new: new\n    percent_bp: 0\n")
        for gw in (a, b, c):
            wait_for(lambda: (differing(gw) or [""])[0].endswith("/%d" % b.pid) and len(differing(gw)) == 1,
                     what="b flagged after its reload, seen by %s" % gw.log_path)
        self.reload(b, self.config(b.port, b.admin))
        # c stops: its heartbeat expires and it leaves the view
        self.env.stop(c)
        wait_for(lambda: self.instances(a) == 2, timeout=30, what="c gone from the fleet")
        self.assertEqual(self.total(self.fleet(a)), 50)
        self.assertFalse(any(i["config_differs"] for i in self.fleet(a)["instances"]))

    def status(self, gw, poll=False):
        """/status. While polling (poll=True), an empty shell when no answer
        comes (the admin listener not up yet, a busy ASan gateway); otherwise
        a missing answer fails the test."""
        try:
            code, body = admin_http("GET", "http://127.0.0.1:%d/status" % gw.admin, timeout=10 * SLOW)
        except OSError as e:
            if poll:
                return {"redis": {}, "routes": [{"name": "nav", "state": None}]}
            raise AssertionError("GET /status on %s: %s" % (gw.log_path, e))
        return json.loads(body)

    def nav(self, gw, poll=False):
        return [r for r in self.status(gw, poll)["routes"] if r["name"] == "nav"][0]

    def test_fleet_scope_trips_on_the_sum(self):
        """new fails only behind a's backend: 30 of a's requests, none of b's or c's.
        Locally a has 30 of the 60 requests min_requests asks for: no local trip.
        The fleet has 60 to 90 of them, 30 errors (33 to 50 % > 20 %): the fleet rule trips,
        and the trip reaches all three."""
        self.env.allowed.append(r"fleet: route nav trips")
        bad = self.env.start_backend("new-bad", args=["--error-rate", "1"])
        # sequential: false: the since-change evidence path judges a's own 30 requests
        # (100 % errors is enough evidence locally); this test is about the window rule's scope.
        trip = ("    trip: {scope: fleet, min_requests: 60, max_error_rate: 0.2, consecutive_errors: 0,"
                " sequential: false}\n")
        # Started at the top of a wall-clock second, the three are up and see
        # each other (heartbeats at .3) within it, and on a quiet machine get their
        # requests in their start second too: that second counts (it once did not:
        # the sum started with the next second, and the requests were never judged).
        time.sleep(1 - time.time() % 1)
        t0 = time.time()
        a = self.start("a", percent=10000, new=bad, trip=trip)
        b = self.start("b", percent=10000, trip=trip)
        c = self.start("c", percent=10000, trip=trip)
        for gw in (a, b, c):
            wait_for(lambda: self.status(gw, poll=True)["redis"].get("synced"), what="flags read")
        wait_for(lambda: self.instances(a) == 3, what="three instances")
        for gw in (a, b, c):
            cl = Client(gw.port)
            for i in range(30):
                cl.get("/x", {"X-User-Id": str(i)})
            cl.close()
        print("\nfleet scope: started at %.3f, requests sent by %.3f" % (t0, time.time()), flush=True)
        for gw in (a, b, c):
            wait_for(lambda: self.nav(gw, poll=True)["state"] == "tripped", timeout=30, what="tripped on %s" % gw.log_path)
        self.assertEqual(self.env.redis(self.r.port, "HGET", "switchyard:route:nav", "state"), "tripped")
        logs = ""
        for gw in (a, b, c):
            with open(gw.log_path) as f:
                logs += f.read()
        self.assertIn("trips on the fleet's sum", logs)
        # it trips as soon as the sum has min_requests (60 or more of the 90, 30 errors)
        m = re.search(r"fleet:max_error_rate: error rate new [\d.]+% \((\d+)/(\d+)\)", logs)
        self.assertIsNotNone(m, logs)
        self.assertEqual(int(m.group(1)), 30)
        self.assertGreaterEqual(int(m.group(2)), 60)
        # a alone never had enough: its own verdict is insufficient evidence
        self.assertEqual(self.nav(a)["window"]["new"]["requests"], 30)
        # one instance acted: one trip logged as the fleet's
        self.assertEqual(logs.count("trips on the fleet's sum"), 1, logs)

    def test_fleet_critical_tier_once(self):
        """The tiers on the fleet's sum: new fails only behind a's backend, 30 of 90
        requests (33 %): over critical_error_rate (5 %) but under this route's
        max_error_rate (50 %). One instance records the critical alert (claimed), the
        route is not flipped, and no instance alone had min_requests."""
        self.env.allowed.append(r"fleet: critical: route nav")
        bad = self.env.start_backend("new-bad", args=["--error-rate", "1"])
        trip = ("    trip: {scope: fleet, min_requests: 60, max_error_rate: 0.5, critical_error_rate: 0.05,"
                " consecutive_errors: 0, sequential: false}\n")
        gws = [self.start(n, percent=10000, new=new, trip=trip) for n, new in (("a", bad), ("b", None), ("c", None))]
        for gw in gws:
            wait_for(lambda: self.status(gw, poll=True)["redis"].get("synced"), what="flags read")
        wait_for(lambda: self.instances(gws[0]) == 3, what="three instances")
        for k, gw in enumerate(gws):
            self.send(gw, 30, user0=100 * k)

        def logs():
            text = ""
            for gw in gws:
                with open(gw.log_path) as f:
                    text += f.read()
            return text
        wait_for(lambda: "fleet: critical: route nav" in logs(), timeout=30, what="the fleet's critical alert")
        # The instance that recorded it judged it critical; the others' sums may lag
        # (a heartbeat carries 5 seconds: a reader stalled longer under a sanitizer
        # on a loaded box misses some, and only the claim holder acts anyway).
        level = lambda gw: (self.fleet(gw, poll=True) or {}).get("fleet_rules", {}).get("nav", {}).get("level")
        wait_for(lambda: any(level(gw) == "critical" for gw in gws),
                 what="an instance judging it critical")
        print("\nfleet critical: levels %s" % [self.fleet(gw)["fleet_rules"]["nav"]["level"] for gw in gws])
        self.assertEqual(logs().count("fleet: critical: route nav"), 1)
        self.assertEqual(sum(self.fleet(gw)["claims"]["won"] for gw in gws), 1)
        for gw in gws:
            self.assertEqual(self.nav(gw)["state"], "ramping")
        self.assertEqual(self.nav(gws[0])["window"]["verdict"], "insufficient")

    def send(self, gw, n, threads=1, user0=0):
        """n requests to gw, over `threads` keep-alive connections at once."""
        def run(k):
            cl = Client(gw.port)
            for i in range(k, n, threads):
                s, _, _ = cl.get("/x", {"X-User-Id": str(user0 + i)})
                self.assertIn(s, (200, 500))
            cl.close()
        ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def metric(self, gw, name):
        code, body = admin_http("GET", "http://127.0.0.1:%d/metrics" % gw.admin, timeout=5)
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def test_fleet_latency_rule_one_trip_event(self):
        """new is slow (150 ms) only behind a's backend; p50 over 100 ms trips, on
        min_requests 50. a sends 45 requests (all slow), b and c 8 each (fast): no
        instance alone has 50, the fleet has 61 of which 45 slow (p50 over the limit,
        significantly). The trip reaches all three, and the record shared by the three
        has exactly one trip event for it."""
        self.env.allowed.append(r"fleet: route nav trips")
        pg = self.env.start_postgres()
        slow = self.env.start_backend("new-slow", args=["--latency-ms", "150"])
        trip = ("    trip: {scope: fleet, min_requests: 50, max_latency_ms: {p50: 100}, consecutive_errors: 0,"
                " sequential: false}\n")
        gws = []
        for name, new in (("a", slow), ("b", None), ("c", None)):
            top = "postgres: {conninfo: \"%s\", journal: %s, window: 1s}\n" % (pg.conninfo(),
                                                                                self.env.path("journal-" + name))
            gws.append(self.start(name, percent=10000, new=new, trip=trip, top=top))
        a, b, c = gws
        for gw in gws:
            wait_for(lambda: self.status(gw, poll=True)["redis"].get("synced"), what="flags read")
        wait_for(lambda: self.instances(a) == 3, what="three instances")
        self.send(b, 8)
        self.send(c, 8, user0=100)
        self.send(a, 45, threads=5, user0=200)
        for gw in gws:
            wait_for(lambda: self.nav(gw, poll=True)["state"] == "tripped", timeout=30, what="tripped on %s" % gw.log_path)
        # locally, no instance had min_requests
        self.assertEqual(self.nav(a)["window"]["new"]["requests"], 45)
        self.assertEqual(self.nav(a)["window"]["verdict"], "insufficient")
        # every instance's record reached PostgreSQL (each recorded its start): then count the trips
        wait_for(lambda: pg.scalar("SELECT count(*) FROM events WHERE kind = 'start'") == "3", what="three starts")
        for gw in gws:
            wait_for(lambda: self.metric(gw, 'switchyard_journal_pending{stream="events"}') == 0,
                     what="events of %s in PostgreSQL" % gw.log_path)
        rows = pg.psql("SELECT instance, reason, stats->>'scope' FROM events WHERE kind = 'trip' AND route = 'nav'")
        self.assertEqual(len(rows), 1, rows)
        self.assertTrue(rows[0][1].startswith("fleet:max_latency_ms: new p50 "), rows)
        self.assertEqual(rows[0][2], "fleet")
        f = self.fleet(a)
        self.assertEqual(sum(self.fleet(gw)["claims"]["won"] for gw in gws), 1)
        # the figures of the report: what the fleet's window held at the trip, bytes of a heartbeat
        st = json.loads(pg.scalar("SELECT stats FROM events WHERE kind = 'trip' AND route = 'nav'"))
        self.assertGreaterEqual(st["new"]["requests"], 50)
        self.assertEqual(st["instances"], 3)
        sizes = [int(self.env.redis(self.r.port, "STRLEN", "switchyard:instance:" + i["id"])) for i in f["instances"]]
        sys.stderr.write("\nfleet latency rule: tripped with new %d requests in the fleet's window (a alone: 45 of the "
                         "50 min_requests); heartbeats %s bytes (1 route)\n" % (st["new"]["requests"], sizes))

    def test_plan_gates_on_the_fleet_evidence(self):
        """A plan on a route with scope: fleet: the gate wants 60 requests of new since
        the step began; each instance sees 25, the fleet 75. The holder (any of the
        three) judges the fleet's evidence: the plan advances to its last step."""
        plan = ("    trip: {scope: fleet, consecutive_errors: 0}\n"
                "    plan:\n"
                "      steps: [{percent: 100, hold: 0s}, {percent: 100}]\n"
                "      gate: {max_error_rate: 0.2, min_requests: 60, latency_not_worse: false}\n"
                "      lease: 2s\n      tick: 200ms\n")
        gws = [self.start(n, percent=10000, trip=plan) for n in ("a", "b", "c")]
        for gw in gws:
            wait_for(lambda: self.status(gw, poll=True)["redis"].get("synced"), what="flags read")
        wait_for(lambda: self.instances(gws[0]) == 3, what="three instances")
        wait_for(lambda: self.env.redis(self.r.port, "HGET", "switchyard:plan:nav", "state") == "running",
                 what="the plan started")
        for k, gw in enumerate(gws):
            self.send(gw, 25, user0=100 * k)
        try:
            wait_for(lambda: self.env.redis(self.r.port, "HGET", "switchyard:plan:nav", "state") == "done",
                     timeout=30, what="the plan done on the fleet's evidence")
        except AssertionError:
            raise AssertionError("plan not done: %s; fleet: %s" % (
                self.env.redis(self.r.port, "HGETALL", "switchyard:plan:nav"),
                [json.dumps(self.fleet(gw)["fleet_rules"]["nav"]["evidence"]["new"]) for gw in gws]))
        # no instance alone had the gate's 60
        for gw in gws:
            self.assertLessEqual(self.nav(gw)["window"]["new"]["requests"], 25)
        judged = self.fleet(gws[0])["fleet_rules"]["nav"]
        self.assertGreaterEqual(judged["evidence"]["new"]["requests"], 60)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The fleet registry against real processes: three gateways on one redis-server,
one of them with a different config. Each writes its heartbeat (a key with a TTL
and its id in a sorted set); GET /fleet on any of them lists all three, flags the
one whose config differs, and sums the routes' numbers over the instances (30 +
20 + 10 requests sent to the three: 60 in the fleet). `ctl status --fleet` prints
the same. An instance that stops drops out once its heartbeat expires. And a
`scope: fleet` rule: new failing only behind one instance's backend, too few
requests there to judge locally, trips on the fleet's sum, and the trip reaches
all three."""
import json
import re
import subprocess
import time
import unittest

from harness import BIN, Client, Env, free_port, main, wait_for
from harness import http as admin_http


class Fleet(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.legacy = self.env.start_backend("legacy")
        self.new = self.env.start_backend("new")
        self.r = self.env.start_redis()

    def tearDown(self):
        self.env.close()

    def start(self, name, percent=2500, new=None, trip=""):
        port, admin = free_port(), free_port()
        cfg = """workers: 1
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
%s""" % (port, admin, self.r.port, self.legacy, new or self.new, percent, trip)
        gw = self.env.start_gateway(cfg, port, name=name)
        gw.port, gw.admin = port, admin
        return gw

    def fleet(self, gw):
        try:
            code, body = admin_http("GET", "http://127.0.0.1:%d/fleet" % gw.admin, timeout=3)
            return json.loads(body) if code == 200 else None
        except OSError:
            return None

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
            wait_for(lambda: (self.fleet(gw) or {}).get("instances") and len(self.fleet(gw)["instances"]) == 3
                     and self.total(self.fleet(gw)) == 60, timeout=30, what="the fleet seen from %s" % gw.log_path)
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
        # c stops: its heartbeat expires and it leaves the view
        self.env.stop(c)
        wait_for(lambda: len(self.fleet(a)["instances"]) == 2, timeout=30, what="c gone from the fleet")
        self.assertEqual(self.total(self.fleet(a)), 50)
        self.assertFalse(any(i["config_differs"] for i in self.fleet(a)["instances"]))

    def status(self, gw):
        code, body = admin_http("GET", "http://127.0.0.1:%d/status" % gw.admin, timeout=3)
        return json.loads(body)

    def nav(self, gw):
        return [r for r in self.status(gw)["routes"] if r["name"] == "nav"][0]

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
        a = self.start("a", percent=10000, new=bad, trip=trip)
        b = self.start("b", percent=10000, trip=trip)
        c = self.start("c", percent=10000, trip=trip)
        for gw in (a, b, c):
            wait_for(lambda: self.status(gw)["redis"]["synced"], what="flags read")
        wait_for(lambda: len(self.fleet(a)["instances"]) == 3, what="three instances")
        for gw in (a, b, c):
            cl = Client(gw.port)
            for i in range(30):
                cl.get("/x", {"X-User-Id": str(i)})
            cl.close()
        for gw in (a, b, c):
            wait_for(lambda: self.nav(gw)["state"] == "tripped", timeout=30, what="tripped on %s" % gw.log_path)
        self.assertEqual(self.env.redis(self.r.port, "HGET", "switchyard:route:nav", "state"), "tripped")
        logs = ""
        for gw in (a, b, c):
            with open(gw.log_path) as f:
                logs += f.read()
        self.assertIn("trips on the fleet's sum", logs)
        # it trips as soon as the sum has min_requests (60 or more of the 90, 30 errors)
        m = re.search(r"new [\d.]+% \((\d+) of (\d+) over 3 instances\) > 20\.00%", logs)
        self.assertIsNotNone(m, logs)
        self.assertEqual(int(m.group(1)), 30)
        self.assertGreaterEqual(int(m.group(2)), 60)
        # a alone never had enough: its own verdict is insufficient evidence
        self.assertEqual(self.nav(a)["window"]["new"]["requests"], 30)


if __name__ == "__main__":
    main()

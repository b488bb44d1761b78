#!/usr/bin/env python3
"""The fleet registry against real processes: three gateways on one redis-server,
one of them with a different config. Each writes its heartbeat (a key with a TTL
and its id in a sorted set); GET /fleet on any of them lists all three, flags the
one whose config differs, and sums the routes' numbers over the instances (30 +
20 + 10 requests sent to the three: 60 in the fleet). `ctl status --fleet` prints
the same. An instance that stops drops out once its heartbeat expires."""
import json
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

    def start(self, name, percent=2500):
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
""" % (port, admin, self.r.port, self.legacy, self.new, percent)
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


if __name__ == "__main__":
    main()

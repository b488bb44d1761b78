#!/usr/bin/env python3
"""Redis through Sentinel against real processes: two redis-servers (a master
and its replica), two redis-sentinels and a configured sentinel that is not
running (the client must move on to the next), the gateway under continuous
keep-alive load. A graceful failover (SENTINEL FAILOVER) and then a hard one
(the new master killed): zero failed requests, the flags unchanged, the gateway
follows each new master (ROLE checked), and the next edit lands on it; an edit
that cannot reach a master is refused with a clear 503, never lost."""
import json
import os
import signal
import threading
import time
import unittest

from harness import SLOW, Client, Env, free_port, main, wait_for
from harness import http as admin_http

TOKEN = "sentinel-token-0123456789abcdef"
KEY = "switchyard:route:nav"
NAME = "symaster"


def http(method, url, body=None, token=TOKEN, timeout=10):
    return admin_http(method, url, body, token, timeout)


class Load(threading.Thread):
    """Keep-alive requests until stopped: counts answers by status."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop_ev = threading.Event()
        self.ok = 0
        self.failed = []

    def run(self):
        c = Client(self.port)
        i = 0
        while not self.stop_ev.is_set():
            i += 1
            try:
                s, h, b = c.get("/x", {"X-User-Id": str(i % 1000)})
                if s == 200:
                    self.ok += 1
                else:
                    self.failed.append(s)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failed.append(repr(e))
            time.sleep(0.002)
        c.close()


class Sentinel(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.legacy = self.env.start_backend("legacy")
        self.new = self.env.start_backend("new")
        self.redis_group = self.env.start_sentinel_group(NAME)
        self.m, self.rep = self.redis_group.master, self.redis_group.replica
        self.s1, self.s2 = self.redis_group.sentinels
        self.tok = self.env.path("token")
        with open(self.tok, "w") as f:
            f.write(TOKEN)

    def tearDown(self):
        self.env.close()

    def status(self):
        try:
            code, body = http("GET", "http://127.0.0.1:%d/status" % self.admin, token=None, timeout=10 * SLOW)
            return json.loads(body) if code == 200 else None
        except OSError:
            return None

    def nav(self):
        return [r for r in self.status()["routes"] if r["name"] == "nav"][0]

    def set_percent(self, v):
        return http("POST", "http://127.0.0.1:%d/routes/nav/percent" % self.admin,
                    {"percent_bp": v, "reason": "sentinel test"})

    def on_master(self, port):
        st = self.status()
        return st and st["redis"]["connected"] and st["redis"]["server"] == "127.0.0.1:%d" % port

    def edit_lands(self, v, port):
        """Edits until one is answered 200 (a 503 while no master is reachable is
        the promised answer; never anything else) and checks it is in `port`."""
        codes = []

        def once():
            code, body = self.set_percent(v)
            codes.append(code)
            if code == 503:
                self.assertIn(b"redis", body)
            return code == 200
        wait_for(once, timeout=30, what="an edit to land", every=0.2)
        self.assertEqual(set(codes) - {200, 503}, set())
        self.assertEqual(self.env.redis(port, "HGET", KEY, "percent_bp"), str(v))
        wait_for(lambda: self.nav()["percent_bp"] == v, what="the edit in force")

    def test_failover_under_load(self):
        dead = free_port()  # a configured sentinel that is not running
        port, self.admin = free_port(), free_port()
        cfg = """workers: 2
listen: [{address: 127.0.0.1:%(port)d}]
access_log: "off"
admin: {address: 127.0.0.1:%(admin)d, token_file: %(tok)s}
redis: {sentinels: [127.0.0.1:%(dead)d, 127.0.0.1:%(s1)d, 127.0.0.1:%(s2)d], master: %(name)s, resync_interval: 1s,
        connect_timeout: 500ms, command_timeout: 1s}
pools:
  legacy: {endpoints: [127.0.0.1:%(legacy)d]}
  new: {endpoints: [127.0.0.1:%(new)d]}
routes:
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 2500
""" % dict(port=port, admin=self.admin, tok=self.tok, dead=dead, s1=self.s1.port, s2=self.s2.port, name=NAME,
           legacy=self.legacy, new=self.new)
        gw = self.env.start_gateway(cfg, port)
        wait_for(lambda: self.status() and self.status()["redis"]["synced"], what="flags read")
        self.assertEqual(self.status()["redis"]["server"], "127.0.0.1:%d" % self.m.port)
        self.edit_lands(3100, self.m.port)
        version = self.env.redis(self.m.port, "HGET", KEY, "version")

        load = Load(port)
        load.start()
        try:
            wait_for(lambda: load.ok > 50, what="load running")
            # 1. graceful: the sentinel promotes the replica
            self.assertEqual(self.env.redis(self.s1.port, "SENTINEL", "FAILOVER", NAME), "OK")
            wait_for(lambda: self.redis_group.master_port() == self.rep.port, timeout=30, what="the replica promoted")
            wait_for(lambda: self.on_master(self.rep.port), timeout=30, what="the gateway on the new master")
            n = self.nav()
            self.assertEqual((n["percent_bp"], n["state"]), (3100, "ramping"))
            self.assertEqual(self.env.redis(self.rep.port, "HGET", KEY, "version"), version)
            self.edit_lands(3200, self.rep.port)
            # the old master follows as a replica before the next failover
            wait_for(lambda: "master_link_status:up" in self.env.redis(self.m.port, "INFO", "replication")
                     and self.env.redis(self.m.port, "HGET", KEY, "percent_bp") == "3200", timeout=30,
                     what="the old master replicating")
            wait_for(lambda: self.redis_group.knows(), timeout=30, what="sentinels see the new replica")

            # 2. hard: the master is killed; the sentinels promote the other one
            self.rep.send_signal(signal.SIGKILL)
            self.rep.wait()
            code, body = self.set_percent(3300)  # while no master answers: refused, said so
            self.assertIn(code, (200, 503))
            if code == 200:  # it was written before the kill was noticed: it must be there
                pass
            wait_for(lambda: self.redis_group.master_port() == self.m.port, timeout=40, what="the old master promoted back")
            wait_for(lambda: self.on_master(self.m.port), timeout=30, what="the gateway on the promoted master")
            n = self.nav()
            self.assertEqual(n["percent_bp"], 3200 if code == 503 else 3300)
            self.edit_lands(3400, self.m.port)
            time.sleep(0.5)
        finally:
            load.stop_ev.set()
            load.join(30)
        self.assertGreater(load.ok, 100)
        self.assertEqual(load.failed, [])
        st = self.status()
        self.assertGreaterEqual(st["redis"]["reconnects"], 2)
        with open(gw.log_path) as f:
            log = f.read()
        self.assertIn("the sentinels name 127.0.0.1:%d as the master" % self.rep.port, log)
        self.assertIn("the sentinels name 127.0.0.1:%d as the master" % self.m.port, log)
        print("sentinel: %d requests, 0 failed, through 2 failovers" % load.ok)

    def test_plan_rides_the_sentinels_master(self):
        """A plan's position and lease live where the flags do: with Redis given
        only through the sentinels the plan runs, on the master they name."""
        port, self.admin = free_port(), free_port()
        cfg = """workers: 1
listen: [{address: 127.0.0.1:%(port)d}]
access_log: "off"
admin: {address: 127.0.0.1:%(admin)d, token_file: %(tok)s}
redis: {sentinels: [127.0.0.1:%(s1)d, 127.0.0.1:%(s2)d], master: %(name)s, resync_interval: 1s}
pools:
  legacy: {endpoints: [127.0.0.1:%(legacy)d]}
  new: {endpoints: [127.0.0.1:%(new)d]}
routes:
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 0
    plan:
      steps:
        - {percent: 5, hold: 500ms}
        - {percent: 25}
      gate: {max_error_rate: 0.5, confidence: 0.9, min_requests: 20, latency_not_worse: false}
      lease: 2s
      tick: 200ms
""" % dict(port=port, admin=self.admin, tok=self.tok, s1=self.s1.port, s2=self.s2.port, name=NAME,
           legacy=self.legacy, new=self.new)
        self.env.start_gateway(cfg, port)
        wait_for(lambda: self.status() and self.status()["redis"]["synced"], what="flags read")
        load = Load(port)
        load.start()
        try:
            wait_for(lambda: self.nav()["percent_bp"] == 2500, timeout=40, what="the plan to reach its last step")
        finally:
            load.stop_ev.set()
            load.join(30)
        plan = dict(zip(*[iter(self.env.redis(self.m.port, "HGETALL", "switchyard:plan:nav").splitlines())] * 2))
        self.assertEqual(plan.get("step"), "1", plan)
        self.assertTrue(self.env.redis(self.m.port, "GET", "switchyard:plan:nav:lease").strip())
        self.assertEqual(load.failed, [])


if __name__ == "__main__":
    main()

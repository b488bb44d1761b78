#!/usr/bin/env python3
"""The record on a PostgreSQL primary with a streaming standby (pg_basebackup -R),
through a multi-host conninfo with target_session_attrs=read-write: events made
before, during and after a failover (the primary stopped, the standby promoted)
are in PostgreSQL exactly once; the writer does not take the read-only standby
for the primary, follows the promotion by itself, and requests never fail."""
import json
import shutil
import threading
import time
import unittest

from harness import SLOW, Client, Env, failover_conninfo, free_port, main, wait_for
from harness import http as admin_http

TOKEN = "pgfail-token-0123456789abcdef"


def http(method, url, body=None, token=TOKEN, timeout=10):
    return admin_http(method, url, body, token, timeout)


class Load(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.ok, self.failed = port, 0, []
        self.stop_ev = threading.Event()

    def run(self):
        c = Client(self.port)
        i = 0
        while not self.stop_ev.is_set():
            i += 1
            try:
                s, _, _ = c.get("/x", {"X-User-Id": str(i % 500)})
                if s == 200:
                    self.ok += 1
                else:
                    self.failed.append(s)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failed.append(repr(e))
            time.sleep(0.005)
        c.close()


class PgFailover(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.primary = self.env.start_postgres()
        self.standby = self.env.start_pg_standby(self.primary)
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

    def record(self):
        return self.status()["record"]

    def drained(self):
        j = self.record()["journal"]
        return self.record()["connected"] and j["events_acked"] >= j["events_written"]

    def edit(self, n, tag):
        for i in range(n):
            code, body = http("POST", "http://127.0.0.1:%d/routes/nav/percent" % self.admin,
                              {"percent_bp": 100 + len(self.made), "reason": "%s %d" % (tag, i)})
            self.assertEqual(code, 200, body)
            self.made.append("%s %d" % (tag, i))

    def standby_count(self, like):
        """Events like LIKE on the standby; None until replication brought the table."""
        try:
            return self.standby.scalar("SELECT count(*) FROM events WHERE reason LIKE '%s'" % like)
        except RuntimeError:
            return None

    def test_failover_to_the_promoted_standby(self):
        self.env.allowed.append(r"postgres:")
        self.made = []
        legacy, new = self.env.start_backend("legacy"), self.env.start_backend("new")
        port, self.admin = free_port(), free_port()
        conninfo = failover_conninfo(self.primary, self.standby)
        cfg = """workers: 2
listen: [{address: 127.0.0.1:%(port)d}]
access_log: "off"
admin: {address: 127.0.0.1:%(admin)d, token_file: %(tok)s}
postgres: {conninfo: "%(conninfo)s", journal: %(journal)s, window: 1s}
pools:
  legacy: {endpoints: [127.0.0.1:%(legacy)d]}
  new: {endpoints: [127.0.0.1:%(new)d]}
routes:
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 100
""" % dict(port=port, admin=self.admin, tok=self.tok, conninfo=conninfo, journal=self.env.path("journal"),
           legacy=legacy, new=new)
        self.gw = self.env.start_gateway(cfg, port)
        wait_for(lambda: self.status() and self.record()["schema_ready"], what="the schema on the primary")
        load = Load(port)
        load.start()
        try:
            self.edit(20, "before")
            wait_for(self.drained, what="the journal drained into the primary")
            # the standby has them too before the primary goes
            wait_for(lambda: self.standby_count("before %") == "20", timeout=30, what="the standby caught up")
            self.primary.stop()
            self.edit(30, "gap")  # the primary is gone, the standby is read-only: the journal holds them
            # The writer sees its connection go at its next read: wait for it.
            wait_for(lambda: not self.record()["connected"], what="the writer to see the primary gone")
            self.assertFalse(self.record()["connected"])
            self.assertEqual(self.standby.scalar("SELECT count(*) FROM events WHERE reason LIKE 'gap %'"), "0")
            self.standby.promote()
            try:
                wait_for(self.drained, timeout=60, what="the writer on the promoted standby, the gap replayed")
            except AssertionError:
                with open(self.gw.log_path) as f:
                    print(f.read()[-3000:], json.dumps(self.record()))
                raise
            self.edit(20, "after")
            wait_for(self.drained, timeout=30, what="the journal drained after the failover")
        finally:
            load.stop_ev.set()
            load.join(30)
        rows = self.standby.psql("SELECT reason, count(*) FROM events WHERE kind = 'flag_change' GROUP BY reason")
        got = {r[0]: int(r[1]) for r in rows}
        self.assertEqual(sorted(got), sorted(self.made))
        self.assertEqual(set(got.values()), {1})
        self.assertEqual(self.standby.scalar("SELECT count(*) - count(DISTINCT id) FROM events"), "0")
        self.assertEqual(load.failed, [])
        self.assertGreater(load.ok, 0)
        print("\npostgres failover: %d events exactly once (%d made while no primary), %d requests, 0 failed"
              % (len(self.made), 30, load.ok))


if __name__ == "__main__":
    main()

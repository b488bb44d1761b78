#!/usr/bin/env python3
"""The record in a real PostgreSQL 15 (initdb + pg_ctl), with a real Redis and
programmable backends: every event kind with its fields (a trip with both
sides' numbers), windows rows, 1,000 events made while PostgreSQL is down
arriving exactly once, SIGKILL between the journal and the insert, PostgreSQL
stopped under load (no failed request; p99 reported against the same load with
it up), the journal at its bound, the /events filters and `ctl events`, the
`migrate` command, and a password that never reaches the log."""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest
import urllib.request

from harness import BIN, SLOW, Client, Env, curl, free_port, main, wait_for
from harness import http as admin_http

TOKEN = "record-token-0123456789abcdef"




def http(method, url, body=None, token=TOKEN, timeout=10):
    return admin_http(method, url, body, token, timeout)


class Record(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.pg = self.env.start_postgres()
        self.journal = self.env.path("journal")
        self.tok = self.env.path("token")
        with open(self.tok, "w") as f:
            f.write(TOKEN)
        self.gw = None

    def tearDown(self):
        self.env.close()

    def config(self, extra_pg="", routes=None):
        pools = """pools:
  legacy: {endpoints: [127.0.0.1:%(legacy)d]}
  new: {endpoints: [127.0.0.1:%(new)d]}
  new2: {endpoints: [127.0.0.1:%(new2)d]}
  col:
    colors: {blue: [127.0.0.1:%(legacy)d], green: [127.0.0.1:%(green)d]}
    health: {path: /health, interval: 200ms, timeout: 500ms, rise: 1, fall: 3}
"""
        routes = routes or """routes:
  - name: wallet
    match: {path_prefix: /w}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new2
    percent_bp: 5000
    trip: {min_requests: 20, warn_error_rate: 0.1, max_error_rate: 0.95, max_error_rate_delta: 0, consecutive_errors: 0}
  - name: bot
    match: {path_prefix: /b}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 5000
    trip: {min_requests: 20, max_error_rate: 0.5, consecutive_errors: 0}
  - name: speech
    match: {path_prefix: /}
    legacy: col
"""
        text = """workers: 2
listen: [{address: 127.0.0.1:%(port)d}]
access_log: "off"
admin: {address: 127.0.0.1:%(admin)d, token_file: %(tok)s}
redis: {address: 127.0.0.1:%(redis)d, resync_interval: 1s}
postgres: {conninfo: "%(conninfo)s", journal: %(journal)s, window: 1s%(extra_pg)s}
""" + pools + routes
        return text % dict(port=self.port, admin=self.admin, tok=self.tok, redis=self.r.port,
                           conninfo=self.conninfo, journal=self.journal, extra_pg=extra_pg, legacy=self.legacy,
                           new=self.new, new2=self.new2, green=self.green)

    def start(self, extra_pg="", conninfo=None, name="gw"):
        if self.gw is None:
            self.legacy = self.env.start_backend("legacy")
            self.new = self.env.start_backend("new", args=["--error-rate", "1"])
            self.new2 = self.env.start_backend("new2", args=["--error-rate", "0.3"])
            self.green = self.env.start_backend("green")
            self.r = self.env.start_redis()
            self.port = free_port()
            self.admin = free_port()
        self.conninfo = conninfo or self.pg.conninfo()
        self.gw = self.env.start_gateway(self.config(extra_pg), self.port, name=name)
        wait_port_admin = lambda: self.try_status() is not None
        wait_for(wait_port_admin, what="admin")
        return self.gw

    def try_status(self):
        try:
            code, body = http("GET", "http://127.0.0.1:%d/status" % self.admin, token=None, timeout=10 * SLOW)
            return json.loads(body) if code == 200 else None
        except OSError:
            return None

    def record(self):
        return self.try_status()["record"]

    def wait_ready(self):
        wait_for(lambda: self.record()["schema_ready"], what="the schema")

    def wait_drained(self, timeout=30):
        """Every journaled record is in PostgreSQL."""
        def done():
            j = self.record()["journal"]
            return j["events_acked"] >= j["events_written"] and j["windows_acked"] >= j["windows_written"]
        wait_for(done, timeout, "the journal to drain")

    def post(self, path, body):
        return http("POST", "http://127.0.0.1:%d%s" % (self.admin, path), body)

    def events(self, query=""):
        code, body = http("GET", "http://127.0.0.1:%d/events%s" % (self.admin, query), token=None)
        return code, json.loads(body)

    def load(self, path, n, users=200):
        c = Client(self.port)
        try:
            for i in range(n):
                c.get(path, headers={"X-User-Id": "u%d" % (i % users)})
        finally:
            c.close()

    def rows(self, sql):
        return self.pg.psql(sql)

    # --- every kind, with its fields --------------------------------------------------

    def test_every_kind_with_its_fields(self):
        self.start()
        self.wait_ready()
        self.assertEqual(self.post("/routes/wallet/percent", {"percent_bp": 3000, "reason": "ramp to 30",
                                                              "actor": "alice"})[0], 200)
        self.assertEqual(self.post("/routes/wallet/test-users", {"add": ["qa-1"], "reason": "qa"})[0], 200)
        time.sleep(0.3)
        self.env.redis(self.r.port, "HSET", "switchyard:route:wallet", "percent_bp", "4000")
        wait_for(lambda: self.try_status()["routes"][0]["percent_bp"] == 4000, what="hand edit")
        self.env.allowed.append(r"refused percent_bp")
        self.env.redis(self.r.port, "HSET", "switchyard:route:wallet", "percent_bp", "lots")
        # wallet: new2 fails 30 % of requests: a warning, no trip
        self.load("/w/x", 200)
        wait_for(lambda: self.try_status()["routes"][0]["window"]["warnings"] >= 1, what="a warning")
        # bot: new fails every request: a trip with both sides' numbers
        self.load("/b/x", 120)
        wait_for(lambda: self.try_status()["routes"][1]["state"] == "tripped", what="the trip")
        self.assertEqual(self.post("/routes/bot/resume", {"reason": "fixed", "actor": "bob"})[0], 200)
        self.assertEqual(self.post("/routes/wallet/rollback", {"reason": "pager", "actor": "carol"})[0], 200)
        self.assertEqual(self.post("/routes/wallet/resume", {"reason": "back"})[0], 200)
        self.assertEqual(self.post("/routes/wallet/promote", {"reason": "done"})[0], 200)
        self.assertEqual(self.post("/pools/col/swap", {"to": "green", "reason": "v2"})[0], 200)
        self.gw.send_signal(signal.SIGHUP)
        def reloaded():
            with open(self.gw.log_path) as f:
                return "reload: new requests" in f.read()
        wait_for(reloaded, what="reload")
        self.wait_drained()
        s, h, b = curl("http://127.0.0.1:%d/metrics" % self.admin)
        for name in ("switchyard_postgres_connected 1", "switchyard_journal_pending{stream=\"events\"} 0",
                     "switchyard_journal_dropped_total{stream=\"windows\"} 0", "switchyard_record_inserted_total"):
            self.assertIn(name, b.decode())
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "metrics"], input=b, capture_output=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.env.stop(self.gw)

        def one(kind, route=None, where=""):
            sql = ("SELECT id, instance, actor, reason, before::text, after::text, stats::text FROM events "
                   "WHERE kind = '%s'" % kind)
            if route:
                sql += " AND route = '%s'" % route
            rows = self.rows(sql + where + " ORDER BY at")
            self.assertTrue(rows, "no %s event%s" % (kind, " for " + route if route else ""))
            r = rows[0]
            return {"id": r[0], "instance": r[1], "actor": r[2], "reason": r[3],
                    "before": json.loads(r[4]) if r[4] else None, "after": json.loads(r[5]) if r[5] else None,
                    "stats": json.loads(r[6]) if r[6] else None}

        e = one("flag_change", "wallet", " AND reason = 'ramp to 30'")
        self.assertEqual(e["actor"], "alice")
        self.assertEqual((e["before"]["percent_bp"], e["after"]["percent_bp"]), (5000, 3000))
        self.assertRegex(e["id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        self.assertRegex(e["instance"], r".+/\d+$")
        e = one("flag_change", "wallet", " AND reason = 'qa'")
        self.assertIn("qa-1", e["after"]["test_users"])
        self.assertNotIn("qa-1", e["before"]["test_users"])
        e = one("hand_edit", "wallet")
        self.assertEqual((e["before"]["percent_bp"], e["after"]["percent_bp"]), (3000, 4000))
        self.assertEqual(e["actor"], "hand")
        self.assertEqual(e["after"]["actor"], "hand")
        e = one("refused_edit", "wallet")
        self.assertEqual(e["after"], {"field": "percent_bp", "value": "lots", "in_force": "percent_bp=4000"})
        self.assertIn("percent_bp", e["reason"])
        e = one("warning", "wallet")
        self.assertIn("warn_error_rate", e["reason"])
        self.assertGreater(e["stats"]["new"]["errors"], 0)
        self.assertIn("legacy", e["stats"])
        e = one("trip", "bot")
        self.assertEqual(e["actor"], "switchyard")
        self.assertEqual(e["stats"]["rule"], "max_error_rate")
        self.assertEqual(e["before"]["state"], "ramping")
        self.assertEqual((e["after"]["state"], e["after"]["percent_bp"]), ("tripped", 0))
        # min_requests (20) for the window rule, or the since-change evidence path first,
        # which acts on 5 bad outcomes or more when they are significant (every one failed)
        self.assertGreaterEqual(e["stats"]["new"]["requests"], 5)
        self.assertEqual(e["stats"]["new"]["errors"], e["stats"]["new"]["requests"])
        self.assertGreater(e["stats"]["legacy"]["requests"], 0)
        self.assertEqual(e["stats"]["legacy"]["errors"], 0)
        for side in ("legacy", "new"):
            for k in ("error_rate", "p50_ms", "p95_ms", "p99_ms"):
                self.assertIn(k, e["stats"][side])
        e = one("resume", "bot")
        self.assertEqual((e["actor"], e["reason"]), ("bob", "fixed"))
        self.assertEqual((e["before"]["state"], e["after"]["state"]), ("tripped", "ramping"))
        e = one("rollback", "wallet")
        self.assertEqual((e["actor"], e["reason"]), ("carol", "pager"))
        e = one("promote", "wallet")
        self.assertEqual(e["after"]["state"], "promoted")
        e = one("swap", "col")
        self.assertEqual((e["before"]["active"], e["after"]["active"], e["reason"]), ("blue", "green", "v2"))
        one("reload")
        one("start")
        e = one("stop")
        self.assertIn("signal 15", e["reason"])
        # each trip is recorded once, not again when its Redis write lands
        self.assertEqual(self.rows("SELECT count(*) FROM events WHERE route = 'bot' AND kind IN ('trip', "
                                   "'rollback')"), [["1"]])
        # windows: a row per route x variant per period, with the numbers
        rows = self.rows("SELECT route, variant, sum(requests), sum(errors), max(p99_ms) FROM windows "
                         "GROUP BY route, variant ORDER BY route, variant")
        got = {(r[0], r[1]): (int(r[2]), int(r[3]), float(r[4])) for r in rows}
        self.assertEqual(sum(v[0] for k, v in got.items() if k[0] == "wallet"), 200)
        self.assertEqual(got[("bot", "new")][1], got[("bot", "new")][0])  # every request on new failed
        self.assertEqual(got[("bot", "legacy")][1], 0)
        self.assertGreater(got[("wallet", "new")][2], 0)
        self.assertEqual(self.rows("SELECT max(version) FROM schema_version"), [["1"]])

    # --- 1,000 events while PostgreSQL is down ---------------------------------------

    def test_thousand_events_while_postgres_is_down_arrive_exactly_once(self):
        self.env.allowed.append(r"postgres:")
        self.pg.stop()
        self.start(conninfo=self.pg.conninfo() + " password=hunter2-never-logged")
        t0 = time.time()
        for i in range(1000):
            code, body = self.post("/routes/wallet/percent", {"percent_bp": 1000 + i, "reason": "bulk %d" % i})
            self.assertEqual(code, 200, body)
        made = time.time() - t0
        rec = self.record()
        self.assertFalse(rec["connected"])
        self.assertGreaterEqual(rec["journal"]["events_written"], 1000)
        code, body = http("GET", "http://127.0.0.1:%d/events" % self.admin, token=None)
        self.assertEqual(code, 503)
        self.assertIn("unavailable", json.loads(body)["reason"])
        self.pg.start()
        t1 = time.time()
        self.wait_ready()
        self.wait_drained(60)
        caught_up = time.time() - t1
        rows = self.rows("SELECT count(*), count(DISTINCT id), count(DISTINCT (after->>'percent_bp')) FROM events "
                         "WHERE kind = 'flag_change' AND reason LIKE 'bulk %'")
        self.assertEqual(rows, [["1000", "1000", "1000"]])
        self.assertEqual(self.rows("SELECT min((after->>'percent_bp')::int), max((after->>'percent_bp')::int) "
                                   "FROM events WHERE reason LIKE 'bulk %'"), [["1000", "1999"]])
        print("\n1000 changes made in %.2f s with PostgreSQL down; all in PostgreSQL %.2f s after it came back"
              % (made, caught_up))
        # the password is nowhere: not in the log, not in /status
        with open(self.gw.log_path) as f:
            self.assertNotIn("hunter2", f.read())
        self.assertNotIn("hunter2", json.dumps(self.try_status()))

    # --- SIGKILL between the journal and the insert ------------------------------------

    def test_kill_between_journal_and_insert_then_restart(self):
        self.env.allowed.append(r"postgres:")
        self.pg.stop()
        gw = self.start()
        self.assertEqual(self.post("/routes/wallet/percent", {"percent_bp": 1234, "reason": "before the kill"})[0],
                         200)
        wait_for(lambda: self.record()["journal"]["events_durable"] >= 2, what="the journal")  # start + change
        gw.killed = True
        gw.kill()
        gw.wait()
        backup = self.env.path("journal-at-kill")
        shutil.copytree(self.journal, backup)
        self.pg.start()
        self.start(name="gw2")
        self.wait_ready()
        self.wait_drained()
        self.assertEqual(self.rows("SELECT count(*) FROM events WHERE reason = 'before the kill'"), [["1"]])
        # killed after the insert but before the ack reached the disk: the same records
        # are replayed, and still stored once
        gw2 = self.gw
        gw2.killed = True
        gw2.kill()
        gw2.wait()
        shutil.rmtree(self.journal)
        shutil.copytree(backup, self.journal)
        self.start(name="gw3")
        self.wait_ready()
        self.wait_drained()
        self.assertEqual(self.rows("SELECT count(*) FROM events WHERE reason = 'before the kill'"), [["1"]])
        self.assertEqual(self.rows("SELECT count(*) - count(DISTINCT id) FROM events"), [["0"]])
        with open(gw2.log_path) as f:
            self.assertRegex(f.read(), r"journal .*: 2 events records from an earlier run wait for PostgreSQL")

    def test_an_answered_change_survives_sigkill(self):
        """A 200 from the admin API means the change's event is fsync'd in the journal:
        a SIGKILL right after the answer loses nothing."""
        self.env.allowed.append(r"postgres:")
        self.pg.stop()
        for n in range(5):
            gw = self.start(name="gw%d" % n)
            code, _ = self.post("/routes/wallet/percent", {"percent_bp": 100 + n, "reason": "acked %d" % n})
            self.assertEqual(code, 200)
            gw.killed = True
            gw.kill()
            gw.wait()
        self.pg.start()
        self.start(name="gw-last")
        self.wait_ready()
        self.wait_drained()
        rows = self.rows("SELECT reason, count(*) FROM events WHERE reason LIKE 'acked %' GROUP BY reason "
                         "ORDER BY reason")
        self.assertEqual(rows, [["acked %d" % n, "1"] for n in range(5)])

    # --- PostgreSQL stopped under load ---------------------------------------------------

    def wrk(self, seconds):
        # --timeout: a slow answer on a loaded box is not a socket error (wrk's default is 2 s).
        out = subprocess.run(["wrk", "-t2", "-c32", "-d%ds" % seconds, "--timeout", "30s", "--latency", "-H", "X-User-Id: u1",
                              "http://127.0.0.1:%d/w/x" % self.port], capture_output=True, text=True,
                             timeout=seconds + 30).stdout
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        return {"requests": reqs, "non2xx": int(bad.group(1)) if bad else 0,
                "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0,
                "p99_ms": float(p99.group(1)) * scale}

    @unittest.skipUnless(shutil.which("wrk"), "wrk is not installed")
    def test_postgres_stopped_under_load(self):
        self.env.allowed.append(r"postgres:")
        self.start()
        self.wait_ready()
        # the wallet route's new side fails 30 %: a healthy route instead, all on legacy
        self.assertEqual(self.post("/routes/wallet/percent", {"percent_bp": 0, "reason": "legacy only"})[0], 200)
        up = self.wrk(4)
        stop_changes = threading.Event()

        def changes():  # events keep coming while PostgreSQL is gone
            i = 0
            while not stop_changes.is_set():
                self.post("/routes/bot/test-users", {"add": ["load-%d" % i], "reason": "under load"})
                i += 1
                time.sleep(0.05)

        t = threading.Thread(target=changes)
        t.start()
        threading.Timer(1.0, lambda: self.pg.stop("immediate")).start()
        down = self.wrk(4)
        stop_changes.set()
        t.join()
        wait_for(lambda: not self.record()["connected"], what="the writer to see PostgreSQL gone")
        self.assertFalse(self.record()["connected"])
        print("\nPostgreSQL up:   %(requests)d requests, p99 %(p99_ms).2f ms, %(non2xx)d non-2xx, "
              "%(socket_errors)d socket errors" % up)
        print("PostgreSQL down: %(requests)d requests, p99 %(p99_ms).2f ms, %(non2xx)d non-2xx, "
              "%(socket_errors)d socket errors" % down)
        self.assertEqual((down["non2xx"], down["socket_errors"]), (0, 0))
        self.assertEqual((up["non2xx"], up["socket_errors"]), (0, 0))
        # A request never waits for PostgreSQL (no worker talks to it); the p99s
        # above are figures to read, not a timed assertion, which a busy machine
        # would break.
        self.pg.start()
        self.wait_ready()
        self.wait_drained(60)
        n = int(self.rows("SELECT count(*) FROM events WHERE reason = 'under load'")[0][0])
        self.assertGreater(n, 10)
        self.assertEqual(self.rows("SELECT count(*) - count(DISTINCT id) FROM events"), [["0"]])

    # --- the journal at its bound ------------------------------------------------------------

    def test_journal_at_its_bound(self):
        self.pg.stop()
        self.env.allowed.extend([r"postgres:", r"journal .*: (at its bound|full of events)",
                                 r"this event is NOT journaled"])
        self.start(extra_pg=", journal_max: 16KiB")
        # windows rows first: traffic on two routes for a few periods
        for _ in range(4):
            self.load("/w/x", 20)
            self.load("/speech", 10)
            time.sleep(1.0)
        wait_for(lambda: self.record()["journal"]["windows_written"] >= 6, what="windows rows")
        # then events, until the journal is full of them
        made = 0
        while self.record()["journal"]["events_refused"] == 0 and made < 200:
            self.assertEqual(self.post("/routes/wallet/test-users",
                                       {"add": ["bound-%03d" % made], "reason": "bound %03d" % made})[0], 200)
            made += 1
        # The journal thread refuses (counts, then logs) the events still in
        # its queue: read the counter and the log once they agree twice running.
        prev = [None]

        def settled():
            rec = self.record()["journal"]
            with open(self.gw.log_path) as f:
                log = f.read()
            refused = set(re.findall(r"this event is NOT journaled, it is only in this log: .*\"reason\":\"(bound \d+)\"",
                                     log))
            key = (rec["events_refused"], len(refused))
            ok = key[0] == key[1] and prev[0] == key
            prev[0] = key
            return (rec, log, refused) if ok else None
        rec, log, refused = wait_for(settled, what="the journal's refusals counted and logged", every=0.3)
        self.assertLessEqual(rec["bytes"], 16384)
        self.assertGreater(rec["windows_dropped"], 0, rec)   # the oldest windows went first
        self.assertGreater(rec["events_refused"], 0, rec)     # then events are refused, loudly
        self.assertIn("dropped the oldest", log)
        self.assertEqual(len(refused), rec["events_refused"])
        self.pg.start()
        self.wait_ready()
        self.wait_drained(60)
        stored = {r[0] for r in self.rows("SELECT reason FROM events WHERE reason LIKE 'bound %'")}
        # every event is either in PostgreSQL or whole in the log: none lost silently
        self.assertEqual(stored | refused, {"bound %03d" % i for i in range(made)})
        self.assertEqual(stored & refused, set())
        print("\njournal bound 16 KiB: %d windows rows dropped first, %d of %d events refused (logged whole)"
              % (rec["windows_dropped"], rec["events_refused"], made))

    # --- reading back: /events, /windows, ctl events ---------------------------------------------

    def test_reading_back_and_filters(self):
        self.start()
        self.wait_ready()
        for bp, reason in ((2000, "twenty"), (3000, "thirty")):
            self.assertEqual(self.post("/routes/wallet/percent", {"percent_bp": bp, "reason": reason})[0], 200)
            time.sleep(0.05)
        self.assertEqual(self.post("/routes/bot/rollback", {"reason": "bot down"})[0], 200)
        self.load("/w/x", 20)
        time.sleep(1.5)  # a windows period passes
        self.load("/w/x", 5)
        self.wait_drained()
        code, ev = self.events("?route=wallet")
        self.assertEqual(code, 200)
        # (the comparator may also have warned about wallet's new side by now: its backend fails)
        self.assertEqual([e["reason"] for e in ev if e["kind"] != "warning"], ["thirty", "twenty"])  # newest first
        self.assertTrue(all(e["route"] == "wallet" for e in ev))
        code, ev = self.events("?kind=rollback")
        self.assertEqual([(e["route"], e["kind"], e["reason"]) for e in ev], [("bot", "rollback", "bot down")])
        code, ev = self.events("?limit=2")
        self.assertEqual(len(ev), 2)
        self.assertGreaterEqual(ev[0]["at"], ev[1]["at"])
        self.assertEqual(ev[0]["reason"], "bot down")
        code, ev = self.events("?since=1h&kind=start")
        self.assertEqual(len(ev), 1)
        code, ev = self.events("?since=2099-01-01T00:00:00Z")
        self.assertEqual((code, ev), (200, []))
        code, ev = self.events("?route=no-such-route")
        self.assertEqual((code, ev), (200, []))
        for bad, why in (("?since=yesterday", "since must be"), ("?limit=0", "limit"), ("?limit=5000", "limit"),
                         ("?route=%zz", "malformed"), ("?since=2026-13-45T99:00:00Z", "bad query parameter")):
            code, body = self.events(bad)
            self.assertEqual(code, 400, bad)
            self.assertIn(why, body["reason"], bad)
        def windows():
            code, body = http("GET", "http://127.0.0.1:%d/windows?route=wallet&since=10m" % self.admin, token=None)
            self.assertEqual(code, 200)
            w = json.loads(body)
            return w if sum(x["requests"] for x in w) == 25 else None
        w = wait_for(windows, what="the last period's windows rows")
        self.assertTrue(all(x["route"] == "wallet" for x in w))
        self.assertEqual({x["variant"] for x in w}, {"legacy", "new"})
        # the command line
        cfg = self.gw.config_path
        out = subprocess.run([BIN, "ctl", "-c", cfg, "events", "wallet", "--since", "1h"], capture_output=True,
                             text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        # (as above: the comparator's warnings about wallet's failing new side may be among them)
        lines = [l for i, l in enumerate(out.stdout.splitlines()) if i == 0 or l.split()[1:2] != ["warning"]]
        self.assertTrue(lines[0].startswith("AT"))
        self.assertIn("thirty", lines[1])
        self.assertIn("ramping 20.00% -> ramping 30.00%", lines[1])
        self.assertIn("twenty", lines[2])
        self.assertEqual(len(lines), 3)
        out = subprocess.run([BIN, "ctl", "-c", cfg, "--json", "events", "--kind", "rollback"], capture_output=True,
                             text=True, timeout=20)
        self.assertEqual([e["route"] for e in json.loads(out.stdout)], ["bot"])
        out = subprocess.run([BIN, "ctl", "-c", cfg, "events", "--since", "whenever"], capture_output=True,
                             text=True, timeout=20)
        self.assertEqual(out.returncode, 1)
        self.assertIn("since must be", out.stderr)
        out = subprocess.run([BIN, "ctl", "-c", cfg, "windows", "wallet"], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("wallet", out.stdout)

    # --- the connection from the standard PG* environment --------------------------------

    def test_connection_from_the_pg_environment(self):
        pw = self.env.path("pg.password")
        with open(pw, "w") as f:
            f.write("s3cret-from-a-file\n")
        self.legacy = self.env.start_backend("legacy")
        self.new = self.new2 = self.green = self.legacy
        self.r = self.env.start_redis()
        self.port, self.admin = free_port(), free_port()
        self.conninfo = ""
        text = self.config().replace('conninfo: "", ', "password_file: %s, " % pw)
        self.assertNotIn("conninfo", text)
        env = {"PGHOST": "127.0.0.1", "PGPORT": str(self.pg.port), "PGUSER": "switchyard",
               "PGDATABASE": "switchyard"}
        self.gw = self.env.start_gateway(text, self.port, extra_env=env)
        wait_for(lambda: self.try_status() is not None, what="admin")
        self.wait_ready()
        self.assertEqual(self.post("/routes/bot/percent", {"percent_bp": 100, "reason": "from env"})[0], 200)
        self.wait_drained()
        self.assertEqual(self.rows("SELECT count(*) FROM events WHERE reason = 'from env'"), [["1"]])
        with open(self.gw.log_path) as f:
            self.assertNotIn("s3cret", f.read())

    # --- migrate ----------------------------------------------------------------------------------

    def test_migrate_command(self):
        self.port, self.admin, self.legacy, self.new, self.new2, self.green = free_port(), free_port(), 1, 2, 3, 4

        class R:
            port = 1
        self.r = R()
        self.conninfo = self.pg.conninfo()
        cfg = self.env.write_config(self.config(), "migrate.yaml")
        out = subprocess.run([BIN, "migrate", "-c", cfg], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("schema at version 1", out.stdout)
        self.assertEqual(self.rows("SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                                   "('events', 'windows', 'schema_version')"), [["3"]])
        out = subprocess.run([BIN, "migrate", "-c", cfg], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0)  # twice is fine
        self.assertEqual(self.rows("SELECT count(*) FROM schema_version"), [["1"]])
        self.pg.stop()
        # migrate waits connect_timeout + query_timeout for PostgreSQL to answer
        quick = self.env.write_config(self.config(", connect_timeout: 500ms, query_timeout: 500ms"), "quick.yaml")
        out = subprocess.run([BIN, "migrate", "-c", quick], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 1)
        self.assertIn("migrate:", out.stderr)
        # a config without a postgres section, and a bad conninfo
        bad = self.env.write_config(self.config().replace('conninfo: "', 'conninfo: "nonsense '), "bad.yaml")
        out = subprocess.run([BIN, "check", "-c", bad], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 2)
        self.assertRegex(out.stderr, r"bad.yaml:\d+:\d+: postgres conninfo is not valid")


if __name__ == "__main__":
    main()

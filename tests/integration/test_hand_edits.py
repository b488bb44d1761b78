#!/usr/bin/env python3
"""Hand edits in Redis against real processes (redis-server, PostgreSQL, the
gateway, test backends, redis-cli): a bad or missing `version` never blocks a
write (admin rollback 200 and in Redis; an automatic trip lands in Redis with a
bounded number of compare-and-sets), a refused value logged/counted/recorded
once across many resyncs and shown in /status and `ctl status`, a key of the
wrong type refused, the test-user cap, a redis-cli swap to a colour that has
not passed its health checks refused, and a repeated hand edit recorded every
time, once, with two gateways on one Redis and one PostgreSQL."""
import json
import re
import subprocess
import time
import unittest
import urllib.request

from harness import BIN, SLOW, Client, Env, curl, free_port, main, wait_for
from harness import http as admin_http

TOKEN = "hand-token-0123456789abcdef"
KEY = "switchyard:route:nav"




def http(method, url, body=None, token=TOKEN, timeout=10):
    return admin_http(method, url, body, token, timeout)


class HandEdits(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.legacy = self.env.start_backend("legacy")
        self.blue = self.env.start_backend("blue")
        self.green = free_port()  # nothing listens: green never passes its probes
        self.r = self.env.start_redis()
        self.tok = self.env.path("token")
        with open(self.tok, "w") as f:
            f.write(TOKEN)
        self.pg = None
        self.gws = []

    def tearDown(self):
        self.env.close()

    def start(self, new_args=(), resync="1s", redis_extra="", trip="consecutive_errors: 5", name="gw", pg=False):
        if not hasattr(self, "new"):
            self.new = self.env.start_backend("new", args=list(new_args))
        port, admin = free_port(), free_port()
        pgline = ""
        if pg:
            pgline = 'postgres: {conninfo: "%s", journal: %s, window: 1s}\n' % (
                self.pg.conninfo(), self.env.path(name + ".journal"))
        cfg = """workers: 2
listen: [{address: 127.0.0.1:%(port)d}]
access_log: "off"
admin: {address: 127.0.0.1:%(admin)d, token_file: %(tok)s}
redis: {address: 127.0.0.1:%(redis)d, resync_interval: %(resync)s%(redis_extra)s}
%(pg)spools:
  legacy: {endpoints: [127.0.0.1:%(legacy)d]}
  new: {endpoints: [127.0.0.1:%(new)d]}
  stts:
    colors: {blue: [127.0.0.1:%(blue)d], green: [127.0.0.1:%(green)d]}
    active: blue
    health: {path: /health, interval: 200ms, timeout: 2s, rise: 2, fall: 10}
routes:
  - name: speech
    match: {path_prefix: /tts}
    legacy: stts
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 2500
    test_users: ["42"]
    expose_variant: true
    trip: {%(trip)s}
""" % dict(port=port, admin=admin, tok=self.tok, redis=self.r.port, resync=resync, redis_extra=redis_extra,
           pg=pgline, legacy=self.legacy, new=self.new, blue=self.blue, green=self.green, trip=trip)
        gw = self.env.start_gateway(cfg, port, name=name)
        gw.port, gw.admin = port, admin
        self.gws.append(gw)
        wait_for(lambda: self.try_status(gw) and self.try_status(gw)["redis"]["synced"], what="flags read")
        return gw

    def try_status(self, gw):
        try:
            code, body = http("GET", "http://127.0.0.1:%d/status" % gw.admin, token=None, timeout=10 * SLOW)
            return json.loads(body) if code == 200 else None
        except OSError:
            return None

    def status(self, gw):
        s = self.try_status(gw)
        self.assertIsNotNone(s)
        return s

    def route(self, gw, name="nav"):
        return [r for r in self.status(gw)["routes"] if r["name"] == name][0]

    def pool(self, gw, name="stts"):
        return [p for p in self.status(gw)["pools"] if p["name"] == name][0]

    def post(self, gw, path, body):
        return http("POST", "http://127.0.0.1:%d%s" % (gw.admin, path), body)

    def rcli(self, *args):
        return self.env.redis(self.r.port, *args)

    def hget(self, field, key=KEY):
        return self.rcli("HGET", key, field)

    def cmdstats(self):
        out = {}
        for line in self.rcli("INFO", "commandstats").splitlines():
            m = re.match(r"cmdstat_(\w+):calls=(\d+)", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def log(self, gw):
        with open(gw.log_path, errors="replace") as f:
            return f.read()

    def wait_syncs(self, gw, n):
        s0 = self.status(gw)["redis"]["syncs"]
        wait_for(lambda: self.status(gw)["redis"]["syncs"] >= s0 + n, what="%d resyncs" % n)

    # --- issue 11 item 1: a bad or missing version --------------------------------------

    def test_bad_and_missing_version_never_block_a_rollback(self):
        gw = self.start()
        self.env.allowed.append(r"refused")
        for breaker in (("HSET", KEY, "version", "abc"), ("HDEL", KEY, "version")):
            self.assertEqual(self.post(gw, "/routes/nav/resume", {"reason": "again"})[0] in (200, 409), True)
            wait_for(lambda: self.hget("state") == "ramping", what="ramping in Redis")
            self.rcli(*breaker)
            wait_for(lambda: self.status(gw)["redis"]["syncs"] > 0, what="a sync")
            self.wait_syncs(gw, 1)
            code, body = self.post(gw, "/routes/nav/rollback", {"reason": "test %s" % breaker[0]})
            self.assertEqual(code, 200, body)
            self.assertEqual(self.hget("state"), "tripped")
            self.assertRegex(self.hget("version"), r"^\d+$")  # repaired by the write
            self.assertEqual(self.route(gw)["state"], "tripped")
        # and a percent change after a bad version too
        self.assertEqual(self.post(gw, "/routes/nav/resume", {"reason": "r"})[0], 200)
        self.rcli("HSET", KEY, "version", "x1")
        self.wait_syncs(gw, 1)
        code, body = self.post(gw, "/routes/nav/percent", {"percent_bp": 1234, "reason": "after a bad version"})
        self.assertEqual(code, 200, body)
        self.assertEqual(self.hget("percent_bp"), "1234")

    def test_trip_with_a_bad_version_lands_in_redis_with_bounded_writes(self):
        gw = self.start(new_args=["--error-rate", "1"])
        self.env.allowed.append(r"refused|trip|tripped|rolled back")
        self.rcli("HSET", KEY, "version", "abc")
        self.wait_syncs(gw, 1)
        before = self.cmdstats()
        c = Client(gw.port)
        t0 = time.time()
        while self.route(gw)["state"] != "tripped" and time.time() - t0 < 20 * SLOW:
            c.get("/x", {"X-User-Id": "42"})  # a test user: on new, which fails every request
        c.close()
        self.assertEqual(self.route(gw)["state"], "tripped")
        t1, mid = time.time(), self.cmdstats()
        self.wait_syncs(gw, 1)
        t2, end = time.time(), self.cmdstats()
        print("\ntrip with version=abc: %.0f compare-and-set scripts/s in Redis over the resync after the trip"
              % ((end.get("eval", 0) - mid.get("eval", 0) - 1) / (t2 - t1)), flush=True)
        wait_for(lambda: self.hget("state") == "tripped", what="the trip in Redis")
        self.assertRegex(self.hget("version"), r"^\d+$")
        self.assertEqual(self.hget("actor"), "switchyard")
        # two more resyncs: nothing keeps writing
        self.wait_syncs(gw, 2)
        after = self.cmdstats()
        # every compare-and-set script starts with an HGET of the version (reads use HGETALL/SCARD)
        cas = after.get("hget", 0) - before.get("hget", 0)
        evals = after.get("eval", 0) - before.get("eval", 0)
        print("\ntrip with version=abc: %d compare-and-set HGETs, %d EVALs (reads included) until two resyncs "
              "after the trip landed" % (cas, evals), flush=True)
        self.assertLessEqual(cas, 10)
        time.sleep(0.5 * SLOW)  # bounded: measure that nothing is still running
        self.assertEqual(self.cmdstats().get("hset", 0), after.get("hset", 0))

    # --- issue 10 item 4, issue 11 item 7: refused once, shown, wrong type, hand actor ---

    def test_refused_value_logged_and_counted_once_across_resyncs(self):
        gw = self.start(resync="200ms")
        self.env.allowed.append(r"refused")
        self.rcli("HSET", KEY, "percent_bp", "lots")
        wait_for(lambda: self.status(gw)["redis"]["refused_edits"] == 1, what="the refusal")
        self.wait_syncs(gw, 8)
        st = self.status(gw)
        self.assertEqual(st["redis"]["refused_edits"], 1)
        self.assertEqual(len(re.findall(r'refused percent_bp="lots"', self.log(gw))), 1)
        ref = self.route(gw)["refused"]
        self.assertEqual(len(ref), 1, ref)
        self.assertEqual((ref[0]["field"], ref[0]["value"], ref[0]["in_force"]), ("percent_bp", "lots",
                                                                                  "percent_bp=2500"))
        self.assertIn("basis points", ref[0]["why"])
        self.assertRegex(ref[0]["since"], r"^\d{4}-\d\d-\d\dT")
        out = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % gw.admin, "status"], capture_output=True,
                             text=True, timeout=20).stdout
        self.assertRegex(out, r'REFUSED percent_bp="lots" since \S+: .*basis points.*; in force: percent_bp=2500')
        # a second, different refused edit counts once more; a fix clears the list
        self.rcli("HSET", KEY, "percent_bp", "more")
        wait_for(lambda: self.status(gw)["redis"]["refused_edits"] == 2, what="the second refusal")
        self.wait_syncs(gw, 4)
        self.assertEqual(self.status(gw)["redis"]["refused_edits"], 2)
        self.rcli("HSET", KEY, "percent_bp", "3000")
        wait_for(lambda: self.route(gw)["percent_bp"] == 3000 and self.route(gw)["refused"] == [], what="fixed")
        # the log line of a hand edit names the hand, not the last gateway writer
        self.assertRegex(self.log(gw), r"route nav now state=ramping percent_bp=3000 .*by hand\)")

    def test_key_of_the_wrong_type_is_refused_once(self):
        gw = self.start(resync="200ms")
        self.env.allowed.append(r"refused")
        self.rcli("DEL", KEY)
        self.rcli("SET", KEY, "x")
        wait_for(lambda: self.status(gw)["redis"]["refused_edits"] == 1, what="the refusal")
        self.wait_syncs(gw, 5)
        self.assertEqual(self.status(gw)["redis"]["refused_edits"], 1)
        self.assertEqual(len(re.findall(r'refused key="\(not a hash\)" on switchyard:route:nav', self.log(gw))), 1)
        r = self.route(gw)
        self.assertEqual((r["state"], r["percent_bp"]), ("ramping", 2500))
        self.assertEqual(r["refused"][0]["field"], "key")
        self.rcli("DEL", KEY)  # gone: seeded again from what is in force
        wait_for(lambda: self.hget("state") == "ramping" and self.route(gw)["refused"] == [], what="re-seeded")

    # --- issue 11 item 6: the test-user cap ----------------------------------------------

    def test_test_user_set_over_the_cap_is_refused_and_the_previous_stays(self):
        gw = self.start(resync="300ms", redis_extra=", max_test_users: 50")
        self.env.allowed.append(r"refused")
        skey = KEY + ":test_users"
        self.rcli("SADD", skey, *["ok-%d" % i for i in range(30)])
        wait_for(lambda: self.route(gw)["test_users_count"] == 31, what="31 test users")
        self.rcli("SADD", skey, *["big-%d" % i for i in range(100)])
        wait_for(lambda: self.status(gw)["redis"]["refused_edits"] == 1, what="the cap refusal")
        self.wait_syncs(gw, 3)
        r = self.route(gw)
        self.assertEqual(r["test_users_count"], 31)
        self.assertEqual(self.status(gw)["redis"]["refused_edits"], 1)
        self.assertEqual((r["refused"][0]["field"], r["refused"][0]["value"]), ("test_users", "131 members"))
        self.assertIn("max_test_users (50)", r["refused"][0]["why"])
        c = Client(gw.port)
        self.assertEqual(c.variant("ok-3"), "new")
        c.close()
        # the admin API keeps the cap too
        code, body = self.post(gw, "/routes/nav/test-users", {"add": ["x%d" % i for i in range(60)], "reason": "r"})
        self.assertEqual(code, 400, body)

    # --- issue 10 item 3: a redis-cli swap to a colour that is down -----------------------

    def test_redis_cli_swap_to_a_down_colour_is_refused(self):
        gw = self.start(resync="200ms")
        self.env.allowed.append(r"refused|health|swap")
        wait_for(lambda: self.rcli("HGET", "switchyard:pool:stts", "active") == "blue", what="the pool seeded")
        self.rcli("HSET", "switchyard:pool:stts", "active", "green")
        wait_for(lambda: self.status(gw)["redis"]["refused_edits"] == 1, what="the refusal")
        self.wait_syncs(gw, 5)
        p = self.pool(gw)
        self.assertEqual(p["active"], "blue")
        self.assertEqual(self.status(gw)["redis"]["refused_edits"], 1)
        self.assertEqual((p["refused"][0]["field"], p["refused"][0]["value"], p["refused"][0]["in_force"]),
                         ("active", "green", "active=blue"))
        self.assertIn("has not passed", p["refused"][0]["why"])
        lines = [l for l in self.log(gw).splitlines() if 'refused active="green"' in l]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(" error ", lines[0])
        s, h, b = curl("http://127.0.0.1:%d/tts/x" % gw.port)
        self.assertEqual((s, h.get("x-backend")), (200, "blue"))
        out = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % gw.admin, "status"], capture_output=True,
                             text=True, timeout=20).stdout
        self.assertRegex(out, r'REFUSED active="green" since \S+: swap refused: green endpoint .* has not passed')
        # back to blue by hand: the refusal is gone
        self.rcli("HSET", "switchyard:pool:stts", "active", "blue")
        wait_for(lambda: self.pool(gw)["refused"] == [], what="the refusal cleared")

    # --- issue 11 item 4: every hand edit recorded once, two instances -------------------

    def test_repeated_hand_edits_recorded_once_each_with_two_instances(self):
        self.pg = self.env.start_postgres()
        a = self.start(pg=True, name="gwa")
        b = self.start(pg=True, name="gwb")
        for gw in (a, b):
            wait_for(lambda: self.status(gw)["record"]["schema_ready"], what="the schema")
        values = [4100, 4200, 4100, 4200, 4100]
        adopted = []
        for v in values:
            v0 = int(self.hget("version"))
            self.rcli("HSET", KEY, "percent_bp", str(v))
            wait_for(lambda: all(self.route(gw)["percent_bp"] == v for gw in (a, b)), what="both instances on %d" % v)
            # adopted: a new version stamped with actor=hand, seen by both (before the next edit)
            try:
                wait_for(lambda: int(self.hget("version") or 0) > v0 and self.hget("actor") == "hand" and
                         all(self.route(gw)["version"] > v0 for gw in (a, b)), timeout=20, what="the edit adopted")
                adopted.append(True)
            except AssertionError:
                adopted.append(False)  # checked below, after counting what the record holds

        def drained(gw):
            j = self.status(gw)["record"]["journal"]
            return j["events_acked"] >= j["events_written"]
        for gw in (a, b):
            wait_for(lambda: drained(gw), what="the journal drained")
        rows = self.pg.psql("SELECT after->>'percent_bp', after->>'version', actor FROM events "
                            "WHERE kind = 'hand_edit' AND route = 'nav' ORDER BY (after->>'version')::int")
        print("\nhand edits 4100, 4200, 4100, 4200, 4100 with two instances: %d hand_edit events" % len(rows),
              flush=True)
        self.assertEqual([int(r[0]) for r in rows], values, rows)
        self.assertEqual(adopted, [True] * 5)
        self.assertEqual({r[2] for r in rows}, {"hand"})
        self.assertEqual(len({r[1] for r in rows}), 5)
        # a refused value, seen by both instances at every resync: one refused_edit event
        self.env.allowed.append(r"refused")
        self.rcli("HSET", KEY, "percent_bp", "lots")
        for gw in (a, b):
            wait_for(lambda: self.route(gw)["refused"] != [], what="the refusal")
        for gw in (a, b):
            self.wait_syncs(gw, 3)
            wait_for(lambda: drained(gw), what="the journal drained")
        n = self.pg.scalar("SELECT count(*) FROM events WHERE kind = 'refused_edit' AND route = 'nav'")
        print("refused value seen by two instances over 3+ resyncs each: %s refused_edit events" % n, flush=True)
        self.assertEqual(n, "1")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Chaos under continuous load: three gateway instances share one Redis (a master
and a replica under two redis-sentinels) and one PostgreSQL (a primary and a
streaming standby, reached through a multi-host conninfo with
target_session_attrs=read-write). Client threads send keep-alive requests to all
three (a route over two pools of two endpoints each, and a route on a blue-green
pool) while, one after the other:

  1. the Redis master is SIGKILLed (Sentinel promotes the replica; the gateways
     follow), then restarted as a replica of the new master;
  2. the PostgreSQL primary is stopped and the standby promoted;
  3. one legacy endpoint and one new endpoint are SIGKILLed, then restarted;
  4. the blue-green pool is swapped to green through the admin API;
  5. one instance reloads a changed config (SIGHUP);
  6. one instance is upgraded (deploy/upgrade.sh: switchyard --takeover);
  7. a hand edit in Redis.
Flag edits through the admin API are made before, during and after each fault.

Servable, precisely: every request the client sent is counted as it ended (no
client-side retry). A request counts as a failure unless it ended with a whole
200 response, with one exception, the only case the gateway cannot serve: the
access log of the instance that took it (matched by the request's X-Request-Id)
says it was written to an endpoint that this test SIGKILLed and that endpoint
died before its answer was complete (error "reset", upstream = the killed
endpoint). Either the answer had begun (its head already relayed: the client
sees a truncated response, as it must) or the request was on a fresh upstream
connection (a backend that took a request and died may have acted on it, so the
gateway answers 502 rather than send it again). Everything else must be served:
requests on reused upstream connections that die with nothing back are retried,
connect failures go to the pool's other endpoint, Redis and PostgreSQL are never
on the data path, a swap drains the old colour, a reload and an upgrade hand
over without dropping a connection. Every client-side error (refused or reset
connection to the gateway, timeout) is a failure. The test asserts zero
failures.

At the end: every edit answered 200 (flag changes, the swap, the hand edit) is
in PostgreSQL exactly once (its unique reason, and no id twice); an edit refused
with 503 (no Redis master yet) is in it at most once; no other answer than 200
or 503. No leaked file descriptors: /proc/PID/fd of each instance that lived
through the faults (the two not upgraded) counted after a warm-up and again once
things settled, allowing FD_SLACK more (pooled upstream keep-alive connections:
their number depends on how many exchanges overlapped, up to one per concurrent
client per endpoint per worker, and on the Redis/PostgreSQL reconnects that are
still in progress). RSS back near its baseline: at most RSS_SLACK_KIB above the
warm-up figure (allocator arenas keep some memory after peaks; three times that
in sanitizer builds, whose quarantine holds freed memory).

SY_LONG=1 holds each phase ten times longer and repeats the Redis failover and
the endpoint kills three times."""
import http.client as httpclient
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import BIN, BAD_LOG, ROOT, SLOW, Env, failover_conninfo, free_port, main, wait_for
from harness import http as admin_http

TOKEN = "chaos-token-0123456789abcdef"
NAME = "symaster"
LONG = os.environ.get("SY_LONG", "") not in ("", "0")
HOLD = 10 if LONG else 1            # requests per phase, relative
ROUNDS = 3 if LONG else 1           # Redis failovers and endpoint kills
THREADS = 6
FD_SLACK = 24
# ASan keeps freed memory in its quarantine (up to 256 MiB by default): more room there,
# and the quarantine capped at 16 MiB for these gateways. With the default the
# quarantine alone grew by 20-25 MiB over a run, and RSS by 46-54 MiB against this
# 48 MiB slack (run alone as well as beside a CPU hog); capped, by about 27 MiB.
RSS_SLACK_KIB = 16 * 1024 * (3 if harness.SANITIZED else 1)
ASAN_ENV = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS") or "detect_leaks=1:abort_on_error=0") +
            ":quarantine_size_mb=16"} if harness.SANITIZED else None


def http(method, url, body=None, token=TOKEN, timeout=10):
    return admin_http(method, url, body, token, timeout)


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))


class Load:
    """THREADS client threads, two per instance, keep-alive (a new connection every
    25 requests), no retries; every request carries its own X-Request-Id."""

    def __init__(self, ports):
        self.ports = ports
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = []   # (instance index, request id, status or error text)
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(THREADS)]
        for t in self.threads:
            t.start()

    def run(self, k):
        inst = k % len(self.ports)
        port = self.ports[inst]
        conn = None
        i = 0
        while not self.stop.is_set():
            i += 1
            if conn is None or i % 25 == 0:
                if conn is not None:
                    conn.close()
                conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30 * SLOW)
            rid = "chaos-%d-%d" % (k, i)
            path = "/speech/x" if i % 4 == 0 else "/x"
            try:
                conn.request("GET", path, headers={"X-User-Id": "u%d" % (i % 200), "X-Request-Id": rid})
                r = conn.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append((inst, rid, r.status))
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failed.append((inst, rid, repr(e)))
                conn.close()
                conn = None
            time.sleep(0.001)
        if conn is not None:
            conn.close()

    def total(self):
        with self.lock:
            return self.ok + len(self.failed)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


class Chaos(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.upgraded_pid = None
        # provoked on purpose: a master gone, the primary gone, endpoints killed
        self.env.allowed += [r"redis", r"sentinel", r"postgres:", r"health:", r"upstream", r"connect"]
        self.made = {}        # reason -> admin answer code
        self.killed = set()   # "127.0.0.1:port" of endpoints SIGKILLed
        self.backend_procs = {}

    def tearDown(self):
        if self.upgraded_pid:
            try:
                os.kill(self.upgraded_pid, signal.SIGTERM)
                wait_for(lambda: not os.path.exists("/proc/%d" % self.upgraded_pid),
                         timeout=30, what="the upgraded instance stopped")
            except (ProcessLookupError, AssertionError):
                pass
        self.env.close()

    # --- the parts ------------------------------------------------------------

    def backend(self, name, port=None):
        port = self.env.start_backend(name, port=port)
        self.backend_procs[port] = self.env.procs[-1]
        return port

    def kill_backend(self, port):
        p = self.backend_procs[port]
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.killed.add("127.0.0.1:%d" % port)

    def config(self, k):
        g = self.gws[k]
        return """workers: 2
listen: [{address: 127.0.0.1:%(port)d}]
access_log: %(alog)s
admin: {address: 127.0.0.1:%(admin)d, token_file: %(tok)s}
redis: {sentinels: [127.0.0.1:%(s1)d, 127.0.0.1:%(s2)d], master: %(name)s, resync_interval: 1s,
        connect_timeout: 500ms, command_timeout: 1s}
postgres: {conninfo: "%(conninfo)s", journal: %(journal)s, window: 1s}
pools:
  legacy: {endpoints: [127.0.0.1:%(la)d, 127.0.0.1:%(lb)d]}
  new: {endpoints: [127.0.0.1:%(na)d, 127.0.0.1:%(nb)d]}
  stts:
    colors: {blue: [127.0.0.1:%(blue)d], green: [127.0.0.1:%(green)d]}
    active: blue
    health: {path: /health, interval: 200ms, timeout: 1s, rise: 2, fall: 3}
routes:
  - name: speech
    match: {path_prefix: /speech}
    legacy: stts
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 5000
    trip: {enabled: false}
""" % dict(port=g["port"], admin=g["admin"], alog=g["alog"], tok=self.tok, s1=self.s1.port, s2=self.s2.port,
           name=NAME, conninfo=self.conninfo, journal=g["journal"], la=self.la, lb=self.lb, na=self.na,
           nb=self.nb, blue=self.blue, green=self.green)

    def status(self, k):
        try:
            code, body = http("GET", "http://127.0.0.1:%d/status" % self.gws[k]["admin"], token=None, timeout=5)
            return json.loads(body) if code == 200 else None
        except OSError:
            return None

    def all_status(self, cond):
        for k in range(3):
            st = self.status(k)
            if not st or not cond(st):
                return False
        return True

    def drained(self, st):
        r = st["record"]
        j = r["journal"]
        return r["connected"] and r["schema_ready"] and j["events_acked"] >= j["events_written"]

    def on_master(self, port):
        return lambda st: st["redis"]["connected"] and st["redis"]["synced"] and \
            st["redis"]["server"] == "127.0.0.1:%d" % port

    def edit(self, tag, n, ok_only=True):
        """n percent edits through the admin API, round robin over the instances,
        each with a unique reason."""
        for i in range(n):
            reason = "chaos %s %d" % (tag, i)
            k = len(self.made) % 3
            code, body = http("POST", "http://127.0.0.1:%d/routes/nav/percent" % self.gws[k]["admin"],
                              {"percent_bp": 4000 + len(self.made) % 2000, "reason": reason}, timeout=30 * SLOW)
            self.made[reason] = code
            if ok_only:
                self.assertEqual(code, 200, body)
            else:
                self.assertIn(code, (200, 503), body)

    def hold(self, n):
        """Lets the load run for n more requests (HOLD times more under SY_LONG)."""
        target = self.load.total() + n * HOLD
        wait_for(lambda: self.load.total() >= target, timeout=60 * HOLD, what="%d more requests" % n)

    # --- the test -------------------------------------------------------------

    def test_chaos_under_load(self):
        env = self.env
        t0 = time.time()
        self.la, self.lb = self.backend("legacy-a"), self.backend("legacy-b")
        self.na, self.nb = self.backend("new-a"), self.backend("new-b")
        self.blue, self.green = self.backend("blue"), self.backend("green")
        # Redis: a master, its replica, two sentinels
        # quorum 2: on a busy box one sentinel alone may take a slow master for dead and
        # fail over to a replica that has not synced yet (seen: the restarted, empty
        # old master promoted, the data lost)
        self.redis_group = env.start_sentinel_group(NAME, quorum=2)
        self.m, self.rep = self.redis_group.master, self.redis_group.replica
        self.s1, self.s2 = self.redis_group.sentinels
        # PostgreSQL: a primary and a streaming standby
        self.primary = env.start_postgres()
        self.standby = env.start_pg_standby(self.primary)
        self.conninfo = failover_conninfo(self.primary, self.standby)
        self.tok = env.path("token")
        with open(self.tok, "w") as f:
            f.write(TOKEN)
        # three instances
        self.gws = []
        for k in range(3):
            self.gws.append(dict(port=free_port(), admin=free_port(), alog=env.path("access-%d.log" % k),
                                 journal=env.path("journal-%d" % k)))
        for k in range(3):
            g = self.gws[k]
            g["proc"] = env.start_gateway(self.config(k), g["port"], name="gw%d" % k, extra_env=ASAN_ENV)
        wait_for(lambda: self.all_status(lambda st: st["redis"]["synced"] and st["record"]["schema_ready"]),
                 timeout=60, what="flags read and the schema ready on all three")
        wait_for(lambda: self.all_status(lambda st: all(e["good_probes"] >= 2 for p in st["pools"]
                                                        if p["name"] == "stts" for e in p["endpoints"])),
                 timeout=30, what="both colours healthy")
        self.edit("before", 5)

        self.load = Load([g["port"] for g in self.gws])
        try:
            self.hold(600)  # warm: upstream pools, buffers, the access log rings
            survivors = [self.gws[0]["proc"].pid, self.gws[1]["proc"].pid]
            fd0 = {pid: fds(pid) for pid in survivors}
            rss0 = {pid: rss_kib(pid) for pid in survivors}

            for rnd in range(ROUNDS):
                # 1. the Redis master dies; Sentinel promotes the replica
                old, new = self.m, self.rep
                old.send_signal(signal.SIGKILL)
                old.wait()
                self.edit("redis-gap %d" % rnd, 3, ok_only=False)
                wait_for(lambda: self.redis_group.master_port() == new.port, timeout=60, what="the replica promoted")
                wait_for(lambda: self.all_status(self.on_master(new.port)), timeout=60,
                         what="all three on the promoted master")
                self.edit("redis-after %d" % rnd, 3)
                # ... and comes back as a replica of the new master (same port)
                self.m = new
                # not a candidate for promotion until it holds the data (it starts empty)
                self.rep = env.start_redis(port=old.port, args=["--replicaof", "127.0.0.1", str(new.port),
                                                                "--replica-priority", "0"])
                try:
                    wait_for(lambda: "master_link_status:up" in env.redis(self.rep.port, "INFO", "replication"),
                             timeout=60, what="the old master replicating")
                except AssertionError:
                    print(env.redis(self.rep.port, "INFO", "replication"))
                    for port in (self.rep.port, self.m.port):
                        with open(env.path("redis-%d.log" % port), errors="replace") as f:
                            print("redis %d:\n%s" % (port, f.read()[-3000:]))
                    raise
                env.redis(self.rep.port, "CONFIG", "SET", "replica-priority", "100")
                wait_for(self.redis_group.knows, timeout=60, what="the sentinels see the restarted replica")
                self.hold(200)

                # 3. one legacy and one new endpoint die (each pool keeps another)
                self.kill_backend(self.la)
                self.hold(100)
                self.kill_backend(self.na)
                self.hold(200)
                self.la = self.backend("legacy-a", port=self.la)
                self.na = self.backend("new-a", port=self.na)
                self.hold(200)

            # 2. the PostgreSQL primary stops; the journal holds the gap; the standby is promoted
            self.primary.stop()
            self.edit("pg-gap", 5)
            self.hold(100)
            self.standby.promote()
            wait_for(lambda: self.all_status(self.drained), timeout=90, what="the writers on the promoted standby")
            self.edit("pg-after", 3)

            # 4. blue -> green
            code, body = http("POST", "http://127.0.0.1:%d/pools/stts/swap" % self.gws[1]["admin"],
                              {"to": "green", "reason": "chaos swap"})
            self.assertEqual(code, 200, body)
            self.made["chaos swap"] = code
            wait_for(lambda: self.all_status(lambda st: [p for p in st["pools"] if p["name"] == "stts"][0]["active"]
                                             == "green"), timeout=30, what="green on all three")
            self.hold(200)

            # 5. a reload on instance 0: a new route
            g0 = self.gws[0]
            with open(g0["proc"].config_path) as f:
                text = f.read()
            with open(g0["proc"].config_path, "w") as f:
                f.write(text.replace("routes:\n", "routes:\n  - name: extra\n    match: {path_prefix: /extra}\n"
                                                  "    legacy: legacy\n"))
            g0["proc"].send_signal(signal.SIGHUP)
            wait_for(lambda: any(r["name"] == "extra" for r in (self.status(0) or {}).get("routes", [])),
                     timeout=30, what="the reloaded config in force")
            self.hold(200)

            # 6. instance 2 upgraded in place (--takeover)
            g2 = self.gws[2]
            r = subprocess.run([os.path.join(ROOT, "deploy", "upgrade.sh"), str(g2["proc"].pid), BIN,
                                g2["proc"].config_path, env.path("gw2-upgraded.log")],
                               capture_output=True, text=True, timeout=300 * SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.upgraded_pid = int(re.search(r"upgraded: \d+ -> (\d+)", r.stdout).group(1))
            self.assertEqual(g2["proc"].wait(30 * SLOW), 0)
            self.hold(200)

            # 7. a hand edit in Redis: adopted and recorded once by one instance
            wait_for(lambda: self.all_status(lambda st: st["redis"]["synced"]), timeout=30, what="synced")
            env.redis(self.m.port, "HSET", "switchyard:route:nav", "percent_bp", "3333")
            wait_for(lambda: env.redis(self.m.port, "HGET", "switchyard:route:nav", "actor") == "hand",
                     timeout=30, what="the hand edit adopted")
            self.edit("after", 3)
            self.hold(200)
        finally:
            self.load.finish()

        # --- the accounts -----------------------------------------------------
        failures = self.servable_failures()
        # settle: journals drained into the promoted standby, pools quiet
        try:
            wait_for(lambda: self.all_status(self.drained), timeout=60, what="every journal drained")
        except AssertionError:
            for k in range(3):
                print("instance %d record: %s" % (k, json.dumps((self.status(k) or {}).get("record"))))
            raise
        # the fleet after it all: three live instances (the upgraded one under its new
        # id, the old id expired), the routes summed over them
        def fleet():
            code, body = http("GET", "http://127.0.0.1:%d/fleet" % self.gws[0]["admin"], token=None, timeout=5)
            return json.loads(body) if code == 200 else None
        live = sorted([self.gws[0]["proc"].pid, self.gws[1]["proc"].pid, self.upgraded_pid])
        try:
            wait_for(lambda: sorted(int(i["id"].rsplit("/", 1)[1]) for i in (fleet() or {}).get("instances", []))
                     == live, timeout=40, what="the three live instances in the fleet")
        except AssertionError:
            print(live, fleet())
            raise
        # instance 0 reloaded a config with one more route: its hash (taken again
        # at the reload) is the one that differs, and only it
        wait_for(lambda: [int(i["id"].rsplit("/", 1)[1]) for i in (fleet() or {}).get("instances", [])
                          if i["config_differs"]] == [self.gws[0]["proc"].pid],
                 timeout=10, what="the reloaded instance, and only it, flagged config_differs")
        f = fleet()
        self.assertGreater(sum(f["routes"]["nav"].get(v, {}).get("requests", 0) for v in ("legacy", "new")), 0)
        fd1, rss1 = {}, {}

        def settled():
            for pid in survivors:
                fd1[pid], rss1[pid] = fds(pid), rss_kib(pid)
            return all(fd1[p] <= fd0[p] + FD_SLACK for p in survivors)
        try:
            wait_for(settled, timeout=30, what="file descriptors back near the baseline", every=0.5)
        except AssertionError:
            pass  # reported with the numbers below
        events = self.check_record()
        logs = self.access_by_id()
        cut = sum(1 for _, rid, _ in self.load.failed if (logs.get(rid) or {}).get("status") == 200)
        print("\nunservable: %d cut mid-response by a killed endpoint, %d answered 502 (written to a killed endpoint "
              "that died before answering)" % (cut, len(self.load.failed) - len(failures) - cut))
        print("\nchaos: %d requests, %d failed (%d servable), %d edits answered 200 / %d 503, %d events checked; "
              "fds %s -> %s; RSS KiB %s -> %s; %.0f s"
              % (self.load.ok + len(self.load.failed), len(self.load.failed), len(failures),
                 sum(1 for c in self.made.values() if c == 200), sum(1 for c in self.made.values() if c == 503),
                 events, [fd0[p] for p in survivors], [fd1[p] for p in survivors],
                 [rss0[p] for p in survivors], [rss1[p] for p in survivors], time.time() - t0))
        self.assertEqual(failures, [])
        self.assertGreater(self.load.ok, 2000 * HOLD if LONG else 2000)
        for p in survivors:
            self.assertLessEqual(fd1[p], fd0[p] + FD_SLACK, "fds of %d" % p)
            self.assertLessEqual(rss1[p], rss0[p] + RSS_SLACK_KIB, "RSS of %d" % p)
        for k in range(3):
            st = self.status(k)
            nav = [x for x in st["routes"] if x["name"] == "nav"][0]
            self.assertEqual(nav["state"], "ramping")
            self.assertEqual(nav["percent_bp"], int(env.redis(self.m.port, "HGET", "switchyard:route:nav",
                                                              "percent_bp")))
        with open(env.path("gw2-upgraded.log"), errors="replace") as f:
            bad = [l for l in f if BAD_LOG.search(l) and not any(re.search(a, l) for a in env.allowed)]
        self.assertEqual(bad, [])

    def access_by_id(self):
        logs = {}
        for g in self.gws:
            with open(g["alog"]) as f:
                for line in f:
                    if line.strip():
                        d = json.loads(line)
                        logs[d["request_id"]] = d
        return logs

    def servable_failures(self):
        """The failures that do not fall under the one exception (see the docstring)."""
        logs = self.access_by_id()
        out = []
        for inst, rid, what in self.load.failed:
            d = logs.get(rid)
            if d is not None and d["error"] == "reset" and d["upstream"] in self.killed:
                continue
            out.append((inst, rid, what, d))
        return out

    def check_record(self):
        pg = self.standby  # the primary now
        rows = pg.psql("SELECT reason, count(*) FROM events WHERE kind IN ('flag_change', 'swap') "
                       "AND reason LIKE 'chaos %' GROUP BY reason")
        got = {r[0]: int(r[1]) for r in rows}
        ok = sorted(r for r, c in self.made.items() if c == 200)
        self.assertEqual(sorted(r for r in got if self.made.get(r) == 200), ok)
        self.assertEqual({got[r] for r in ok}, {1})
        self.assertEqual(set(got) - set(self.made), set())
        self.assertTrue(all(n == 1 for n in got.values()), got)
        self.assertEqual(pg.scalar("SELECT count(*) - count(DISTINCT id) FROM events"), "0")
        hand = pg.psql("SELECT count(*) FROM events WHERE kind = 'hand_edit' AND after->>'percent_bp' = '3333'")
        self.assertEqual(hand, [["1"]])
        reloads = pg.scalar("SELECT count(*) FROM events WHERE kind = 'reload'")
        self.assertEqual(reloads, "1")
        return len(ok) + 2


if __name__ == "__main__":
    main()

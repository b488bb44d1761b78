#!/usr/bin/env python3
"""Live flags in Redis with a real redis-server: seeding, hand edits with
redis-cli (with keyspace notifications and with only the periodic re-read),
refused edits, test users, Redis going away under load, two instances
agreeing. Prints the propagation figures (edit -> first request routed by it)."""
import json
import os
import signal
import statistics
import subprocess
import threading
import time

from harness import BIN, SLOW, Client, GatewayTest, RedisConn, base_config, curl, free_port, main, wait_for

TOKEN = "test-token-0123456789abcdef"


def cohort(cfg, users):
    r = subprocess.run([BIN, "cohort", "nav", "-", "-c", cfg], input="\n".join(users) + "\n",
                       capture_output=True, text=True, check=True)
    return {f["user"]: f for f in (dict(kv.split("=", 1) for kv in l.split()) for l in r.stdout.splitlines())}


class Flags(GatewayTest):
    def start(self, notifications="", set_notify=True, percent=2500, resync="1s", workers=2, port=None, name="gw",
              redis_port=None):
        if redis_port is None:
            self.r = self.env.start_redis(notifications=notifications)
            redis_port = self.r.port
        self.rport = redis_port
        self.admin = free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN + "\n")
        extra = ("redis: {address: 127.0.0.1:%d, resync_interval: %s, set_notify_keyspace_events: %s}\n"
                 "admin: {address: 127.0.0.1:%d, token_file: %s}" % (redis_port, resync,
                                                                     "true" if set_notify else "false",
                                                                     self.admin, tok))
        port = port or self.port
        text = base_config(port, self.legacy, self.new, extra_top=extra, percent=percent, workers=workers)
        self.access_log = self.env.path("access.log")
        gw = self.env.start_gateway(text.replace("%(log)s", self.access_log), port, name=name)
        self.cfg = gw.config_path
        self.wait_synced()
        return gw

    def status(self, admin=None):
        s, h, b = curl("http://127.0.0.1:%d/status" % (admin or self.admin))
        return json.loads(b)

    def wait_synced(self, admin=None):
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            try:
                if self.status(admin)["redis"]["synced"]:
                    return
            except Exception:
                pass
            time.sleep(0.05)
        self.fail("the gateway never read its flags from Redis")

    def route(self, admin=None):
        return self.status(admin)["routes"][0]

    def wait_route(self, pred, timeout=20.0):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            r = self.route()
            if pred(r):
                return r
            time.sleep(0.02)
        self.fail("route never reached the expected state: %s" % self.route())

    def key(self):
        return "switchyard:route:nav"

    def test_seeded_from_config_then_hand_edits_route(self):
        self.start()
        h = dict(zip(*[iter(self.env.redis(self.rport, "HGETALL", self.key()).splitlines())] * 2))
        self.assertEqual((h["state"], h["percent_bp"], h["salt"], h["actor"]), ("ramping", "2500", "nav", "switchyard"))
        self.assertEqual(sorted(self.env.redis(self.rport, "SMEMBERS", self.key() + ":test_users").split()),
                         ["42", "admin-7"])
        users = [str(u) for u in range(400)]
        b = cohort(self.cfg, users)
        movers = [u for u in users if 2500 <= int(b[u]["bucket"]) < 6000]
        c = Client(self.port)
        self.assertEqual(c.variant(movers[0]), "legacy")
        self.env.redis(self.rport, "HSET", self.key(), "percent_bp", "6000")
        self.wait_route(lambda r: r["percent_bp"] == 6000)
        for u in movers[:20]:
            self.assertEqual(c.variant(u), "new", u)
        c.close()

    def test_sadd_test_user_gets_new_at_zero(self):
        self.start(percent=0)
        c = Client(self.port)
        self.assertEqual(c.variant("777"), "legacy")
        self.env.redis(self.rport, "SADD", self.key() + ":test_users", "777")
        self.wait_route(lambda r: "777" in r["test_users"])
        self.assertEqual(c.variant("777"), "new")
        self.env.redis(self.rport, "SREM", self.key() + ":test_users", "777")
        self.wait_route(lambda r: "777" not in r["test_users"])
        self.assertEqual(c.variant("777"), "legacy")
        c.close()

    def test_invalid_edits_are_refused(self):
        gw = self.start()
        users = [str(u) for u in range(300)]
        before = {u: Client(self.port).variant(u) for u in users[:40]}
        bad = [("percent_bp", "10001"), ("percent_bp", "-5"), ("percent_bp", "150%"), ("percent_bp", "abc"),
               ("state", "maybe"), ("salt", "reshuffle-everyone")]
        refused0 = self.status()["redis"]["refused_edits"]
        for field, value in bad:
            self.env.redis(self.rport, "HSET", self.key(), field, value)
            # The refusal must be seen before the good value goes back (else the
            # gateway may read both at once and refuse nothing): wait for it.
            deadline = time.time() + 20 * SLOW
            while self.status()["redis"]["refused_edits"] == refused0 and time.time() < deadline:
                time.sleep(0.02)
            refused0 = self.status()["redis"]["refused_edits"]
            r = self.route()
            self.assertEqual((r["state"], r["percent_bp"], r["salt"]), ("ramping", 2500, "nav"), (field, value))
            # put a good value back so that the next edit is seen on its own
            self.env.redis(self.rport, "HSET", self.key(), "percent_bp", "2500", "state", "ramping", "salt", "nav")
        c = Client(self.port)
        for u, v in before.items():
            self.assertEqual(c.variant(u), v, u)
        c.close()
        with open(gw.log_path) as f:
            log = f.read()
        for field, value in bad:
            self.assertIn('refused %s="%s"' % (field, value), log)
        # A salt change with force=1 is taken.
        self.env.redis(self.rport, "HSET", self.key(), "salt", "nav-2", "force", "1")
        self.wait_route(lambda r: r["salt"] == "nav-2")

    def test_writes_through_the_admin_api_are_atomic_and_published(self):
        self.start()
        hdr = ["-H", "Authorization: Bearer " + TOKEN, "-H", "Content-Type: application/json"]
        events = subprocess.Popen(["redis-cli", "-p", str(self.rport), "SUBSCRIBE", "switchyard:events"],
                                  stdout=subprocess.PIPE, text=True)
        got = []  # redis-cli's lines as they come (it flushes each message)
        reader = threading.Thread(target=lambda: [got.append(l) for l in events.stdout], daemon=True)
        reader.start()
        # Subscribed before the first write, or its event is missed: Redis
        # answers the SUBSCRIBE (subscribe, channel, count) once it is in force.
        wait_for(lambda: [l.strip() for l in got[:2]] == ["subscribe", "switchyard:events"] and len(got) >= 3,
                 what="redis-cli subscribed")
        base = "http://127.0.0.1:%d/routes/nav/" % self.admin
        s, h, b = curl(base + "percent", "-d", '{"percent_bp": 5000, "reason": "phase 3"}', *hdr)
        self.assertEqual(s, 200, b)
        r = json.loads(b)
        self.assertEqual((r["percent_bp"], r["reason"], r["version"]), (5000, "phase 3", 2))
        h = dict(zip(*[iter(self.env.redis(self.rport, "HGETALL", self.key()).splitlines())] * 2))
        self.assertEqual((h["percent_bp"], h["version"], h["reason"]), ("5000", "2", "phase 3"))
        self.assertTrue(h["updated_at"].endswith("Z"))
        s, h2, b = curl(base + "rollback", "-d", '{"reason": "errors"}', *hdr)
        r = json.loads(b)
        self.assertEqual((r["state"], r["percent_bp"], r["prev_percent_bp"]), ("tripped", 0, 5000))
        s, h2, b = curl(base + "percent", "-d", '{"percent_bp": 100}', *hdr)
        self.assertEqual(s, 409)
        s, h2, b = curl(base + "resume", "-X", "POST", *hdr)
        self.assertEqual((json.loads(b)["state"], json.loads(b)["percent_bp"]), ("ramping", 5000))
        s, h2, b = curl(base + "promote", "-X", "POST", *hdr)
        self.assertEqual((json.loads(b)["state"], json.loads(b)["percent_bp"]), ("promoted", 10000))
        s, h2, b = curl(base + "test-users", "-d", '{"add": ["u1", "u2"], "remove": ["42"]}', *hdr)
        self.assertEqual(sorted(json.loads(b)["test_users"]), ["admin-7", "u1", "u2"])
        self.assertEqual(sorted(self.env.redis(self.rport, "SMEMBERS", self.key() + ":test_users").split()),
                         ["admin-7", "u1", "u2"])
        # Five writes, five events (the refused percent publishes nothing).
        nav = lambda: sum(1 for l in list(got) if l.startswith("nav"))
        try:
            wait_for(lambda: nav() >= 5, what="the five events")
        except AssertionError:
            pass  # the assertion below says what came
        events.send_signal(signal.SIGTERM)
        events.wait(10 * SLOW)
        reader.join(10 * SLOW)
        self.assertGreaterEqual(nav(), 5, "".join(got))

    def test_write_conflict_is_retried_on_fresh_values(self):
        # No notifications and a long re-read: the gateway's cached version goes stale.
        self.start(set_notify=False, resync="60s")
        self.env.redis(self.rport, "HSET", self.key(), "version", "50", "percent_bp", "3000")
        hdr = ["-H", "Authorization: Bearer " + TOKEN, "-H", "Content-Type: application/json"]
        s, h, b = curl("http://127.0.0.1:%d/routes/nav/rollback" % self.admin, "-d", '{"reason": "r"}', *hdr)
        self.assertEqual(s, 200, b)
        r = json.loads(b)
        # Recomputed on what Redis held: prev is the hand-set 3000, version follows 50.
        self.assertEqual((r["state"], r["prev_percent_bp"], r["version"]), ("tripped", 3000, 51))
        h = dict(zip(*[iter(self.env.redis(self.rport, "HGETALL", self.key()).splitlines())] * 2))
        self.assertEqual((h["state"], h["prev_percent_bp"], h["version"]), ("tripped", "3000", "51"))

    def test_ctl(self):
        self.start()
        tok = self.env.path("token")
        ctl = [BIN, "ctl", "-a", "127.0.0.1:%d" % self.admin, "-t", tok]
        r = subprocess.run(ctl + ["set", "nav", "12.5%", "--reason", "r1"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("12.50%", r.stdout)
        r = subprocess.run(ctl + ["--json", "status"], capture_output=True, text=True)
        self.assertEqual(json.loads(r.stdout)["routes"][0]["percent_bp"], 1250)
        r = subprocess.run(ctl + ["status"], capture_output=True, text=True)
        self.assertIn("nav", r.stdout)
        self.assertIn("connected", r.stdout)
        r = subprocess.run(ctl + ["test-users", "nav", "add", "a", "b"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run(ctl + ["rollback", "nav", "--reason", "bad"], capture_output=True, text=True)
        self.assertIn("tripped", r.stdout)
        r = subprocess.run(ctl + ["resume", "nav"], capture_output=True, text=True)
        self.assertIn("12.50%", r.stdout)
        r = subprocess.run(ctl + ["set", "nav", "150"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        r = subprocess.run(ctl + ["set", "nope", "5"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("404", r.stderr)
        r = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % self.admin, "rollback", "nav"], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("401", r.stderr)
        r = subprocess.run([BIN, "ctl", "-c", self.cfg, "promote", "nav"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_redis_killed_under_load(self):
        gw = self.start()
        users = [str(u) for u in range(200)]
        expect = {u: v["variant"] for u, v in cohort(self.cfg, users).items()}
        failures, mismatches, count = [], [], [0]
        stop = threading.Event()
        back = threading.Event()  # Redis returns with other flags: answers may change from then on

        def load():
            c = Client(self.port)
            i = 0
            while not stop.is_set():
                u = users[i % len(users)]
                i += 1
                try:
                    s, h, b = c.get("/x", {"X-User-Id": u})
                    count[0] += 1
                    if s != 200:
                        failures.append(s)
                    elif h["x-backend"] != expect[u] and not back.is_set():
                        mismatches.append(u)
                except Exception as e:
                    failures.append(repr(e))
            c.close()

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.env.stop(self.r, signal.SIGKILL)
        wait_for(lambda: not self.status()["redis"]["connected"], 10, "the gateway to see Redis gone")
        time.sleep(1.0)  # the load goes on while Redis is away (not a readiness wait)
        n_down = count[0]
        # Redis comes back with changed flags: they are picked up after reconnect.
        back.set()
        self.r = self.env.start_redis(port=self.rport)
        self.env.redis(self.rport, "HSET", self.key(), "state", "ramping", "percent_bp", "2500", "salt", "nav",
                       "version", "5")
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(failures, [])
        self.assertEqual(mismatches, [])
        self.assertGreater(n_down, 100)
        self.env.redis(self.rport, "HSET", self.key(), "percent_bp", "9000")
        self.wait_route(lambda r: r["percent_bp"] == 9000, timeout=15)
        self.assertTrue(self.status()["redis"]["connected"])

    def test_rollback_with_redis_down_is_written_later(self):
        self.start()
        self.env.stop(self.r, signal.SIGKILL)
        wait_for(lambda: not self.status()["redis"]["connected"], what="the gateway to see Redis gone")
        tok = self.env.path("token")
        r = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % self.admin, "-t", tok, "rollback", "nav"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.route()["state"], "tripped")
        self.assertEqual(Client(self.port).variant("42"), "legacy")
        r = subprocess.run([BIN, "ctl", "-a", "127.0.0.1:%d" % self.admin, "-t", tok, "test-users", "nav", "add", "z"],
                           capture_output=True, text=True)
        self.assertIn("503", r.stderr)  # only a rollback applies while Redis is away
        # Redis returns (with the old hash): the rollback is written there.
        # The old hash comes from a dump made beforehand: an HSET after the
        # start would race the gateway's reconnect (seen as a hand edit that
        # resumes the route, or seeded over).
        seed = self.env.start_redis()
        self.env.redis(seed.port, "HSET", self.key(), "state", "ramping", "percent_bp", "2500", "salt", "nav",
                       "version", "1")
        self.env.redis(seed.port, "CONFIG", "SET", "dbfilename", "seed.rdb")
        self.env.redis(seed.port, "SAVE")
        self.env.stop(seed)
        self.r = self.env.start_redis(port=self.rport, args=["--dbfilename", "seed.rdb"])
        deadline = time.time() + 15 * SLOW
        while time.time() < deadline and self.env.redis(self.rport, "HGET", self.key(), "state") != "tripped":
            time.sleep(0.05)
        self.assertEqual(self.env.redis(self.rport, "HGET", self.key(), "state"), "tripped")
        self.assertEqual(self.env.redis(self.rport, "HGET", self.key(), "prev_percent_bp"), "2500")

    def test_two_instances_agree(self):
        self.start(workers=1)
        port2 = free_port()
        admin1 = self.admin
        self.start(workers=1, port=port2, name="gw2", redis_port=self.rport)
        admin2 = self.admin
        users = ["u%d" % i for i in range(2500)]
        for percent in (None, 4000):
            if percent:
                self.env.redis(self.rport, "HSET", self.key(), "percent_bp", str(percent))
                for a in (admin1, admin2):
                    deadline = time.time() + 20 * SLOW
                    while self.route(a)["percent_bp"] != percent and time.time() < deadline:
                        time.sleep(0.02)
            c1, c2 = Client(self.port), Client(port2)
            diff = [u for u in users if c1.variant(u) != c2.variant(u)]
            c1.close()
            c2.close()
            self.assertEqual(diff, [])

    def measure(self, notifications, resync, edits):
        self.start(notifications="" if notifications else "", set_notify=notifications, resync=resync)
        users = [str(u) for u in range(300)]
        b = cohort(self.cfg, users)
        user = next(u for u in users if 100 < int(b[u]["bucket"]) < 9800)
        bucket = int(b[user]["bucket"])
        c = Client(self.port)
        rc = RedisConn(self.rport)
        delays = []
        for i in range(edits):
            # Flip this user's variant: bucket < percent gives new.
            want_new = i % 2 == 0
            t0 = time.time()
            rc.cmd("HSET", self.key(), "percent_bp", str(bucket + 1 if want_new else bucket))
            deadline = t0 + 15 * SLOW
            while time.time() < deadline:
                if c.variant(user) == ("new" if want_new else "legacy"):
                    break
            delays.append((time.time() - t0) * 1000)
        c.close()
        rc.close()
        self.assertLess(max(delays), 15000 * SLOW)
        delays.sort()
        p50 = statistics.median(delays)
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print("\npropagation (%s, resync %s, %d edits): p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
            "keyspace notifications" if notifications else "re-read only", resync, edits, p50, p99, max(delays)),
            flush=True)
        return p50, p99

    def test_propagation_with_notifications(self):
        p50, p99 = self.measure(True, "5s", 100)
        self.assertTrue(self.status()["redis"]["keyspace_notifications"])

    def test_propagation_with_reread_only(self):
        self.measure(False, "1s", 10)
        self.assertFalse(self.status()["redis"]["keyspace_notifications"])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The comparator with programmable backends and a real Redis: error-rate and
latency-ratio trips, no trip on equal sides, consecutive errors, connect
failures and timeouts, Alertmanager, /metrics under promtool, a trip while Redis
is down. Prints the figures asked for (requests served after the threshold was
crossed, time from the 5th error to the first request on legacy)."""
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import SLOW, Client, Env, base_config, curl, free_port, main, wait_for

TOKEN = "trip-token-0123456789abcdef"


class HoldingRelay:
    """A TCP relay to Redis that holds a connection's commands, from the first
    one containing `marker` on, until release()."""

    def __init__(self, marker):
        self.marker = marker
        self.holding = threading.Event()
        self.released = threading.Event()
        self.socks = []
        self.lsock = None

    def start(self, target_port):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        threading.Thread(target=self._accept, args=(target_port,), daemon=True).start()
        return self.lsock.getsockname()[1]

    def _accept(self, target_port):
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", target_port))
            self.socks += [a, b]
            threading.Thread(target=self._pump, args=(a, b, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a, False), daemon=True).start()

    def _pump(self, src, dst, to_redis):
        tail = b""
        held = False
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if to_redis and not held and self.marker in tail + data:
                held = True
                self.holding.set()
            if held:
                self.released.wait()
            tail = (tail + data)[-len(self.marker):]
            try:
                dst.sendall(data)
            except OSError:
                return

    def release(self):
        self.released.set()

    def close(self):
        self.released.set()
        if self.lsock is not None:
            self.lsock.close()
        for so in self.socks:
            try:
                so.close()
            except OSError:
                pass


class Trips(unittest.TestCase):
    def setUp(self):
        self.env = Env()

    def tearDown(self):
        self.env.close()

    def start(self, legacy_args=(), new_args=(), trip="", percent=5000, extra_top="", new_port=None,
              redis=True, keys="", redis_via=None):
        self.legacy = self.env.start_backend("legacy", args=legacy_args)
        self.new = new_port or self.env.start_backend("new", args=new_args)
        self.port = free_port()
        self.admin = free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        top = "admin: {address: 127.0.0.1:%d, token_file: %s}\n" % (self.admin, tok)
        if redis:
            self.r = self.env.start_redis()
            rport = redis_via(self.r.port) if redis_via is not None else self.r.port
            top += "redis: {address: 127.0.0.1:%d, resync_interval: 1s}\n" % rport
        top += extra_top
        cfg = base_config(self.port, self.legacy, self.new, extra_top=top, percent=percent,
                          extra_keys=("    trip: {%s}\n" % trip if trip else "") + keys)
        self.access_log = self.env.path("access.log")
        self.gw = self.env.start_gateway(cfg.replace("%(log)s", self.access_log), self.port)

    def status(self):
        return json.loads(curl("http://127.0.0.1:%d/status" % self.admin)[2])

    def route(self):
        return self.status()["routes"][0]

    def load(self, until, seconds=30, threads=8, path="/x"):
        """Keep-alive clients with distinct user ids until `until()` or the time is up."""
        stop = threading.Event()
        counts = {"legacy": 0, "new": 0, "other": 0}
        lock = threading.Lock()

        def run(k):
            c = Client(self.port)
            i = k
            while not stop.is_set():
                try:
                    s, h, b = c.get(path, {"X-User-Id": "user-%d" % i})
                    with lock:
                        counts[h.get("x-switchyard-variant", "other")] += 1
                except Exception:
                    with lock:
                        counts["other"] += 1
                i += threads
            c.close()

        ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        deadline = time.time() + seconds * SLOW
        while time.time() < deadline and not until():
            time.sleep(0.1)
        stop.set()
        for t in ts:
            t.join()
        return counts

    def access(self):
        time.sleep(0.3)
        with open(self.access_log) as f:
            return [json.loads(l) for l in f if l.strip()]

    def test_error_rate_trips(self):
        self.start(legacy_args=["--error-rate", "0.005"], new_args=["--error-rate", "0.2"],
                   trip="min_requests: 100, window: 60s, consecutive_errors: 0")
        self.load(lambda: self.route()["state"] == "tripped")
        r = self.route()
        self.assertEqual(r["state"], "tripped")
        self.assertIn(r["reason"].split(":")[0], ("max_error_rate", "max_error_rate_delta"))
        self.assertIn("legacy", r["reason"])
        self.assertEqual(r["actor"], "switchyard")
        deadline = time.time() + 5 * SLOW
        while time.time() < deadline and self.env.redis(self.r.port, "HGET", "switchyard:route:nav", "state") != "tripped":
            time.sleep(0.05)
        h = dict(zip(*[iter(self.env.redis(self.r.port, "HGETALL", "switchyard:route:nav").splitlines())] * 2))
        self.assertEqual((h["state"], h["percent_bp"], h["prev_percent_bp"], h["actor"]),
                         ("tripped", "0", "5000", "switchyard"))
        self.assertIn("new", h["reason"])
        # Requests new served after the rule's threshold was first crossed.
        lines = sorted((l for l in self.access() if l["variant"] == "new"), key=lambda l: l["time"])
        n = errs = 0
        crossed_at = None
        for i, l in enumerate(lines):
            n += 1
            errs += l["error"] is not None
            if crossed_at is None and n >= 100 and errs / n > 0.10:
                crossed_at = i
        after = len(lines) - 1 - crossed_at if crossed_at is not None else None
        print("\nerror-rate trip: new served %d requests, %s of them after the threshold was crossed (at its #%s)"
              % (len(lines), after, crossed_at + 1 if crossed_at is not None else None), flush=True)
        # Afterwards everyone is on legacy.
        c = Client(self.port)
        self.assertEqual({c.variant("u%d" % i) for i in range(30)}, {"legacy"})

    def test_latency_ratio(self):
        # 50 ms apart: a busy machine's scheduling delays (tens of ms at the
        # tail) do not blur which side is slower in a second.
        self.start(legacy_args=["--latency-ms", "100"], new_args=["--latency-ms", "150"],
                   trip="min_requests: 100, window: 60s, max_latency_ratio: {p99: 1.2}")
        # A p99 is compared once each side has 1,000 requests (about 8 s here),
        # and the rule then wants about 10 seconds in which new was the slower.
        self.load(lambda: self.route()["state"] == "tripped", threads=32, seconds=90)
        r = self.route()
        self.assertEqual(r["state"], "tripped")
        self.assertTrue(r["reason"].startswith("max_latency_ratio"), r["reason"])

    def test_latency_ten_percent_slower_does_not_trip(self):
        self.start(legacy_args=["--latency-ms", "100"], new_args=["--latency-ms", "110"],
                   trip="min_requests: 100, window: 60s, max_latency_ratio: {p99: 1.2}")
        w = lambda: self.route()["window"]
        # Past the 1,000 requests a side at which the p99s are compared, with
        # the scheduling noise of a busy machine on both sides.
        self.load(lambda: w()["new"]["requests"] >= 1300 and w()["legacy"]["requests"] >= 1300, threads=32,
                  seconds=90)
        r = self.route()
        self.assertEqual(r["state"], "ramping", r.get("reason"))
        self.assertGreaterEqual(r["window"]["new"]["requests"], 1300)

    def test_equal_sides_do_not_trip(self):
        # Both at 1 % errors and the same latency, many short windows.
        self.start(legacy_args=["--error-rate", "0.01"], new_args=["--error-rate", "0.01"],
                   trip="min_requests: 100, window: 2s")
        t0 = time.time()
        self.load(lambda: time.time() - t0 > 12 or self.route()["state"] == "tripped", seconds=15)
        r = self.route()
        self.assertEqual(r["state"], "ramping", r)
        self.assertGreater(r["window"]["new"]["requests"], 100)

    def test_consecutive_errors(self):
        self.start(new_args=["--error-rate", "1"], percent=0, trip="consecutive_errors: 5")
        c = Client(self.port)
        errors, t5, first_legacy, on_new_after = 0, None, None, 0
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline:
            t = time.time()
            s, h, b = c.get("/x", {"X-User-Id": "42"})  # a test user: new while ramping
            if h["x-switchyard-variant"] == "legacy":
                first_legacy = t
                break
            if s == 500:
                errors += 1
                if errors == 5:
                    t5 = time.time()
                elif errors > 5:
                    on_new_after += 1
        self.assertIsNotNone(first_legacy)
        self.assertGreaterEqual(errors, 5)
        print("\nconsecutive errors: first request on legacy %.3f ms after the 5th error's response; %d more "
              "requests reached new in between" % ((first_legacy - t5) * 1000, on_new_after), flush=True)
        # The workers send the route to legacy at the 5th error; the control
        # thread records the trip just after (the status shows it from then on).
        wait_for(lambda: self.route()["state"] == "tripped", timeout=10 * SLOW, what="the trip recorded")
        r = self.route()
        self.assertEqual((r["state"], r["reason"]), ("tripped", "consecutive_errors: 5 errors in a row on new"))

    def test_connect_refused_trips(self):
        dead = free_port()
        self.start(new_port=dead, percent=0, trip="consecutive_errors: 5")
        c = Client(self.port)
        answers = [c.get("/x", {"X-User-Id": "42"}) for _ in range(8)]
        # Nothing was sent: legacy serves each request whose connect was
        # refused. Three connect failures take the endpoint out (passive
        # ejection); from then on the test user goes to legacy until the route trips.
        self.assertEqual([(a[0], a[1]["x-backend"]) for a in answers], [(200, "legacy")] * 8)
        wait_for(lambda: self.route()["state"] == "tripped", 5, "the trip")
        r = self.route()
        self.assertEqual(r["state"], "tripped")
        self.assertTrue(r["reason"].startswith("new_unavailable"), r["reason"])
        self.assertEqual(c.variant("42"), "legacy")
        self.assertEqual(self.route()["window"]["new"]["errors"], 3)

    def test_hanging_backend_trips(self):
        self.start(new_args=["--hang"], percent=0, trip="consecutive_errors: 3",
                   extra_top="timeouts: {upstream_header: 300ms}\n")
        c = Client(self.port)
        statuses = [c.get("/x", {"X-User-Id": "42"})[0] for _ in range(3)]
        self.assertEqual(statuses, [504] * 3)
        wait_for(lambda: self.route()["state"] == "tripped", 5, "the trip")
        # the counters reach /metrics at the monitor's next merge (every 100 ms)
        line = 'switchyard_errors_total{route="nav",variant="new",kind="timeout"} 3'
        wait_for(lambda: line in curl("http://127.0.0.1:%d/metrics" % self.admin)[2].decode(), 5, "the 3 timeouts")

    def alert(self, payload, token=TOKEN):
        args = ["http://127.0.0.1:%d/alerts/alertmanager" % self.admin, "-H", "Content-Type: application/json",
                "--data-binary", json.dumps(payload)]
        if token:
            args += ["-H", "Authorization: Bearer " + token]
        s, h, b = curl(*args)
        return s, json.loads(b)

    def test_alertmanager(self):
        self.start()
        firing = {"version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "status": "firing",
                  "receiver": "switchyard", "groupLabels": {"alertname": "HighErrorRate"},
                  "commonLabels": {"alertname": "HighErrorRate", "route": "nav"}, "commonAnnotations": {},
                  "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0,
                  "alerts": [{"status": "firing", "labels": {"alertname": "HighErrorRate", "route": "nav",
                                                             "severity": "critical"},
                              "annotations": {"summary": "errors"}, "startsAt": "2026-11-21T10:00:00Z",
                              "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
                              "fingerprint": "abc"}]}
        self.assertEqual(self.alert(firing, token=None)[0], 401)
        s, b = self.alert(firing)
        self.assertEqual((s, b["tripped"]), (200, ["nav"]))
        r = self.route()
        self.assertEqual((r["state"], r["reason"]), ("tripped", "alert:HighErrorRate"))
        resolved = dict(firing, status="resolved",
                        alerts=[dict(firing["alerts"][0], status="resolved", endsAt="2026-11-21T10:05:00Z")])
        s, b = self.alert(resolved)
        self.assertEqual((s, b["tripped"], b["resolved_ignored"]), (200, [], 1))
        self.assertEqual(self.route()["state"], "tripped")  # a resolved alert does not resume
        unknown = dict(firing, alerts=[dict(firing["alerts"][0], labels={"alertname": "X", "route": "nope"})])
        s, b = self.alert(unknown)
        self.assertEqual((s, b["unknown_routes"]), (404, ["nope"]))
        s, b = self.alert({"version": "3", "alerts": []})
        self.assertEqual(s, 400)
        with open(self.gw.log_path) as f:
            self.assertIn("alerts name unknown routes", f.read())

    @unittest.skipIf(shutil.which("promtool") is None, "promtool (Debian package prometheus) is not installed")
    def test_metrics_pass_promtool(self):
        self.start(new_args=["--error-rate", "0.1"])
        self.load(lambda: self.route()["window"]["new"]["requests"] > 50, seconds=10)
        s, h, b = curl("http://127.0.0.1:%d/metrics" % self.admin)
        self.assertEqual(s, 200)
        text = b.decode()
        for name in ("switchyard_requests_total", "switchyard_errors_total", "switchyard_request_duration_seconds_bucket",
                     "switchyard_route_percent", "switchyard_route_tripped", "switchyard_trips_total",
                     "switchyard_redis_connected 1", "switchyard_endpoint_up"):
            self.assertIn(name, text)
        r = subprocess.run(["promtool", "check", "metrics"], input=b, capture_output=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_trip_with_redis_down(self):
        self.start(new_args=["--error-rate", "1"], percent=0, trip="consecutive_errors: 5")
        rport = self.r.port
        self.env.stop(self.r, signal.SIGKILL)
        time.sleep(0.3)
        c = Client(self.port)
        for _ in range(6):
            c.get("/x", {"X-User-Id": "42"})
        wait_for(lambda: self.route()["state"] == "tripped", 5, "the local flip")  # Redis down: flipped here
        self.assertEqual(c.variant("42"), "legacy")
        # Redis comes back with the state it had persisted before the trip. The
        # dump is made beforehand, so the gateway cannot see an empty Redis (or
        # take a later HSET for a hand edit that resumes the route).
        seed = self.env.start_redis()
        self.env.redis(seed.port, "HSET", "switchyard:route:nav", "state", "ramping", "percent_bp", "0", "salt", "nav",
                       "version", "1")
        self.env.redis(seed.port, "CONFIG", "SET", "dbfilename", "seed.rdb")  # in the test's directory
        self.env.redis(seed.port, "SAVE")
        self.env.stop(seed)
        self.r = self.env.start_redis(port=rport, args=["--dbfilename", "seed.rdb"])
        deadline = time.time() + 15 * SLOW
        while time.time() < deadline and self.env.redis(rport, "HGET", "switchyard:route:nav", "state") != "tripped":
            time.sleep(0.05)
        self.assertEqual(self.env.redis(rport, "HGET", "switchyard:route:nav", "state"), "tripped")
        self.assertIn("consecutive_errors", self.env.redis(rport, "HGET", "switchyard:route:nav", "reason"))

    def test_new_unavailable(self):
        # The new side's health endpoint fails: probes take it out, the route trips.
        self.start(percent=5000, keys="",
                   extra_top="")
        self.env.stop(self.env.gateways.pop())
        cfg = base_config(self.port, self.legacy, self.new,
                          extra_top="admin: {address: 127.0.0.1:%d, token_file: %s}\n" % (self.admin,
                                                                                         self.env.path("token")),
                          percent=5000).replace(
            "  new: {endpoints: [127.0.0.1:%d]}" % self.new,
            "  new:\n    endpoints: [127.0.0.1:%d]\n"
            "    health: {path: \"/health?status=503\", interval: 200ms, timeout: 200ms, rise: 2, fall: 2}" % self.new)
        self.gw = self.env.start_gateway(cfg.replace("%(log)s", self.access_log), self.port, name="gw-health")
        deadline = time.time() + 5 * SLOW
        while time.time() < deadline and self.route()["state"] != "tripped":
            time.sleep(0.05)
        r = self.route()
        self.assertEqual(r["state"], "tripped")
        self.assertTrue(r["reason"].startswith("new_unavailable"), r["reason"])
        s, h, b = curl("http://127.0.0.1:%d/metrics" % self.admin)
        self.assertIn('switchyard_endpoint_up{pool="new",endpoint="127.0.0.1:%d"} 0' % self.new, b.decode())

    def test_passive_ejection_and_return(self):
        dead = free_port()
        self.start(percent=10000, trip="enabled: false")
        self.env.stop(self.env.gateways.pop())
        cfg = base_config(self.port, self.legacy, self.new,
                          extra_top="admin: {address: 127.0.0.1:%d, token_file: %s}\n" % (self.admin,
                                                                                         self.env.path("token")),
                          percent=10000, extra_keys="    trip: {enabled: false}\n").replace(
            "  new: {endpoints: [127.0.0.1:%d]}" % self.new, "  new: {endpoints: [127.0.0.1:%d, 127.0.0.1:%d]}" % (
                self.new, dead))
        self.gw = self.env.start_gateway(cfg.replace("%(log)s", self.access_log), self.port, name="gw-passive")
        c = Client(self.port)
        statuses = [c.get("/x", {"X-User-Id": "u%d" % i})[0] for i in range(40)]
        # A refused connect sent nothing: the request goes to the other endpoint,
        # and 3 refusals take the dead one out.
        self.assertEqual(statuses, [200] * 40)
        down = 'switchyard_endpoint_up{pool="new",endpoint="127.0.0.1:%d"} 0' % dead
        wait_for(lambda: down in curl("http://127.0.0.1:%d/metrics" % self.admin)[2].decode(), 5, "the endpoint out")
        # It comes back once it answers the re-probes (a TCP connect here).
        self.env.start_backend("revived", port=dead)
        deadline = time.time() + 6 * SLOW
        while time.time() < deadline:
            s, h, b = curl("http://127.0.0.1:%d/metrics" % self.admin)
            if 'endpoint="127.0.0.1:%d"} 1' % dead in b.decode():
                break
            time.sleep(0.2)
        self.assertIn('switchyard_endpoint_up{pool="new",endpoint="127.0.0.1:%d"} 1' % dead, b.decode())
        backends = {c.get("/x", {"X-User-Id": "v%d" % i})[1]["x-backend"] for i in range(10)}
        self.assertEqual(backends, {"new", "revived"})

    def test_trip_notification_webhook(self):
        import http.server
        got = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append(json.loads(body))
                # The first try fails: the gateway must retry.
                self.send_response(500 if len(got) == 1 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        hook_port = free_port()
        srv = http.server.HTTPServer(("127.0.0.1", hook_port), Hook)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            self.start(new_args=["--error-rate", "1"], percent=0, trip="consecutive_errors: 5",
                       extra_top="notify: {webhook_url: \"http://127.0.0.1:%d/hooks/switchyard\", timeout: 1s, "
                                 "retries: 3}\n" % hook_port)
            c = Client(self.port)
            for _ in range(6):
                c.get("/x", {"X-User-Id": "42"})
            deadline = time.time() + 6 * SLOW
            while time.time() < deadline and len(got) < 2:
                time.sleep(0.05)
            self.assertEqual(len(got), 2, got)  # one failure, one retry that was taken
            self.assertEqual((got[1]["event"], got[1]["route"], got[1]["rule"]), ("trip", "nav", "consecutive_errors"))
            self.assertIn("5 errors in a row", got[1]["reason"])
            self.env.allowed.append(r"notify:")
        finally:
            srv.shutdown()

    def test_alertmanager_trip_is_notified_and_counted(self):
        # One owner for every trip: an alert's trip is notified and counted like a
        # comparator's, once, however often the alert fires.
        import http.server
        got = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        hook_port = free_port()
        srv = http.server.HTTPServer(("127.0.0.1", hook_port), Hook)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            self.start(extra_top="notify: {webhook_url: \"http://127.0.0.1:%d/hooks/switchyard\", timeout: 1s, "
                                 "retries: 3}\n" % hook_port)
            firing = {"version": "4", "status": "firing",
                      "alerts": [{"status": "firing", "labels": {"alertname": "Err\"ors", "route": "nav"},
                                  "annotations": {}, "startsAt": "2026-11-21T10:00:00Z"}]}
            for _ in range(2):
                s, b = self.alert(firing)
                self.assertEqual(s, 200)
            deadline = time.time() + 6 * SLOW
            while time.time() < deadline and len(got) < 1:
                time.sleep(0.05)
            self.assertEqual([(g["event"], g["route"], g["rule"], g["reason"]) for g in got],
                             [("trip", "nav", "alertmanager", "alert:Err\"ors")])
            s, h, b = curl("http://127.0.0.1:%d/metrics" % self.admin)
            self.assertIn('switchyard_trips_total{route="nav"} 1\n', b.decode())
        finally:
            srv.shutdown()

    def test_trip_while_the_seed_is_on_its_way(self):
        """On a fresh Redis the gateway's first write seeds the config's flags. A
        trip made while that write is on its way stands: it is written on top of
        the seed, not undone by it. The gateway reaches Redis through a relay that
        holds the seed (and what follows it on that connection) until the trip
        is in force here."""
        relay = HoldingRelay(b"seeded from the config")
        self.addCleanup(relay.close)
        self.start(new_args=["--error-rate", "1"], percent=0, trip="consecutive_errors: 5, min_requests: 5",
                   redis_via=relay.start)
        wait_for(relay.holding.is_set, 5, "the seed held")
        c = Client(self.port)
        for _ in range(6):
            c.get("/x", {"X-User-Id": "42"})
        wait_for(lambda: self.route()["state"] == "tripped", 5, "the trip, here")
        self.assertEqual(self.env.redis(self.r.port, "EXISTS", "switchyard:route:nav"), "0")
        relay.release()
        wait_for(lambda: self.env.redis(self.r.port, "HGET", "switchyard:route:nav", "state") == "tripped", 10,
                 "the trip written to Redis on top of the seed")
        self.assertEqual(self.route()["state"], "tripped")
        self.assertIn("consecutive_errors", self.env.redis(self.r.port, "HGET", "switchyard:route:nav", "reason"))

    def test_resume_starts_afresh(self):
        self.start(new_args=["--error-rate", "1"], percent=0, trip="consecutive_errors: 5, min_requests: 5")
        c = Client(self.port)
        for _ in range(6):
            c.get("/x", {"X-User-Id": "42"})
        wait_for(lambda: self.route()["state"] == "tripped", 5, "the trip")
        s, h, b = curl("http://127.0.0.1:%d/routes/nav/resume" % self.admin, "-X", "POST",
                       "-H", "Authorization: Bearer " + TOKEN)
        self.assertEqual(json.loads(b)["state"], "ramping")
        time.sleep(1.5)  # a tick: the old window must not trip it again by itself
        self.assertEqual(self.route()["state"], "ramping")


if __name__ == "__main__":
    main()

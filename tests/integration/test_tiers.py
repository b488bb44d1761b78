#!/usr/bin/env python3
"""The three tiers with real backends, a real Redis and a real HTTP receiver:
warn and critical notify (with their severity, /metrics counts them) without
flipping; rollback flips, notifies with severity rollback, and the record notes
when new has drained; a rollback into a legacy pool with no healthy endpoint
is refused with a critical alert that says why."""
import re
import unittest

from harness import SLOW, Client, curl, free_port, main, wait_for
import test_evidence as evidence

Receiver = evidence.Receiver


class Tiers(evidence.Evidence):
    test_low_traffic_trips_on_evidence = None
    test_identical_sides_no_warning_no_trip = None

    def test_warn_and_critical_notify_without_flipping(self):
        rcv = self.rcv = Receiver()
        # new at 25 %: significantly above warn (2 %) after a dozen requests and above critical (15 %)
        # after a few hundred, never
        # above the rollback's 50 %.
        self.start(new_args=["--error-rate", "0.25"], percent=5000, extra_top=rcv.top(),
                   trip="warn_error_rate: 0.02, critical_error_rate: 0.15, max_error_rate: 0.5, "
                        "max_error_rate_delta: 0, consecutive_errors: 0")
        kinds = lambda: {(g["event"], g["severity"]) for g in rcv.got}
        counts, secs = self.paced(100, lambda: ("critical", "critical") in kinds(), 60 * SLOW)
        # Both were queued (the warning first); delivery is after the fact.
        wait_for(lambda: {("critical", "critical"), ("warning", "warn")} <= kinds(), 20 * SLOW,
                 "the warning and critical notifications")
        self.assertIn(("warning", "warn"), kinds())
        crit = [g for g in rcv.got if g["event"] == "critical"][0]
        self.assertEqual((crit["route"], crit["rule"]), ("nav", "critical_error_rate"))
        self.assertIn("new", crit["stats"])
        r = self.route()
        self.assertEqual((r["state"], r["percent_bp"]), ("ramping", 5000))
        self.assertEqual(r["window"]["trips"], 0)
        self.assertGreaterEqual(r["window"]["criticals"], 1)
        metrics = curl("http://127.0.0.1:%d/metrics" % self.admin)[2]
        metrics = metrics.decode() if isinstance(metrics, bytes) else metrics
        m = re.search(r'switchyard_criticals_total\{[^}]*route="nav"[^}]*\} (\d+)', metrics)
        self.assertIsNotNone(m, metrics[:2000])
        self.assertGreaterEqual(int(m.group(1)), 1)
        self.env.allowed.append(r"(warning|critical): route nav")

    def test_rollback_flips_and_notifies(self):
        rcv = self.rcv = Receiver()
        self.start(new_args=["--error-rate", "0.5"], percent=5000, extra_top=rcv.top(),
                   trip="consecutive_errors: 0")
        tripped = lambda: self.route()["state"] == "tripped"
        self.paced(100, tripped, 60 * SLOW)
        wait_for(lambda: any(g["event"] == "trip" for g in rcv.got), 20 * SLOW, "the trip notification")
        g = [g for g in rcv.got if g["event"] == "trip"][0]
        self.assertEqual(g["severity"], "rollback")
        self.assertEqual(self.route()["percent_bp"], 0)
        # after the flip, the record notes when new has drained
        def log():
            with open(self.gw.log_path, errors="replace") as f:
                return f.read()
        wait_for(lambda: "nothing in flight on new" in log(), 10 * SLOW, "new drained")
        print("\n" + [l for l in log().splitlines() if "nothing in flight on new" in l][0], flush=True)

    def test_rollback_refused_into_dead_legacy(self):
        rcv = self.rcv = Receiver()
        dead = free_port()  # nothing listens: legacy's only endpoint is taken out by passive ejection
        self.start(legacy_port=dead, new_args=["--error-rate", "1"], percent=0, extra_top=rcv.top(),
                   trip="consecutive_errors: 5")
        c = Client(self.port)
        for i in range(4):  # legacy: connect failures
            c.get("/x", {"X-User-Id": "someone-%d" % i})
        for i in range(6):  # test user 42 is on new: 5 errors in a row
            c.get("/x", {"X-User-Id": "42"})
        wait_for(lambda: any(g["rule"] == "rollback_refused" for g in rcv.got), 20 * SLOW, "the critical alert")
        g = [g for g in rcv.got if g["rule"] == "rollback_refused"][0]
        self.assertEqual(g["severity"], "critical")
        self.assertIn("no healthy endpoint", g["reason"])
        self.assertNotEqual(self.route()["state"], "tripped")
        self.env.allowed.append(r"rollback refused|legacy pool|health:|upstream|connect")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""consecutive_errors takes effect before the Nth error's response leaves the
gateway (issue 11, item 5): with one sequential keep-alive client no request
after the Nth error reaches new, over 20 trials; with 8 concurrent clients the
errors users see stay within N + clients - 1 (each other client can have at
most one request already routed to new when the Nth error's head arrives)."""
import json
import threading
import time
import unittest

from harness import SLOW, Client, Env, base_config, curl, free_port, main

TOKEN = "streak-token-0123456789abcdef"
N = 5
TRIALS = 20
CLIENTS = 8


class Streak(unittest.TestCase):
    def setUp(self):
        self.env = Env()
        self.legacy = self.env.start_backend("legacy")
        self.new = self.env.start_backend("new", args=["--error-rate", "1"])
        self.port = free_port()
        self.admin = free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        top = "admin: {address: 127.0.0.1:%d, token_file: %s}\n" % (self.admin, tok)
        # min_requests out of reach: only the consecutive-errors rule can trip.
        cfg = base_config(self.port, self.legacy, self.new, extra_top=top, percent=0,
                          extra_keys="    trip: {consecutive_errors: %d, min_requests: 1000000}\n" % N)
        self.gw = self.env.start_gateway(cfg.replace("%(log)s", self.env.path("access.log")), self.port)

    def tearDown(self):
        self.env.close()

    def route(self):
        return json.loads(curl("http://127.0.0.1:%d/status" % self.admin)[2])["routes"][0]

    def resume(self):
        s, h, b = curl("http://127.0.0.1:%d/routes/nav/resume" % self.admin, "-X", "POST",
                       "-H", "Authorization: Bearer " + TOKEN)
        self.assertEqual((s, json.loads(b)["state"]), (200, "ramping"))

    def wait_tripped(self):
        # The workers flip at the Nth error; the control thread records the
        # trip (state "tripped") a moment later: later still on a loaded box.
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline and self.route()["state"] != "tripped":
            time.sleep(0.02)
        r = self.route()
        self.assertEqual((r["state"], r["reason"]), ("tripped", "consecutive_errors: %d errors in a row on new" % N))

    def test_sequential_no_sixth_error(self):
        sixth = []
        for trial in range(TRIALS):
            c = Client(self.port)
            errors = 0
            for _ in range(3 * N):
                s, h, b = c.get("/x", {"X-User-Id": "42"})  # a test user: new while ramping
                if h.get("x-switchyard-variant") == "legacy":
                    break
                self.assertEqual((s, h.get("x-switchyard-variant")), (500, "new"))
                errors += 1
            else:
                self.fail("trial %d: still on new after %d errors" % (trial, errors))
            c.close()
            sixth.append(errors - N)
            self.assertGreaterEqual(errors, N)
            self.wait_tripped()
            self.resume()
        print("\nsequential: errors past the %dth that reached the client, per trial: %s; trials with a sixth: %d/%d"
              % (N, sixth, sum(1 for x in sixth if x > 0), TRIALS), flush=True)
        self.assertEqual(sixth, [0] * TRIALS)

    def test_concurrent_bound(self):
        rounds = []
        for _ in range(5):
            barrier = threading.Barrier(CLIENTS)
            lock = threading.Lock()
            seen = {"errors": 0, "other": 0, "stuck": 0}
            deadline = time.time() + 20 * SLOW

            def run():
                c = Client(self.port)
                barrier.wait()
                while time.time() < deadline:
                    s, h, b = c.get("/x", {"X-User-Id": "42"})
                    v = h.get("x-switchyard-variant")
                    if v == "legacy":
                        c.close()
                        return
                    with lock:
                        if (s, v) == (500, "new"):
                            seen["errors"] += 1
                        else:
                            seen["other"] += 1
                with lock:
                    seen["stuck"] += 1

            ts = [threading.Thread(target=run) for _ in range(CLIENTS)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual((seen["other"], seen["stuck"]), (0, 0), seen)
            rounds.append(seen["errors"])
            self.wait_tripped()
            self.resume()
        print("\n%d concurrent clients: errors that reached users per round: %s (bound %d)"
              % (CLIENTS, rounds, N + CLIENTS - 1), flush=True)
        for e in rounds:
            self.assertGreaterEqual(e, N)
            self.assertLessEqual(e, N + CLIENTS - 1)


if __name__ == "__main__":
    main()

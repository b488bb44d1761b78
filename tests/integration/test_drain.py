#!/usr/bin/env python3
"""SIGTERM and SIGQUIT: stop accepting, let in-flight requests finish (up to
timeouts.drain), exit 0."""
import signal
import socket
import subprocess
import threading
import time

from harness import SLOW, GatewayTest, backend_stats, curl, main, wait_for


class Drain(GatewayTest):
    def backends(self, key):
        return sum(backend_stats(p)[key] for p in (self.legacy, self.new))

    def slow_request_survives(self, sig):
        gw = self.gateway()
        result = {}

        def slow():
            # long enough that it is still in flight when the signal comes (a
            # loaded box may take a while to see it at the backend)
            result["r"] = curl(self.url + "/x?latency_ms=%d" % (2500 * SLOW))

        t = threading.Thread(target=slow)
        t.start()
        # The request must be in flight (at the backend) before the signal.
        wait_for(lambda: self.backends("sleeping") >= 1, what="the slow request at the backend")
        gw.send_signal(sig)
        t.join(60 * SLOW)
        self.assertEqual(result["r"][0], 200)
        self.assertIn("close", result["r"][1].get("connection", ""))
        self.assertEqual(gw.wait(20 * SLOW), 0)
        # Nothing listens any more.
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1)

    def test_sigterm_finishes_in_flight(self):
        self.slow_request_survives(signal.SIGTERM)

    def test_sigquit_finishes_in_flight(self):
        self.slow_request_survives(signal.SIGQUIT)

    def test_drain_deadline(self):
        gw = self.gateway(extra_top="timeouts: {drain: 1s}")
        p = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", self.url + "/x?hang=1"],
                             stdout=subprocess.PIPE, text=True)
        wait_for(lambda: self.backends("hanging") >= 1, what="the hanging request at the backend")
        start = time.time()
        gw.send_signal(signal.SIGTERM)
        self.assertEqual(gw.wait(20 * SLOW), 0)
        # The deadline is 1 s; without it the drain would wait for the request
        # (the default drain timeout is 30 s). The margin is for a loaded box.
        self.assertLess(time.time() - start, 8 * SLOW)
        p.wait(20 * SLOW)


if __name__ == "__main__":
    main()

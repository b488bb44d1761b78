#!/usr/bin/env python3
"""Timeouts and backend failures: a client never hangs. Slow request heads get
408, a hanging backend 504, a refused or dropped connection 502, and idle
keep-alive connections are closed."""
import socket
import time

from harness import SLOW, GatewayTest, curl, free_port, main, raw

TIMEOUTS = "timeouts: {client_header: 1s, client_idle: 1s, connect: 500ms, upstream_header: 1s, body_idle: 1s}"


class Failures(GatewayTest):
    def test_slowloris_gets_408(self):
        self.gateway(extra_top=TIMEOUTS)
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(5 * SLOW)
        start = time.time()
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        out = b""
        for _ in range(20):  # keep trickling header bytes: they must not extend the deadline
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                break
            time.sleep(0.1)
        while True:
            try:
                d = s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                break
            if not d:
                break
            out += d
        self.assertTrue(out.startswith(b"HTTP/1.1 408"), out[:80])
        self.assertLess(time.time() - start, 4 * SLOW)

    def test_idle_keepalive_is_closed(self):
        self.gateway(extra_top=TIMEOUTS)
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(5 * SLOW)
        start = time.time()
        self.assertEqual(s.recv(10), b"")
        self.assertGreater(time.time() - start, 0.8)

    def test_hanging_backend_gets_504(self):
        self.gateway(extra_top=TIMEOUTS)
        start = time.time()
        s, h, b = curl(self.url + "/x?hang=1")
        self.assertEqual(s, 504)
        self.assertIn(b"timeouts.upstream_header", b)
        self.assertLess(time.time() - start, 4 * SLOW)
        self.assertEqual(self.access_wait(len)[-1]["error"], "timeout")

    def test_refused_backend_gets_502(self):
        dead = free_port()
        cfg = """workers: 1
listen: [{address: 127.0.0.1:%d}]
access_log: %%(log)s
%s
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
routes:
  - {name: r, legacy: legacy}
""" % (self.port, TIMEOUTS, dead)
        self.gateway(text=cfg)
        s, h, b = curl(self.url + "/x")
        self.assertEqual(s, 502)
        self.assertIn(b"refused", b)
        self.assertEqual(self.access_wait(len)[-1]["error"], "connect")

    def test_backend_closing_without_answer_gets_502(self):
        self.gateway(extra_top=TIMEOUTS)
        s, h, b = curl(self.url + "/x?close=1")
        self.assertEqual(s, 502)
        self.assertEqual(self.access_wait(len)[-1]["error"], "reset")

    def test_backend_500_is_passed_and_counted(self):
        self.gateway(extra_top=TIMEOUTS)
        s, h, b = curl(self.url + "/x?status=503")
        self.assertEqual(s, 503)
        self.assertEqual(h["x-backend"], "legacy")
        self.assertEqual(self.access_wait(len)[-1]["error"], "status")

    def test_stalled_request_body_gets_408(self):
        self.gateway(extra_top=TIMEOUTS)
        out = raw(self.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc", timeout=5)
        self.assertTrue(out.startswith(b"HTTP/1.1 408"), out[:80])

    def test_connection_reused_after_backend_closed_it(self):
        # The backend drops idle connections (close=1 answers nothing, so use a
        # restart instead): a request on a stale pooled connection is retried.
        self.gateway(extra_top=TIMEOUTS, workers=1, percent=0)
        self.assertEqual(curl(self.url + "/x")[0], 200)
        # Restart the legacy backend on the same port: the pooled connection dies.
        old = self.env.procs[0]
        self.env.stop(old)
        self.env.start_backend("legacy", port=self.legacy)
        for _ in range(3):
            self.assertEqual(curl(self.url + "/x")[0], 200)


if __name__ == "__main__":
    main()

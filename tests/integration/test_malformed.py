#!/usr/bin/env python3
"""Strict parsing: every malformed request is refused with a 4xx and a reason,
the connection is closed, and nothing reaches a backend."""
from harness import GatewayTest, backend_stats, main, raw

CASES = [
    ("duplicate Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("conflicting Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("Content-Length with Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n", 400),
    ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare LF in a header", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n  z\r\n\r\n", 400),
    ("space in header name", b"GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nX : z\r\n\r\n", 400),
    ("control character in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("unknown transfer coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("bad method", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("unsupported major version", b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505),
    ("malformed version", b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
    ("header block over the limit", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", 431),
    ("URI over the limit", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("body over the limit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", 413),
]


class Malformed(GatewayTest):
    def test_each_case_is_refused_and_not_forwarded(self):
        self.gateway(extra_top="limits: {body_bytes: 1MiB}")
        before = backend_stats(self.legacy)["requests"] + backend_stats(self.new)["requests"]
        for name, data, status in CASES:
            with self.subTest(name):
                out = raw(self.port, data)
                head, _, body = out.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 %d " % status), (name, out[:200]))
                self.assertIn(b"connection: close", head.lower())
                self.assertIn(b'"reason":', body)
                self.assertFalse(out.endswith(b"<timeout>"), name)  # closed by the gateway
        after = backend_stats(self.legacy)["requests"] + backend_stats(self.new)["requests"]
        self.assertEqual(after - before, 2)  # only the two /__stats calls

    def test_chunked_body_over_the_limit(self):
        self.gateway(extra_top="limits: {body_bytes: 1KiB}")
        body = b"800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n"
        out = raw(self.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:100])

    def test_h2c_upgrade_is_not_passed_on(self):
        self.gateway()
        out = raw(self.port, b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                             b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:100])
        body = out.partition(b"\r\n\r\n")[2].lower()
        self.assertNotIn(b"h2c", body)
        self.assertNotIn(b"http2-settings", body)


if __name__ == "__main__":
    main()

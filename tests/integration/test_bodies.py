#!/usr/bin/env python3
"""Bodies through the gateway: 50 MB chunked upload and 50 MB streamed download
with the gateway's memory bounded, Content-Length and chunked both ways,
Expect: 100-continue, HTTP/1.0 clients, a slow reader."""
import hashlib
import os
import socket
import subprocess
import time

from harness import SLOW, GatewayTest, curl, main, raw

MB = 1 << 20


def rss_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Bodies(GatewayTest):
    def setUp(self):
        super().setUp()
        self.gw = self.gateway()
        self.big = self.env.path("big.bin")
        with open(self.big, "wb") as f:
            for _ in range(50):
                f.write(os.urandom(MB))
        with open(self.big, "rb") as f:
            self.big_sha = hashlib.sha256(f.read()).hexdigest()

    def check_rss(self):
        # ASan's shadow memory makes absolute RSS meaningless there.
        if os.environ.get("SWITCHYARD_SANITIZE", "OFF").upper() not in ("ON", "1", "TRUE"):
            self.assertLess(rss_hwm_kb(self.gw.pid), 64 * 1024)

    def test_50mb_chunked_upload(self):
        s, h, b = curl(self.url + "/echo", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + self.big,
                       timeout=120)
        import json
        d = json.loads(b)
        self.assertEqual((s, d["body_length"], d["body_sha256"]), (200, 50 * MB, self.big_sha))
        te = [v for k, v in d["headers"] if k.lower() == "transfer-encoding"]
        self.assertEqual(te, ["chunked"])
        self.check_rss()

    def test_50mb_content_length_upload_with_expect(self):
        import json
        s, h, b = curl(self.url + "/echo", "-H", "Expect: 100-continue", "--data-binary", "@" + self.big,
                       timeout=120)
        d = json.loads(b)
        self.assertEqual((s, d["body_length"], d["body_sha256"]), (200, 50 * MB, self.big_sha))
        self.check_rss()

    def test_50mb_downloads(self):
        for extra in ("", "&chunked=1"):
            out = self.env.path("dl.bin")
            r = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code} %{size_download}",
                                self.url + "/dl?size=%d%s" % (50 * MB, extra)], capture_output=True, text=True,
                               timeout=120 * SLOW)
            self.assertEqual(r.stdout, "200 %d" % (50 * MB), r.stderr)
        self.check_rss()

    def test_slow_reader_bounds_memory(self):
        # A client that reads 20 MB slowly: the gateway stops reading the backend
        # instead of buffering (back-pressure), and everything arrives.
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /dl?size=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (20 * MB))
        got = 0
        start = time.time()
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += len(d)
            if time.time() - start < 1.0:
                time.sleep(0.005)
        self.assertGreater(got, 20 * MB)
        self.check_rss()

    def test_http10_client_gets_close_delimited_body(self):
        out = raw(self.port, b"GET /dl?size=100000&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        self.assertIn(b"200", head.split(b"\r\n")[0])
        self.assertNotIn(b"chunked", head.lower())
        self.assertEqual(len(body), 100000)

    def test_chunked_response_is_rechunked(self):
        out = raw(self.port, b"GET /dl?size=70000&chunked=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        self.assertIn(b"transfer-encoding: chunked", head.lower())
        self.assertTrue(body.endswith(b"0\r\n\r\n"))

    def test_pipelined_requests_answer_in_order(self):
        reqs = b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10))
        out = raw(self.port, reqs + b"GET /echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        import re
        order = re.findall(rb'"target": "/echo\?n=(\w+)"', out)
        self.assertEqual(order, [str(i).encode() for i in range(10)] + [b"last"])


if __name__ == "__main__":
    main()

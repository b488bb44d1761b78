#!/usr/bin/env python3
"""The gateway under valgrind (memcheck) through a mix of exchanges: plain,
bodies both ways, errors, malformed input, WebSocket, pipelining, drain. Any
memcheck error or definite leak fails the test (exit code 99)."""
import base64
import os
import signal
import subprocess
import time
import unittest

import harness
from harness import Env, base_config, curl, free_port, raw


class Valgrind(unittest.TestCase):
    def test_clean_under_memcheck(self):
        env = Env()
        try:
            legacy = env.start_backend("legacy")
            new = env.start_backend("new")
            port = free_port()
            cfg = env.write_config(base_config(port, legacy, new).replace("%(log)s", env.path("access.log")))
            log = env.path("valgrind.log")
            with open(env.path("gw.log"), "w") as out:
                p = subprocess.Popen(["valgrind", "--error-exitcode=99", "--leak-check=full",
                                      "--errors-for-leak-kinds=definite,indirect", "--log-file=" + log,
                                      harness.BIN, "-c", cfg], stdout=out, stderr=subprocess.STDOUT)
            harness.wait_port(port, timeout=60, proc=p)
            url = "http://127.0.0.1:%d" % port
            self.assertEqual(curl(url + "/x", "-H", "X-User-Id: 42")[0], 200)
            body = env.path("body.bin")
            with open(body, "wb") as f:
                f.write(os.urandom(1 << 20))
            self.assertEqual(curl(url + "/echo", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + body)[0], 200)
            self.assertEqual(curl(url + "/dl?size=2000000&chunked=1", "-o", "/dev/null")[0], 200)
            self.assertEqual(curl(url + "/x?status=503")[0], 503)
            self.assertEqual(curl(url + "/x?close=1")[0], 502)
            self.assertTrue(raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nA B: c\r\n\r\n").startswith(b"HTTP/1.1 400"))
            out = raw(port, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            self.assertEqual(out.count(b"HTTP/1.1 200"), 2)
            key = base64.b64encode(os.urandom(16))
            ws = raw(port, b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           b"\x88\x80\x00\x00\x00\x00", timeout=10)
            self.assertTrue(ws.startswith(b"HTTP/1.1 101"), ws[:60])
            p.send_signal(signal.SIGTERM)
            rc = p.wait(120)
            with open(log) as f:
                report = f.read()
            self.assertEqual(rc, 0, report[-3000:])
            self.assertIn("ERROR SUMMARY: 0 errors", report)
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

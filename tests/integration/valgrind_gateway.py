#!/usr/bin/env python3
"""The gateway under valgrind (memcheck) through a mix of exchanges: plain,
bodies both ways, errors, malformed input, WebSocket, pipelining, drain. Any
memcheck error or definite leak fails the test (exit code 99)."""
import base64
import json
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
            top = "admin: {address: 127.0.0.1:%d}\n" % free_port()  # never the default 9901 another gateway may hold
            cfg = env.write_config(base_config(port, legacy, new, extra_top=top).replace("%(log)s", env.path("access.log")))
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

    def test_record_clean_under_memcheck(self):
        """The journal thread, the libpq writer and the readers: a change, PostgreSQL
        away and back, /events, a stop."""
        env = Env()
        try:
            pg = env.start_postgres()
            r = env.start_redis()
            legacy = env.start_backend("legacy")
            new = env.start_backend("new")
            port, admin = free_port(), free_port()
            tok = env.path("token")
            with open(tok, "w") as f:
                f.write("valgrind-token-0123456789")
            top = ("admin: {address: 127.0.0.1:%d, token_file: %s}\nredis: {address: 127.0.0.1:%d}\n"
                   "postgres: {conninfo: \"%s\", journal: %s, window: 1s}\n"
                   % (admin, tok, r.port, pg.conninfo(), env.path("journal")))
            cfg = env.write_config(base_config(port, legacy, new, extra_top=top).replace("%(log)s", "off"))
            log = env.path("valgrind.log")
            with open(env.path("gw.log"), "w") as out:
                p = subprocess.Popen(["valgrind", "--error-exitcode=99", "--leak-check=full",
                                      "--errors-for-leak-kinds=definite,indirect", "--log-file=" + log,
                                      harness.BIN, "-c", cfg], stdout=out, stderr=subprocess.STDOUT)
            harness.wait_port(admin, timeout=60, proc=p)
            auth = ("-H", "Authorization: Bearer valgrind-token-0123456789")

            def status():
                return json.loads(curl("http://127.0.0.1:%d/status" % admin)[2])["record"]

            def wait(cond):
                deadline = time.time() + 60
                while time.time() < deadline and not cond():
                    time.sleep(0.2)
                self.assertTrue(cond())

            wait(lambda: status()["schema_ready"])
            for i in range(20):
                curl("http://127.0.0.1:%d/x" % port, "-H", "X-User-Id: u%d" % i)
            self.assertEqual(curl("-XPOST", "http://127.0.0.1:%d/routes/nav/percent" % admin, *auth,
                                  "-d", '{"percent_bp": 3000, "reason": "vg"}')[0], 200)
            env.redis(r.port, "HSET", "switchyard:route:nav", "percent_bp", "bad")
            pg.stop()
            self.assertEqual(curl("-XPOST", "http://127.0.0.1:%d/routes/nav/percent" % admin, *auth,
                                  "-d", '{"percent_bp": 3500, "reason": "vg down"}')[0], 200)
            self.assertEqual(curl("http://127.0.0.1:%d/events" % admin)[0], 503)
            pg.start()
            wait(lambda: status()["schema_ready"] and status()["journal"]["events_acked"] >= 4)
            s, _, b = curl("http://127.0.0.1:%d/events?route=nav&since=1h" % admin)
            self.assertEqual(s, 200)
            self.assertIn("vg down", b.decode())
            p.send_signal(signal.SIGTERM)
            rc = p.wait(120)
            with open(log) as f:
                report = f.read()
            self.assertEqual(rc, 0, report[-3000:])
            self.assertIn("ERROR SUMMARY: 0 errors", report)
            self.assertEqual(pg.scalar("SELECT count(*) FROM events WHERE reason LIKE 'vg%'"), "2")
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

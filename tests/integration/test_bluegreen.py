#!/usr/bin/env python3
"""Blue-green swaps with real processes and a real Redis: a swap under a wrk
load (zero non-2xx, zero socket errors, everything after it on green, a slow
request started on blue finishing on blue), a swap to an unhealthy colour
refused, a WebSocket on blue surviving a swap, and deploy/blue-green.sh end to
end and on its failure path."""
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

from harness import BIN, HERE, ROOT, SLOW, Env, curl, free_port, main, wait_for, wait_port

TOKEN = "bluegreen-token-0123456789abcdef"


class BlueGreen(unittest.TestCase):
    def setUp(self):
        self.env = Env()

    def tearDown(self):
        self.env.close()

    def start(self, green=True, redis=True, drain="30s"):
        self.blue = self.env.start_backend("blue")
        self.green = self.env.start_backend("green") if green else free_port()
        self.port, self.admin = free_port(), free_port()
        self.tok = self.env.path("token")
        with open(self.tok, "w") as f:
            f.write(TOKEN)
        self.r = self.env.start_redis() if redis else None
        cfg = """workers: 2
listen: [{address: 127.0.0.1:%d}]
access_log: %s
admin: {address: 127.0.0.1:%d, token_file: %s}
timeouts: {drain: %s}
%s
pools:
  stts:
    colors: {blue: [127.0.0.1:%d], green: [127.0.0.1:%d]}
    active: blue
    health: {path: /health, interval: 200ms, timeout: 300ms, rise: 2, fall: 2}
routes:
  - name: speech
    legacy: stts
""" % (self.port, self.env.path("access.log"), self.admin, self.tok, drain,
       "redis: {address: 127.0.0.1:%d}" % self.r.port if redis else "", self.blue, self.green)
        self.gw = self.env.start_gateway(cfg, self.port)
        self.url = "http://127.0.0.1:%d" % self.port

    def swap(self, to=None):
        body = json.dumps({"to": to, "reason": "test"} if to else {"reason": "test"})
        s, h, b = curl("http://127.0.0.1:%d/pools/stts/swap" % self.admin, "-H", "Authorization: Bearer " + TOKEN,
                       "-H", "Content-Type: application/json", "-d", body)
        return s, json.loads(b)

    def pool(self, name="stts"):
        pools = json.loads(curl("http://127.0.0.1:%d/status" % self.admin)[2])["pools"]
        return [p for p in pools if p["name"] == name][0]

    def wait_blue(self, cond):
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline:
            if cond(json.loads(curl("http://127.0.0.1:%d/__stats" % self.blue)[2])):
                return
            time.sleep(0.02)
        self.fail("blue never reached the expected state")

    def wait_green_ready(self):
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            eps = self.pool()["endpoints"]
            if all(e["good_probes"] >= 2 for e in eps if e["color"] == "green"):
                return
            time.sleep(0.05)
        self.fail("green never passed its probes")

    def test_swap_under_wrk_load(self):
        self.start()
        self.wait_green_ready()
        slow = {}
        t = threading.Thread(target=lambda: slow.update(r=curl(self.url + "/x?latency_ms=1500")))
        # The load runs until green has served enough after the swap (then wrk
        # is stopped by SIGINT and prints its summary): a fixed -d could end
        # before the swap on a loaded box. --timeout: a slow response on a
        # loaded box is not a socket error of the swap's making.
        wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d120s", "--timeout", "30s", self.url + "/x"],
                               stdout=subprocess.PIPE, text=True)
        self.wait_blue(lambda st: st["requests"] > 200)  # the load is running
        t.start()
        self.wait_blue(lambda st: st["sleeping"] >= 1)  # the slow request is on blue
        s, b = self.swap("green")
        swapped_at = time.time()
        self.assertEqual(s, 200, b)
        polls = [0]

        def green_served():
            polls[0] += 1  # each look is one request of green's own count
            return json.loads(curl("http://127.0.0.1:%d/__stats" % self.green)[2])["requests"] - polls[0] >= 300

        wait_for(green_served, 60, "green to serve 300 requests of the load", every=0.1)
        wrk.send_signal(signal.SIGINT)
        out = wrk.communicate(timeout=30 * SLOW)[0]
        t.join(30 * SLOW)
        self.assertNotIn("Non-2xx", out, out)
        self.assertNotIn("Socket errors", out, out)
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        self.assertGreater(reqs, 500)
        self.assertEqual((slow["r"][0], slow["r"][1]["x-backend"]), (200, "blue"))  # started on blue, ends there
        # Every request that started after the swap went to green. The access
        # log is written by a background thread: wait for wrk's and the slow one.
        def logged():
            with open(self.env.path("access.log")) as f:
                ls = [json.loads(l) for l in f.read().split("\n")[:-1] if l.strip()]
            return ls if len(ls) >= reqs + 1 else None
        lines = wait_for(logged, what="the load's access-log lines")
        import datetime
        late = [l for l in lines
                if datetime.datetime.strptime(l["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp() - l["duration_ms"] / 1000 > swapped_at + 0.05]
        self.assertGreater(len(late), 100)
        self.assertEqual({l["upstream"] for l in late}, {"127.0.0.1:%d" % self.green})
        self.assertEqual(self.env.redis(self.r.port, "HGET", "switchyard:pool:stts", "active"), "green")
        self.assertEqual(curl(self.url + "/x")[1]["x-backend"], "green")

    def test_swap_to_unhealthy_colour_is_refused(self):
        self.start(green=False)
        time.sleep(1.0)
        s, b = self.swap("green")
        self.assertEqual(s, 409)
        self.assertIn("has not passed", b["reason"])
        self.assertEqual(self.pool()["active"], "blue")
        self.assertEqual(curl(self.url + "/x")[1]["x-backend"], "blue")
        self.env.allowed.append(r"health:")

    def test_websocket_on_blue_survives_a_swap(self):
        # The drain must outlast the swap's reply, a curl and an echo on a loaded box.
        drain_s = 2.0 * SLOW
        self.start(redis=False, drain="%dms" % (drain_s * 1000))
        self.wait_green_ready()
        import socket
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(5 * SLOW)
        key = base64.b64encode(os.urandom(16))
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        self.assertIn(b"X-Backend: blue", head)

        def echo(msg):
            mask = os.urandom(4)
            s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(msg)))
            hdr = s.recv(2)
            return s.recv(hdr[1] & 0x7F)

        self.assertEqual(echo(b"before"), b"before")
        self.assertEqual(self.swap("green")[0], 200)
        self.assertEqual(curl(self.url + "/x")[1]["x-backend"], "green")
        time.sleep(0.3)
        self.assertEqual(echo(b"after"), b"after")  # the tunnel on blue goes on
        self.assertEqual(self.pool()["draining"], 1)
        # ... within timeouts.drain of the swap, then it is closed.
        start = time.time()
        self.assertEqual(s.recv(10), b"")
        self.assertLess(time.time() - start, drain_s + 3 * SLOW)
        self.assertEqual(self.pool()["draining"], 0)
        s.close()

    def test_coloured_pool_as_the_new_side_of_a_ramp(self):
        legacy = self.env.start_backend("legacy")
        blue, green = self.env.start_backend("new-blue"), self.env.start_backend("new-green")
        self.port, self.admin = free_port(), free_port()
        self.tok = self.env.path("token")
        with open(self.tok, "w") as f:
            f.write(TOKEN)
        cfg = """workers: 1
listen: [{address: 127.0.0.1:%d}]
access_log: "off"
admin: {address: 127.0.0.1:%d, token_file: %s}
pools:
  old: {endpoints: [127.0.0.1:%d]}
  stts:
    colors: {blue: [127.0.0.1:%d], green: [127.0.0.1:%d]}
    health: {path: /health, interval: 200ms, timeout: 300ms, rise: 2, fall: 2}
routes:
  - name: speech
    user_key: [{header: X-User-Id}]
    legacy: old
    new: stts
    percent_bp: 5000
""" % (self.port, self.admin, self.tok, legacy, blue, green)
        self.env.start_gateway(cfg, self.port)
        self.url = "http://127.0.0.1:%d" % self.port
        from harness import Client
        c = Client(self.port)
        before = {c.get("/x", {"X-User-Id": "u%d" % i})[1]["x-backend"] for i in range(60)}
        self.assertEqual(before, {"legacy", "new-blue"})  # the ramp splits users; new means blue
        self.wait_green_ready()
        self.assertEqual(self.swap("green")[0], 200)
        after = {c.get("/x", {"X-User-Id": "u%d" % i})[1]["x-backend"] for i in range(60)}
        self.assertEqual(after, {"legacy", "new-green"})  # same users on new, now green
        c.close()

    def script(self, *cmd, timeout_s=20):
        env = dict(os.environ, SWITCHYARD_ADMIN="127.0.0.1:%d" % self.admin, SWITCHYARD_TOKEN_FILE=self.tok,
                   STATE_DIR=self.env.path("state"), TIMEOUT=str(int(timeout_s)), LOG=self.env.path("next.log"))
        return subprocess.run([os.path.join(ROOT, "deploy", "blue-green.sh"), "stts"] + list(cmd), env=env,
                              capture_output=True, text=True, timeout=120)

    def test_blue_green_script(self):
        self.start(green=False)
        os.makedirs(self.env.path("state"), exist_ok=True)
        blue_proc = self.env.procs[0]
        with open(self.env.path("state/stts.blue.pid"), "w") as f:
            f.write(str(blue_proc.pid))
        r = self.script(sys.executable, os.path.join(HERE, "backend.py"), "--port", "{port}", "--name", "v2")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("serves green", r.stdout)
        self.assertEqual(curl(self.url + "/x")[1]["x-backend"], "v2")
        self.assertIsNotNone(blue_proc.poll())  # the old version was stopped
        with open(self.env.path("state/stts.green.pid")) as f:
            os.kill(int(f.read()), signal.SIGTERM)  # the new version is the script's child, not ours
        self.env.allowed.append(r"health:")

    def test_blue_green_script_failure_leaves_traffic(self):
        self.start(green=False)
        # A version that never becomes healthy (it never even listens).
        r = self.script("sleep", "60", timeout_s=3)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("traffic stays on blue", r.stderr)
        self.assertEqual(self.pool()["active"], "blue")
        self.assertEqual(curl(self.url + "/x")[1]["x-backend"], "blue")
        self.env.allowed.append(r"health:")


if __name__ == "__main__":
    main()

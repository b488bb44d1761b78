#!/usr/bin/env python3
"""Zero-downtime operation under load: SIGHUP with a changed route (zero failed
requests), SIGHUP with an invalid config (still serving, the error logged with
line and column), and a binary upgrade (a second process takes the listening
sockets over, the first drains: zero failed requests, zero refused connections)."""
import os
import re
import signal
import subprocess
import threading
import time

from harness import BIN, ROOT, SLOW, Client, GatewayTest, base_config, curl, main, wait_for


class Load:
    """Keep-alive and fresh-connection clients in threads, counting failures."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop = threading.Event()
        self.ok = 0
        self.failed = []
        self.variants = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(k,)) for k in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, k):
        i = 0
        c = Client(self.port)
        while not self.stop.is_set():
            i += 1
            if k % 2 == 1 and i % 5 == 0:
                c.close()  # half the clients also open new connections often
                c = Client(self.port)
            try:
                s, h, b = c.get("/x", {"X-User-Id": "u%d-%d" % (k, i % 50)})
                with self.lock:
                    if s == 200:
                        self.ok += 1
                        self.variants[h.get("x-switchyard-variant")] = self.variants.get(
                            h.get("x-switchyard-variant"), 0) + 1
                    else:
                        self.failed.append(s)
            except Exception as e:
                with self.lock:
                    self.failed.append(repr(e))
        c.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


class ZeroDowntime(GatewayTest):
    def test_sighup_under_load(self):
        gw = self.gateway(percent=0)
        load = Load(self.port)
        # Some answers before the reload (the legacy side is asserted below).
        wait_for(lambda: load.variants.get("legacy", 0) >= 20, what="the load under the old config")
        with open(gw.config_path) as f:
            text = f.read()
        with open(gw.config_path, "w") as f:
            f.write(text.replace("percent_bp: 0", "percent_bp: 10000"))
        gw.send_signal(signal.SIGHUP)
        wait_for(lambda: load.variants.get("new", 0) > 0, 10, "the reloaded percentage in force")
        time.sleep(0.3)  # load goes on past the switch (not a readiness wait)
        load.finish()
        self.assertEqual(load.failed, [])
        self.assertGreater(load.variants.get("new", 0), 0)     # the change took effect
        self.assertGreater(load.variants.get("legacy", 0), 0)  # before it
        s, h, b = curl(self.url + "/x", "-H", "X-User-Id: anyone")
        self.assertEqual(h["x-switchyard-variant"], "new")

    def test_sighup_with_invalid_config_keeps_serving(self):
        gw = self.gateway(percent=0)
        self.env.allowed.append(r"reload refused")
        load = Load(self.port, threads=2)
        with open(gw.config_path) as f:
            text = f.read()
        with open(gw.config_path, "w") as f:
            f.write(text.replace("percent_bp: 0", "percent_bp: 20000"))
        gw.send_signal(signal.SIGHUP)

        def log_text():
            with open(gw.log_path) as f:
                return f.read()
        # The config is read by a loader thread: wait for its verdict, then
        # for more answers after it (still served on the old config).
        wait_for(lambda: "reload refused" in log_text(), what="the reload refused")
        served = load.ok
        wait_for(lambda: load.ok >= served + 20, what="answers after the refused reload")
        load.finish()
        self.assertEqual(load.failed, [])
        self.assertEqual(set(load.variants), {"legacy"})
        log = log_text()
        self.assertRegex(log, r"reload refused, still running on the previous config: .*gw\.yaml:\d+:\d+: "
                              r"20000 is out of range")

    def test_sighup_warns_of_restart_only_keys(self):
        # The config table's reload column: a change of workers is applied only
        # at the next start (warned), a change of a route at once (not warned).
        gw = self.gateway(percent=0)
        self.env.allowed.append(r"reload: a change of workers takes effect only after a restart")
        with open(gw.config_path) as f:
            text = f.read()
        with open(gw.config_path, "w") as f:
            f.write(text.replace("workers: 2", "workers: 3").replace("percent_bp: 0", "percent_bp: 10000"))
        gw.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20 * SLOW
        log = ""
        while time.monotonic() < deadline and "reload: new requests use the new config" not in log:
            time.sleep(0.05)
            with open(gw.log_path) as f:
                log = f.read()
        self.assertIn("reload: a change of workers takes effect only after a restart", log)
        self.assertNotIn("a change of listen", log)
        self.assertNotIn("a change of routes", log)
        s, h, b = curl(self.url + "/x", "-H", "X-User-Id: anyone")
        self.assertEqual(h["x-switchyard-variant"], "new")

    def test_binary_upgrade_under_load(self):
        old = self.gateway(percent=5000)
        load = Load(self.port, threads=6)
        wait_for(lambda: load.ok >= 100, what="the load on the old process")
        # The new binary takes the listening sockets over (SCM_RIGHTS); the old
        # one drains once the new one serves.
        r, w = os.pipe()
        try:
            new = self.env.start_gateway(open(old.config_path).read(), self.port, name="gw-new", wait=False,
                                         args=["--takeover", "--ready-fd", str(w)], pass_fds=(w,))
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            self.assertEqual(f.readline().strip(), "ready %d" % new.pid)
        self.assertEqual(old.wait(30 * SLOW), 0)
        served = load.ok
        wait_for(lambda: load.ok >= served + 100, what="the load on the new process")
        load.finish()
        self.assertEqual(load.failed, [])
        self.assertGreater(load.ok, 200)
        self.assertIsNone(new.poll())
        s, h, b = curl(self.url + "/x")
        self.assertEqual(s, 200)

    def test_upgrade_script(self):
        old = self.gateway(percent=5000)
        load = Load(self.port, threads=4)
        wait_for(lambda: load.ok >= 20, what="the load on the old process")
        log = self.env.path("upgraded.log")
        r = subprocess.run([os.path.join(ROOT, "deploy", "upgrade.sh"), str(old.pid), BIN, old.config_path, log],
                           capture_output=True, text=True, timeout=120)
        load.finish()
        self.assertEqual(r.returncode, 0, r.stderr)
        new_pid = int(re.search(r"upgraded: \d+ -> (\d+)", r.stdout).group(1))
        try:
            self.assertEqual(old.wait(30 * SLOW), 0)
            self.assertEqual(load.failed, [])
            self.assertEqual(curl(self.url + "/x")[0], 200)
        finally:
            os.kill(new_pid, signal.SIGTERM)
            for _ in range(int(400 * SLOW)):  # up to 20 s (x SLOW): its log is read below
                try:
                    os.kill(new_pid, 0)
                    time.sleep(0.05)
                except ProcessLookupError:
                    break
        with open(log) as f:
            self.assertNotRegex(f.read(), r"ERROR: AddressSanitizer|runtime error:|Z error \[")

    def test_upgrade_script_failure_keeps_the_old_process(self):
        old = self.gateway()
        broken = self.env.write_config("workers: 0\n", "broken.yaml")
        r = subprocess.run([os.path.join(ROOT, "deploy", "upgrade.sh"), str(old.pid), BIN, broken],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIsNone(old.poll())
        self.assertEqual(curl(self.url + "/x")[0], 200)


if __name__ == "__main__":
    main()

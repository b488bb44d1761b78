#!/usr/bin/env python3
"""Listeners: exclusive ports (a second gateway on a taken admin or data address
refuses to start and says which process holds it), a binary upgrade by hand-off
of the listening sockets and a SIGQUIT/SIGTERM stop, each under continuous
`wrk -t1 -c32` keep-alive load with zero socket errors and zero non-2xx, the
upgrade script end to end, and a flood past a low open-file limit (CPU and log
bounded, serving again afterwards)."""
import os
import re
import signal
import socket
import subprocess
import time

from harness import BIN, ROOT, SLOW, GatewayTest, backend_stats, base_config, curl, free_port, main, wait_for

WRK_LINE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class Wrk:
    """wrk -t1 -c32 on keep-alive connections until stopped (SIGINT makes it print)."""

    def __init__(self, url):
        self.p = subprocess.Popen(["wrk", "-t1", "-c32", "-d%ds" % int(300 * SLOW), "--timeout", "%ds" % int(10 * SLOW),
                                   url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self):
        self.p.send_signal(signal.SIGINT)
        out = self.p.communicate(timeout=30 * SLOW)[0]
        m = WRK_LINE.search(out)
        errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {
            "connect": 0, "read": 0, "write": 0, "timeout": 0}
        n = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        total = re.search(r"(\d+) requests in", out)
        return errors, int(n.group(1)) if n else 0, int(total.group(1)) if total else 0, out



class Listeners(GatewayTest):
    def config(self, admin=None, extra_top=""):
        admin = admin or free_port()
        text = base_config(self.port, self.legacy, self.new, percent=5000,
                           extra_top="admin: {address: 127.0.0.1:%d}\n%s" % (admin, extra_top))
        return text.replace("%(log)s", "off"), admin

    def served(self, n):
        """Waits until the backends have answered n more requests than now."""
        start = backend_stats(self.legacy)["requests"] + backend_stats(self.new)["requests"]
        wait_for(lambda: backend_stats(self.legacy)["requests"] + backend_stats(self.new)["requests"] >= start + n,
                 20, "%d requests through the gateway" % n)

    def start_takeover(self, text, name):
        """A new gateway with --takeover; returns once it says it is serving."""
        r, w = os.pipe()
        try:
            gw = self.env.start_gateway(text, self.port, name=name, wait=False,
                                        args=["--takeover", "--ready-fd", str(w)], pass_fds=(w,))
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            line = f.readline()  # EOF if it died: then the assertion below says so
        self.assertRegex(line, r"^ready %d$" % gw.pid, "the new gateway did not become ready (log %s)" % gw.log_path)
        return gw

    # --- exclusive ports -------------------------------------------------------

    def test_second_gateway_on_the_admin_port_refuses_to_start(self):
        text, admin = self.config()
        first = self.env.start_gateway(text, self.port, name="first")
        other_port = free_port()
        second_text = text.replace("127.0.0.1:%d" % self.port, "127.0.0.1:%d" % other_port)
        second = self.env.start_gateway(second_text, other_port, name="second", wait=False)
        self.env.allowed.append(r"cannot listen on 127\.0\.0\.1:%d" % admin)
        second.killed = True  # its exit status is the point
        self.assertNotEqual(second.wait(30 * SLOW), 0)
        with open(second.log_path) as f:
            log = f.read()
        self.assertRegex(log, r"cannot listen on 127\.0\.0\.1:%d: Address already in use \(held by pid %d "
                         % (admin, first.pid))
        s, h, b = curl("http://127.0.0.1:%d/status" % admin)
        self.assertEqual(s, 200)
        self.assertIsNone(first.poll())

    def test_second_gateway_on_the_data_port_refuses_to_start(self):
        text, admin = self.config()
        first = self.env.start_gateway(text, self.port, name="first")
        second_text = text.replace("127.0.0.1:%d}" % admin, "127.0.0.1:%d}" % free_port())
        second = self.env.start_gateway(second_text, self.port, name="second", wait=False)
        self.env.allowed.append(r"cannot listen on 127\.0\.0\.1:%d" % self.port)
        second.killed = True
        self.assertNotEqual(second.wait(30 * SLOW), 0)
        with open(second.log_path) as f:
            self.assertRegex(f.read(), r"cannot listen on 127\.0\.0\.1:%d: Address already in use \(held by pid %d "
                             % (self.port, first.pid))
        # Every request still goes to the first one.
        for _ in range(20):
            self.assertEqual(curl(self.url + "/x")[0], 200)
        self.assertIsNone(first.poll())

    # --- upgrade and stop under keep-alive load ---------------------------------

    def test_handoff_upgrade_under_wrk_keepalive_load(self):
        text, admin = self.config()
        gw = self.env.start_gateway(text, self.port, name="gw0")
        wrk = Wrk(self.url + "/x?latency_ms=0")
        for i in range(1, 4):
            self.served(100)
            new = self.start_takeover(text, "gw%d" % i)
            self.assertEqual(gw.wait(60 * SLOW), 0)  # the old one drained and exited by itself
            self.assertIsNone(new.poll())
            gw = new
        self.served(100)
        errors, non2xx, total, out = wrk.finish()
        self.assertEqual(errors, {"connect": 0, "read": 0, "write": 0, "timeout": 0}, out)
        self.assertEqual(non2xx, 0, out)
        self.assertGreater(total, 400, out)
        # The admin listener moved too: the last gateway answers it.
        s, h, b = curl("http://127.0.0.1:%d/status" % admin)
        self.assertEqual(s, 200)
        with open(gw.log_path) as f:
            self.assertIn("takeover: received 2 listening sockets", f.read())

    def test_stop_under_wrk_keepalive_load(self):
        # A sub-millisecond backend leaves a connection idle most often at the
        # moment the drain starts (the old code reset 1 to 32 of them per stop).
        runs = ((signal.SIGQUIT, 0), (signal.SIGTERM, 0), (signal.SIGQUIT, 40), (signal.SIGQUIT, 0))
        read_errors = []
        for i, (sig, latency) in enumerate(runs):
            text, admin = self.config()
            gw = self.env.start_gateway(text, self.port, name="gw%d" % i)
            wrk = Wrk(self.url + "/x?latency_ms=%d" % latency)
            self.served(100)
            gw.send_signal(sig)
            self.assertEqual(gw.wait(60 * SLOW), 0)
            errors, non2xx, total, out = wrk.finish()
            # Once the gateway stopped listening wrk's reconnects are refused, which
            # it counts as connect or write errors; what was in flight or on the
            # wire on an open connection must not fail (that shows as read errors).
            self.assertEqual(errors["timeout"], 0, out)
            self.assertEqual(non2xx, 0, out)
            self.assertGreater(total, 100, out)
            read_errors.append(errors["read"])
        # One read error showed once in about 150 stops (ASan, CI). The likely cause
        # is a window no user-space proxy can close (nginx and HAProxy have it too):
        # the last worker to close the listening socket first accepts what the kernel
        # queued, and a connection whose handshake completes in the microseconds
        # between that last accept (EAGAIN) and close() is reset by the kernel; wrk,
        # which reconnects about 20,000 times a second by then, counts that as a read
        # error. So one in the four stops is excused; the bug this test guards
        # against reset 1 to 32 connections in every stop.
        self.assertLessEqual(sum(read_errors), 1, read_errors)

    def test_upgrade_script_under_wrk_keepalive_load(self):
        text, admin = self.config()
        old = self.env.start_gateway(text, self.port, name="gw0")
        wrk = Wrk(self.url + "/x?latency_ms=40")
        self.served(100)
        log = self.env.path("upgraded.log")
        r = subprocess.run([os.path.join(ROOT, "deploy", "upgrade.sh"), str(old.pid), BIN, old.config_path, log],
                           capture_output=True, text=True, timeout=180 * SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        new_pid = int(re.search(r"upgraded: \d+ -> (\d+)", r.stdout).group(1))
        try:
            self.assertEqual(old.wait(10 * SLOW), 0)
            self.served(100)
            errors, non2xx, total, out = wrk.finish()
            self.assertEqual(errors, {"connect": 0, "read": 0, "write": 0, "timeout": 0}, out)
            self.assertEqual(non2xx, 0, out)
            self.assertEqual(curl(self.url + "/x")[0], 200)
        finally:
            os.kill(new_pid, signal.SIGTERM)
            wait_for(lambda: not os.path.exists("/proc/%d" % new_pid) or
                     open("/proc/%d/stat" % new_pid).read().split(")")[1].split()[0] == "Z", 30, "the new gateway")
        with open(log) as f:
            self.assertNotRegex(f.read(), r"ERROR: AddressSanitizer|runtime error:|Z error \[")

    # --- running out of descriptors ---------------------------------------------

    def cpu_ticks(self, pid):
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def flood(self, gw, n, seconds):
        """Opens n connections (those past the backlog wait in SYN retries),
        holds them, returns the gateway's CPU share over the hold."""
        socks = []
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            socks.append(s)
        t0, c0 = time.time(), self.cpu_ticks(gw.pid)
        time.sleep(seconds)  # the measurement window, not a wait for readiness
        t1, c1 = time.time(), self.cpu_ticks(gw.pid)
        for s in socks:
            s.close()
        return (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)

    def check_fd_flood(self, name, lower_at_runtime):
        text, admin = self.config()
        self.env.allowed.append(r"accept: Too many open files")
        self.env.allowed.append(r"the open-file limit is")
        if lower_at_runtime:
            gw = self.env.start_gateway(text, self.port, name=name)
            subprocess.run(["prlimit", "--pid", str(gw.pid), "--nofile=256:256"], check=True)
        else:
            path = self.env.write_config(text, name + ".yaml")
            log_path = self.env.path(name + ".log")
            with open(log_path, "w") as log:  # prlimit sets the limit and execs the gateway
                gw = subprocess.Popen(["prlimit", "--nofile=256:256", BIN, "-c", path], stdout=log,
                                      stderr=subprocess.STDOUT)
            gw.log_path = log_path
            self.env.procs.append(gw)
            self.env.gateways.append(gw)
            wait_for(self.port_open, 30, "the gateway")
        cpu = self.flood(gw, 600, 3.0)
        with open(gw.log_path) as f:
            lines = f.read().splitlines()
        emfile = [l for l in lines if "Too many open files" in l]
        # Serving again once the flood is gone.
        wait_for(lambda: curl(self.url + "/x", timeout=2)[0] == 200, 30, "serving after the flood")
        print("%s: gateway CPU %.0f %% over the flood, %d log lines, %d bytes of EMFILE reports" %
              (name, cpu * 100, len(lines), sum(len(l) for l in emfile)))
        self.assertLess(cpu, 0.5)       # not spinning (a spin takes a whole core per worker)
        self.assertLess(len(emfile), 20)
        return lines

    def port_open(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def test_fd_exhaustion_started_under_low_limit(self):
        lines = self.check_fd_flood("low", lower_at_runtime=False)
        self.assertTrue(any(re.search(r"the open-file limit is 256 \(hard 256\) but limits.connections 20000 "
                                      r"needs about \d+", l) for l in lines), "\n".join(lines[-20:]))

    def test_fd_exhaustion_limit_lowered_at_runtime(self):
        lines = self.check_fd_flood("lowered", lower_at_runtime=True)
        self.assertTrue(any(re.search(r"accept: Too many open files: pausing accepts for 100 ms", l) for l in lines),
                        "\n".join(lines[-20:]))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`switchyard ctl top` in a real terminal (tmux, on a socket of its own): its
screen shows both sides' numbers as /status has them and the pools' active
colour; it redraws every second; q ends it with exit code 0 and the terminal
back as it was (the alternate screen left, the shell's screen again)."""
import json
import os
import shutil
import subprocess
import time
import unittest

from harness import BIN, Client, GatewayTest, base_config, free_port, http, main, wait_for, wait_port

TOKEN = "top-token-0123456789abcdef0123"


class Top(GatewayTest):
    def setUp(self):
        super().setUp()
        self.sock = "sy-top-%d" % os.getpid()

    def tearDown(self):
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)
        super().tearDown()

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.sock] + list(args), capture_output=True, text=True,
                              timeout=20).stdout

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top")

    def test_top_shows_both_sides_and_quits_clean(self):
        if shutil.which("tmux") is None:
            self.skipTest("tmux is not installed (deploy/install-deps.sh installs it)")
        self.admin = free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        self.gateway(text=base_config(self.port, self.legacy, self.new, percent=5000,
                                      extra_top="admin: {address: 127.0.0.1:%d, token_file: %s}" % (self.admin, tok)))
        wait_port(self.admin)
        c = Client(self.port)
        for i in range(120):
            c.variant("user-%d" % i)
        c.close()

        def settled():
            r = json.loads(http("GET", "http://127.0.0.1:%d/status" % self.admin)[1])["routes"][0]["window"]
            return r if r["legacy"]["requests"] + r["new"]["requests"] == 120 else None
        w = wait_for(settled, 15, "the window to hold the 120 requests")
        self.assertGreater(w["new"]["requests"], 0)
        self.assertGreater(w["legacy"]["requests"], 0)

        cmd = "%s ctl -a 127.0.0.1:%d -t %s top; echo top-exited-$?; sleep 120" % (BIN, self.admin, tok)
        self.tmux("new-session", "-d", "-s", "top", "-x", "150", "-y", "50", cmd)

        want = ["(%d errors of %d requests" % (w[s]["errors"], w[s]["requests"]) for s in ("legacy", "new")]

        def drawn():
            s = self.screen()
            return s if "ROUTE nav" in s and all(x in s for x in want) else None
        try:
            first = wait_for(drawn, 20, "ctl top to draw both sides' numbers")
        except AssertionError:
            self.fail("screen:\n" + self.screen())
        self.assertIn("legacy", first)
        self.assertIn("new", first)
        self.assertIn("ramping", first)
        self.assertIn("POOL new", first)
        self.assertIn("plan: no plan", first)
        clock = [l for l in first.splitlines() if "switchyard top" in l][0]
        # It redraws every second (its clock line changes).
        wait_for(lambda: clock not in self.screen(), 10, "a redraw")
        self.tmux("send-keys", "-t", "top", "q")
        after = wait_for(lambda: (lambda s: s if "top-exited-" in s else None)(self.screen()), 15, "ctl top to exit")
        self.assertIn("top-exited-0", after)
        self.assertNotIn("switchyard top", after)  # the alternate screen is gone
        self.assertNotIn("ROUTE nav", after)


if __name__ == "__main__":
    main()

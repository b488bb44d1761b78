#!/usr/bin/env python3
"""`switchyard check`: every error with file:line:col; the gateway refuses to
start on the same errors; sections of later features are refused clearly."""
import os
import subprocess

from harness import BIN, Env, free_port, main
import unittest

GOOD = """workers: 1
listen:
  - address: 127.0.0.1:%d
pools:
  a: {endpoints: [127.0.0.1:1]}
routes:
  - {name: r, legacy: a}
"""


class Config(unittest.TestCase):
    def setUp(self):
        self.env = Env()

    def tearDown(self):
        self.env.close()

    def check(self, text):
        path = self.env.write_config(text)
        r = subprocess.run([BIN, "check", "-c", path], capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr, path

    def test_good(self):
        rc, out, _ = self.check(GOOD % free_port())
        self.assertEqual(rc, 0, out)
        self.assertIn("ok", out)

    def test_errors_have_line_and_column(self):
        text = """workers: 0
listen:
  - address: 127.0.0.1:99999
timeouts: {connect: 5}
limits: {body_bytes: 12XB}
pools:
  a: {endpoints: [not-an-ip:80]}
routes:
  - name: r
    legacy: missing
    percent_bp: 10001
    user_key: [{header: X-User-Id}, {cookiez: uid}]
    bogus: 1
"""
        rc, out, path = self.check(text)
        self.assertEqual(rc, 2)
        for where in ("%s:1:10:" % path, "%s:3:14:" % path, "%s:4:21:" % path, "%s:5:22:" % path,
                      "%s:7:19:" % path, "%s:10:13:" % path, "%s:11:17:" % path, "%s:12:38:" % path,
                      "%s:13:5:" % path):
            self.assertIn(where, out)
        self.assertIn("out of range", out)
        self.assertIn("unknown pool 'missing'", out)

    def test_shipped_configs_pass(self):
        import harness
        tok = self.env.path("admin.token")
        with open(tok, "w") as f:
            f.write("0123456789abcdef0123\n")
        for name in ("switchyard.example.yaml", "quickstart.yaml"):
            with open(os.path.join(harness.ROOT, "deploy", name)) as f:
                text = f.read().replace("/etc/switchyard/admin.token", tok).replace(
                    "/tmp/switchyard-quickstart/admin.token", tok).replace("deploy/quickstart.token", tok)
            rc, out, _ = self.check(text)
            self.assertEqual(rc, 0, (name, out))

    def test_yaml_syntax_error(self):
        rc, out, path = self.check("listen: [\n  - a: b\n")
        self.assertEqual(rc, 2)
        self.assertRegex(out, r"%s:\d+:\d+: " % path)

    def test_later_features_are_refused_clearly(self):
        port = free_port()
        rc, out, _ = self.check(GOOD % port + "postgres: {conninfo: \"host=127.0.0.1 dbname=x\", journal: /tmp/j}\n")
        self.assertEqual(rc, 0, out)
        rc, out, path = self.check(GOOD % port + "postgres: {conninfo: x, journal: /tmp/j, batch: 0}\n")
        self.assertEqual(rc, 2)
        self.assertIn("%s:8:49: 0 is out of range (1..10000)" % path, out)
        rc, out, path = self.check(GOOD % port + "postgres: {conninfo: \"host\", journal: /tmp/j}\n")
        self.assertEqual(rc, 2)
        self.assertIn("%s:8:11: postgres conninfo is not valid" % path, out)
        rc, out, path = self.check(GOOD % port + "postgres: {journal: relative/dir}\n")
        self.assertEqual(rc, 2)
        self.assertIn("postgres.journal must be an absolute directory path", out)
        rc, out, path = self.check(GOOD % port + "postgres: {password_file: /nonexistent/pw}\n")
        self.assertEqual(rc, 2)
        self.assertIn("postgres.password_file /nonexistent/pw: No such file or directory", out)
        rc, out, _ = self.check(GOOD % port + "redis: {sentinels: [127.0.0.1:26379, 127.0.0.1:26380], master: sy}\n")
        self.assertEqual(rc, 0, out)
        rc, out, path = self.check(GOOD % port + "redis: {sentinels: [127.0.0.1:26379], address: 127.0.0.1:1, "
                                   "master: sy}\n")
        self.assertEqual(rc, 2)
        self.assertIn("either 'address' or 'sentinels'", out)
        rc, out, path = self.check(GOOD % port + "redis: {sentinels: [127.0.0.1:26379]}\n")
        self.assertEqual(rc, 2)
        self.assertIn("needs 'sentinels' (a list of host:port) and 'master'", out)
        rc, out, path = self.check(GOOD % port + "redis: {sentinels: [nowhere], master: sy}\n")
        self.assertEqual(rc, 2)
        self.assertIn("%s:8:21: bad redis sentinel address 'nowhere'" % path, out)
        rc, out, path = self.check(GOOD % port + "redis: {sentinels: 127.0.0.1:1, master: sy}\n")
        self.assertEqual(rc, 2)
        self.assertIn("a list of sentinels", out)
        rc, out, path = self.check(GOOD % port + "notify: {webhook_url: x}\n")
        self.assertEqual(rc, 2)
        self.assertIn("%s:8:9: webhook_url must be http://HOST:PORT/PATH" % path, out)
        rc, out, path = self.check((GOOD % port).replace("{name: r, legacy: a}",
                                                         "{name: r, legacy: a, trip: {max_error_rate: 2, x: 1}}"))
        self.assertEqual(rc, 2)
        self.assertIn("%s:7:49: expected a number 0..1" % path, out)
        self.assertIn("%s:7:52: unknown trip rule 'x'" % path, out)
        rc, out, _ = self.check((GOOD % port).replace("a: {endpoints: [127.0.0.1:1]}",
                                                      "a: {colors: {blue: [127.0.0.1:1]}}"))
        self.assertIn("colors needs a non-empty 'green' list", out)
        rc, out, _ = self.check((GOOD % port).replace("a: {endpoints: [127.0.0.1:1]}",
                                                      "a: {colors: {blue: [127.0.0.1:1], green: [127.0.0.1:2]}}"))
        self.assertIn("give it health checks", out)
        rc, out, _ = self.check((GOOD % port).replace(
            "a: {endpoints: [127.0.0.1:1]}",
            "a: {colors: {blue: [127.0.0.1:1], green: [127.0.0.1:2]}, active: green, health: {path: /health}}"))
        self.assertEqual(rc, 0, out)

    def test_gateway_refuses_to_start(self):
        path = self.env.write_config("workers: 1\nlisten: []\npools: {}\nroutes: []\n")
        r = subprocess.run([BIN, "-c", path], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("%s:2:9: at least one listener is needed" % path, r.stderr)


if __name__ == "__main__":
    main()

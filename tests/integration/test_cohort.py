#!/usr/bin/env python3
"""`switchyard cohort` and the cohort arithmetic at scale: 100,000 synthetic
users at 25 % land within 0.5 points of it; raising the route to 75 % keeps
every user who had new; the gateway agrees with the CLI."""
import subprocess

from harness import BIN, GatewayTest, base_config, curl, main


def run_cohort(cfg, users, route="nav"):
    r = subprocess.run([BIN, "cohort", route, "-", "-c", cfg], input="\n".join(users) + "\n",
                       capture_output=True, text=True, check=True)
    return [dict(kv.split("=", 1) for kv in line.split()) for line in r.stdout.splitlines()]


class Cohort(GatewayTest):
    def test_distribution_and_monotonic_ramp(self):
        users = ["user-%d" % i for i in range(100000)]
        c25 = self.env.write_config(base_config(self.port, self.legacy, self.new, percent=2500).replace("%(log)s", "off"), "c25.yaml")
        c75 = self.env.write_config(base_config(self.port, self.legacy, self.new, percent=7500).replace("%(log)s", "off"), "c75.yaml")
        at25 = run_cohort(c25, users)
        at75 = run_cohort(c75, users)
        self.assertEqual(len(at25), len(users))
        share = sum(1 for r in at25 if r["variant"] == "new") / len(users)
        self.assertLess(abs(share - 0.25), 0.005, share)
        share75 = sum(1 for r in at75 if r["variant"] == "new") / len(users)
        self.assertLess(abs(share75 - 0.75), 0.005, share75)
        for a, b in zip(at25, at75):
            self.assertEqual(a["bucket"], b["bucket"])
            if a["variant"] == "new":
                self.assertEqual(b["variant"], "new", a)

    def test_cli_line_and_errors(self):
        cfg = self.env.write_config(base_config(self.port, self.legacy, self.new).replace("%(log)s", "off"), "c.yaml")
        r = subprocess.run([BIN, "cohort", "nav", "42", "-c", cfg], capture_output=True, text=True)
        self.assertRegex(r.stdout, r"^route=nav user=42 bucket=\d+ variant=new reason=test_user flags=config\n$")
        r = subprocess.run([BIN, "cohort", "nope", "42", "-c", cfg], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("no route named 'nope'", r.stderr)

    def test_gateway_agrees_with_cli(self):
        gw = self.gateway()
        users = [str(1000 + i) for i in range(150)]
        expect = {r["user"]: r["variant"] for r in run_cohort(gw.config_path, users)}
        urls = []
        for u in users:
            s, h, b = curl(self.url + "/x?user=" + u)
            self.assertEqual(h["x-switchyard-variant"], expect[u], u)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The admin API's answers to bad requests: no token, wrong token, no token
configured, bad JSON, wrong types, unknown route, unknown endpoint, wrong
method; and the read endpoints. Runs without Redis (flags from the config)."""
import json
import time

from harness import Client, GatewayTest, base_config, curl, free_port, main

TOKEN = "admin-token-0123456789abcdef"


class Admin(GatewayTest):
    def start(self, with_token=True):
        self.admin = free_port()
        tok = self.env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN + "\n")
        extra = "admin: {address: 127.0.0.1:%d%s}" % (self.admin, ", token_file: " + tok if with_token else "")
        self.gateway(text=base_config(self.port, self.legacy, self.new, extra_top=extra))
        self.base = "http://127.0.0.1:%d" % self.admin

    def post(self, path, body, token=TOKEN, raw=False):
        args = [self.base + path, "-X", "POST", "-H", "Content-Type: application/json"]
        if token:
            args += ["-H", "Authorization: Bearer " + token]
        if body is not None:
            args += ["--data-binary", body if raw else json.dumps(body)]
        s, h, b = curl(*args)
        return s, json.loads(b) if b.strip() else None

    def test_tokens(self):
        self.start()
        s, b = self.post("/routes/nav/rollback", {}, token=None)
        self.assertEqual(s, 401)
        self.assertEqual(b["error"], "unauthorized")  # a kind, not "Error"
        s, b = self.post("/routes/nav/rollback", {}, token="wrong-token-0123456789abcdef")
        self.assertEqual(s, 401)
        s, b = self.post("/routes/nav/rollback", {}, token=TOKEN[:-1])
        self.assertEqual(s, 401)
        s, b = self.post("/routes/nav/rollback", {"reason": "test"})
        self.assertEqual((s, b["state"]), (200, "tripped"))

    def test_no_token_configured_refuses_writes(self):
        self.start(with_token=False)
        s, b = self.post("/routes/nav/percent", {"percent_bp": 10})
        self.assertEqual(s, 403)
        self.assertIn("token", b["reason"])
        s, h, body = curl(self.base + "/status")
        self.assertEqual(s, 200)

    def test_bad_input(self):
        self.start()
        for body, raw in (("{not json", True), ("[1, 2]", True), ({"percent_bp": "50"}, False),
                          ({"percent_bp": 10001}, False), ({"percent_bp": -1}, False), ({"percent_bp": 1.5}, False),
                          ({}, False)):
            s, b = self.post("/routes/nav/percent", body, raw=raw)
            self.assertEqual(s, 400, (body, b))
            self.assertTrue(b["reason"])
        s, b = self.post("/routes/nav/test-users", {"add": [1, 2]})
        self.assertEqual(s, 400)
        s, b = self.post("/routes/nav/rollback", {"reason": 5})
        self.assertEqual(s, 400)
        s, b = self.post("/routes/nope/percent", {"percent_bp": 10})
        self.assertEqual(s, 404)
        self.assertIn("route", b["reason"])
        s, b = self.post("/nothing/here", {})
        self.assertEqual(s, 404)
        s, h, body = curl(self.base + "/routes/nav/percent")
        self.assertEqual(s, 405)
        self.assertEqual(json.loads(body)["error"], "method_not_allowed")
        self.assertIn("date", h)
        s, b = self.post("/routes/nav/percent", "x" * 70000, raw=True)
        self.assertEqual(s, 413)

    def test_each_endpoint_without_redis(self):
        self.start()
        s, h, b = curl(self.base + "/healthz")
        self.assertEqual((s, json.loads(b)["status"]), (200, "ok"))
        s, h, b = curl(self.base + "/readyz")
        self.assertEqual((s, json.loads(b)["flags_from"]), (200, "config"))
        st = json.loads(curl(self.base + "/status")[2])
        self.assertEqual(st["redis"]["configured"], False)
        self.assertEqual(st["routes"][0]["percent_bp"], 2500)
        s, b = self.post("/routes/nav/percent", {"percent_bp": 0})
        self.assertEqual(b["percent_bp"], 0)
        c = Client(self.port)
        self.assertEqual(c.variant("42"), "new")  # test users still get new at 0 %
        s, b = self.post("/routes/nav/test-users", {"remove": ["42"]})
        self.assertEqual(b["test_users"], ["admin-7"])
        self.assertEqual(c.variant("42"), "legacy")
        s, b = self.post("/routes/nav/promote", {})
        self.assertEqual((b["state"], b["percent_bp"]), ("promoted", 10000))
        self.assertEqual(c.variant("anyone"), "new")
        s, b = self.post("/routes/nav/rollback", {"reason": "x"})
        self.assertEqual(c.variant("anyone"), "legacy")
        s, b = self.post("/routes/nav/resume", {})
        self.assertEqual((b["state"], b["percent_bp"]), ("ramping", 10000))
        c.close()


if __name__ == "__main__":
    main()

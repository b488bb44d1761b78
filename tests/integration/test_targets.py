#!/usr/bin/env python3
"""Request targets and Host as RFC 9112 (3.2) and RFC 9110 (2.5, 7.2) say: each
form of request target and each kind of Host value, sent as exact bytes, with the
status it must get; absolute-form is routed and forwarded by the target's
authority; OPTIONS * and CONNECT are answered by the gateway; every response, local
or forwarded, carries Date; every local error says what kind it is."""
import email.utils
import json
import socket
import time

from harness import SLOW, GatewayTest, free_port, main, raw

# The gateway routes /app on any host to legacy, and any path on api.example to new.
CONFIG = """workers: 1
listen: [{address: 127.0.0.1:%(port)d}]
access_log: %%(log)s
timeouts: {connect: 1s}
pools:
  legacy: {endpoints: [127.0.0.1:%(legacy)d]}
  new: {endpoints: [127.0.0.1:%(new)d]}
  dead: {endpoints: [127.0.0.1:%(dead)d]}
routes:
  - {name: app, match: {path_prefix: /app}, legacy: legacy}
  - {name: api, match: {host: api.example, path_prefix: /}, legacy: new}
  - {name: gone, match: {host: dead.example, path_prefix: /}, legacy: dead}
"""

H = b"Host: a\r\n"

# (name, request bytes, expected status, expected backend or None)
CASES = [
    # origin-form
    ("origin-form", b"GET /app/echo HTTP/1.1\r\n" + H + b"\r\n", 200, "legacy"),
    ("origin-form with a query", b"GET /app/echo?x=1&y=%C3%A9 HTTP/1.1\r\n" + H + b"\r\n", 200, "legacy"),
    ("percent-encoded overlong UTF-8 is text", b"GET /app/%C0%AF HTTP/1.1\r\n" + H + b"\r\n", 200, "legacy"),
    ("pchar sub-delims and @:", b"GET /app/a;b=c,d@e:f!$&'()*+ HTTP/1.1\r\n" + H + b"\r\n", 200, "legacy"),
    # absolute-form: routed by the target's authority
    ("absolute-form", b"GET http://api.example/echo HTTP/1.1\r\nHost: api.example\r\n\r\n", 200, "new"),
    ("absolute-form, https scheme", b"GET https://api.example/echo HTTP/1.1\r\nHost: api.example\r\n\r\n", 200, "new"),
    ("absolute-form, upper-case scheme", b"GET HTTP://api.example/echo HTTP/1.1\r\nHost: api.example\r\n\r\n", 200,
     "new"),
    ("absolute-form, Host differs", b"GET http://api.example/echo HTTP/1.1\r\nHost: other.example\r\n\r\n", 200,
     "new"),
    ("absolute-form, Host differs the other way", b"GET http://other.example/app/echo HTTP/1.1\r\n"
     b"Host: api.example\r\n\r\n", 200, "legacy"),
    ("absolute-form with a port", b"GET http://api.example:8080/echo HTTP/1.1\r\nHost: x\r\n\r\n", 200, "new"),
    ("absolute-form, empty path", b"GET http://api.example HTTP/1.1\r\nHost: api.example\r\n\r\n", 200, "new"),
    ("absolute-form, query only", b"GET http://api.example?x=1 HTTP/1.1\r\nHost: api.example\r\n\r\n", 200, "new"),
    ("absolute-form with userinfo", b"GET http://u:p@api.example/ HTTP/1.1\r\nHost: api.example\r\n\r\n", 400, None),
    ("absolute-form, empty authority", b"GET http:///app HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("absolute-form, other scheme", b"GET ftp://api.example/x HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("absolute-form, bad port", b"GET http://api.example:99999/ HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("authority-form without CONNECT", b"GET api.example:80 HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    # asterisk-form and CONNECT
    ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 200, None),
    ("GET *", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("POST *", b"POST * HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 400, None),
    ("CONNECT", b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n", 501, None),
    # Host
    ("Host with a port", b"GET /app/x HTTP/1.1\r\nHost: a:8080\r\n\r\n", 200, "legacy"),
    ("Host IPv6 literal", b"GET /app/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200, "legacy"),
    ("Host IPv4", b"GET /app/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, "legacy"),
    ("HTTP/1.0 without Host", b"GET /app/x HTTP/1.0\r\n\r\n", 200, "legacy"),
    ("Host missing in HTTP/1.1", b"GET /app/x HTTP/1.1\r\n\r\n", 400, None),
    ("Host repeated", b"GET /app/x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, None),
    ("Host empty", b"GET /app/x HTTP/1.1\r\nHost: \r\n\r\n", 400, None),
    ("Host with userinfo", b"GET /app/x HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, None),
    ("Host with a path", b"GET /app/x HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, None),
    ("Host list", b"GET /app/x HTTP/1.1\r\nHost: a, b\r\n\r\n", 400, None),
    ("Host with a space", b"GET /app/x HTTP/1.1\r\nHost: a b\r\n\r\n", 400, None),
    ("Host port not a number", b"GET /app/x HTTP/1.1\r\nHost: a:b\r\n\r\n", 400, None),
    ("Host port too big", b"GET /app/x HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400, None),
    ("Host only a port", b"GET /app/x HTTP/1.1\r\nHost: :80\r\n\r\n", 400, None),
    ("Host non-ASCII", b"GET /app/x HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400, None),
    ("Host in HTTP/1.0 checked too", b"GET /app/x HTTP/1.0\r\nHost: u@a\r\n\r\n", 400, None),
    # raw bytes in the target
    ("control byte in the target", b"GET /app/a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("DEL in the target", b"GET /app/a\x7fb HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("raw UTF-8 in the target", b"GET /app/caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("raw overlong UTF-8 in the target", b"GET /app/\xc0\xaf HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("raw overlong UTF-8 in the query", b"GET /app/x?a=\xc0\xaf HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("bad percent-encoding", b"GET /app/a%zz HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("truncated percent-encoding", b"GET /app/a% HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("fragment in the target", b"GET /app/a#b HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("quote in the target", b"GET /app/a\"b HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("backslash in the target", b"GET /app/a\\b HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    # methods and versions
    ("unknown method", b"FROBNICATE /app/x HTTP/1.1\r\n" + H + b"\r\n", 501, None),
    ("over-long method", b"A" * 20000 + b" /app/x HTTP/1.1\r\n" + H + b"\r\n", 501, None),
    ("HTTP/1.2 read as 1.1", b"GET /app/echo HTTP/1.2\r\n" + H + b"\r\n", 200, "legacy"),
    ("HTTP/1.9 read as 1.1", b"GET /app/echo HTTP/1.9\r\n" + H + b"\r\n", 200, "legacy"),
    ("HTTP/1.2 without Host", b"GET /app/echo HTTP/1.2\r\n\r\n", 400, None),
    ("HTTP/2.0 in an h1 request line", b"GET /app/x HTTP/2.0\r\n" + H + b"\r\n", 505, None),
    ("HTTP/3.0 in an h1 request line", b"GET /app/x HTTP/3.0\r\n" + H + b"\r\n", 505, None),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, None),
]


def parse(out):
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    headers = []
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        headers.append((k.strip().lower().decode(), v.strip().decode("latin-1")))
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, headers, body


def values(headers, name):
    return [v for k, v in headers if k == name]


class Targets(GatewayTest):
    def start(self):
        self.dead = free_port()
        self.gateway(CONFIG % {"port": self.port, "legacy": self.legacy, "new": self.new, "dead": self.dead})

    def send(self, data):
        # Every case asks the gateway to close, so that a read to EOF ends it.
        if b"Connection:" not in data and data.endswith(b"\r\n\r\n") and b"HTTP/1.0" not in data.split(b"\r\n")[0]:
            data = data[:-2] + b"Connection: close\r\n\r\n"
        return parse(raw(self.port, data))

    def assert_date(self, headers, what):
        dates = values(headers, "date")
        self.assertEqual(len(dates), 1, (what, headers))
        when = email.utils.parsedate_to_datetime(dates[0])
        self.assertEqual(dates[0], email.utils.format_datetime(when, usegmt=True), what)  # IMF-fixdate exactly
        self.assertLess(abs(when.timestamp() - time.time()), 3600, what)  # the gateway's clock, not a constant

    def test_each_form_gets_its_status(self):
        self.start()
        for name, data, status, backend in CASES:
            with self.subTest(name):
                got, headers, body = self.send(data)
                self.assertEqual(got, status, (name, headers, body[:200]))
                self.assertEqual(values(headers, "x-backend")[:1], [backend] if backend else [], name)
                self.assert_date(headers, name)
                if status >= 400:
                    err = json.loads(body)
                    self.assertNotIn(err["error"], ("Error", ""), name)
                    self.assertTrue(err["reason"], name)

    def test_absolute_form_is_forwarded_in_origin_form_with_the_targets_authority(self):
        self.start()
        for target, host, want_target in [
            (b"http://api.example/echo?x=1", b"api.example", "/echo?x=1"),
            (b"http://api.example:8080/echo", b"other.example", "/echo"),
            (b"http://API.example/echo", None, "/echo"),
        ]:
            with self.subTest(target):
                req = b"GET " + target + b" HTTP/1.1\r\n" + (b"Host: " + host + b"\r\n" if host else b"Host: x\r\n")
                status, headers, body = self.send(req + b"\r\n")
                self.assertEqual(status, 200, body[:200])
                echo = json.loads(body)
                self.assertEqual(echo["target"], want_target)
                sent_hosts = [v for k, v in echo["headers"] if k.lower() == "host"]
                authority = target.split(b"/")[2].decode()
                self.assertEqual(sent_hosts, [authority])  # replaced, not added beside the client's
                fwd = [v for k, v in echo["headers"] if k.lower() == "x-forwarded-host"]
                self.assertEqual(fwd, [authority])

    def test_options_asterisk_is_answered_by_the_gateway(self):
        self.start()
        before = json.loads(raw(self.new, b"GET /__stats HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")[2])["requests"]
        status, headers, body = self.send(b"OPTIONS * HTTP/1.1\r\nHost: api.example\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertIn("OPTIONS", values(headers, "allow")[0])
        self.assertEqual(values(headers, "content-length"), ["0"])
        self.assertEqual(body, b"")
        after = json.loads(raw(self.new, b"GET /__stats HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")[2])["requests"]
        self.assertEqual(after, before + 1)  # only the second /__stats: nothing was forwarded

    def test_options_asterisk_keeps_the_connection(self):
        self.start()
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(10 * SLOW)
        s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET /app/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        s.close()
        first, _, rest = out.partition(b"\r\n\r\n")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 "), out[:200])
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), out[:400])
        self.assertIn(b"x-backend: legacy", rest.lower())

    def test_date_on_proxied_responses(self):
        self.start()
        # The backend sends no Date: the gateway adds one.
        status, headers, _ = self.send(b"GET /app/x HTTP/1.1\r\n" + H + b"\r\n")
        self.assertEqual(status, 200)
        self.assert_date(headers, "proxied, no Date from the origin")
        # The backend's own Date is kept as it is, and not doubled.
        origin = "Mon, 01 Jan 2001 00:00:00 GMT"
        status, headers, _ = self.send(b"GET /app/x?date=" + origin.replace(" ", "%20").encode() +
                                       b" HTTP/1.1\r\n" + H + b"\r\n")
        self.assertEqual(status, 200)
        self.assertEqual(values(headers, "date"), [origin])
        # Chunked, HEAD and keep-alive responses too.
        for req in (b"GET /app/x?chunked=1 HTTP/1.1\r\n", b"HEAD /app/x HTTP/1.1\r\n", b"GET /app/x?status=503 HTTP/1.1\r\n"):
            status, headers, _ = self.send(req + H + b"\r\n")
            self.assert_date(headers, req)

    def test_local_errors_say_what_kind(self):
        self.start()
        cases = [
            (b"GET /nowhere HTTP/1.1\r\n" + H + b"\r\n", 404, "no_route"),
            (b"GET /app/x HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "bad_request"),
            (b"GET /app/x HTTP/2.0\r\n" + H + b"\r\n", 505, "http_version_not_supported"),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501, "not_implemented"),
            (b"GET / HTTP/1.1\r\nHost: dead.example\r\n\r\n", 502, "upstream_connect"),
        ]
        for req, status, kind in cases:
            with self.subTest(kind):
                got, headers, body = self.send(req)
                self.assertEqual(got, status, body[:200])
                self.assert_date(headers, kind)
                self.assertEqual(json.loads(body)["error"], kind)
        err = json.loads(self.send(b"GET /app/x HTTP/1.1\r\nHost: a, b\r\n\r\n")[2])
        self.assertIn("Host", err["reason"])
        self.assertIn("list", err["reason"])


if __name__ == "__main__":
    main()

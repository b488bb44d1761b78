#!/usr/bin/env python3
"""HTTP/2 to clients on a plain listener (h2c with prior knowledge, `http2:
true`): streams routed one by one like HTTP/1.1 requests, bodies streamed
with bounded memory, flow control per stream, floods answered with GOAWAY
ENHANCE_YOUR_CALM while other clients are served, Upgrade: h2c never
forwarded, drain with open streams. Real clients (curl, nghttp) and a raw
frame client (h2raw.py) for what real clients do not send."""
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import SANITIZED, SLOW, GatewayTest, base_config, curl, main, raw, wait_for
import h2raw
from h2raw import (CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, RST_STREAM, SETTINGS,
                   WINDOW_UPDATE, Conn, frame, goaway_code, hpack, request_headers)

MB = 1 << 20


def proc_stat(pid):
    """(cpu seconds used, RSS KiB, peak RSS KiB) of a process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return cpu, rss, hwm


def established(server_port, client_port):
    """The gateway still holds the connection from client_port."""
    r = subprocess.run(["ss", "-tnH", "state", "established", "( sport = :%d and dport = :%d )" % (server_port, client_port)],
                       capture_output=True, text=True, timeout=10)
    return bool(r.stdout.strip())


def report(name, **figures):
    line = "FIGURES %s %s" % (name, " ".join("%s=%s" % kv for kv in figures.items()))
    print(line, flush=True)
    with open(os.environ.get("SY_H2_FIGURES", "/tmp/sy_h2_figures.txt"), "a") as f:
        f.write(line + "\n")


class Http2(GatewayTest):
    def start(self, extra_top=""):
        text = base_config(self.port, self.legacy, self.new, extra_top=extra_top)
        text = text.replace("address: 127.0.0.1:%d" % self.port, "address: 127.0.0.1:%d\n    http2: true" % self.port)
        self.gw = self.gateway(text=text)
        return self.gw

    def h2(self, *args, timeout=60):
        return curl("--http2-prior-knowledge", *args, timeout=timeout)

    def served(self):
        """Another client, on another connection, is answered."""
        s, h, b = self.h2(self.url + "/x?user=5", timeout=20)
        return s == 200

    def test_streams_route_like_http1(self):
        self.start()
        users = list(range(1, 41)) + [42]
        urls = [self.url + "/x?user=%d" % u for u in users]
        r = subprocess.run(["nghttp", "-nv"] + urls, capture_output=True, text=True, timeout=60 * SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        paths, backend, variant, status = {}, {}, {}, {}
        sid = None
        for line in r.stdout.splitlines():
            m = re.search(r"send HEADERS frame .*stream_id=(\d+)", line)
            if m:
                sid = int(m.group(1))
            m = re.match(r"\s+:path: /x\?user=(\d+)", line)
            if m and sid is not None:
                paths[sid] = int(m.group(1))
            m = re.search(r"recv \(stream_id=(\d+)\) (\S+): (.*)", line)
            if m:
                d = {":status": status, "x-backend": backend, "x-switchyard-variant": variant}.get(m.group(2))
                if d is not None:
                    d[int(m.group(1))] = m.group(3).strip()
        self.assertEqual(len(paths), len(users))
        # One connection, many streams: each routed on its own, as HTTP/1.1 would.
        by_user = {paths[s]: (status.get(s), backend.get(s), variant.get(s)) for s in paths}
        for u in users:
            st, be, va = by_user[u]
            self.assertEqual((st, be), ("200", va), u)
            s1, h1, _ = curl(self.url + "/x?user=%d" % u)
            self.assertEqual(h1.get("x-backend"), be, "user %d: HTTP/1.1 and HTTP/2 disagree" % u)
        self.assertEqual(by_user[42][1], "new")  # a test user
        self.assertEqual({v[1] for v in by_user.values()}, {"legacy", "new"})
        # One access-log line per stream, with its user and variant.
        def logged():
            lines = [l for l in self.access_lines(0) if l["target"].startswith("/x?user=")]
            return lines if len(lines) >= 2 * len(users) else None
        lines = wait_for(logged, what="access-log lines")
        self.assertEqual(sorted(l["user"] for l in lines), sorted([str(u) for u in users] * 2))

    def test_large_bodies_bounded_memory(self):
        gw = self.start()
        big = self.env.path("big.bin")
        with open(big, "wb") as f:
            for _ in range(50):
                f.write(os.urandom(MB))
        with open(big, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        _, rss0, _ = proc_stat(gw.pid)
        t0 = time.time()
        s, h, b = self.h2(self.url + "/echo", "--data-binary", "@" + big, timeout=180)
        t_up = time.time() - t0
        d = json.loads(b)
        self.assertEqual((s, d["body_length"], d["body_sha256"]), (200, 50 * MB, sha))
        out = self.env.path("dl.bin")
        for size, extra in ((50 * MB, ""), (10 * MB, "&chunked=1")):
            t0 = time.time()
            r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", out, "-w", "%{http_code} %{size_download}",
                                self.url + "/dl?size=%d%s" % (size, extra)], capture_output=True, text=True,
                               timeout=180 * SLOW)
            if not extra:
                t_down = time.time() - t0
            self.assertEqual(r.stdout, "200 %d" % size, r.stderr)
        _, rss1, hwm = proc_stat(gw.pid)
        report("large_bodies", upload_s="%.2f" % t_up, download_s="%.2f" % t_down, rss_before_kb=rss0,
               rss_after_kb=rss1, peak_rss_kb=hwm)
        if not SANITIZED:  # shadow memory makes absolute RSS meaningless under ASan
            self.assertLess(hwm, 64 * 1024)

    def test_slow_stream_does_not_stall_others(self):
        gw = self.start()
        c = Conn(self.port)
        # Plenty of connection window, the default 64 KiB per stream: stream 1
        # (20 MB) is never given more, so it stops; stream 3 must still finish.
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100 * MB)))
        c.send(c.headers(1, request_headers("/dl?size=%d" % (20 * MB))))
        got1 = [0]

        def on(f):
            if f[0] == DATA and f[2] == 1:
                got1[0] += len(f[3])
            return f[0] == DATA and f[2] == 1 and got1[0] >= 65535
        self.assertIsNotNone(c.frames_until(on))
        c.send(c.headers(3, request_headers("/x?user=3")))
        fr = c.frames_until(lambda f: f[0] in (DATA, RST_STREAM, GOAWAY) and f[2] in (0, 3) and f[1] & END_STREAM)
        self.assertIsNotNone(fr)
        self.assertEqual((fr[0], fr[2]), (DATA, 3))
        self.assertEqual(got1[0], 65535)  # stream 1 stayed within its window
        # Other connections too, while stream 1 holds the backend.
        self.assertTrue(self.served())
        _, rss, hwm = proc_stat(gw.pid)
        report("slow_stream", stream1_bytes=got1[0], rss_kb=rss, peak_rss_kb=hwm)
        # Opening stream 1's window lets it go on.
        c.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 * MB)))
        self.assertIsNotNone(c.frames_until(on and (lambda f: f[0] == DATA and f[2] == 1 and
                                                   (got1.__setitem__(0, got1[0] + len(f[3])) or got1[0] > MB))))
        c.close()

    def flood(self, name, payload_fn, seconds=3.0):
        """Runs a flooding connection against the gateway; returns its figures
        and the GOAWAY code it drew."""
        gw = self.start()
        self.env.allowed.append(r"http2: .* GOAWAY ENHANCE_YOUR_CALM")
        self.assertTrue(self.served())
        cpu0, rss0, _ = proc_stat(gw.pid)
        c = Conn(self.port)
        result = {"goaway": None, "sent": 0}

        def reader():
            fr = c.frames_until(lambda f: f[0] == GOAWAY)
            result["goaway"] = goaway_code(fr) if fr else None

        t = threading.Thread(target=reader)
        t.start()
        t0 = time.time()
        try:
            while time.time() - t0 < seconds * SLOW and result["goaway"] is None:
                c.send(payload_fn(result["sent"]))
                result["sent"] += 1
        except OSError:
            pass  # the gateway closed the connection after its GOAWAY
        t.join(20 * SLOW)
        during_ok = self.served()
        cpu1, rss1, hwm = proc_stat(gw.pid)
        c.close()
        report(name, batches_sent=result["sent"], goaway=result["goaway"], cpu_s="%.2f" % (cpu1 - cpu0),
               rss_before_kb=rss0, rss_after_kb=rss1, peak_rss_kb=hwm, others_served=during_ok)
        self.assertEqual(result["goaway"], h2raw.ENHANCE_YOUR_CALM)
        self.assertTrue(during_ok)
        # The flood cost a bounded amount of work: it was cut early.
        self.assertLess(result["sent"], 2000)
        return result

    def test_rapid_reset_flood(self):
        def batch(i):
            out = b""
            for k in range(50):
                sid = 1 + 2 * (i * 50 + k)
                out += frame(HEADERS, END_HEADERS | END_STREAM, sid, hpack(request_headers("/x?latency_ms=500")))
                out += frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
            return out
        self.flood("rapid_reset", batch)
        # How many of the flood's streams reached a backend before it was cut (a
        # stream reset in the same read as its HEADERS never starts an exchange).
        started = len([l for l in self.access_lines() if "latency_ms=500" in l["target"]])
        reqs = sum(json.loads(curl("http://127.0.0.1:%d/__stats" % p)[2])["requests"] for p in (self.legacy, self.new))
        report("rapid_reset_streams", exchanges_logged=started, backend_requests=reqs)

    def test_continuation_flood(self):
        state = {"started": False}

        def batch(i):
            out = b""
            if not state["started"]:
                state["started"] = True
                out += frame(HEADERS, 0, 1, hpack(request_headers("/x")))
            for _ in range(50):
                out += frame(CONTINUATION, 0, 1, hpack([("x-pad", "a" * 100)]))
            return out
        self.flood("continuation_flood", batch)

    def test_control_frame_floods(self):
        # PINGs and SETTINGS whose acks are never read: the queue of acks is
        # bounded (http2.max_control_acks), the connection is cut.
        gw = self.start(extra_top="http2: {max_control_acks: 100}")
        self.env.allowed.append(r"http2: .* GOAWAY ENHANCE_YOUR_CALM")
        kinds = {
            "ping_flood": lambda i: b"".join(frame(PING, 0, 0, struct.pack(">Q", i * 100 + k)) for k in range(100)),
            "settings_flood": lambda i: frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)) * 100,
        }
        for name, batch in kinds.items():
            cpu0, rss0, _ = proc_stat(gw.pid)
            s = socket.create_connection(("127.0.0.1", self.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(h2raw.PREFACE + frame(SETTINGS, 0, 0))
            sent = 0
            s.settimeout(0.2)
            t0 = time.time()
            closed = False
            checked = t0
            while time.time() - t0 < 10 * SLOW:
                try:
                    s.sendall(batch(sent))
                    sent += 1
                except socket.timeout:
                    pass
                except OSError:
                    closed = True
                    break
                if time.time() - checked > 0.5:  # the gateway's end of it is gone
                    checked = time.time()
                    if not established(self.port, s.getsockname()[1]):
                        closed = True
                        break
            # The gateway gave up on the connection (GOAWAY, then close) instead
            # of queueing acks without end.
            cpu1, rss1, hwm = proc_stat(gw.pid)
            ok = self.served()
            report(name, batches_sent=sent, closed=closed, cpu_s="%.2f" % (cpu1 - cpu0), rss_before_kb=rss0,
                   rss_after_kb=rss1, peak_rss_kb=hwm, others_served=ok)
            s.close()
            self.assertTrue(ok, name)
            self.assertTrue(closed, name)
            if not SANITIZED:
                self.assertLess(rss1 - rss0, 32 * 1024, name)

    def test_invalid_frames_answered(self):
        # RFC 9113 6.1: DATA on stream 0 is a connection error PROTOCOL_ERROR.
        self.start()
        c = Conn(self.port)
        c.send(frame(DATA, 0, 0, b"x"))
        fr = c.frames_until(lambda f: f[0] == GOAWAY)
        self.assertEqual(goaway_code(fr), 1)
        c.close()
        # A stream-level error (a HEADERS without :path) resets that stream only.
        c = Conn(self.port)
        c.send(c.headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x")]))
        c.send(c.headers(3, request_headers("/x?user=3")))
        got = {}
        c.frames_until(lambda f: (f[0] in (RST_STREAM, DATA) and got.setdefault(f[2], f[0]) and False) or
                       len(got) == 2)
        self.assertEqual(got, {1: RST_STREAM, 3: DATA})
        c.close()
        self.assertTrue(self.served())

    def test_upgrade_h2c_not_forwarded(self):
        self.start()
        req = (b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        resp = raw(self.port, req)
        head, _, body = resp.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        for k, v in json.loads(body)["headers"]:
            self.assertNotIn(k.lower(), ("upgrade", "http2-settings"))
            if k.lower() == "connection":
                self.assertNotIn("upgrade", v.lower())

    def test_http1_on_the_same_listener(self):
        self.start()
        s, h, b = curl(self.url + "/x?user=42")
        self.assertEqual((s, h.get("x-backend")), (200, "new"))
        # A request that begins like the preface but is not one.
        resp = raw(self.port, b"PRIVATE / HTTP/1.1\r\nHost: x\r\n\r\n", read_all=False)
        self.assertTrue(resp.startswith(b"HTTP/1.1 "), resp[:40])

    def test_drain_lets_open_streams_finish(self):
        gw = self.start(extra_top="timeouts: {drain_idle: 200ms}")
        c = Conn(self.port)
        c.send(c.headers(1, request_headers("/x?latency_ms=1500")))
        wait_for(lambda: any(True for _ in [0]) and self.backend_open(), what="the stream at the backend")
        gw.send_signal(signal.SIGTERM)
        seen = []
        fr = c.frames_until(lambda f: seen.append(f[:3]) or (f[0] == DATA and f[2] == 1 and f[1] & END_STREAM))
        self.assertIsNotNone(fr, seen)
        goaways = [f for f in seen if f[0] == GOAWAY]
        self.assertTrue(goaways, seen)
        # The connection ends after the stream.
        rest = c.frames_until(lambda f: False)
        self.assertIsNone(rest)
        self.assertEqual(gw.wait(20 * SLOW), 0)
        c.close()

    def test_websocket_over_h2(self):
        # RFC 8441: extended CONNECT to the backend's HTTP/1.1 WebSocket upgrade.
        self.start()
        c = Conn(self.port)
        st = c.frames_until(lambda f: f[0] == SETTINGS and not f[1] & 1)
        self.assertIn(struct.pack(">HI", 8, 1), st[3])  # SETTINGS_ENABLE_CONNECT_PROTOCOL
        c.frames_until(lambda f: f[0] == SETTINGS and f[1] & 1)  # our SETTINGS acknowledged
        c.send(c.headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                             (":path", "/ws?user=42"), (":authority", "x"), ("sec-websocket-version", "13")],
                         end_stream=False))
        fr = c.frames_until(lambda f: f[2] == 1)
        self.assertEqual((fr[0], fr[3][:1]), (HEADERS, b"\x88"))  # :status 200 (static table entry 8)
        self.assertFalse(fr[1] & END_STREAM)
        mask = b"\x01\x02\x03\x04"
        for text in (b"hello", b"over h2"):
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
            c.send(frame(DATA, 0, 1, bytes([0x81, 0x80 | len(text)]) + mask + masked))
            got = b""
            while len(got) < 2 + len(text):
                fr = c.frames_until(lambda f: f[2] == 1)
                self.assertEqual(fr[0], DATA, fr)
                got += fr[3]
            self.assertEqual(got, bytes([0x81, len(text)]) + text)
        # A close frame, then the end of the client's side: the stream ends.
        c.send(frame(DATA, END_STREAM, 1, b"\x88\x80" + mask))
        fr = c.frames_until(lambda f: f[2] == 1 and (f[0] == RST_STREAM or f[1] & END_STREAM))
        self.assertIsNotNone(fr)
        c.close()
        line = wait_for(lambda: [l for l in self.access_lines(0) if l["target"].startswith("/ws")],
                        what="the tunnel's access-log line")[0]
        self.assertEqual((line["status"], line["variant"]), (101, "new"))

    def test_limits_from_config(self):
        self.start(extra_top="http2: {max_concurrent_streams: 2, max_header_list_bytes: 4KiB}")
        # A header list over max_header_list_bytes: 431, and the connection goes on.
        s, h, b = self.h2(self.url + "/x", "-H", "X-Big: " + "b" * 6000)
        self.assertEqual(s, 431)
        self.assertTrue(self.served())
        # A third stream while two are open, after our SETTINGS were acknowledged:
        # a connection error (nghttp2 answers GOAWAY PROTOCOL_ERROR, last stream 3).
        c = Conn(self.port)
        c.frames_until(lambda f: f[0] == SETTINGS and f[1] & 1)
        for sid in (1, 3, 5):
            c.send(c.headers(sid, request_headers("/x?latency_ms=800")))
        fr = c.frames_until(lambda f: f[0] == GOAWAY)
        self.assertEqual(struct.unpack(">II", fr[3][:8]), (3, 1))
        c.close()
        # A client that keeps to the limit gets every answer. (One that opens more
        # before our SETTINGS reached it has the extra streams refused with
        # REFUSED_STREAM, safe to retry.)
        r = subprocess.run(["h2load", "-n", "40", "-c", "1", "-m", "2", self.url + "/x?user=9"],
                           capture_output=True, text=True, timeout=60 * SLOW)
        self.assertIn("40 succeeded", r.stdout, r.stdout + r.stderr)
        self.assertIn("40 2xx", r.stdout)

    def heads(self, *args):
        """curl over h2c: every response head (interim ones too) as (status, [(name, value)]), and the body."""
        out = self.env.path("body.bin")
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o", out,
                            "--max-time", str(int(30 * SLOW))] + list(args), capture_output=True, timeout=40 * SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        heads = []
        for block in r.stdout.split(b"\r\n\r\n"):
            lines = block.decode().split("\r\n")
            if not lines[0].startswith("HTTP/"):
                continue
            self.assertTrue(lines[0].startswith("HTTP/2 "), lines[0])
            heads.append((int(lines[0].split()[1]), [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]))
        with open(out, "rb") as f:
            return heads, f.read()

    def test_response_heads(self):
        # What the backend's HTTP/1.1 head becomes in HEADERS: hop-by-hop fields
        # gone, Date supplied once, the variant exposed, the length kept when the
        # body keeps it; no body for HEAD, 204 and 304; an interim 100 first.
        self.start()
        def names(h):
            return [k for k, _ in h]
        def one(h, name):
            v = [val for k, val in h if k == name]
            self.assertEqual(len(v), 1, (name, h))
            return v[0]
        heads, body = self.heads(self.url + "/x?user=42")
        self.assertEqual(len(heads), 1)
        st, h = heads[0]
        self.assertEqual((st, one(h, "x-backend"), one(h, "x-switchyard-variant")), (200, "new", "new"))
        self.assertEqual(int(one(h, "content-length")), len(body))
        self.assertEqual(body, b"hello from new\n")
        one(h, "date")
        self.assertTrue(all(n == n.lower() for n in names(h)), h)
        for k in ("connection", "keep-alive", "transfer-encoding", "upgrade"):
            self.assertNotIn(k, names(h))
        # A chunked body: no length, the bytes de-chunked.
        heads, body = self.heads(self.url + "/x?user=1&chunked=1&size=70000")
        st, h = heads[-1]
        self.assertEqual((st, len(body), body[:3]), (200, 70000, b"xxx"))
        self.assertNotIn("content-length", names(h))
        self.assertNotIn("transfer-encoding", names(h))
        # The backend's own Date is kept, not doubled.
        heads, body = self.heads(self.url + "/x?user=1&date=Sun,%2006%20Nov%201994%2008:49:37%20GMT")
        self.assertEqual(one(heads[-1][1], "date"), "Sun, 06 Nov 1994 08:49:37 GMT")
        # A field the backend's Connection header names stays behind.
        heads, body = self.heads(self.url + "/x?user=1&named_hop=1")
        self.assertEqual(one(heads[-1][1], "x-kept"), "1")
        self.assertNotIn("x-hop", names(heads[-1][1]))
        # HEAD keeps the length and has no body; 204 and 304 have none either.
        heads, body = self.heads("-I", self.url + "/x?user=1&size=5000")  # (-o gets the head itself)
        self.assertEqual((heads[-1][0], one(heads[-1][1], "content-length")), (200, "5000"))
        self.assertNotIn(b"xxx", body)
        for status in (204, 304):
            heads, body = self.heads(self.url + "/x?user=1&status=%d" % status)
            self.assertEqual((heads[-1][0], body), (status, b""))
        # (HTTP/1.1 alike: after a 304 that names a length, the next request on the connection is answered.)
        resp = raw(self.port, b"GET /x?user=1&status=304 HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /x?user=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 304 "), resp[:40])
        self.assertIn(b"HTTP/1.1 200 ", resp)
        # Expect: 100-continue: the interim 100 reaches the client before the final head.
        data = self.env.path("up.bin")
        with open(data, "wb") as f:
            f.write(b"u" * 200000)
        heads, body = self.heads("-H", "Expect: 100-continue", "--data-binary", "@" + data, self.url + "/echo?user=1")
        self.assertEqual([st for st, _ in heads], [100, 200])
        self.assertEqual(json.loads(body)["body_length"], 200000)
        # A response of the gateway's own (the backend closed without one): 502.
        heads, body = self.heads(self.url + "/x?user=1&close=1")
        self.assertEqual(heads[-1][0], 502)
        self.assertEqual(json.loads(body)["error"], "upstream_reset")  # our JSON answer, re-read from HTTP/1.1
        self.assertTrue(self.served())

    def backend_open(self):
        s, h, b = curl("http://127.0.0.1:%d/__stats" % self.legacy)
        s2, h2, b2 = curl("http://127.0.0.1:%d/__stats" % self.new)
        return json.loads(b)["open"] + json.loads(b2)["open"] > 0


if __name__ == "__main__":
    main()

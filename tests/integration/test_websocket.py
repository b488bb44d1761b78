#!/usr/bin/env python3
"""WebSocket upgrades become a two-way tunnel to the backend chosen once, at the
upgrade; the tunnel closes after timeouts.tunnel_idle."""
import base64
import os
import socket
import time

from harness import SLOW, GatewayTest, main


def ws_connect(port, user):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5 * SLOW)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-User-Id: " +
              user.encode() + b"\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    return s, head


def frame(payload, opcode=1):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    ln = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([0x80 | opcode]) + ln + mask + body


def read_frame(s):
    hdr = b""
    while len(hdr) < 2:
        hdr += s.recv(2 - len(hdr))
    n = hdr[1] & 0x7F
    if n == 126:
        n = int.from_bytes(s.recv(2), "big")
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return hdr[0] & 0x0F, data


class WebSocket(GatewayTest):
    def test_echo_through_the_gateway(self):
        self.gateway(percent=0)
        for user, backend in (("42", b"new"), ("43", b"legacy")):
            s, head = ws_connect(self.port, user)
            self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
            self.assertIn(b"X-Backend: " + backend, head)
            self.assertIn(b"X-Switchyard-Variant: " + backend, head)
            for msg in (b"hello", b"x" * 5000, b"bye"):
                s.sendall(frame(msg))
                self.assertEqual(read_frame(s), (1, msg))
            s.sendall(frame(b"", opcode=8))
            self.assertEqual(read_frame(s)[0], 8)
            s.close()
        # Lines from different workers are merged in no set order: pick by user.
        # A tunnel's line is written when it closes, after the client saw the close.
        lines = {l["user"]: l for l in self.access_wait(lambda ls: {"42", "43"} <= {l.get("user") for l in ls},
                                                          "both tunnels' lines")}
        self.assertEqual((lines["43"]["status"], lines["43"]["variant"]), (101, "legacy"))
        self.assertEqual((lines["42"]["status"], lines["42"]["variant"]), (101, "new"))

    def test_tunnel_idle_timeout(self):
        self.gateway(extra_top="timeouts: {tunnel_idle: 1s}")
        s, head = ws_connect(self.port, "1")
        self.assertTrue(head.startswith(b"HTTP/1.1 101"))
        start = time.time()
        self.assertEqual(s.recv(10), b"")
        self.assertGreater(time.time() - start, 0.8)

    def test_refused_upgrade_is_a_plain_response(self):
        self.gateway()
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(5 * SLOW)
        s.sendall(b"GET /x?status=403 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        out = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            out += d
        self.assertTrue(out.startswith(b"HTTP/1.1 403"), out[:80])


if __name__ == "__main__":
    main()

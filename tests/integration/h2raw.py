"""A tiny raw HTTP/2 client for tests (stdlib only): frames, an HPACK encoder
that only writes literals (no Huffman, no indexing), and a frame reader. Used
to send what real clients will not: floods of resets, CONTINUATION frames,
SETTINGS and PING."""
import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ENHANCE_YOUR_CALM = 0xb


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _int(n, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = [first | limit]
    n -= limit
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack(headers):
    out = b""
    for k, v in headers:
        k, v = k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v
        out += b"\x00" + _int(len(k), 7) + k + _int(len(v), 7) + v
    return out


def request_headers(path, authority="x", method="GET", extra=()):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)] + list(extra)


class Conn:
    def __init__(self, port, timeout=10.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.s.sendall(PREFACE + frame(SETTINGS, 0, 0))

    def send(self, data):
        self.s.sendall(data)

    def headers(self, stream, headers, end_stream=True):
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream, hpack(headers))

    def read_frame(self):
        """(type, flags, stream, payload), or None at EOF."""
        while len(self.buf) < 9:
            d = self.s.recv(65536)
            if not d:
                return None
            self.buf += d
        n = struct.unpack(">I", b"\x00" + self.buf[:3])[0]
        while len(self.buf) < 9 + n:
            d = self.s.recv(65536)
            if not d:
                return None
            self.buf += d
        t, f = self.buf[3], self.buf[4]
        sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
        p = self.buf[9:9 + n]
        self.buf = self.buf[9 + n:]
        if t == SETTINGS and not f & ACK:
            self.s.sendall(frame(SETTINGS, ACK, 0))
        return t, f, sid, p

    def frames_until(self, pred, limit=100000):
        """Reads frames until pred(frame) is true (returned) or EOF (None)."""
        for _ in range(limit):
            fr = self.read_frame()
            if fr is None or pred(fr):
                return fr
        return None

    def close(self):
        self.s.close()


def goaway_code(fr):
    return struct.unpack(">I", fr[3][4:8])[0]

#!/usr/bin/env python3
"""A programmable HTTP/1.1 test backend (stdlib only).

Behaviour per request, from query parameters (or X-Backend-* headers):
  status=N        response status (default 200)
  latency_ms=N    wait before answering
  size=N          response body of N bytes (default: a short text)
  chunked=1       send the body chunked
  stream_ms=N     with size: send in 64 KiB pieces, N ms apart
  hang=1          never answer (timeouts)
  close=1         close the connection without answering (resets)
  error_rate=F    with probability F answer with status 500
  date=TEXT        send `Date: TEXT` (by default no Date is sent, as from an origin
                  without a clock: the gateway must add one)
Paths:
  /echo           JSON of the request as received: method, target, headers, body length and sha256
  /__stats        JSON counters: connections accepted, requests served, resets seen,
                  requests in their latency_ms now (sleeping), hanging requests
                  received (hanging)
  /__control      changes this process's defaults at run time, from its query:
                  error_rate=F, latency_ms=N, status=N (any of them; empty
                  value removes one), reset=1 (back to the command line's);
                  answers the defaults now in force as JSON. Used by the
                  quickstart to make the demo `new` backend fail or slow down.
  /ws             WebSocket echo (text and binary frames, ping, close)
  .../json?user=U a JSON document for user U: {"id": random, "user", "meta": {"time": now},
                  "price": 100, "items": [...]}; --json-diff FIELD:PCT sets FIELD to a
                  different value for PCT %% of users (by a hash of U, so always the same
                  users); --json-random FIELD adds FIELD with a random value each time
Requests carrying X-Switchyard-Shadow are counted in /__stats (shadow, shadow_methods).
Every response carries X-Backend: NAME so tests can tell backends apart.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import signal
import sys
import time
import urllib.parse

STATS = {"connections": 0, "requests": 0, "open": 0, "resets": 0, "sleeping": 0, "hanging": 0, "shadow": 0,
         "shadow_methods": {}}
JSON_DIFF = None    # (field, percent of users) from --json-diff
JSON_RANDOM = []    # fields with a fresh random value in every /json answer
NAME = "backend"
DEFAULTS = {}   # per-process behaviour (--error-rate, --latency-ms), overridden per request
STARTUP = {}    # DEFAULTS as the command line set them (for /__control?reset=1)
CONTROL_KEYS = ("error_rate", "latency_ms", "status")


def control(query):
    """/__control: set, clear or reset the per-process defaults; returns them."""
    changes = urllib.parse.parse_qsl(query, keep_blank_values=True)
    for k, v in changes:
        if k == "reset":
            DEFAULTS.clear()
            DEFAULTS.update(STARTUP)
        elif k in CONTROL_KEYS:
            if v == "":
                DEFAULTS.pop(k, None)
            else:
                int(v) if k == "status" else float(v)  # a number, or a ValueError (answered 400)
                DEFAULTS[k] = v
        else:
            raise ValueError("unknown control %r" % k)
    if changes:
        print("control: defaults now %s" % json.dumps(DEFAULTS), flush=True)
    return json.dumps(DEFAULTS).encode()


def json_doc(user):
    doc = {"id": random.randint(1, 10 ** 9), "user": user, "meta": {"time": time.time(), "v": 1},
           "price": 100, "items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    if JSON_DIFF and int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) % 100 < JSON_DIFF[1]:
        doc[JSON_DIFF[0]] = "different"
    for f in JSON_RANDOM:
        doc[f] = random.random()
    return json.dumps(doc).encode()


async def read_head(reader):
    data = await reader.readuntil(b"\r\n\r\n")
    lines = data.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, v = line.split(":", 1)
        headers.append((k.strip(), v.strip()))
    return method, target, version, headers


def hget(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


async def read_body(reader, headers):
    h = hashlib.sha256()
    n = 0
    te = hget(headers, "transfer-encoding")
    if te and "chunked" in te.lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            left = size
            while left:
                chunk = await reader.read(min(left, 1 << 16))
                if not chunk:
                    raise ConnectionError("eof in body")
                h.update(chunk)
                n += len(chunk)
                left -= len(chunk)
            await reader.readexactly(2)
    else:
        left = int(hget(headers, "content-length") or 0)
        while left:
            chunk = await reader.read(min(left, 1 << 16))
            if not chunk:
                raise ConnectionError("eof in body")
            h.update(chunk)
            n += len(chunk)
            left -= len(chunk)
    return n, h.hexdigest()


async def websocket(reader, writer, headers):
    key = hget(headers, "sec-websocket-key") or ""
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\nX-Backend: " + NAME.encode() + b"\r\n\r\n")
    await writer.drain()
    while True:
        hdr = await reader.readexactly(2)
        opcode = hdr[0] & 0x0F
        masked = hdr[1] & 0x80
        ln = hdr[1] & 0x7F
        if ln == 126:
            ln = int.from_bytes(await reader.readexactly(2), "big")
        elif ln == 127:
            ln = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if masked else b"\0\0\0\0"
        payload = bytearray(await reader.readexactly(ln))
        for i in range(ln):
            payload[i] ^= mask[i % 4]
        if opcode == 8:
            writer.write(b"\x88\x00")
            await writer.drain()
            return
        if opcode == 9:
            opcode = 10
        out = bytes([0x80 | opcode])
        if ln < 126:
            out += bytes([ln])
        elif ln < 65536:
            out += bytes([126]) + ln.to_bytes(2, "big")
        else:
            out += bytes([127]) + ln.to_bytes(8, "big")
        writer.write(out + bytes(payload))
        await writer.drain()


async def handle(reader, writer):
    STATS["connections"] += 1
    STATS["open"] += 1
    try:
        while True:
            try:
                method, target, version, headers = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            STATS["requests"] += 1
            if hget(headers, "x-switchyard-shadow"):
                STATS["shadow"] += 1
                STATS["shadow_methods"][method] = STATS["shadow_methods"].get(method, 0) + 1
            url = urllib.parse.urlsplit(target)
            q = dict(DEFAULTS) if url.path not in ("/__stats", "/__control", "/health") else {}
            if url.path != "/__control":  # its query is the control, not this request's behaviour
                q.update(urllib.parse.parse_qsl(url.query))
            for k, v in headers:
                if k.lower().startswith("x-backend-"):
                    q[k[10:].lower()] = v
            if (hget(headers, "expect") or "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
            if url.path == "/ws" and (hget(headers, "upgrade") or "").lower() == "websocket":
                await websocket(reader, writer, headers)
                return
            if q.get("close"):
                return
            nbody, sha = await read_body(reader, headers)
            if q.get("hang"):
                STATS["hanging"] += 1  # requests that will never be answered (tests wait on it)
                await asyncio.sleep(3600)
                return
            if "latency_ms" in q:
                STATS["sleeping"] += 1  # requests in their latency_ms right now (tests wait on it)
                try:
                    await asyncio.sleep(float(q["latency_ms"]) / 1000)
                finally:
                    STATS["sleeping"] -= 1
            status = int(q.get("status", 200))
            if random.random() < float(q.get("error_rate", 0)):
                status = 500
            if url.path == "/__stats":
                body = json.dumps(STATS).encode()
            elif url.path == "/__control":
                try:
                    body = control(url.query)
                except ValueError as e:
                    status, body = 400, (str(e) + "\n").encode()
            elif url.path == "/echo":
                body = json.dumps({"method": method, "target": target, "version": version,
                                   "headers": headers, "body_length": nbody, "body_sha256": sha,
                                   "backend": NAME}).encode()
            elif url.path.endswith("/json"):
                body = json_doc(q.get("user", ""))
            elif "size" in q:
                body = None
            else:
                body = ("hello from %s\n" % NAME).encode()
            size = int(q["size"]) if body is None else len(body)
            chunked = bool(q.get("chunked"))
            head = "HTTP/1.1 %d X\r\nX-Backend: %s\r\nContent-Type: %s\r\n" % (
                status, NAME, "application/json" if url.path in ("/echo", "/__stats") or url.path.endswith("/json") else "text/plain")
            head += "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: %d\r\n" % size
            if q.get("date"):
                head += "Date: %s\r\n" % q["date"]
            if q.get("named_hop"):  # a field made hop-by-hop by naming it in Connection
                head += "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Kept: 1\r\n"
            tls = writer.get_extra_info("ssl_object")
            if tls is not None:
                head += "X-TLS-Reused: %d\r\nX-TLS-SNI: %s\r\n" % (tls.session_reused, getattr(tls, "sy_sni", "-"))
            close = (hget(headers, "connection") or "").lower() == "close" or version == "HTTP/1.0"
            if close:
                head += "Connection: close\r\n"
            writer.write((head + "\r\n").encode())
            if method != "HEAD" and status not in (204, 304):
                if body is not None:
                    pieces = [body]
                else:
                    block = b"x" * 65536
                    pieces = (block[: min(65536, size - off)] for off in range(0, size, 65536))
                stream_ms = float(q.get("stream_ms", 0))
                for p in pieces:
                    writer.write(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
                    await writer.drain()
                    if stream_ms:
                        await asyncio.sleep(stream_ms / 1000)
                if chunked:
                    writer.write(b"0\r\n\r\n")
            await writer.drain()
            if close:
                return
    except (ConnectionResetError, BrokenPipeError) as e:
        # The peer closed with bytes of ours unread (or it reset): real servers log it.
        STATS["resets"] += 1
        print("connection reset by peer: %s" % e, flush=True)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        STATS["open"] -= 1
        try:
            writer.close()
        except Exception:
            pass


async def main():
    global NAME
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="backend")
    ap.add_argument("--error-rate", type=float, default=None, help="answer 500 with this probability")
    ap.add_argument("--latency-ms", type=float, default=None, help="wait this long before answering")
    ap.add_argument("--hang", action="store_true", help="never answer")
    ap.add_argument("--json-diff", default=None, help="FIELD:PCT: /json differs on FIELD for PCT %% of users")
    ap.add_argument("--json-random", action="append", default=[], help="/json adds FIELD with a random value")
    ap.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM)")
    ap.add_argument("--tls-key", default=None, help="the certificate's key (PEM)")
    args = ap.parse_args()
    NAME = args.name
    global JSON_DIFF
    if args.json_diff:
        f, pct = args.json_diff.split(":")
        JSON_DIFF = (f, float(pct))
    JSON_RANDOM.extend(args.json_random)
    if args.error_rate is not None:
        DEFAULTS["error_rate"] = str(args.error_rate)
    if args.latency_ms is not None:
        DEFAULTS["latency_ms"] = str(args.latency_ms)
    if args.hang:
        DEFAULTS["hang"] = "1"
    STARTUP.update(DEFAULTS)
    tls = None
    if args.tls_cert:
        import ssl
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        tls.set_alpn_protocols(["http/1.1"])

        def sni(sslobj, name, ctx):
            sslobj.sy_sni = name or "-"  # this connection's server name
        tls.sni_callback = sni
    server = await asyncio.start_server(handle, args.host, args.port, limit=1 << 20, backlog=1024, ssl=tls)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set_result, None)
    print("listening on %s:%d" % (args.host, args.port), flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    asyncio.run(main())

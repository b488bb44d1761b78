#!/usr/bin/env python3
"""RSS per idle keep-alive client connection: a gateway (Release build, 2 workers)
in front of one test backend; N client connections (default 10,000) each make one
request and stay open, idle, keep-alive. Reports the gateway's VmRSS before, with
the connections open, after they close, and (with - before) / N. A measurement,
not a test: run it by hand, `python3 tests/bench/idle_conns.py [N]`."""
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Env, free_port, wait_for  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled(pid):
    """The RSS once it stops moving for a second."""
    last, since = rss_kib(pid), time.time()
    while time.time() - since < 1.0:
        time.sleep(0.2)
        now = rss_kib(pid)
        if now != last:
            last, since = now, time.time()
    return last


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 100:
        sys.exit("the open-file limit (%d) is below %d connections" % (hard, n))
    env = Env()
    try:
        backend = env.start_backend("legacy")
        port = free_port()
        cfg = """workers: 2
listen: [{address: 127.0.0.1:%d}]
access_log: "off"
timeouts: {client_idle: 10m}
limits: {connections: %d}
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
routes:
  - {name: all, match: {path_prefix: /}, legacy: legacy}
""" % (port, n + 1000, backend)
        gw = env.start_gateway(cfg, port)
        # warm up: the workers' first exchanges allocate what every later one reuses
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            s.close()
        before = settled(gw.pid)
        conns = []
        req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
        t0 = time.time()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(req)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            while len(body) < length:
                body += s.recv(65536)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError("connection %d: %r" % (i, head[:40]))
            conns.append(s)
        opened = time.time() - t0
        held = settled(gw.pid)
        for s in conns:
            s.close()
        wait_for(lambda: len(os.listdir("/proc/%d/fd" % gw.pid)) < 200, timeout=60, what="connections closed")
        after = settled(gw.pid)
        print("idle keep-alive connections: %d (opened in %.1f s)" % (n, opened))
        print("gateway VmRSS: before %d KiB, with them open %d KiB, after closing %d KiB" % (before, held, after))
        print("RSS per idle connection: %.2f KiB" % ((held - before) / n))
    finally:
        env.close()


if __name__ == "__main__":
    main()

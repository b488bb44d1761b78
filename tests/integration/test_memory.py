#!/usr/bin/env python3
"""Memory after connection spikes: rounds of many idle keep-alive connections.

Each round opens N client connections, sends one request on each (in waves of W
requests in flight, so that the backend's accept queue is never overrun) and
reads every response, then keeps the N connections idle and reads the
gateway's VmRSS (the peak), then closes them all and waits for the RSS to
settle. Round 0 is a warm-up (libev's fd tables, the buffer cache's kept
blocks, the malloc arenas of the worker threads all reach their working size);
its settled RSS is the baseline. Then:
  - an idle keep-alive connection that completed a request costs at most
    8 KiB (+ 0.5 KiB tolerance): (peak - baseline) / N, an upper bound (the
    peak also holds the buffer blocks the round's exchanges just released,
    cached until the pool's next tick);
  - after the last round the RSS is back within 10 % of the baseline, plus
    1 MiB: the buffer pool keeps free_keep blocks per worker warm (16 x 32 KiB
    x 2 workers = 1 MiB when their pages are all touched), and which of their
    pages are resident varies from round to round;
  - the RSS after each round shows no upward trend across the rounds.
Before the fix a round of 2,000 left ~2.5 MB more resident each time (freed
32 KiB buffer blocks and connection objects fragmenting the worker arenas).
Under the sanitizers the RSS is meaningless (shadow memory, quarantine): the
rounds still run and every response is checked, the RSS assertions are skipped.
"""
import os
import resource
import socket
import sys
import time
import unittest

from harness import SANITIZED, SLOW, Env, free_port, main

ROUNDS = 10
REQUEST = b"GET /x HTTP/1.1\r\nHost: memory.test\r\n\r\n"


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise AssertionError("connection closed before a response: %r" % buf[:200])
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        d = s.recv(65536)
        if not d:
            raise AssertionError("connection closed mid-body")
        body += d
    return head.split(b"\r\n", 1)[0]


class Memory(unittest.TestCase):
    def setUp(self):
        self.env = Env()

    def tearDown(self):
        self.env.close()

    def open_round(self, port, n, wave):
        """N connections, one request each, all still open (idle keep-alive)."""
        socks = []
        try:
            for i in range(0, n, wave):
                batch = []
                for _ in range(min(wave, n - i)):
                    s = socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW)
                    batch.append(s)
                    socks.append(s)
                    s.sendall(REQUEST)
                for s in batch:
                    status = read_response(s)
                    self.assertTrue(status.startswith(b"HTTP/1.1 200 "), status)
        except BaseException:
            for s in socks:
                s.close()
            raise
        return socks

    def settle(self, pid, below=None, window=2.5, deadline=15.0):
        """Polls the RSS after a round until it is below `below` or has not moved
        by more than 1 % for `window` seconds; returns it."""
        end = time.time() + deadline * SLOW
        samples = []
        while True:
            now = time.time()
            rss = vm_rss_kib(pid)
            samples.append((now, rss))
            if below is not None and rss <= below:
                return rss
            recent = [r for t, r in samples if t >= now - window]
            if samples[0][0] <= now - window and max(recent) - min(recent) <= max(recent) / 100:
                return rss
            if now > end:
                return rss
            time.sleep(0.2)

    def test_rounds_of_idle_keepalive_connections(self):
        nofile = raise_nofile()
        n = 1000 if SANITIZED else 2000
        # The gateway holds N client sockets plus up to a wave of upstream ones,
        # this process N; both inherit the limit.
        n = min(n, (nofile - 1200) // 2)
        if n < 500:
            self.skipTest("RLIMIT_NOFILE hard limit %d is too low" % nofile)
        wave = min(1000, n)
        backend = self.env.start_backend("legacy")
        port = free_port()
        gw = self.env.start_gateway("""workers: 2
listen:
  - address: 127.0.0.1:%d
access_log: "off"
limits: {connections: %d}
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
routes:
  - name: all
    match: {path_prefix: /}
    legacy: legacy
""" % (port, 2 * n + 1000, backend), port)

        start = vm_rss_kib(gw.pid)
        baseline = limit = None
        peaks, settled = [], []
        for r in range(ROUNDS + 1):
            socks = self.open_round(port, n, wave)
            peak = vm_rss_kib(gw.pid)
            for s in socks:
                s.close()
            if SANITIZED:
                continue
            if r == 0:
                baseline = self.settle(gw.pid)
                limit = baseline * 1.10 + 1024
                continue
            peaks.append(peak)
            settled.append(self.settle(gw.pid, below=limit))
        # The gateway still serves after the rounds.
        for s in self.open_round(port, 10, 10):
            s.close()
        if SANITIZED:
            return

        costs = [(p - baseline) / n for p in peaks]
        sys.stderr.write("\nmemory: %d connections a round; RSS KiB at start %d, baseline %d (limit %d)\n"
                         "memory: RSS KiB with the connections idle, per round: %s\n"
                         "memory: KiB per idle keep-alive connection, per round: %s\n"
                         "memory: RSS KiB after each round: %s\n"
                         % (n, start, baseline, limit, " ".join(str(p) for p in peaks),
                            " ".join("%.2f" % c for c in costs), " ".join(str(a) for a in settled)))
        # No creep: the least-squares slope of the RSS after each round, times
        # the rounds, stays within the slack allowed for the return.
        xs = range(len(settled))
        mx = sum(xs) / len(settled)
        my = sum(settled) / len(settled)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, settled)) / sum((x - mx) ** 2 for x in xs)
        self.assertLessEqual(slope * (len(settled) - 1), limit - baseline,
                             "RSS creeps from round to round: %s" % settled)
        self.assertLessEqual(settled[-1], limit, "RSS did not come back within 10 % of the baseline")
        self.assertLessEqual(max(costs), 8.5, "an idle keep-alive connection costs more than 8 KiB")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Idle upstream connections: reused across requests, closed once one stayed
idle for timeouts.upstream_idle (its timer is not restarted per request, so it
must find the later idle periods by itself)."""
import time

from harness import SLOW, Client, GatewayTest, backend_stats, main, wait_for


class UpstreamIdle(GatewayTest):
    def open_upstreams(self):
        # The /__stats request holds one connection of each backend itself.
        return sum(backend_stats(p)["open"] - 1 for p in (self.legacy, self.new))

    def test_reused_then_closed_when_idle(self):
        self.gateway(extra_top="timeouts: {upstream_idle: 1s}", workers=1)
        before = sum(backend_stats(p)["connections"] for p in (self.legacy, self.new))
        c = Client(self.port)
        try:
            # Several requests over more than one idle period's length: the
            # connection is taken and given back while its timer runs.
            for i in range(8):
                s, h, b = c.get("/x", {"X-User-Id": "7"})
                self.assertEqual(s, 200)
                time.sleep(0.2)
            opened = sum(backend_stats(p)["connections"] for p in (self.legacy, self.new)) - before
            # 8 requests and 2 stats calls per look: fewer connections than
            # requests means the upstream connection was reused.
            self.assertLess(opened - 2, 8)
            # Left alone, it is closed after upstream_idle.
            wait_for(lambda: self.open_upstreams() == 0, timeout=15 * SLOW, what="the idle upstream closed")
            s, h, b = c.get("/x", {"X-User-Id": "7"})
            self.assertEqual(s, 200)
        finally:
            c.close()


if __name__ == "__main__":
    main()

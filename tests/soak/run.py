#!/usr/bin/env python3
"""Soak: the gateway under valgrind memcheck for a while at moderate load.

    tests/soak/run.py [SECONDS]        (default 600; SWITCHYARD_BIN picks the binary,
                                        default build/switchyard: a plain build, not ASan)

Real redis-server, PostgreSQL (the record), two test backends and the gateway
(2 workers) under `valgrind --leak-check=full --errors-for-leak-kinds=definite
--error-exitcode=99`. Load: wrk (4 keep-alive connections, a user id per request
so both variants serve), rounds of WRK_ROUND seconds back to back; between
rounds a flag edit through the admin API, GET /status, /metrics and /fleet,
some fresh connections with curl (bodies both ways, an error status, a backend
reset); a SIGHUP reload every 60 s. At the end SIGTERM (the drain), then the
valgrind report. Prints the requests served (by wrk: with non-2xx and socket
errors) and valgrind's error and leak counts; exits non-zero on any memcheck
error, any definite leak, a failed request, or a gateway that did not exit 0.
Not part of the CTest suite."""
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
from harness import Env, curl, free_port, wait_port  # noqa: E402

TOKEN = "soak-token-0123456789abcdef"
WRK_ROUND = 20
LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/x", {["X-User-Id"] = tostring(n % 1000)})
end
"""


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("SOAK_SECONDS", "600"))
    env = Env()
    ok = False
    try:
        legacy, new = env.start_backend("legacy"), env.start_backend("new")
        r = env.start_redis()
        pg = env.start_postgres()
        port, admin = free_port(), free_port()
        tok = env.path("token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        cfg = env.write_config("""workers: 2
listen: [{address: 127.0.0.1:%d}]
access_log: %s
admin: {address: 127.0.0.1:%d, token_file: %s}
redis: {address: 127.0.0.1:%d, resync_interval: 1s}
postgres: {conninfo: "%s", journal: %s, window: 1s}
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
  new: {endpoints: [127.0.0.1:%d]}
routes:
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 5000
    trip: {enabled: false}
""" % (port, env.path("access.log"), admin, tok, r.port, pg.conninfo(), env.path("journal"), legacy, new))
        vlog = env.path("valgrind.log")
        with open(env.path("gw.log"), "w") as out:
            gw = subprocess.Popen(["valgrind", "--error-exitcode=99", "--leak-check=full",
                                   "--errors-for-leak-kinds=definite", "--log-file=" + vlog, harness.BIN, "-c", cfg],
                                  stdout=out, stderr=subprocess.STDOUT)
        env.procs.append(gw)
        wait_port(admin, timeout=120, proc=gw)
        url, aurl = "http://127.0.0.1:%d" % port, "http://127.0.0.1:%d" % admin
        lua = env.path("load.lua")
        with open(lua, "w") as f:
            f.write(LUA)
        body = env.path("body.bin")
        with open(body, "wb") as f:
            f.write(os.urandom(256 * 1024))
        served = non2xx = sockerr = curls = edits = reloads = 0
        problems = []
        start = time.time()
        last_reload = start
        while time.time() - start < seconds:
            d = max(1, min(WRK_ROUND, int(seconds - (time.time() - start))))
            w = subprocess.run(["wrk", "-t1", "-c4", "-d%ds" % d, "--timeout", "30s", "-s", lua, url],
                               capture_output=True, text=True, timeout=d + 120)
            m = re.search(r"(\d+) requests in", w.stdout)
            served += int(m.group(1)) if m else 0
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", w.stdout)
            non2xx += int(m.group(1)) if m else 0
            m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", w.stdout)
            sockerr += sum(int(x) for x in m.groups()) if m else 0
            # the control plane and fresh connections between rounds
            edits += 1
            code, b = harness.http("POST", aurl + "/routes/nav/percent",
                                   {"percent_bp": 4000 + edits % 2000, "reason": "soak %d" % edits}, TOKEN, 60)
            if code != 200:
                problems.append("edit answered %d: %s" % (code, b[:200]))
            for path in ("/status", "/metrics", "/fleet", "/events?limit=5"):
                if harness.http("GET", aurl + path, token=TOKEN, timeout=60)[0] != 200:
                    problems.append("GET %s failed" % path)
            for args, want in ((["-H", "X-User-Id: 42", url + "/echo", "--data-binary", "@" + body], 200),
                               ([url + "/dl?size=300000&chunked=1", "-o", "/dev/null"], 200),
                               ([url + "/x?status=503"], 503), ([url + "/x?close=1"], 502)):
                curls += 1
                if curl(*args)[0] != want:
                    problems.append("curl %s: not %d" % (args, want))
            if time.time() - last_reload >= 60:
                last_reload = time.time()
                gw.send_signal(signal.SIGHUP)
                reloads += 1
            if gw.poll() is not None:
                problems.append("the gateway exited with %s" % gw.returncode)
                break
        gw.send_signal(signal.SIGTERM)
        rc = gw.wait(300)
        with open(vlog) as f:
            report = f.read()
        m = re.search(r"ERROR SUMMARY: (\d+) errors", report)
        errors = int(m.group(1)) if m else -1
        m = re.search(r"definitely lost: ([\d,]+) bytes", report)
        definite = int(m.group(1).replace(",", "")) if m else 0
        print("soak: %d s, %d requests served by wrk (%d non-2xx, %d socket errors), %d curl exchanges, %d edits, "
              "%d reloads; valgrind: %d errors, %d bytes definitely lost; gateway exit %d"
              % (time.time() - start, served, non2xx, sockerr, curls, edits, reloads, errors, definite, rc))
        for p in problems[:20]:
            print("problem: " + p)
        ok = rc == 0 and errors == 0 and definite == 0 and non2xx == 0 and sockerr == 0 and not problems
        if not ok:
            print(report[-6000:])
            print("(files kept in %s)" % env.dir)
    finally:
        if ok:
            env.close()
        else:
            for p in env.procs:
                if p.poll() is None:
                    p.kill()
            for pg in env.postgres:
                pg.destroy()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

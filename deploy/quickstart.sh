#!/usr/bin/env bash
# Installs what is missing, builds, starts Redis (6390), PostgreSQL (5490, the
# record), demo backends (legacy on 7001, new on 7002, speech on 8004) and the
# gateway on 127.0.0.1:8080 with deploy/quickstart.yaml, prints what to try, and
# stops everything it started on Ctrl-C (or TERM, HUP: `timeout 60 deploy/quickstart.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

RUN=/tmp/switchyard-quickstart
mkdir -p "$RUN"
chmod 0755 "$RUN"   # PostgreSQL runs as its own user and must reach $RUN/pg, whatever made $RUN before
# PostgreSQL's tools run as the postgres user when this runs as root (stop() needs them too).
PGBIN=/usr/lib/postgresql/15/bin
AS_PG=()
[ "$(id -u)" -eq 0 ] && AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }
PIDS=()
PG_STARTED=
STOPPED=
# Run by the signal's trap or on exit, whichever comes first; once. A signal that
# lands while the exit trap starts runs it here rather than cutting it short.
stop() {
  trap '' INT TERM HUP  # a second signal (timeout -k, a second Ctrl-C) must not cut the cleanup short
  [ -z "$STOPPED" ] || return 0
  STOPPED=1
  echo
  echo "stopping..."
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$RUN"/stts-state/*.pid; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
  done
  wait 2>/dev/null || true
  if [ -n "$PG_STARTED" ] && [ -f "$RUN/pg/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$RUN/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  echo "stopped; logs are in $RUN"
}
trap stop EXIT
trap 'stop; exit 0' INT TERM HUP

for p in 7001 7002 8004 8005 8080 9901 6390 5490; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port $p is already in use: stop what runs there first" >&2
    exit 1
  fi
done

# The admin token is deploy/quickstart.token, a demo token kept in the repository
# (the admin API listens on loopback only): a real deployment makes its own.
TOKEN_FILE=deploy/quickstart.token
# PostgreSQL for the record: a cluster of the demo's own (initdb + pg_ctl), as the
# postgres user when run as root; trust authentication on loopback only.
mkdir -p "$RUN/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$RUN/pg"
if [ ! -f "$RUN/pg/data/PG_VERSION" ]; then
  as_pg "$PGBIN/initdb" -D "$RUN/pg/data" -U switchyard --auth=trust -E UTF8 --locale=C >"$RUN/pg-init.log" 2>&1 ||
    { echo "initdb failed:" >&2; tail -n 3 "$RUN/pg-init.log" >&2; exit 1; }
fi
# In a session of its own: a signal to this script's process group (Ctrl-C, timeout) must
# not kill pg_ctl after it forked the server but before the server wrote its pid file,
# which is what stop() goes by; the signal's trap runs once the start has finished.
PG_STARTED=1
setsid -w "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$RUN/pg/data" -l "$RUN/pg/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=5490 -c unix_socket_directories=$RUN/pg" start >/dev/null
psql -X -q -h 127.0.0.1 -p 5490 -U switchyard -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'switchyard'" |
  grep -q 1 || psql -X -q -h 127.0.0.1 -p 5490 -U switchyard -d postgres -c "CREATE DATABASE switchyard"
redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no >"$RUN/redis.log" 2>&1 & PIDS+=($!)
python3 tests/integration/backend.py --port 7001 --name legacy >"$RUN/legacy.log" 2>&1 & PIDS+=($!)
python3 tests/integration/backend.py --port 7002 --name new >"$RUN/new.log" 2>&1 & PIDS+=($!)
python3 tests/integration/backend.py --port 8004 --name speech-v1 >"$RUN/speech-blue.log" 2>&1 & PIDS+=($!)
mkdir -p "$RUN/stts-state"
echo $! > "$RUN/stts-state/speech.blue.pid"   # so that the blue-green script can stop v1
# The gateway starts once its backends and Redis answer: a first request would
# otherwise find nothing to connect to (502) while Python is still starting.
for p in 6390 7001 7002 8004; do
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
  (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "nothing answers on 127.0.0.1:$p: see $RUN/*.log" >&2; exit 1; }
done
build/switchyard check -c deploy/quickstart.yaml
build/switchyard -c deploy/quickstart.yaml 2>"$RUN/switchyard.log" & PIDS+=($!)
GW=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/9901) 2>/dev/null && break
  sleep 0.05
done
CTL="build/switchyard ctl -c deploy/quickstart.yaml"

cat <<TXT

Switchyard is running on http://127.0.0.1:8080 (route "navigation", 25 % to new).
Demo backends: legacy on 127.0.0.1:7001, new on 127.0.0.1:7002.

Try:
  # a test user always gets the new backend
  curl -si http://127.0.0.1:8080/hello -H 'X-User-Id: 42' | grep -i -e x-backend -e x-switchyard
  # an ordinary user gets the variant of their bucket, the same one every time
  for u in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null -w "user \$u -> %header{x-switchyard-variant}\\n" -H "X-User-Id: \$u" http://127.0.0.1:8080/hello; done
  # why: the bucket and the decision, without the network
  build/switchyard cohort navigation 5 -c deploy/quickstart.yaml
  # the same with the flags the running gateway uses now (after edits in Redis)
  build/switchyard cohort navigation 5 -c deploy/quickstart.yaml --live
  # force a variant from a trusted address (127.0.0.0/8 here)
  curl -si http://127.0.0.1:8080/hello -H 'X-User-Id: 1' -H 'X-Switchyard-Variant: new' | grep -i x-backend
  # what the backend receives (X-Forwarded-*, X-Request-Id)
  curl -s http://127.0.0.1:8080/echo?user=7
  # the access log, one JSON object per request
  tail -n 3 $RUN/access.log

Watch it live: the dashboard at http://127.0.0.1:9901/ (the token for its buttons is in $TOKEN_FILE),
or in this terminal:
  $CTL top                                   # q quits
The flags live in Redis (127.0.0.1:6390):
  $CTL status
  redis-cli -p 6390 HGETALL switchyard:route:navigation
  # a hand edit takes effect at once: 75 %; users who had new at 25 % keep it
  redis-cli -p 6390 HSET switchyard:route:navigation percent_bp 7500
  # a bad edit is refused, logged and counted; the last good value stays
  redis-cli -p 6390 HSET switchyard:route:navigation percent_bp 150%
  # test users by hand
  redis-cli -p 6390 SADD switchyard:route:navigation:test_users 1001
Roll back in one command (everyone to legacy), then resume:
  $CTL rollback navigation --reason "errors on new"
  $CTL resume navigation
Make new misbehave and watch the automatic rollback (a few seconds):
  curl -s 'http://127.0.0.1:7002/__control?error_rate=0.5'   # half of new's answers become 500
  #   or: curl -s 'http://127.0.0.1:7002/__control?latency_ms=1500'   # new answers 1.5 s late
  seq 1 400 | xargs -P 16 -I{} curl -s -o /dev/null -H 'X-User-Id: {}' http://127.0.0.1:8080/hello
  $CTL status                                # navigation: tripped, the rule and both sides' numbers
  $CTL events navigation --kind trip
  curl -s 'http://127.0.0.1:7002/__control?reset=1'          # new behaves again
  $CTL resume navigation --reason "new fixed"
Blue-green on /tts (pool "speech": blue on 8004 runs speech-v1, green 8005 is idle):
  curl -s http://127.0.0.1:8080/tts          # hello from speech-v1
  # start v2 on the idle colour, wait for /health, swap, drain, stop v1 - one command:
  SWITCHYARD_TOKEN_FILE=$TOKEN_FILE STATE_DIR=$RUN/stts-state LOG=$RUN/speech-green.log \
    deploy/blue-green.sh speech python3 tests/integration/backend.py --port {port} --name speech-v2
  curl -s http://127.0.0.1:8080/tts          # hello from speech-v2
  $CTL status                                # pools: active colour, endpoints, draining
Every change, trip and swap is recorded in PostgreSQL (127.0.0.1:5490), journal first:
  $CTL events --since 1h                     # newest first; try it after the edits above
  $CTL events navigation --kind hand_edit
  $CTL windows navigation                    # requests, errors, p50/p95/p99 per minute and variant
  psql -h 127.0.0.1 -p 5490 -U switchyard switchyard -c "SELECT at, kind, route, actor, reason FROM events ORDER BY at DESC LIMIT 10"
The admin token is in $TOKEN_FILE (a demo token: make your own for real use); the gateway's log in $RUN/switchyard.log.

Press Ctrl-C to stop everything.
TXT
wait "$GW"

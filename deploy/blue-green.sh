#!/usr/bin/env bash
# Blue-green deployment of one coloured pool, in one command:
#   deploy/blue-green.sh POOL CMD [ARGS...]
# 1. asks the gateway (admin API) which colour of POOL is idle and on which port;
# 2. starts CMD with every "{port}" in its arguments (and $PORT) set to that port;
# 3. waits until http://HOST:PORT$HEALTH_PATH answers 2xx;
# 4. swaps the pool to that colour through the admin API (the gateway checks the
#    colour's health probes itself and refuses until they pass);
# 5. waits until no request is still in flight on the old colour (the drain);
# 6. stops the old colour's process (its pid file, written by the previous run).
# On any failure before the swap, the new process is stopped and the traffic stays
# where it was; the exit status is then non-zero.
#
# Environment: SWITCHYARD_ADMIN (127.0.0.1:9901), SWITCHYARD_TOKEN_FILE (required),
# HEALTH_PATH (/health), TIMEOUT seconds for each wait (60), STATE_DIR for pid files
# (/var/lib/switchyard/blue-green), LOG for the new process's output (/dev/null).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 POOL CMD [ARGS...]   ({port} in ARGS becomes the idle colour's port)" >&2
  exit 2
fi
pool=$1; shift
admin=${SWITCHYARD_ADMIN:-127.0.0.1:9901}
token_file=${SWITCHYARD_TOKEN_FILE:?set SWITCHYARD_TOKEN_FILE to the admin token file}
health=${HEALTH_PATH:-/health}
timeout=${TIMEOUT:-60}
state=${STATE_DIR:-/var/lib/switchyard/blue-green}
log=${LOG:-/dev/null}
mkdir -p "$state"
token=$(head -n1 "$token_file")
# Running (a zombie, exited but not yet reaped by its parent, counts as gone).
alive() { [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat"; }

status=$(curl -fsS "http://$admin/status") || { echo "blue-green: cannot reach the admin API at $admin" >&2; exit 1; }
read -r active idle idle_addr < <(printf '%s' "$status" | python3 -c '
import json, sys
pool = sys.argv[1]
for p in json.load(sys.stdin)["pools"]:
    if p["name"] == pool:
        if not p["colored"]:
            sys.exit("pool %s has no colours" % pool)
        idle = "green" if p["active"] == "blue" else "blue"
        ep = [e["endpoint"] for e in p["endpoints"] if e["color"] == idle][0]
        print(p["active"], idle, ep)
        break
else:
    sys.exit("no pool named %s" % pool)
' "$pool")
host=${idle_addr%:*}
port=${idle_addr##*:}
echo "blue-green: pool $pool is on $active; starting the next version on $idle ($idle_addr)"

args=()
for a in "$@"; do args+=("${a//\{port\}/$port}"); done
PORT=$port "${args[@]}" >>"$log" 2>&1 &
new_pid=$!
fail() {
  echo "blue-green: $1; traffic stays on $active" >&2
  kill "$new_pid" 2>/dev/null || true
  wait "$new_pid" 2>/dev/null || true
  exit 1
}

deadline=$((SECONDS + timeout))
until curl -fsS -o /dev/null --max-time 2 "http://$host:$port$health"; do
  alive "$new_pid" || fail "the new version exited before it was healthy"
  [ $SECONDS -lt $deadline ] || fail "the new version was not healthy on $health within ${timeout}s"
  sleep 0.2
done
echo "blue-green: $idle answers $health; swapping"

until out=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://$admin/pools/$pool/swap" \
             -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
             -d "{\"to\": \"$idle\", \"reason\": \"blue-green deploy\"}" 2>/dev/null) && [ "$out" = 200 ]; do
  [ "$out" = 409 ] || fail "the gateway refused the swap ($out)"
  [ $SECONDS -lt $deadline ] || fail "the gateway's health probes of $idle did not pass within ${timeout}s"
  sleep 0.3
done
echo "$new_pid" > "$state/$pool.$idle.pid"
echo "blue-green: pool $pool is on $idle; waiting for $active to drain"

deadline=$((SECONDS + timeout))
while :; do
  draining=$(curl -fsS "http://$admin/status" | python3 -c '
import json, sys
print([p for p in json.load(sys.stdin)["pools"] if p["name"] == sys.argv[1]][0]["draining"])' "$pool")
  [ "$draining" = 0 ] && break
  [ $SECONDS -lt $deadline ] || { echo "blue-green: $draining requests still on $active after ${timeout}s; stopping it anyway" >&2; break; }
  sleep 0.2
done

if [ -f "$state/$pool.$active.pid" ]; then
  old_pid=$(cat "$state/$pool.$active.pid")
  if alive "$old_pid"; then
    kill -TERM "$old_pid"
    for _ in $(seq 100); do alive "$old_pid" || break; sleep 0.1; done
    echo "blue-green: stopped the $active version (pid $old_pid)"
  fi
  rm -f "$state/$pool.$active.pid"
fi
echo "blue-green: done: pool $pool serves $idle (pid $new_pid)"

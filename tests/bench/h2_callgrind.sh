#!/usr/bin/env bash
# CPU cost of the HTTP/2 path, independent of the machine's load: Switchyard
# (1 worker, the h2.sh route) under callgrind, a warm-up, counters zeroed, then
# N requests from h2load (CONNS connections x STREAMS streams, h2c); prints the
# worker thread's instructions per request. Needs valgrind, h2load, nginx.
# Usage: tests/bench/h2_callgrind.sh [N] [BINARY]   (env: CONNS (16), STREAMS (10))
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-8000}
BIN=${2:-build/switchyard}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-10}
for t in valgrind callgrind_control h2load nginx; do
  command -v "$t" >/dev/null || { echo "$t missing" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no $BIN: build first" >&2; exit 1; }

TMP=$(mktemp -d /tmp/sy-h2cg.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "no listener on $1" >&2; exit 1; }
BACKEND=$(port); P_SY=$(port); P_ADMIN=$(port)

mkdir -p "$TMP/backend"
cat > "$TMP/backend/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $TMP/backend/nginx.pid; error_log $TMP/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $TMP/backend; proxy_temp_path $TMP/backend; fastcgi_temp_path $TMP/backend;
  uwsgi_temp_path $TMP/backend; scgi_temp_path $TMP/backend;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from the backend\n"; } }
}
NGX
nginx -c "$TMP/backend/nginx.conf" -p "$TMP/backend" & PIDS+=($!)

cat > "$TMP/switchyard.yaml" <<SY
workers: 1
listen:
  - {address: 127.0.0.1:$P_SY, http2: true}
access_log: "off"
admin: {address: 127.0.0.1:$P_ADMIN}
pools:
  legacy: {endpoints: [127.0.0.1:$BACKEND]}
  new: {endpoints: [127.0.0.1:$BACKEND]}
routes:
  - name: bench
    match: {path_prefix: /}
    user_key: [{query: user}]
    legacy: legacy
    new: new
    percent_bp: 2500
SY
# One output file per thread, names uncompressed (each file readable alone).
valgrind --tool=callgrind --separate-threads=yes --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$TMP/cg.out" "$BIN" -c "$TMP/switchyard.yaml" 2>"$TMP/switchyard.log" & PIDS+=($!)
VG=$!
wait_port "$BACKEND"; wait_port "$P_SY"
seq 1 1000 | awk -v p="$P_SY" '{print "http://127.0.0.1:" p "/bench?user=" $1}' > "$TMP/uris"
h2load -c"$CONNS" -m"$STREAMS" -t1 -n 400 -i "$TMP/uris" >/dev/null 2>&1
callgrind_control -z "$VG" >/dev/null 2>&1
out=$(h2load -c"$CONNS" -m"$STREAMS" -t1 -n "$N" -i "$TMP/uris" 2>&1)
callgrind_control -d "$VG" >/dev/null 2>&1
echo "$out" | grep -E "^requests:|^status codes:"
# The worker is the thread that ran the most instructions in the dump.
best=0
for f in "$TMP"/cg.out.*-*; do
  ir=$(awk '/^summary:/ {print $2; exit}' "$f")
  [ "${ir:-0}" -gt "$best" ] && best=$ir
done
echo "worker thread: $best instructions for $N requests: $((best / N)) per request"

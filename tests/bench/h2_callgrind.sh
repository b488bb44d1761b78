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
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
bench_need valgrind callgrind_control h2load nginx
[ -x "$BIN" ] || { echo "no $BIN: build first" >&2; exit 1; }

bench_init sy-h2cg
BACKEND=$(port); P_SY=$(port); P_ADMIN=$(port)
backend_start "$BACKEND" ""
switchyard_conf "$TMP/switchyard.yaml" "$BACKEND" 1 "{query: user}" \
  "  - {address: 127.0.0.1:$P_SY, http2: true}" "admin: {address: 127.0.0.1:$P_ADMIN}"
# One output file per thread, names uncompressed (each file readable alone).
valgrind --tool=callgrind --separate-threads=yes --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$TMP/cg.out" "$BIN" -c "$TMP/switchyard.yaml" 2>"$TMP/switchyard.log" & PIDS+=($!)
VG=$!
wait_port "$BACKEND" 600 0.1; wait_port "$P_SY" 600 0.1
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

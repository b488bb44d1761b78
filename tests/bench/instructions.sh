#!/usr/bin/env bash
# CPU and syscalls per request that do not depend on the machine's load: the
# gateway (one worker, the cohort route of run.sh) in front of an nginx backend
# answering 100 B, N keep-alive HTTP/1.1 requests at 50 connections (h2load),
# after a warm-up of 2,000. Prints
#   - with valgrind (callgrind): instructions per request, the whole process
#     and the worker thread alone (the control thread's timers are paced by
#     wall time, which callgrind stretches: the worker's figure is the one to
#     compare between commits);
#   - with strace -c -f: the syscalls of the warm-up and the run, per request.
# Usage: tests/bench/instructions.sh [N] [BINARY]   (needs valgrind, strace, h2load, nginx)
#        env: BIG=1 for a 16 KiB body, KEEP=FILE keeps the callgrind profile,
#        NO_STRACE=1 skips the strace part
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20000}
BIN=${2:-build/switchyard}
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
bench_need valgrind callgrind_annotate callgrind_control strace h2load nginx
bench_init sy-instr
chmod 755 "$TMP"
B=$(port); P=$(port)
URLPATH=/bench; [ -n "${BIG:-}" ] && URLPATH=/big   # BIG=1: a 16 KiB body
mkdir -p "$TMP/www"; head -c 16384 /dev/zero | tr '\0' 'x' > "$TMP/www/big"
backend_start "$B" "" "location = /big { root $TMP/www; default_type application/octet-stream; }
    location / { default_type text/plain; return 200 \"$(printf '%099d' 0)\\n\"; }"
switchyard_conf "$TMP/sy.yaml" "$B" 1 "{header: X-User-Id}" "  - address: 127.0.0.1:$P"
load() { h2load --h1 -t1 -c50 -n "$1" -H "X-User-Id: 4242" "http://127.0.0.1:$P$URLPATH" | grep -E '^requests:'; }
stop() { # pid of the gateway (or of its tracer's child)
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$1" 2>/dev/null || true
}

echo "== callgrind: $N requests"
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$BIN" -c "$TMP/sy.yaml" 2>"$TMP/sy.log" & SP=$!; PIDS+=($SP)
wait_port "$B" 600; wait_port "$P" 600
load 2000 >/dev/null
callgrind_control -z "$SP" >/dev/null
load "$N"
callgrind_control -d "$SP" >/dev/null
f=$(ls -t "$TMP"/cg.out.* | head -1)
[ -n "${KEEP:-}" ] && cp "$f" "${KEEP}"
total=$( (callgrind_annotate "$f" 2>/dev/null || true) | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
worker=$( (callgrind_annotate --inclusive=yes "$f" 2>/dev/null || true) | awk '/:sy_worker_run / {gsub(",","",$1); print $1; exit}')
awk -v t="$total" -v w="${worker:-0}" -v n="$N" 'BEGIN {printf "instructions/request: %.0f (worker thread %.0f)\n", t / n, w / n}'
stop "$SP"

[ -n "${NO_STRACE:-}" ] && exit 0
echo "== strace -c -f: $((N + 2000)) requests (warm-up included)"
strace -f -c -o "$TMP/strace.out" "$BIN" -c "$TMP/sy.yaml" 2>"$TMP/sy.log" & TP=$!; PIDS+=($TP)
wait_port "$P" 600
load 2000 >/dev/null
load "$N"
stop "$(pgrep -P "$TP")"
wait "$TP" 2>/dev/null || true
awk -v n=$((N + 2000)) '$NF ~ /^(read|sendto|writev|recvfrom|epoll_wait|epoll_ctl|clock_gettime|accept4|connect)$/ {
  printf "%-14s %8.3f per request\n", $NF, $4 / n }' "$TMP/strace.out"

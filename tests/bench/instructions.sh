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
#        NO_STRACE=1 skips the strace part, PEERS=1 also counts nginx, HAProxy and
#        HAProxy `mode tcp` (the whole process: user-space instructions per request)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20000}
BIN=${2:-build/switchyard}
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
bench_need valgrind callgrind_annotate callgrind_control strace h2load nginx
[ -n "${PEERS:-}" ] && bench_need haproxy
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

count() { # NAME PID [FUNCTION]: instructions per request of the whole process (and of FUNCTION's
  # thread); then stops it (a peer at once: its counts are on disk)
  local f total worker
  load 2000 >/dev/null
  callgrind_control -z "$2" >/dev/null
  load "$N"
  callgrind_control -d "$2" >/dev/null
  f=$(ls -t "$TMP"/cg-"$1".out.* | head -1)
  [ -n "${KEEP:-}" ] && [ "$1" = switchyard ] && cp "$f" "${KEEP}"
  total=$( (callgrind_annotate "$f" 2>/dev/null || true) | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  if [ -n "$3" ]; then
    worker=$( (callgrind_annotate --inclusive=yes "$f" 2>/dev/null || true) | awk -v fn=":$3 " 'index($0, fn) {gsub(",","",$1); print $1; exit}')
    awk -v t="$total" -v w="${worker:-0}" -v n="$N" 'BEGIN {printf "instructions/request: %.0f (worker thread %.0f)\n", t / n, w / n}'
  else
    awk -v t="$total" -v n="$N" -v who="$1" 'BEGIN {printf "%-12s instructions/request: %.0f\n", who, t / n}'
  fi
  if [ -n "$3" ]; then stop "$2"; else kill -9 "$2" 2>/dev/null || true; wait "$2" 2>/dev/null || true; fi
}

echo "== callgrind: $N requests"
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg-switchyard.out" "$BIN" -c "$TMP/sy.yaml" 2>"$TMP/sy.log" & SP=$!; PIDS+=($SP)
wait_port "$B" 600; wait_port "$P" 600
count switchyard "$SP" sy_worker_run

if [ -n "${PEERS:-}" ]; then
  # The same load through nginx, HAProxy and HAProxy `mode tcp` (one worker each,
  # configured as run.sh configures them), each on the port the gateway had.
  echo "== callgrind, the peers: $N requests each"
  for peer in nginx haproxy haproxy-tcp; do
    WRAP=(valgrind --tool=callgrind --log-file="$TMP/vg-$peer.log" --callgrind-out-file="$TMP/cg-$peer.out")
    case $peer in
    nginx) nginx_start "$B" "" 1 "listen 127.0.0.1:$P;"; PP=$NGINX_PID ;;
    haproxy) haproxy_start http "$B" "" 1 http "  bind 127.0.0.1:$P"; PP=$HAPROXY_PID ;;
    haproxy-tcp) haproxy_start tcp "$B" "" 1 tcp "  bind 127.0.0.1:$P"; PP=$HAPROXY_PID ;;
    esac
    WRAP=()
    wait_port "$P" 600
    count "$peer" "$PP" ""
  done
fi

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

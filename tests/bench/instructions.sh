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
T=$(mktemp -d /tmp/sy-instr.XXXXXX); chmod 755 "$T"
URLPATH=/bench; [ -n "${BIG:-}" ] && URLPATH=/big
mkdir -p "$T/www"; head -c 16384 /dev/zero | tr '\0' 'x' > "$T/www/big"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "no listener on $1" >&2; exit 1; }
B=$(port); P=$(port)
cat > "$T/ngx.conf" <<NGX
worker_processes 1;
daemon off;
pid $T/nginx.pid;
error_log $T/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $T; proxy_temp_path $T; fastcgi_temp_path $T; uwsgi_temp_path $T;
  scgi_temp_path $T; keepalive_requests 1000000;
  server { listen 127.0.0.1:$B; location = /big { root $T/www; default_type application/octet-stream; }
    location / { default_type text/plain; return 200 "$(printf '%099d' 0)\n"; } } }
NGX
nginx -c "$T/ngx.conf" -p "$T" & PIDS+=($!)
cat > "$T/sy.yaml" <<SY
workers: 1
listen:
  - address: 127.0.0.1:$P
admin: {address: 127.0.0.1:$(port)}
access_log: "off"
pools:
  legacy: {endpoints: [127.0.0.1:$B]}
  new: {endpoints: [127.0.0.1:$B]}
routes:
  - name: bench
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 2500
SY
load() { h2load --h1 -t1 -c50 -n "$1" -H "X-User-Id: 4242" "http://127.0.0.1:$P$URLPATH" | grep -E '^requests:'; }
stop() { # pid of the gateway (or of its tracer's child)
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$1" 2>/dev/null || true
}

echo "== callgrind: $N requests"
valgrind --tool=callgrind --callgrind-out-file="$T/cg.out" "$BIN" -c "$T/sy.yaml" 2>"$T/sy.log" & SP=$!; PIDS+=($SP)
wait_port "$B"; wait_port "$P"
load 2000 >/dev/null
callgrind_control -z "$SP" >/dev/null
load "$N"
callgrind_control -d "$SP" >/dev/null
f=$(ls -t "$T"/cg.out.* | head -1)
[ -n "${KEEP:-}" ] && cp "$f" "${KEEP}"
total=$( (callgrind_annotate "$f" 2>/dev/null || true) | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
worker=$( (callgrind_annotate --inclusive=yes "$f" 2>/dev/null || true) | awk '/:sy_worker_run / {gsub(",","",$1); print $1; exit}')
awk -v t="$total" -v w="${worker:-0}" -v n="$N" 'BEGIN {printf "instructions/request: %.0f (worker thread %.0f)\n", t / n, w / n}'
stop "$SP"

[ -n "${NO_STRACE:-}" ] && exit 0
echo "== strace -c -f: $((N + 2000)) requests (warm-up included)"
strace -f -c -o "$T/strace.out" "$BIN" -c "$T/sy.yaml" 2>"$T/sy.log" & TP=$!; PIDS+=($TP)
wait_port "$P"
load 2000 >/dev/null
load "$N"
stop "$(pgrep -P "$TP")"
wait "$TP" 2>/dev/null || true
awk -v n=$((N + 2000)) '$NF ~ /^(read|sendto|writev|recvfrom|epoll_wait|epoll_ctl|clock_gettime|accept4|connect)$/ {
  printf "%-14s %8.3f per request\n", $NF, $4 / n }' "$T/strace.out"

#!/usr/bin/env bash
# Syscalls per request by kind, a figure the machine's load does not change:
# Switchyard (the cohort route of run.sh), nginx, HAProxy (http) and HAProxy
# `mode tcp`, configured as run.sh configures them (one worker each), in front
# of one nginx backend answering 100 B (or 16 KiB with BIG=1). For each proxy:
# a warm-up of 2,000 requests, then N keep-alive HTTP/1.1 requests at CONNS
# connections (h2load, one request at a time per connection), while
# `perf stat -e 'syscalls:sys_enter_*'` counts the proxy's syscalls (all its
# threads); the 50 connects are amortised over N.
# H2=1: HTTP/2 over cleartext (prior knowledge) from the client, CONNS (default 16)
# connections with STREAMS (10) concurrent streams each, to the three HTTP proxies;
# the backend side stays HTTP/1.1.
# Usage: tests/bench/syscalls.sh [N] [BINARY]   (env: CONNS (50), BIG, SYSTEMS, H2, STREAMS)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20000}
BIN=${2:-build/switchyard}
CONNS=${CONNS:-50}
SYSTEMS=${SYSTEMS:-"switchyard nginx haproxy haproxy-tcp"}
H2=${H2:-}
STREAMS=${STREAMS:-10}
SY_H2=""; NGX_H2=""; HAP_H2=""
if [ -n "$H2" ]; then
  [ "$CONNS" = 50 ] && CONNS=16
  [ "$SYSTEMS" = "switchyard nginx haproxy haproxy-tcp" ] && SYSTEMS="switchyard nginx haproxy"
  SY_H2=", http2: true"; NGX_H2=" http2"; HAP_H2=" proto h2"
fi
PATH_=/bench; [ -n "${BIG:-}" ] && PATH_=/big
command -v perf >/dev/null || { echo "perf missing: apt-get install linux-perf" >&2; exit 1; }
T=$(mktemp -d /tmp/sy-sys.XXXXXX); chmod 755 "$T"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$T" /tmp/sy-sys-last; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "no listener on $1" >&2; exit 1; }
B=$(port)
mkdir -p "$T/b/www"
head -c 16384 /dev/zero | tr '\0' 'x' > "$T/b/www/big"
cat > "$T/b/ngx.conf" <<NGX
worker_processes 1; daemon off; pid $T/b/nginx.pid; error_log $T/b/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $T/b; proxy_temp_path $T/b; fastcgi_temp_path $T/b;
  uwsgi_temp_path $T/b; scgi_temp_path $T/b; keepalive_requests 1000000;
  server { listen 127.0.0.1:$B;
    location = /big { root $T/b/www; default_type application/octet-stream; }
    location / { default_type text/plain; return 200 "$(printf '%099d' 0)\n"; } } }
NGX
nginx -c "$T/b/ngx.conf" -p "$T/b" & PIDS+=($!)

start() { # name port -> pid in SPID
  local name=$1 p=$2
  case $name in
  switchyard)
    cat > "$T/sy.yaml" <<SY
workers: 1
listen:
  - {address: 127.0.0.1:$p$SY_H2}
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
    "$BIN" -c "$T/sy.yaml" 2>"$T/sy.log" & ;;
  nginx)
    mkdir -p "$T/n"
    cat > "$T/n/nginx.conf" <<NGX
worker_processes 1; daemon off; master_process off; pid $T/n/nginx.pid; error_log $T/n/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $T/n; proxy_temp_path $T/n; fastcgi_temp_path $T/n;
  uwsgi_temp_path $T/n; scgi_temp_path $T/n; keepalive_requests 1000000;
  upstream b { server 127.0.0.1:$B; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$p$NGX_H2;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
    nginx -c "$T/n/nginx.conf" -p "$T/n" & ;;
  haproxy|haproxy-tcp)
    local mode=http; [ "$name" = haproxy-tcp ] && mode=tcp
    cat > "$T/$name.cfg" <<HAP
global
  nbthread 1
  maxconn 8000
defaults
  mode $mode
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:$p$HAP_H2
  default_backend legacy
backend legacy
  server s1 127.0.0.1:$B
HAP
    haproxy -f "$T/$name.cfg" -db >/dev/null 2>&1 & ;;
  esac
  SPID=$!
}
load() {
  if [ -n "$H2" ]; then
    h2load -t1 -c"$CONNS" -m"$STREAMS" -n "$2" -H "X-User-Id: 4242" "http://127.0.0.1:$1$PATH_"
  else
    h2load --h1 -t1 -c"$CONNS" -n "$2" -H "X-User-Id: 4242" "http://127.0.0.1:$1$PATH_"
  fi | awk '/^requests:/ {print $8}'
}

EVENTS=context-switches,raw_syscalls:sys_enter
for s in read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_ctl \
         clock_gettime gettimeofday timerfd_settime accept accept4 connect close futex setsockopt \
         getsockopt socket ioctl fcntl splice getpid mmap munmap madvise brk shutdown; do
  EVENTS+=",syscalls:sys_enter_$s"
done
wait_port "$B"
declare -A FIG
for name in $SYSTEMS; do
  p=$(port)
  start "$name" "$p"; pid=$SPID; PIDS+=("$pid")
  wait_port "$p"
  load "$p" 2000 >/dev/null
  perf stat -x, -e "$EVENTS" -p "$pid" -o "$T/$name.perf" & PP=$!
  sleep 0.3
  done_=$(load "$p" "$N")
  sleep 0.2
  kill -INT "$PP"; wait "$PP" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  [ "$done_" = "$N" ] || echo "$name: only $done_ of $N requests succeeded" >&2
  while IFS=, read -r cnt _ ev _; do
    ev=${ev#syscalls:sys_enter_}; ev=${ev#raw_syscalls:sys_enter}; ev=${ev:-total}
    [[ $cnt =~ ^[0-9]+$ ]] || continue
    FIG[$name,$ev]=$(awk -v c="$cnt" -v n="$N" 'BEGIN {printf "%.3f", c / n}')
  done < <(grep -v '^#' "$T/$name.perf" | grep ,)
done
echo "syscalls per request: $N keep-alive requests at $CONNS connections${H2:+ (h2c, $STREAMS streams each)}, ${PATH_#/} ($(date -u +%F))"
printf "%-16s" kind; for name in $SYSTEMS; do printf "%13s" "$name"; done; echo
for ev in context-switches total read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_ctl \
          clock_gettime gettimeofday timerfd_settime accept accept4 connect close futex setsockopt \
          getsockopt socket ioctl fcntl splice getpid mmap munmap madvise brk shutdown; do
  line=$(printf "%-16s" "$ev"); any=
  for name in $SYSTEMS; do
    v=${FIG[$name,$ev]:-0}; [ "$v" != 0.000 ] && [ "$v" != 0 ] && any=1
    line+=$(printf "%13s" "$v")
  done
  [ -n "$any" ] && echo "$line"
done

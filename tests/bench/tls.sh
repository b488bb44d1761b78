#!/usr/bin/env bash
# TLS benchmark (tests/bench/run.sh is the main HTTP/1.1 one): the backend
# directly, nginx, HAProxy and Switchyard (a cohort route
# at 25 % by X-User-Id) as reverse proxies in front of one fast backend, with
# keep-alive at 50 and 256 connections, interleaved (A B C D A B C D ...),
# ROUNDS rounds, medians. Each proxy runs WORKERS worker threads pinned to CPU
# PROXY_CPU; wrk and the backend share the other CPU. Besides requests/s, p50
# and p99, it prints the proxy's CPU time per request (its threads' run time
# from /proc/PID/task/*/schedstat, divided by the requests served): on a
# 2-core machine that is the figure that separates proxies.
# With TLS=1 (the default) each proxy also has a TLS front (TLS 1.3, the same
# ECDSA P-256 certificate) measured as "<name>-tls": keep-alive HTTPS, so the
# figure is the record layer's cost, not handshakes (give it DURATION_S >= 10:
# in a short run at 256 connections the 256 initial handshakes dominate).
# Usage: tests/bench/tls.sh [DURATION_S] [ROUNDS]   (env: WORKERS, PROXY_CPU, LOAD_CPU, TLS)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
DURATION=${1:-5}
ROUNDS=${2:-3}
WORKERS=${WORKERS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
TLS=${TLS:-1}

deploy/install-deps.sh --bench
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

TMP=$(mktemp -d /tmp/sy-bench.XXXXXX)
PIDS=()
cleanup() {
  [ -n "${KEEP:-}" ] && cp -r "$TMP" /tmp/sy-bench-last
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "no listener on $1" >&2; exit 1; }

BACKEND=$(port); P_NGINX=$(port); P_HAPROXY=$(port); P_SY=$(port)
T_NGINX=$(port); T_HAPROXY=$(port); T_SY=$(port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/tls.key" -out "$TMP/tls.pem" \
  -days 2 -subj /CN=bench.test 2>/dev/null
cat "$TMP/tls.pem" "$TMP/tls.key" > "$TMP/tls-both.pem"

# The backend: nginx answering a small body, on the load CPU.
mkdir -p "$TMP/backend" "$TMP/nginx"
cat > "$TMP/backend/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/backend; proxy_temp_path $TMP/backend; fastcgi_temp_path $TMP/backend;
  uwsgi_temp_path $TMP/backend; scgi_temp_path $TMP/backend;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from the backend\n"; } }
}
NGX
taskset -c "$LOAD_CPU" nginx -c "$TMP/backend/nginx.conf" -p "$TMP/backend" & PIDS+=($!)

cat > "$TMP/nginx/nginx.conf" <<NGX
worker_processes $WORKERS;
daemon off;
master_process off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx; fastcgi_temp_path $TMP/nginx;
  uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
  keepalive_requests 1000000;
  upstream b { server 127.0.0.1:$BACKEND; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$P_NGINX;
    listen 127.0.0.1:$T_NGINX ssl;
    ssl_certificate $TMP/tls.pem; ssl_certificate_key $TMP/tls.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
taskset -c "$PROXY_CPU" nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" & PIDS+=($!)
NGINX_PID=$!

cat > "$TMP/haproxy.cfg" <<HAP
global
  nbthread $WORKERS
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:$P_HAPROXY
  bind 127.0.0.1:$T_HAPROXY ssl crt $TMP/tls-both.pem ssl-min-ver TLSv1.2
  default_backend b
backend b
  server s1 127.0.0.1:$BACKEND
HAP
taskset -c "$PROXY_CPU" haproxy -f "$TMP/haproxy.cfg" -db & PIDS+=($!)
HAPROXY_PID=$!

cat > "$TMP/switchyard.yaml" <<SY
workers: $WORKERS
listen:
  - address: 127.0.0.1:$P_SY
  - address: 127.0.0.1:$T_SY
    tls: {cert: $TMP/tls.pem, key: $TMP/tls.key}
access_log: "off"
pools:
  legacy: {endpoints: [127.0.0.1:$BACKEND]}
  new: {endpoints: [127.0.0.1:$BACKEND]}
routes:
  - name: bench
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}]
    legacy: legacy
    new: new
    percent_bp: 2500
SY
taskset -c "$PROXY_CPU" build/switchyard -c "$TMP/switchyard.yaml" 2>"$TMP/switchyard.log" & PIDS+=($!)
SY_PID=$!

for p in $BACKEND $P_NGINX $P_HAPROXY $P_SY $T_NGINX $T_HAPROXY $T_SY; do wait_port "$p"; done

# wrk script: a user id per request, so the cohort route does its work.
cat > "$TMP/users.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/bench", {["X-User-Id"] = tostring(n % 100000)})
end
LUA

cpu_ns() { # total on-CPU ns of all threads of a pid (0 for none)
  [ "$1" = 0 ] && { echo 0; return; }
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'
}

to_ms() { # wrk latency "123.45us" / "1.23ms" / "1.2s" -> ms
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'
}

RESULTS="$TMP/results.tsv"
: > "$RESULTS"
run_one() { # name port pid conns [scheme]
  local name=$1 port=$2 pid=$3 conns=$4 scheme=${5:-http}
  local before after out rps p50 p99 reqs cpu
  before=$(cpu_ns "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t2 -c"$conns" -d"${DURATION}s" --latency -s "$TMP/users.lua" "$scheme://127.0.0.1:$port/bench" 2>&1)
  after=$(cpu_ns "$pid")
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$out" > "$TMP/last-$name-$conns.txt"
  p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  local errs
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  if [ "$pid" = 0 ] || [ -z "$reqs" ] || [ "$reqs" = 0 ]; then cpu=0; else cpu=$(awk -v a="$before" -v b="$after" -v r="$reqs" 'BEGIN {printf "%.2f", (b - a) / r / 1000}'); fi
  printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" >> "$RESULTS"
  printf "  %-14s c=%-3s %10s req/s  p50 %7s ms  p99 %7s ms  cpu %6s us/req %s\n" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" "$errs"
}

echo "Benchmark: ${DURATION}s per run, $ROUNDS rounds, $WORKERS worker(s) per proxy on CPU $PROXY_CPU, wrk and backend on CPU $LOAD_CPU"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for conns in 50 256; do
    run_one direct "$BACKEND" 0 "$conns"
    run_one nginx "$P_NGINX" "$NGINX_PID" "$conns"
    run_one haproxy "$P_HAPROXY" "$HAPROXY_PID" "$conns"
    run_one switchyard "$P_SY" "$SY_PID" "$conns"
    if [ "$TLS" = 1 ]; then
      run_one nginx-tls "$T_NGINX" "$NGINX_PID" "$conns" https
      run_one haproxy-tls "$T_HAPROXY" "$HAPROXY_PID" "$conns" https
      run_one switchyard-tls "$T_SY" "$SY_PID" "$conns" https
    fi
  done
done

echo
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
med = {}
for name, conns, rps, p50, p99, cpu in rows:
    med.setdefault((name, conns), []).append((float(rps or 0), float(p50 or 0), float(p99 or 0), float(cpu or 0)))
print("medians over %d rounds" % max(len(v) for v in med.values()))
print("%-15s %5s %11s %9s %9s %11s %14s %14s" % ("system", "conns", "req/s", "p50 ms", "p99 ms", "cpu us/req",
                                                   "req/s vs SY", "cpu vs SY"))
for conns in ("50", "256"):
    sy = med.get(("switchyard", conns))
    syr = statistics.median(x[0] for x in sy) if sy else 0
    syc = statistics.median(x[3] for x in sy) if sy else 0
    for name in ("direct", "nginx", "haproxy", "switchyard", "nginx-tls", "haproxy-tls", "switchyard-tls"):
        sy = med.get(("switchyard-tls" if name.endswith("-tls") else "switchyard", conns))
        syr = statistics.median(x[0] for x in sy) if sy else 0
        syc = statistics.median(x[3] for x in sy) if sy else 0
        v = med.get((name, conns))
        if not v:
            continue
        rps, p50, p99, cpu = (statistics.median(x[i] for x in v) for i in range(4))
        print("%-15s %5s %11.0f %9.3f %9.3f %11.2f %14s %14s" % (
            name, conns, rps, p50, p99, cpu, "%.2f" % (rps / syr) if syr else "-",
            "%.2f" % (cpu / syc) if syc and cpu else "-"))
print("(ratios are the system's figure divided by Switchyard's (its TLS front for the -tls rows): req/s")
print(" above 1 means faster than Switchyard, cpu above 1 means more CPU per request than Switchyard)")
PY

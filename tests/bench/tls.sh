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
DURATION=${1:-5}
ROUNDS=${2:-3}
WORKERS=${WORKERS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
TLS=${TLS:-1}

deploy/install-deps.sh --bench
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
bench_build
bench_init sy-bench

BACKEND=$(port); P_NGINX=$(port); P_HAPROXY=$(port); P_SY=$(port)
T_NGINX=$(port); T_HAPROXY=$(port); T_SY=$(port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/tls.key" -out "$TMP/tls.pem" \
  -days 2 -subj /CN=bench.test 2>/dev/null
cat "$TMP/tls.pem" "$TMP/tls.key" > "$TMP/tls-both.pem"

# The backend: nginx answering a small body, on the load CPU.
backend_start "$BACKEND" "$LOAD_CPU"
nginx_start "$BACKEND" "$PROXY_CPU" "$WORKERS" "listen 127.0.0.1:$P_NGINX;" "listen 127.0.0.1:$T_NGINX ssl;" \
  "ssl_certificate $TMP/tls.pem; ssl_certificate_key $TMP/tls.key; ssl_protocols TLSv1.2 TLSv1.3;"
haproxy_start http "$BACKEND" "$PROXY_CPU" "$WORKERS" http "  bind 127.0.0.1:$P_HAPROXY
  bind 127.0.0.1:$T_HAPROXY ssl crt $TMP/tls-both.pem ssl-min-ver TLSv1.2"
switchyard_conf "$TMP/switchyard.yaml" "$BACKEND" "$WORKERS" "{header: X-User-Id}" "  - address: 127.0.0.1:$P_SY
  - address: 127.0.0.1:$T_SY
    tls: {cert: $TMP/tls.pem, key: $TMP/tls.key}"
switchyard_start "$PROXY_CPU" "$TMP/switchyard.yaml"

for p in $BACKEND $P_NGINX $P_HAPROXY $P_SY $T_NGINX $T_HAPROXY $T_SY; do wait_port "$p"; done
users_lua "$TMP/users.lua"

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

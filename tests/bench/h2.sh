#!/usr/bin/env bash
# HTTP/2 benchmark (h2c with prior knowledge): h2load against nginx (http2 on a
# cleartext listener), HAProxy (bind ... proto h2) and Switchyard (http2: true),
# each a reverse proxy to one fast HTTP/1.1 backend, interleaved, ROUNDS rounds,
# medians. Each proxy runs WORKERS workers pinned to PROXY_CPU; h2load and the
# backend share LOAD_CPU. p50/p99 come from h2load's per-request log.
# Usage: tests/bench/h2.sh [DURATION_S] [ROUNDS]   (env: WORKERS, PROXY_CPU, LOAD_CPU,
#        CONNS (16), STREAMS (max concurrent streams per connection, 10))
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-5}
ROUNDS=${2:-3}
WORKERS=${WORKERS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-10}

# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
bench_need h2load nginx haproxy
bench_build
bench_init sy-h2bench

BACKEND=$(port); P_NGINX=$(port); P_HAPROXY=$(port); P_SY=$(port); P_ADMIN=$(port)
backend_start "$BACKEND" "$LOAD_CPU"
nginx_start "$BACKEND" "$PROXY_CPU" "$WORKERS" "listen 127.0.0.1:$P_NGINX http2;"
haproxy_start h2 "$BACKEND" "$PROXY_CPU" "$WORKERS" http "  bind 127.0.0.1:$P_HAPROXY proto h2"
switchyard_conf "$TMP/switchyard.yaml" "$BACKEND" "$WORKERS" "{query: user}" \
  "  - {address: 127.0.0.1:$P_SY, http2: true}" "admin: {address: 127.0.0.1:$P_ADMIN}"
switchyard_start "$PROXY_CPU" "$TMP/switchyard.yaml"
for p in $BACKEND $P_NGINX $P_HAPROXY $P_SY; do wait_port "$p" || { cat "$TMP/switchyard.log" >&2; exit 1; }; done

# Many user keys, so the cohort route does its work (h2load cycles the URIs).
seq 1 1000 | awk -v p=PORT '{print "http://127.0.0.1:" p "/bench?user=" $1}' > "$TMP/uris.tmpl"

RESULTS="$TMP/results.tsv"
: > "$RESULTS"
run_one() { # name port pid
  local name=$1 port=$2 pid=$3 before after out
  sed "s/PORT/$port/" "$TMP/uris.tmpl" > "$TMP/uris"
  before=$(cpu_ns "$pid")
  out=$(taskset -c "$LOAD_CPU" h2load -c"$CONNS" -m"$STREAMS" -t1 -D"$DURATION" -i "$TMP/uris" \
        --log-file="$TMP/log-$name" 2>&1)
  after=$(cpu_ns "$pid")
  python3 - "$name" "$TMP/log-$name" "$before" "$after" "$DURATION" "$out" >> "$RESULTS" <<'PY'
import sys
name, log, before, after, dur, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
lat, ok, bad = [], 0, 0
for line in open(log):
    f = line.split()
    if len(f) < 3:
        continue
    (ok := ok + 1) if f[1] == "200" else (bad := bad + 1)
    lat.append(int(f[2]) / 1000.0)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0
n = ok + bad
print("%s\t%.0f\t%.3f\t%.3f\t%.2f\t%d" % (name, n / dur, pct(0.5), pct(0.99), (after - before) / max(n, 1) / 1000, bad))
PY
  tail -1 "$RESULTS" | awk -F'\t' '{printf "  %-10s %10s req/s  p50 %7s ms  p99 %7s ms  cpu %6s us/req  non-200 %s\n", $1, $2, $3, $4, $5, $6}'
  rm -f "$TMP/log-$name"
}

echo "h2c benchmark: ${DURATION}s per run, $ROUNDS rounds, $CONNS connections x $STREAMS streams, $WORKERS worker(s) per proxy on CPU $PROXY_CPU, h2load and backend on CPU $LOAD_CPU"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  run_one nginx "$P_NGINX" "$NGINX_PID"
  run_one haproxy "$P_HAPROXY" "$HAPROXY_PID"
  run_one switchyard "$P_SY" "$SY_PID"
done
echo
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
med = {}
for name, rps, p50, p99, cpu, bad in rows:
    med.setdefault(name, []).append((float(rps), float(p50), float(p99), float(cpu), int(bad)))
print("medians over %d rounds" % max(len(v) for v in med.values()))
print("%-11s %11s %9s %9s %11s %8s" % ("system", "req/s", "p50 ms", "p99 ms", "cpu us/req", "non-200"))
for name in ("nginx", "haproxy", "switchyard"):
    v = med.get(name)
    if v:
        print("%-11s %11.0f %9.3f %9.3f %11.2f %8d" % ((name,) + tuple(statistics.median(x[i] for x in v) for i in range(4)) + (sum(x[4] for x in v),)))
PY

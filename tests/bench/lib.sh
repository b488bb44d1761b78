# shellcheck shell=bash disable=SC2034  # (sets variables for the script that sources it)
# What the benchmark scripts in tests/bench/ share: a scratch directory and
# the processes started in it (stopped on exit, Ctrl-C, TERM or HUP), free
# loopback ports, readiness by polling, the Release build, the nginx backend,
# nginx and HAProxy as peer proxies, Switchyard with the benchmark's cohort
# route, and the CPU-per-request and latency helpers.
# Sourced (never run) by a script that has done `set -euo pipefail` and `cd` to
# the repository root. The starters put every pid on PIDS; a CPU argument pins
# the process with taskset (empty: not pinned).

bench_init() { # PREFIX: TMP=/tmp/PREFIX.XXXXXX, cleaned up on exit (KEEP=1: a copy in /tmp/sy-bench-last)
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  PIDS=()
  WRAP=()  # a command the peer proxies (nginx_start, haproxy_start) run under, e.g. valgrind
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
}

bench_cleanup() { # TERM, not KILL: a killed nginx master leaves its workers behind
  if [ -n "${KEEP:-}" ]; then rm -rf /tmp/sy-bench-last; cp -r "$TMP" /tmp/sy-bench-last; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}

bench_build() { # the Release build the scripts measure
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)" >/dev/null
}

bench_need() { # TOOL...: exits naming the first one missing
  for t in "$@"; do command -v "$t" >/dev/null || { echo "$t missing" >&2; exit 1; }; done
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # PORT [TRIES (200)] [INTERVAL_S (0.05)]: until something accepts on 127.0.0.1:PORT
  for _ in $(seq "${2:-200}"); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep "${3:-0.05}"
  done
  echo "no listener on $1" >&2
  exit 1
}

bench_bg() { # CPU CMD...: starts CMD in the background, pinned to CPU (empty: anywhere); its pid in BG_PID and on PIDS
  # A simple command, not a function, goes to the background: $! is then the
  # process itself (taskset execs it), the pid to signal and to measure.
  local cpu=$1
  shift
  if [ -n "$cpu" ]; then taskset -c "$cpu" "$@" & else "$@" & fi
  BG_PID=$!
  PIDS+=("$BG_PID")
}

# nginx's temp paths, all in one directory (an unprivileged worker may not write the defaults).
nginx_temps() { echo "client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;"; }

nginx_run() { # DIR CPU WORKERS MAIN HTTP SERVER [WRAPPER...]: writes DIR/nginx.conf and starts nginx on CPU
  # MAIN: more lines of the main context; HTTP: more lines of http; SERVER: the server's lines;
  # WRAPPER: a command nginx runs under.
  local dir=$1
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<NGX
worker_processes $3;
daemon off;
$4pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  $(nginx_temps "$dir")
  keepalive_requests 1000000;
  $5
  server {
$6
  }
}
NGX
  bench_bg "$2" "${@:7}" nginx -c "$dir/nginx.conf" -p "$dir"
}

backend_start() { # PORT CPU [LOCATIONS]: the backend, nginx with one worker (default: a short body on every path)
  local loc=${3:-}
  [ -n "$loc" ] || loc='location / { return 200 "hello from the backend\n"; }'
  nginx_run "$TMP/backend" "$2" 1 "" "" "    listen 127.0.0.1:$1;
    $loc"
}

nginx_start() { # BACKEND_PORT CPU WORKERS LISTEN...: nginx as a keep-alive reverse proxy; NGINX_PID
  local backend=$1 cpu=$2 workers=$3 server=""
  shift 3
  for l in "$@"; do server+="    $l"$'\n'; done
  server+='    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }'
  nginx_run "$TMP/nginx" "$cpu" "$workers" "master_process off;"$'\n' \
    "upstream b { server 127.0.0.1:$backend; keepalive 256; keepalive_requests 1000000; }" "$server" "${WRAP[@]}"
  NGINX_PID=$BG_PID
}

haproxy_start() { # NAME BACKEND_PORT CPU WORKERS MODE FRONT: HAProxy with backends legacy and new; HAPROXY_PID
  # FRONT: the frontend's lines (bind ..., use_backend ...), default_backend legacy follows.
  cat > "$TMP/haproxy-$1.cfg" <<HAP
global
  nbthread $4
  maxconn 8000
defaults
  mode $5
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
$6
  default_backend legacy
backend legacy
  server s1 127.0.0.1:$2
backend new
  server s1 127.0.0.1:$2
HAP
  bench_bg "$3" "${WRAP[@]}" haproxy -f "$TMP/haproxy-$1.cfg" -db
  HAPROXY_PID=$BG_PID
}

switchyard_conf() { # FILE BACKEND_PORT WORKERS USER_KEY LISTEN [EXTRA]: the cohort route at 25 % by USER_KEY
  # LISTEN: YAML list items; EXTRA: more top-level keys (admin: ...). Without an admin in
  # EXTRA the admin listener gets a free port: never the default 9901 another gateway may hold.
  local extra=""
  [ -z "${6:-}" ] || extra="$6"$'\n'
  case "$extra" in *admin:*) ;; *) extra+="admin: {address: 127.0.0.1:$(port)}"$'\n' ;; esac
  cat > "$1" <<SY
workers: $3
listen:
$5
access_log: "off"
${extra}pools:
  legacy: {endpoints: [127.0.0.1:$2]}
  new: {endpoints: [127.0.0.1:$2]}
routes:
  - name: bench
    match: {path_prefix: /}
    user_key: [$4]
    legacy: legacy
    new: new
    percent_bp: 2500
SY
}

switchyard_start() { # CPU CONF [BINARY (build/switchyard)]: log in $TMP/switchyard.log; SY_PID
  bench_bg "$1" "${3:-build/switchyard}" -c "$2" 2>"$TMP/switchyard.log"
  SY_PID=$BG_PID
}

users_lua() { # FILE: a wrk script sending a new X-User-Id with each request, so the cohort route does its work
  cat > "$1" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, {["X-User-Id"] = tostring(n % 100000)})
end
LUA
}

cpu_ns() { # PID: on-CPU ns of all its threads (0 for pid 0: nothing to measure)
  [ "$1" = 0 ] && { echo 0; return; }
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'
}

to_ms() { # wrk latency "123.45us" / "1.23ms" / "1.2s" -> ms
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'
}

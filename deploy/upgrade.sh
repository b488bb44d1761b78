#!/usr/bin/env bash
# Binary upgrade with zero failed requests.
#   deploy/upgrade.sh OLD_PID NEW_BINARY CONFIG [LOG]
# 1. checks the config with the new binary;
# 2. starts the new binary with --takeover: it connects to the running gateway's
#    upgrade socket (the config's upgrade_socket, by default an abstract socket
#    named after the first listen address), receives its listening sockets
#    (SCM_RIGHTS: the same sockets, so nothing queued on them is ever reset and
#    no two processes bind one address), starts serving them, and tells the old
#    process, which stops accepting and drains: what it has in flight finishes
#    (up to timeouts.drain), an idle keep-alive connection answers one more
#    request with Connection: close or closes after timeouts.drain_idle;
# 3. waits for the new process's "ready" line (--ready-fd), then for the old one
#    to exit.
# Exits non-zero, leaving the old process serving, if the new one fails to start.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 OLD_PID NEW_BINARY CONFIG [LOG]" >&2
  exit 2
fi
old_pid=$1 new_bin=$2 cfg=$3 log=${4:-/dev/null}
# Running (a zombie, exited but not yet reaped by its parent, counts as gone).
alive() { [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat"; }
alive "$old_pid" || { echo "upgrade: no process $old_pid" >&2; exit 1; }

"$new_bin" check -c "$cfg" >/dev/null

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/ready"
"$new_bin" -c "$cfg" --takeover --ready-fd 3 3>"$dir/ready" >>"$log" 2>&1 &
new_pid=$!
# The new process writes "ready PID" once it serves; if it exits first, the
# fifo closes and read sees end of file. The bound is for a process that hangs.
line=""
read -r -t 300 line <"$dir/ready" || true
if [ "$line" != "ready $new_pid" ]; then
  if alive "$new_pid"; then kill "$new_pid"; fi
  echo "upgrade: the new process did not start serving (see $log); the old one ($old_pid) keeps serving" >&2
  exit 1
fi

for _ in $(seq 1200); do
  alive "$old_pid" || break
  sleep 0.1
done
if alive "$old_pid"; then
  echo "upgrade: the old process $old_pid is still draining after 120 s" >&2
  exit 1
fi
echo "upgraded: $old_pid -> $new_pid"

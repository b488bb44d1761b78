#!/usr/bin/env bash
# Binary upgrade with zero failed requests.
#   deploy/upgrade.sh OLD_PID NEW_BINARY CONFIG [LOG]
# 1. lets the kernel move connections queued on a closing SO_REUSEPORT listener to
#    the others (net.ipv4.tcp_migrate_req=1);
# 2. checks the config with the new binary;
# 3. starts the new binary on the same ports (SO_REUSEPORT: both accept for a moment);
# 4. waits until the new process listens;
# 5. sends SIGQUIT to the old one: it accepts what is already queued, stops listening,
#    finishes its in-flight requests (up to timeouts.drain) and exits 0.
# Exits non-zero, leaving the old process running, if the new one fails to start.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 OLD_PID NEW_BINARY CONFIG [LOG]" >&2
  exit 2
fi
old_pid=$1 new_bin=$2 cfg=$3 log=${4:-/dev/null}
# Running (a zombie, exited but not yet reaped by its parent, counts as gone).
alive() { [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat"; }
alive "$old_pid" || { echo "upgrade: no process $old_pid" >&2; exit 1; }

if [ "$(cat /proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null || echo x)" != 1 ]; then
  sysctl -qw net.ipv4.tcp_migrate_req=1 2>/dev/null ||
    echo "upgrade: warning: cannot set net.ipv4.tcp_migrate_req=1 (connections queued at the last moment may be reset)" >&2
fi
"$new_bin" check -c "$cfg" >/dev/null

"$new_bin" -c "$cfg" >>"$log" 2>&1 &
new_pid=$!
listening() { ss -Hltnp 2>/dev/null | grep -q "pid=$new_pid,"; }
for _ in $(seq 200); do
  listening && break
  if ! alive "$new_pid"; then
    echo "upgrade: the new process exited before listening; the old one ($old_pid) keeps serving" >&2
    exit 1
  fi
  sleep 0.05
done
listening || { kill "$new_pid"; echo "upgrade: the new process never listened; stopped it" >&2; exit 1; }

kill -QUIT "$old_pid"
for _ in $(seq 1200); do
  alive "$old_pid" || break
  sleep 0.1
done
if alive "$old_pid"; then
  echo "upgrade: the old process $old_pid is still draining after 120 s" >&2
  exit 1
fi
echo "upgraded: $old_pid -> $new_pid"

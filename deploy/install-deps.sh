#!/usr/bin/env bash
# Installs every Debian package the build, the tests, the demo and the benchmark need.
# Idempotent: does nothing (and does not touch the network) when all are present.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libev-dev node-llhttp libyaml-dev libxxhash-dev libcmocka-dev
  libnghttp2-dev libssl-dev libhiredis-dev libjansson-dev libpq-dev
  curl python3 python3-cryptography procps redis-server redis-tools openssl ca-certificates
  clang libclang-rt-14-dev valgrind prometheus wrk iproute2
  postgresql-15 postgresql-client-15
  chromium chromium-driver python3-selenium tmux
)
if [ "${1:-}" = "--bench" ]; then
  PKGS+=(nginx-light haproxy wrk util-linux nghttp2-client linux-perf)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The tests and the demo start PostgreSQL clusters of their own (initdb + pg_ctl):
# no system-wide cluster on 5432 is wanted.
mkdir -p /etc/postgresql-common/createcluster.d
[ -e /etc/postgresql-common/createcluster.d/switchyard.conf ] ||
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/switchyard.conf
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

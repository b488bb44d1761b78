#!/usr/bin/env bash
# Installs what is missing, builds Release and ASan+UBSan, runs the whole CTest
# suite in both. Exits non-zero on any failure. Usage: tests/run.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
status=0

build() { # dir, cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -DSY_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}

echo "== build: Release"
build build -DCMAKE_BUILD_TYPE=Release
echo "== build: ASan+UBSan"
build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSY_SANITIZE=ON
echo "== build: libFuzzer targets (clang, ASan+UBSan)"
build build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSY_SANITIZE=ON -DSY_FUZZ=ON \
  -DSY_FUZZ_SECONDS="${SY_FUZZ_SECONDS:-60}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for dir in build build-asan; do
  echo "== tests: $dir"
  # two at a time: see tests/CMakeLists.txt (RUN_SERIAL for the heavy ones)
  if ! (cd "$dir" && ctest --output-on-failure --timeout 600 -j2 -LE fuzz "$@"); then
    status=1
  fi
done
echo "== fuzz: each target for ${SY_FUZZ_SECONDS:-60} s from its seed corpus, two at a time"
if ! (cd build-fuzz && ctest --output-on-failure -j2 -L fuzz); then
  status=1
fi
# each target's executions, from libFuzzer's final stats in CTest's log
awk '/^[0-9]+\/[0-9]+ Testing: fuzz\//{t=$3} /stat::number_of_executed_units/{print "  " t ": " $2 " executions"}' \
  build-fuzz/Testing/Temporary/LastTest.log || true
if [ $status -ne 0 ]; then
  echo "tests/run.sh: FAILED" >&2
fi
exit $status

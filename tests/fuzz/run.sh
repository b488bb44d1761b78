#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) into build-fuzz and runs each
# for SECONDS (default 60) from its seed corpus; new inputs go to
# build-fuzz/tests/fuzz-work/TARGET, never into the source corpus. Prints each
# target's executions. Exits non-zero when a target finds a crash.
# Usage: tests/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_h1 fuzz_config fuzz_user_key fuzz_flags fuzz_jwt fuzz_alertmanager fuzz_admin_body fuzz_h1client)
fi
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSY_SANITIZE=ON -DSY_FUZZ=ON \
  -DSY_WERROR=ON >/dev/null
cmake --build build-fuzz -j"$(nproc 2>/dev/null || echo 2)" --target "${targets[@]}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${targets[@]}"; do
  work=build-fuzz/tests/fuzz-work/$t
  mkdir -p "$work"
  log=build-fuzz/tests/fuzz-$t.log
  if build-fuzz/tests/$t -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
       "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "$t: ok, ${execs:-?} executions in ${secs} s"
  else
    echo "$t: FAILED (see $log)"
    tail -40 "$log"
    status=1
  fi
done
exit $status

#!/usr/bin/env bash
# Long form of test/multiproc/test_fault_kill.cc: TRIALS randomized SIGKILLs of one of 3-4 forked
# ranks (during init, inside a collective, between calls) per transport (tcp, shm, ucx), then
# the detection time of every survivor (kill -> its failing call returns) as p50/p99/max, the
# hang count and the trials whose victim died before joining (only a timeout can tell those).
#   perf/fault_kill.sh [TRIALS=200] [BUILD_DIR=build] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-200}
build=${2:-build}
seed=${3:-20240607}
exe=$build/test/multiproc_test_fault_kill
[ -x "$exe" ] || { echo "fault_kill.sh: build $exe first (ninja -C $build multiproc_test_fault_kill)" >&2; exit 2; }
log=$(mktemp /tmp/obccl-fault-kill.XXXXXX)
status=0
OBCCL_FAULT_TRIALS=$trials OBCCL_FAULT_SEED=$seed "$exe" >"$log" 2>&1 || status=$?
echo "fault_kill: $trials trials per transport, seed $seed, log $log"
grep '^FAULT_KILL_SUMMARY' "$log" | sed 's/^FAULT_KILL_SUMMARY /  /'
awk '/^FAULT_KILL_DETECT/ { print $3 }' "$log" | sort -g |
  awk '{ v[++n] = $1 }
       END { if (n == 0) exit
             p50 = int(0.50 * n); if (p50 < 0.50 * n) p50++
             p99 = int(0.99 * n); if (p99 < 0.99 * n) p99++
             printf "  all transports: %d detections, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                    n, v[p50], v[p99], v[n] }'
echo "  trial failures: $(grep -c '^/.*Failure' "$log" || true); gtest: $(grep -E '^\[  (PASSED|FAILED)  \]' "$log" | tr '\n' ' ')"
exit $status

#!/usr/bin/env bash
# Long form of the abort stress in test/multiproc/test_fault_abort.cc: ITERATIONS rounds per
# transport of 2-4 ranks (threads of one process) doing init and collectives, aborted at random
# points; afterwards the process must be back to its fds, threads and shared-memory mappings.
#   perf/fault_abort.sh [ITERATIONS=500] [BUILD_DIR=build]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-500}
build=${2:-build}
exe=$build/test/multiproc_test_fault_abort
[ -x "$exe" ] || { echo "fault_abort.sh: build $exe first (ninja -C $build multiproc_test_fault_abort)" >&2; exit 2; }
log=$(mktemp /tmp/obccl-fault-abort.XXXXXX)
status=0
OBCCL_FAULT_ABORT_ITERATIONS=$iterations "$exe" >"$log" 2>&1 || status=$?
echo "fault_abort: $iterations iterations per transport, log $log"
grep -E '^FAULT_ABORT' "$log" | sed 's/^/  /'
grep -E '^\[  (PASSED|FAILED)  \]' "$log" | sed 's/^/  /'
exit $status
